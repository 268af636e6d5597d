//! Stock levels changed by people (counts, adjustments, warehouse stock) and the low-stock rule
//! every change goes through.
//!
//! The rule ([`replenish_if_low`]): when a change leaves a (store, product) at or below its
//! reorder threshold and no replenishment is open, a replenishment saga starts in the same
//! transaction, for enough to reach the target level counting what is already on the road.

use std::{future::Future, pin::Pin};

use participants::{
    config::SagaTiming,
    inventory::{self, Movement, MovementReason, StockLevel, add_on_hand, record_movements},
    messaging::{
        Exchange,
        outbox::{self, Outgoing},
    },
};
use serde_json::json;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    Context,
    access::audit::Audit,
    error::{Error, Result, on_constraint},
    saga::{
        engine,
        replenishment::{self, Replenishment},
    },
};

/// The counted levels of one (store, product).
#[derive(Clone, Copy, Debug)]
pub struct Levels {
    pub on_hand: i64,
    pub reorder_threshold: i64,
    pub target_level: i64,
}

/// Upper bound on any quantity: larger numbers are typing mistakes, not stock.
pub const MAX_QUANTITY: i64 = 1_000_000_000;

fn check_quantity(name: &str, value: i64, min: i64) -> Result<()> {
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
    // Make sure the row exists, then lock it and read what it held: the ledger records the
    // difference. (One statement cannot do both: a `FOR UPDATE` read skips the row its own
    // statement updates.)
    sqlx::query!(
        "INSERT INTO inventory (store_id, product_id, on_hand, reorder_threshold, target_level)
         VALUES ($1, $2, 0, $3, $4) ON CONFLICT DO NOTHING",
        store_id,
        product_id,
        levels.reorder_threshold,
        levels.target_level
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| on_constraint(e, missing_store_or_product))?;
    let previous = sqlx::query_scalar!(
        "SELECT on_hand FROM inventory WHERE store_id = $1 AND product_id = $2 FOR UPDATE",
        store_id,
        product_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let level = sqlx::query_as!(
        StockLevel,
        "UPDATE inventory SET on_hand = $3, reorder_threshold = $4, target_level = $5,
                version = version + 1, updated_at = now()
         WHERE store_id = $1 AND product_id = $2
         RETURNING store_id, product_id, on_hand, reserved, reorder_threshold, target_level, version",
        store_id,
        product_id,
        levels.on_hand,
        levels.reorder_threshold,
        levels.target_level
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        on_constraint(e, |c| {
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
    record_movements(&mut tx, &[movement]).await?;
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
    let level = add_on_hand(&mut tx, store_id, product_id, delta)
        .await
        .map_err(|e| {
            on_constraint(e, |c| {
                (c == "inventory_stock_check").then(|| {
                    Error::Conflict(format!(
                        "an adjustment of {delta} would leave less stock than is on hand or reserved by open orders"
                    ))
                })
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
    record_movements(&mut tx, &[movement]).await?;
    audit.record(&mut tx, 200).await?;
    commit_stock_change(ctx, tx, std::slice::from_ref(&level)).await?;
    Ok(level)
}

/// The central warehouse's stock of one product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarehouseLevel {
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    /// Dispatched to stores and not yet received.
    pub in_transit: i64,
}

pub async fn set_warehouse(ctx: &Context, audit: &Audit, product_id: Uuid, on_hand: i64) -> Result<WarehouseLevel> {
    check_quantity("on_hand", on_hand, 0)?;
    let mut tx = ctx.pool.begin().await?;
    sqlx::query!("INSERT INTO warehouse_stock (product_id, on_hand) VALUES ($1, 0) ON CONFLICT DO NOTHING", product_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| on_constraint(e, missing_store_or_product))?;
    let previous =
        sqlx::query_scalar!("SELECT on_hand FROM warehouse_stock WHERE product_id = $1 FOR UPDATE", product_id)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query!(
        "UPDATE warehouse_stock SET on_hand = $2, version = version + 1, updated_at = now() WHERE product_id = $1",
        product_id,
        on_hand
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| {
        on_constraint(e, |c| {
            (c == "warehouse_stock_check")
                .then(|| Error::Conflict(format!("on_hand {on_hand} is below the warehouse's reserved stock")))
        })
    })?;
    let movement =
        Movement::on_hand(None, product_id, on_hand - previous, MovementReason::WarehouseSet, Uuid::new_v4());
    record_movements(&mut tx, &[movement]).await?;
    let level = warehouse_level(&mut tx, product_id).await?;
    audit.record(&mut tx, 200).await?;
    tx.commit().await?;
    level.ok_or_else(|| Error::NotFound("no such product".into()))
}

pub async fn warehouse_level(conn: &mut PgConnection, product_id: Uuid) -> sqlx::Result<Option<WarehouseLevel>> {
    sqlx::query_as!(
        WarehouseLevel,
        r#"SELECT w.product_id, w.on_hand, w.reserved,
                  (SELECT COALESCE(sum(s.quantity), 0) FROM shipment s
                   WHERE s.product_id = w.product_id AND s.status = 'dispatched')::int8 AS "in_transit!"
           FROM warehouse_stock w WHERE w.product_id = $1"#,
        product_id
    )
    .fetch_optional(conn)
    .await
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
        replenish_if_low(&mut tx, &ctx.timing, level).await?;
    }
    ctx.cache.forget(levels.iter().map(|l| (l.store_id, l.product_id))).await;
    tx.commit().await?;
    ctx.outbox.notify();
    for level in levels {
        ctx.cache.put(level).await;
    }
    Ok(())
}

/// The low-stock rule: opens a replenishment for `level` if it is low and none is open.
/// Returns the new saga's id.
///
/// Boxed because a received replenishment applies this rule again, from inside the engine that
/// this function calls: the futures would otherwise contain themselves.
pub fn replenish_if_low<'a>(
    tx: &'a mut PgConnection,
    timing: &'a SagaTiming,
    level: &'a StockLevel,
) -> Pin<Box<dyn Future<Output = sqlx::Result<Option<Uuid>>> + Send + 'a>> {
    Box::pin(async move {
        if !level.is_low() {
            return Ok(None);
        }
        let in_transit = sqlx::query_scalar!(
            r#"SELECT COALESCE(sum(quantity), 0)::int8 AS "quantity!" FROM shipment
               WHERE store_id = $1 AND product_id = $2 AND status = 'dispatched'"#,
            level.store_id,
            level.product_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let quantity = level.target_level - level.available() - in_transit;
        if quantity <= 0 {
            return Ok(None);
        }
        let detail = json!({
            "available": level.available(), "reorder_threshold": level.reorder_threshold,
            "target_level": level.target_level, "in_transit": in_transit, "quantity_requested": quantity,
        });
        let Some(saga_id) =
            open_replenishment(tx, timing, level.store_id, level.product_id, quantity, "low-stock", &detail).await?
        else {
            return Ok(None);
        };
        let low = json!({
            "store_id": level.store_id, "product_id": level.product_id, "available": level.available(),
            "reorder_threshold": level.reorder_threshold, "saga_id": saga_id,
        });
        outbox::enqueue(tx, &[Outgoing::event(Exchange::InventoryEvents, "stock.low", Some(saga_id), low)]).await?;
        Ok(Some(saga_id))
    })
}

/// Opens a replenishment of `quantity` unless one is open for the (store, product): its claim
/// row, its saga, and the `replenishment.created` event. `None` when one is open already.
async fn open_replenishment(
    tx: &mut PgConnection,
    timing: &SagaTiming,
    store_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    actor: &str,
    detail: &serde_json::Value,
) -> sqlx::Result<Option<Uuid>> {
    let saga_id = Uuid::new_v4();
    // The partial unique index is the guard: a concurrent or repeated signal claims nothing.
    let claimed = sqlx::query_scalar!(
        "INSERT INTO replenishment (saga_id, store_id, product_id, quantity_requested, status)
         VALUES ($1, $2, $3, $4, 'requested')
         ON CONFLICT (store_id, product_id) WHERE closed_at IS NULL DO NOTHING
         RETURNING saga_id",
        saga_id,
        store_id,
        product_id,
        quantity
    )
    .fetch_optional(&mut *tx)
    .await?;
    if claimed.is_none() {
        return Ok(None);
    }
    let data = replenishment::Data::new(store_id, product_id, quantity);
    engine::start::<Replenishment>(tx, timing, saga_id, replenishment::State::Requested, &data, actor, detail).await?;
    let created = json!({
        "saga_id": saga_id, "store_id": store_id, "product_id": product_id, "quantity_requested": quantity,
    });
    outbox::enqueue(tx, &[Outgoing::event(Exchange::WarehouseEvents, "replenishment.created", Some(saga_id), created)])
        .await?;
    // Labelled by who started it (`low-stock`, `operator`), not by which operator.
    let started_by = actor.split_once(':').map_or(actor, |(role, _)| role).to_owned();
    metrics::counter!("replenishments_started_total", "actor" => started_by).increment(1);
    Ok(Some(saga_id))
}

/// Starts a replenishment by hand, whatever the stock level, on behalf of the key in `audit`.
pub async fn start_replenishment(
    ctx: &Context,
    audit: &Audit,
    store_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    reason: Option<&str>,
) -> Result<Uuid> {
    check_quantity("quantity", quantity, 1)?;
    let mut tx = ctx.pool.begin().await?;
    let stocked = inventory::fetch_level(&mut tx, store_id, product_id).await?;
    if stocked.is_none() {
        return Err(Error::NotFound(format!(
            "store {store_id} does not stock product {product_id}: set its levels first"
        )));
    }
    let detail = json!({ "quantity_requested": quantity, "reason": reason.unwrap_or_default() });
    let actor = audit.actor();
    let Some(saga_id) =
        open_replenishment(&mut tx, &ctx.timing, store_id, product_id, quantity, &actor, &detail).await?
    else {
        let open = sqlx::query_scalar!(
            "SELECT saga_id FROM replenishment WHERE store_id = $1 AND product_id = $2 AND closed_at IS NULL",
            store_id,
            product_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        let open = open.map_or_else(String::new, |id| format!(" (saga {id})"));
        return Err(Error::Conflict(format!("a replenishment of this product for this store is already open{open}")));
    };
    audit.name("saga_id", saga_id);
    audit.record(&mut tx, 201).await?;
    tx.commit().await?;
    ctx.outbox.notify();
    Ok(saga_id)
}
