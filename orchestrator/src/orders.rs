//! Customer orders: the hot write path (docs/design.md §3.1).
//!
//! Placing an order is one transaction: the order row (its idempotency key makes a retry return
//! the first order), one conditional `UPDATE` per item that reserves only if the stock is there —
//! no read-then-write, so concurrent orders cannot oversell — the ledger, the `order.created`
//! event, and the low-stock rule for every touched product. Any short item rolls back everything.

use chrono::{DateTime, Utc};
use platform::{
    messaging::outbox::Outgoing,
    saga::{
        Action, Actor, Input, InputOf,
        engine::{self, Applied},
        store,
    },
};
use sagas::fulfilment::{self, Fulfilment, Line, OrderCreated, OrderStatus, Picker};
use sqlx::PgConnection;
use stock::{MAX_QUANTITY, Movement, MovementReason, ledger, level};
use uuid::Uuid;

use crate::{
    Context,
    access::audit::Audit,
    error::{Error, OnConstraint, Result, Shortage},
    inventory::commit_stock_change,
    operator::engine_outcome,
};

/// Items in one order, at most: a bigger basket is a client bug.
pub const MAX_ITEMS: usize = 100;

/// The most an order may cost, in cents (one billion in the currency's units): far above any
/// basket, and far below what a 64-bit sum of 100 lines at the highest price and quantity could
/// overflow to. A costlier order is refused (422) before anything is reserved or charged.
pub const MAX_ORDER_CENTS: i64 = 100_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub store_id: Uuid,
    pub status: OrderStatus,
    pub items: Vec<Line>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What placing an order did.
#[derive(Debug)]
pub enum Placed {
    Created(Order),
    /// The idempotency key was seen before with the same request: the first order, untouched.
    Replayed(Order),
}

/// The request in canonical form, stored with the key: the same key with another request is
/// refused rather than silently answered with an unrelated order.
fn fingerprint(store_id: Uuid, items: &[Line]) -> String {
    let mut parts: Vec<String> = items.iter().map(|i| format!("{}x{}", i.product_id, i.quantity)).collect();
    parts.sort();
    format!("{store_id}:{}", parts.join(","))
}

fn validate(items: &[Line]) -> Result<Vec<Line>> {
    if items.is_empty() {
        return Err(Error::Invalid("an order needs at least one item".into()));
    }
    if items.len() > MAX_ITEMS {
        return Err(Error::Invalid(format!("an order may have at most {MAX_ITEMS} items, not {}", items.len())));
    }
    let mut sorted = items.to_vec();
    // One lock order for every transaction: two orders touching the same products cannot deadlock.
    sorted.sort_by_key(|i| i.product_id);
    for (i, item) in sorted.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(Error::Invalid(format!(
                "quantity of product {} must be between 1 and {MAX_QUANTITY}, not {}",
                item.product_id, item.quantity
            )));
        }
        if i > 0 && sorted[i - 1].product_id == item.product_id {
            return Err(Error::Invalid(format!(
                "product {} is listed twice; put the total in one item",
                item.product_id
            )));
        }
    }
    Ok(sorted)
}

/// The sum of an order's line amounts, if it is at most [`MAX_ORDER_CENTS`]. Summed wide, so that
/// no basket can wrap around into a small or negative amount.
fn total(amounts: &[i64]) -> Result<i64> {
    let total: i128 = amounts.iter().map(|&a| i128::from(a)).sum();
    i64::try_from(total).ok().filter(|t| (0..=MAX_ORDER_CENTS).contains(t)).ok_or_else(|| {
        Error::Invalid(format!(
            "the order would cost {total} cents, more than the most one order may cost ({MAX_ORDER_CENTS} cents); \
             split it, or order fewer units"
        ))
    })
}

fn placed_counter() -> metrics::Counter {
    metrics::counter!("orders_placed_total")
}

/// Registers the orders counter at zero: a dashboard then shows no order as 0, not as nothing.
pub fn register_metrics() {
    placed_counter().increment(0);
}

/// Places an order for the key in `audit`; `key` is the client's `Idempotency-Key`.
pub async fn place(ctx: &Context, audit: &Audit, store_id: Uuid, items: &[Line], key: Option<&str>) -> Result<Placed> {
    let items = validate(items)?;
    let fingerprint = fingerprint(store_id, &items);
    let mut tx = ctx.pool.begin().await?;
    let order_id = Uuid::now_v7();
    // A concurrent request with the same key waits here for the first to commit, then conflicts.
    let inserted = sqlx::query!(
        "INSERT INTO customer_order (id, store_id, status, idempotency_key, request_fingerprint)
         VALUES ($1, $2, $5, $3, $4)
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING created_at, updated_at",
        order_id,
        store_id,
        key,
        fingerprint,
        OrderStatus::Reserved.as_ref()
    )
    .fetch_optional(&mut *tx)
    .await
    .on_constraint(|c| (c == "customer_order_store_id_fkey").then(|| Error::NotFound("no such store".into())))?;
    let Some(inserted) = inserted else {
        drop(tx);
        let placed = replay(ctx, key.unwrap_or_default(), &fingerprint).await?;
        if let Placed::Replayed(order) = &placed {
            audit.name("order_id", order.id);
        }
        return Ok(placed);
    };

    let mut levels = Vec::with_capacity(items.len());
    let mut short = Vec::new();
    for item in &items {
        match level::reserve(&mut tx, store_id, item.product_id, item.quantity).await? {
            Some(level) => levels.push(level),
            None => short.push(item),
        }
    }
    if !short.is_empty() {
        let shortages = shortages(&mut tx, store_id, &short).await?;
        return Err(Error::ShortStock(shortages));
    }
    let products: Vec<Uuid> = items.iter().map(|i| i.product_id).collect();
    let quantities: Vec<i64> = items.iter().map(|i| i.quantity).collect();
    // Each line keeps the price it was placed at; the order's amount is what the customer pays.
    let amounts = sqlx::query_scalar!(
        r#"INSERT INTO order_item (order_id, product_id, quantity, unit_price_cents)
           SELECT $1, u.product_id, u.quantity, p.price_cents
           FROM UNNEST($2::uuid[], $3::int8[]) AS u (product_id, quantity) JOIN product p ON p.id = u.product_id
           RETURNING quantity * unit_price_cents AS "amount!""#,
        order_id,
        &products,
        &quantities
    )
    .fetch_all(&mut *tx)
    .await?;
    let amount_cents = total(&amounts)?;
    let data = fulfilment::Data { store_id, items: items.clone(), amount_cents, handed_over: false };
    let movements: Vec<Movement> = items
        .iter()
        .map(|i| Movement {
            store_id: Some(store_id),
            product_id: i.product_id,
            on_hand_delta: 0,
            reserved_delta: i.quantity,
            reason: MovementReason::OrderReserved,
            reference: Some(order_id),
            note: None,
        })
        .collect();
    ledger::record(&mut tx, &movements).await?;
    let created = OrderCreated { order_id, store_id, items: data.items.clone() };
    let created = vec![Outgoing::event(&created)];
    fulfilment::start(&mut tx, &ctx.timing, order_id, &data, Actor::Caller(&audit.actor()), created).await?;
    // The order is what was just written: no need to read it back.
    let order = Order {
        id: order_id,
        store_id,
        status: OrderStatus::Reserved,
        items,
        created_at: inserted.created_at,
        updated_at: inserted.updated_at,
    };
    audit.name("order_id", order_id);
    audit.record(&mut tx, 201).await?;
    commit_stock_change(ctx, tx, &levels).await?;
    placed_counter().increment(1);
    Ok(Placed::Created(order))
}

/// What the short items lack, for the 409. Unknown products are a different mistake: a 404.
async fn shortages(tx: &mut PgConnection, store_id: Uuid, short: &[&Line]) -> Result<Vec<Shortage>> {
    let ids: Vec<Uuid> = short.iter().map(|i| i.product_id).collect();
    let known = level::available(tx, store_id, &ids).await?;
    let store_exists = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM store WHERE id = $1) AS "e!""#, store_id)
        .fetch_one(&mut *tx)
        .await?;
    if !store_exists {
        return Err(Error::NotFound("no such store".into()));
    }
    short
        .iter()
        .map(|item| {
            let (_, available) = known
                .iter()
                .find(|(id, _)| *id == item.product_id)
                .ok_or_else(|| Error::NotFound(format!("no such product: {}", item.product_id)))?;
            Ok(Shortage { product_id: item.product_id, requested: item.quantity, available: *available })
        })
        .collect()
}

async fn replay(ctx: &Context, key: &str, fingerprint: &str) -> Result<Placed> {
    let mut conn = ctx.pool.acquire().await?;
    let first = sqlx::query!("SELECT id, request_fingerprint FROM customer_order WHERE idempotency_key = $1", key)
        .fetch_one(&mut *conn)
        .await?;
    if first.request_fingerprint.as_deref() != Some(fingerprint) {
        return Err(Error::Invalid(
            "this Idempotency-Key was already used for a different order; use a new key".into(),
        ));
    }
    let order = load(&mut conn, first.id).await?.ok_or_else(|| Error::NotFound("no such order".into()))?;
    Ok(Placed::Replayed(order))
}

pub async fn load(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Option<Order>> {
    let Some(head) =
        sqlx::query!("SELECT id, store_id, status, created_at, updated_at FROM customer_order WHERE id = $1", order_id)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(None);
    };
    let items = sqlx::query_as!(
        Line,
        "SELECT product_id, quantity FROM order_item WHERE order_id = $1 ORDER BY product_id",
        order_id
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(Order {
        id: head.id,
        store_id: head.store_id,
        status: head
            .status
            .parse()
            .map_err(|_| sqlx::Error::Decode(format!("order status {:?}", head.status).into()))?,
        items,
        created_at: head.created_at,
        updated_at: head.updated_at,
    }))
}

/// The picker hands the order over: the tap is the fulfilment saga's person input, and the saga
/// has the store record the hand-over (its goods leave the stock). The answer shows the order
/// `fulfilled`, as the customer now has it. Only a paid order can be handed over, and only once:
/// a tap that comes too early, too late or again is a 409 that says why.
pub async fn fulfil(ctx: &Context, audit: &Audit, order_id: Uuid) -> Result<Order> {
    let mut tx = ctx.pool.begin().await?;
    if load(&mut tx, order_id).await?.is_none() {
        return Err(Error::NotFound("no such order".into()));
    }
    let actor = audit.actor();
    let applied = apply(&mut tx, ctx, order_id, &Input::Person(Picker::HandedOver), &actor).await?;
    // Read under the saga's lock, so the refusal names where the order is now.
    let order = load(&mut tx, order_id).await?.ok_or_else(|| Error::NotFound("no such order".into()))?;
    if let Applied::Refused { .. } = applied {
        return Err(Error::Conflict(match order.status {
            OrderStatus::Reserved => "the order cannot be handed over yet: its payment has not been approved".into(),
            OrderStatus::Fulfilled => "the order was already handed over".into(),
            status => format!("the order is {status} and can no longer be handed over"),
        }));
    }
    audit.record(&mut tx, 200).await?;
    tx.commit().await?;
    ctx.outbox.notify();
    Ok(order)
}

/// The customer cancels the order: its fulfilment saga refunds what was taken and releases the
/// goods, so the answer shows it `cancelling`. Cancelling again returns it unchanged; an order
/// handed over (or failed) cannot be cancelled.
pub async fn cancel(ctx: &Context, audit: &Audit, order_id: Uuid) -> Result<Order> {
    let mut tx = ctx.pool.begin().await?;
    let order = load(&mut tx, order_id).await?.ok_or_else(|| Error::NotFound("no such order".into()))?;
    if matches!(order.status, OrderStatus::Cancelling | OrderStatus::Cancelled) {
        return Ok(order);
    }
    let cancel = Input::Operator(Action::Compensate { reason: "cancelled by the customer".into() });
    let actor = audit.actor();
    let applied = apply(&mut tx, ctx, order_id, &cancel, &actor).await?;
    // Read under the saga's lock: the saga may have started to unwind since the first read.
    let order = load(&mut tx, order_id).await?.ok_or_else(|| Error::NotFound("no such order".into()))?;
    if let Applied::Refused { state, .. } = applied
        && !matches!(order.status, OrderStatus::Cancelling | OrderStatus::Cancelled)
    {
        return Err(Error::Conflict(format!("the order is {state} and can no longer be cancelled")));
    }
    audit.record(&mut tx, 200).await?;
    tx.commit().await?;
    ctx.outbox.notify();
    Ok(order)
}

/// Applies `input` to the order's fulfilment saga, which it locks, on behalf of `actor`.
async fn apply(
    tx: &mut PgConnection,
    ctx: &Context,
    order_id: Uuid,
    input: &InputOf<Fulfilment>,
    actor: &str,
) -> Result<Applied> {
    let row = store::lock(tx, order_id)
        .await?
        .ok_or_else(|| Error::Conflict("the order has no fulfilment to act on".into()))?;
    engine_outcome(engine::apply::<Fulfilment>(tx, &ctx.timing, &row, input, Actor::Caller(actor)).await, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_total_is_summed_without_wrapping_and_bounded() {
        assert_eq!(total(&[598, 2]).unwrap(), 600);
        let highest = stock::MAX_QUANTITY * 100_000_000;
        let err = total(&vec![highest; MAX_ITEMS]).unwrap_err().to_string();
        assert!(err.contains("10000000000000000000 cents"), "the true sum, not a wrapped one: {err}");
        assert!(total(&[MAX_ORDER_CENTS]).is_ok());
        assert!(total(&[MAX_ORDER_CENTS, 1]).is_err());
    }
}
