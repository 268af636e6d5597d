//! Stock changed by people through the API — counts, adjustments, the warehouse's stock and its
//! reorder levels, a replenishment started by hand — and the one way every change to store stock
//! ends ([`commit_stock_change`]): through the replenishment saga's low-stock rule. A change to
//! the warehouse's stock goes through the purchase order's.

use platform::saga::Actor;
use sagas::{purchase_order, replenishment};
use serde_json::json;
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use stock::{
    MAX_QUANTITY, Movement, MovementReason, StockLevel, ledger,
    level::{self, Levels},
    warehouse::{self, WarehouseLevel},
};
use uuid::Uuid;

use crate::{
    Context,
    access::audit::Audit,
    error::{Error, OnConstraint, Result},
};

pub(crate) fn check_quantity(name: &str, value: i64, min: i64) -> Result<()> {
    if (min..=MAX_QUANTITY).contains(&value) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{name} must be between {min} and {MAX_QUANTITY}, not {value}")))
    }
}

fn missing_store_or_product(constraint: &str) -> Option<Error> {
    match constraint {
        "inventory_store_id_fkey" => Some(Error::NotFound("no such store".into())),
        "inventory_product_id_fkey" | "warehouse_stock_product_id_fkey" => {
            Some(Error::NotFound("no such product".into()))
        }
        _ => None,
    }
}

/// Creates or overwrites the levels of a (store, product).
pub async fn set_levels(
    ctx: &Context,
    audit: &Audit,
    store_id: Uuid,
    product_id: Uuid,
    levels: Levels,
) -> Result<StockLevel> {
    check_quantity("on_hand", levels.on_hand, 0)?;
    check_quantity("reorder_threshold", levels.reorder_threshold, 0)?;
    check_quantity("target_level", levels.target_level, 0)?;
    if levels.target_level <= levels.reorder_threshold {
        return Err(Error::Invalid(format!(
            "target_level ({}) must be above reorder_threshold ({}), or every refill would leave the store low",
            levels.target_level, levels.reorder_threshold
        )));
    }
    let mut tx = ctx.pool.begin().await?;
    let (level, previous) = level::set(&mut tx, store_id, product_id, levels).await.on_constraint(|c| {
        missing_store_or_product(c).or_else(|| {
            (c == "inventory_stock_check").then(|| {
                Error::Conflict(format!(
                    "on_hand {} is below the quantity reserved by open orders; fulfil or cancel them first",
                    levels.on_hand
                ))
            })
        })
    })?;
    let movement = Movement::on_hand(
        Some(store_id),
        product_id,
        level.on_hand - previous,
        MovementReason::StockSet,
        Uuid::new_v4(),
    );
    ledger::record(&mut tx, &[movement]).await?;
    audit.record(&mut tx, 200).await?;
    commit_stock_change(ctx, tx, std::slice::from_ref(&level)).await?;
    Ok(level)
}

/// Adds `delta` (negative to remove; not zero, and at most [`MAX_QUANTITY`] either way, as the
/// API's types ensure) to a store's on-hand stock, with a reason for the ledger.
pub async fn adjust(
    ctx: &Context,
    audit: &Audit,
    store_id: Uuid,
    product_id: Uuid,
    delta: i64,
    reason: &str,
) -> Result<StockLevel> {
    let mut tx = ctx.pool.begin().await?;
    let level = level::add_on_hand(&mut tx, store_id, product_id, delta)
        .await
        .on_constraint(|c| {
            (c == "inventory_stock_check").then(|| {
                Error::Conflict(format!(
                    "an adjustment of {delta} would leave less stock than is on hand or reserved by open orders"
                ))
            })
        })?
        .ok_or_else(|| Error::NotFound("this store has no inventory of this product; PUT its levels first".into()))?;
    if level.on_hand > MAX_QUANTITY {
        return Err(Error::Conflict(format!(
            "an adjustment of {delta} would leave {} on hand, above the limit of {MAX_QUANTITY}",
            level.on_hand
        )));
    }
    let movement = Movement {
        note: Some(reason.to_owned()),
        ..Movement::on_hand(Some(store_id), product_id, delta, MovementReason::Adjustment, Uuid::new_v4())
    };
    ledger::record(&mut tx, &[movement]).await?;
    audit.record(&mut tx, 200).await?;
    commit_stock_change(ctx, tx, std::slice::from_ref(&level)).await?;
    Ok(level)
}

/// The warehouse's reorder levels of a product, as a request sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reorder {
    /// Left as they are.
    Keep,
    /// Never reordered by the rule.
    Never,
    /// At or below `point` (counting what is on order), reorder up to `target`.
    At { point: i64, target: i64 },
}

pub async fn set_warehouse(
    ctx: &Context,
    audit: &Audit,
    product_id: Uuid,
    on_hand: i64,
    reorder: Reorder,
) -> Result<WarehouseLevel> {
    check_quantity("on_hand", on_hand, 0)?;
    if let Reorder::At { point, target } = reorder {
        check_quantity("reorder_point", point, 0)?;
        check_quantity("reorder_target", target, 1)?;
        if target <= point {
            return Err(Error::Invalid(format!(
                "reorder_target ({target}) must be above reorder_point ({point}), or every purchase would leave \
                 the warehouse low"
            )));
        }
    }
    let mut tx = ctx.pool.begin().await?;
    let previous = warehouse::set_on_hand(&mut tx, product_id, on_hand).await.on_constraint(|c| {
        missing_store_or_product(c).or_else(|| {
            (c == "warehouse_stock_check")
                .then(|| Error::Conflict(format!("on_hand {on_hand} is below the warehouse's reserved stock")))
        })
    })?;
    let levels = match reorder {
        Reorder::Keep => None,
        Reorder::Never => Some(None),
        Reorder::At { point, target } => Some(Some((point, target))),
    };
    if let Some(levels) = levels {
        warehouse::set_reorder_levels(&mut tx, product_id, levels).await?;
    }
    let movement =
        Movement::on_hand(None, product_id, on_hand - previous, MovementReason::WarehouseSet, Uuid::new_v4());
    ledger::record(&mut tx, &[movement]).await?;
    purchase_order::reorder_if_low(&mut tx, &ctx.timing, product_id).await?;
    let level = warehouse::level(&mut tx, product_id).await?;
    audit.record(&mut tx, 200).await?;
    tx.commit().await?;
    ctx.outbox.notify();
    level.ok_or_else(|| Error::NotFound("no such product".into()))
}

/// Ends a transaction that changed store stock: the low-stock rule for every level it left, the
/// commit, then the relay and the cache learn of it. Every change to store stock ends here, so
/// none can leave a store low without a replenishment.
pub async fn commit_stock_change(
    ctx: &Context,
    mut tx: Transaction<'_, Postgres>,
    levels: &[StockLevel],
) -> Result<()> {
    for level in levels {
        replenishment::replenish_if_low(&mut tx, &ctx.timing, level).await?;
    }
    ctx.cache.forget(levels.iter().map(|l| (l.store_id, l.product_id))).await;
    tx.commit().await?;
    ctx.outbox.notify();
    for level in levels {
        ctx.cache.put(level).await;
    }
    Ok(())
}

/// A replenishment asked for by hand.
pub struct Start<'a> {
    pub store_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i64,
    pub reason: Option<&'a str>,
}

/// Starts a replenishment by hand, whatever the stock level, on behalf of the key in `audit`, in
/// a transaction of its own on `conn`.
pub async fn start_replenishment(
    ctx: &Context,
    conn: &mut PgConnection,
    audit: &Audit,
    start: Start<'_>,
) -> Result<Uuid> {
    let Start { store_id, product_id, quantity, reason } = start;
    check_quantity("quantity", quantity, 1)?;
    let mut tx = conn.begin().await?;
    let detail = json!({ "quantity_requested": quantity, "reason": reason.unwrap_or_default() });
    let actor = audit.actor();
    let Some(saga_id) =
        replenishment::open(&mut tx, &ctx.timing, store_id, product_id, quantity, Actor::Caller(&actor), detail)
            .await?
    else {
        // Nothing opened: find out why, off the path of a request that succeeds.
        if level::fetch(&mut tx, store_id, product_id).await?.is_none() {
            return Err(Error::NotFound(format!(
                "store {store_id} does not stock product {product_id}: set its levels first"
            )));
        }
        let open = replenishment::open_for(&mut tx, store_id, product_id).await?;
        let open = open.map_or_else(String::new, |id| format!(" (saga {id})"));
        return Err(Error::Conflict(format!("a replenishment of this product for this store is already open{open}")));
    };
    commit_started(ctx, tx, audit, saga_id).await
}

/// Ends the transaction that started a saga by hand: the audit names it, and the relay hears of
/// its first command once committed.
pub(crate) async fn commit_started(
    ctx: &Context,
    mut tx: Transaction<'_, Postgres>,
    audit: &Audit,
    saga_id: Uuid,
) -> Result<Uuid> {
    audit.name("saga_id", saga_id);
    audit.record(&mut tx, 201).await?;
    tx.commit().await?;
    ctx.outbox.notify();
    Ok(saga_id)
}
