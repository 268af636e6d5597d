//! The fulfilment's participants against a real Postgres: the payment worker moves money at most
//! once per order whatever is sent again, and the store's pick list lets an order be handed over
//! or released, never both, each recorded once.

use chrono::Utc;
use std::time::Duration;

use participants::{payment::PaymentWorker, supplier, supplier::SupplierWorker};
use platform::{
    config::Config,
    messaging::consumer::{Handler, handle_once},
    process::Services,
    protocol::{CommandFamily, Envelope, MessageFamily, PROTOCOL_VERSION},
};
use sagas::{
    fulfilment::{Command, Line, Reply},
    purchase_order,
};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// A fresh, migrated database of its own (named `test_…`, which `scripts/test` sweeps up).
async fn database() -> PgPool {
    let mut config = Config::from_env().expect("test environment is valid");
    let admin_url = config.database_url.clone();
    let name = format!("test_{}", &Uuid::new_v4().simple().to_string()[..16]);
    let mut admin = PgConnection::connect(&admin_url).await.expect("Postgres is reachable (see scripts/test)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
    let (base, query) = admin_url.split_once('?').map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
    config.database_url = match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    };
    config.db_max_connections = 4;
    platform::db::connect(&config).await.expect("the test database migrates")
}

/// A command as it arrives: every send has its own message id.
fn sent<C: CommandFamily>(command: &C) -> Envelope {
    let (message_type, payload) = command.to_parts();
    Envelope {
        version: PROTOCOL_VERSION,
        message_id: Uuid::new_v4(),
        correlation_id: Some(command.saga_id()),
        sent_at: Utc::now(),
        message_type: message_type.into(),
        payload,
        trace: None,
    }
}

/// Handles one send of an order's command; the replies written to the outbox for the order,
/// oldest first.
async fn handle<H: Handler>(handler: &H, pool: &PgPool, command: &Command) -> Vec<Reply> {
    handle_as(handler, pool, command).await
}

/// Handles one send of any kind's command; the replies written to the outbox for its saga, oldest
/// first.
async fn handle_as<H: Handler, C: CommandFamily, R: MessageFamily>(handler: &H, pool: &PgPool, command: &C) -> Vec<R> {
    handle_once(handler, pool, &sent(command)).await.expect("the handler succeeds");
    replies(pool, command).await
}

/// The replies written to the outbox for the saga of `command`, oldest first.
async fn replies<C: CommandFamily, R: MessageFamily>(pool: &PgPool, command: &C) -> Vec<R> {
    let rows: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT message_type, body FROM outbox WHERE correlation_id = $1 ORDER BY id")
            .bind(command.saga_id())
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(message_type, payload)| {
            let envelope = Envelope { message_type, payload, ..sent(command) };
            envelope.body::<R>().expect("the outbox holds replies")
        })
        .collect()
}

async fn payment(pool: &PgPool, order_id: Uuid) -> (String, i64) {
    sqlx::query_as("SELECT status, amount_cents FROM payment WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_charge_sent_twice_takes_the_money_once_and_answers_the_same() {
    let pool = database().await;
    let worker = PaymentWorker { decline_rate: 0.0 };
    let order_id = Uuid::new_v4();
    let charge = Command::ChargePayment { order_id, amount_cents: 450 };
    handle(&worker, &pool, &charge).await;
    let replies = handle(&worker, &pool, &charge).await;
    let approved = Reply::PaymentApproved { order_id, amount_cents: 450 };
    assert_eq!(replies, [approved.clone(), approved]);
    assert_eq!(payment(&pool, order_id).await, ("charged".into(), 450));

    let refund = Command::RefundPayment { order_id };
    handle(&worker, &pool, &refund).await;
    let replies = handle(&worker, &pool, &refund).await;
    let refunded = Reply::PaymentRefunded { order_id, amount_cents: 450 };
    assert_eq!(replies[2..], [refunded.clone(), refunded]);
    assert_eq!(payment(&pool, order_id).await, ("refunded".into(), 450));
    // A charge resent after the refund changes nothing.
    handle(&worker, &pool, &charge).await;
    assert_eq!(payment(&pool, order_id).await, ("refunded".into(), 450));
}

#[tokio::test]
async fn a_refund_that_comes_first_voids_the_payment_so_a_late_charge_is_declined() {
    let pool = database().await;
    let worker = PaymentWorker { decline_rate: 0.0 };
    let order_id = Uuid::new_v4();
    let replies = handle(&worker, &pool, &Command::RefundPayment { order_id }).await;
    assert_eq!(replies, [Reply::PaymentRefunded { order_id, amount_cents: 0 }]);
    let replies = handle(&worker, &pool, &Command::ChargePayment { order_id, amount_cents: 450 }).await;
    assert!(matches!(replies[1], Reply::PaymentDeclined { .. }), "{replies:?}");
    assert_eq!(payment(&pool, order_id).await, ("voided".into(), 0));
}

#[tokio::test]
async fn a_declined_order_is_declined_at_every_send() {
    let pool = database().await;
    let worker = PaymentWorker { decline_rate: 1.0 };
    let order_id = Uuid::new_v4();
    let charge = Command::ChargePayment { order_id, amount_cents: 450 };
    handle(&worker, &pool, &charge).await;
    let replies = handle(&PaymentWorker { decline_rate: 0.0 }, &pool, &charge).await;
    assert!(replies.iter().all(|r| matches!(r, Reply::PaymentDeclined { .. })), "{replies:?}");
    assert_eq!(payment(&pool, order_id).await.0, "declined");
}

/// A store holding 10 of a product, 3 of them reserved for an order.
async fn reserved_order(pool: &PgPool) -> (Uuid, Uuid, Vec<Line>) {
    let store: Uuid = sqlx::query_scalar("INSERT INTO store (name, service_area) VALUES ('Soho', 'W1') RETURNING id")
        .fetch_one(pool)
        .await
        .unwrap();
    let product: Uuid = sqlx::query_scalar("INSERT INTO product (sku, name) VALUES ('MILK', 'Milk') RETURNING id")
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO inventory (store_id, product_id, on_hand, reserved, reorder_threshold, target_level)
         VALUES ($1, $2, 10, 3, 1, 20)",
    )
    .bind(store)
    .bind(product)
    .execute(pool)
    .await
    .unwrap();
    (Uuid::new_v4(), store, vec![Line { product_id: product, quantity: 3 }])
}

async fn stock(pool: &PgPool, store: Uuid) -> (i64, i64) {
    sqlx::query_as("SELECT on_hand, reserved FROM inventory WHERE store_id = $1")
        .bind(store)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn store_worker() -> participants::inventory::InventoryWorker {
    let redis = platform::redis::Redis::new("redis://127.0.0.1:1").unwrap();
    participants::inventory::InventoryWorker {
        cache: stock::Cache::new(redis, "test"),
        simulation: participants::simulation::Simulation::default(),
    }
}

#[tokio::test]
async fn an_order_handed_over_cannot_be_released_and_a_second_record_changes_nothing() {
    let pool = database().await;
    let (order_id, store_id, items) = reserved_order(&pool).await;
    let store = store_worker();
    // On the pick list: nothing to answer until the picker acts.
    let replies = handle(&store, &pool, &Command::ListForPicking { order_id, store_id, items: items.clone() }).await;
    assert!(replies.is_empty(), "{replies:?}");

    let record = Command::RecordHandOver { order_id, store_id, items: items.clone() };
    let replies = handle(&store, &pool, &record).await;
    assert_eq!(replies, [Reply::HandOverRecorded { order_id }]);
    let replies = handle(&store, &pool, &record).await;
    assert_eq!(replies.last(), Some(&Reply::HandOverRecorded { order_id }), "the record sent again");
    assert_eq!(stock(&pool, store_id).await, (7, 0), "the goods left once");
    let listed_again =
        handle(&store, &pool, &Command::ListForPicking { order_id, store_id, items: items.clone() }).await;
    assert_eq!(listed_again.len(), replies.len(), "a late listing says nothing: {listed_again:?}");

    let release = Command::ReleaseReservation { order_id, store_id, items };
    let replies = handle(&store, &pool, &release).await;
    assert!(matches!(replies.last(), Some(Reply::ReleaseRefused { .. })), "{replies:?}");
    assert_eq!(stock(&pool, store_id).await, (7, 0));
}

#[tokio::test]
async fn an_order_released_cannot_be_handed_over_and_a_release_sent_twice_releases_once() {
    let pool = database().await;
    let (order_id, store_id, items) = reserved_order(&pool).await;
    let store = store_worker();
    let release = Command::ReleaseReservation { order_id, store_id, items: items.clone() };
    handle(&store, &pool, &release).await;
    let replies = handle(&store, &pool, &release).await;
    assert_eq!(replies, [Reply::ReservationReleased { order_id }, Reply::ReservationReleased { order_id }]);
    assert_eq!(stock(&pool, store_id).await, (10, 0));

    let replies = handle(&store, &pool, &Command::RecordHandOver { order_id, store_id, items: items.clone() }).await;
    assert!(matches!(replies.last(), Some(Reply::HandOverRefused { .. })), "{replies:?}");
    let replies = handle(&store, &pool, &Command::ListForPicking { order_id, store_id, items }).await;
    assert!(matches!(replies.last(), Some(Reply::PickingFailed { .. })), "{replies:?}");
    assert_eq!(stock(&pool, store_id).await, (10, 0));
}

#[tokio::test]
async fn a_purchase_order_is_taken_once_and_shipped_once_its_lead_time_has_passed() {
    let pool = database().await;
    let worker = SupplierWorker { decline_rate: 0.0, lead_time: Duration::from_secs(3600) };
    let (purchase_id, product_id) = (Uuid::new_v4(), Uuid::new_v4());
    let place = purchase_order::Command::PlacePurchase { purchase_id, product_id, quantity: 40 };
    let replies: Vec<purchase_order::Reply> = handle_as(&worker, &pool, &place).await;
    assert_eq!(replies, [], "taken: the answer comes when it ships");
    assert_eq!(supplier::ship_due(&pool).await.unwrap(), 0, "its lead time has not passed");
    // The lead time passes.
    sqlx::query("UPDATE supplier_order SET ships_at = now() - interval '1 second' WHERE purchase_id = $1")
        .bind(purchase_id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(supplier::ship_due(&pool).await.unwrap(), 1);
    assert_eq!(supplier::ship_due(&pool).await.unwrap(), 0, "shipped once");
    // A resend after the shipment answers what happened; a cancel comes too late.
    let _: Vec<purchase_order::Reply> = handle_as(&worker, &pool, &place).await;
    let cancel = purchase_order::Command::CancelPurchase { purchase_id, product_id };
    let replies: Vec<purchase_order::Reply> = handle_as(&worker, &pool, &cancel).await;
    let confirmed = purchase_order::Reply::PurchaseConfirmed { purchase_id, quantity: 40 };
    let late = purchase_order::Reply::PurchaseAlreadyShipped { purchase_id, quantity: 40 };
    assert_eq!(replies, [confirmed.clone(), confirmed, late]);
}

#[tokio::test]
async fn a_purchase_cancel_that_comes_first_makes_the_late_order_declined() {
    let pool = database().await;
    let worker = SupplierWorker { decline_rate: 0.0, lead_time: Duration::ZERO };
    let (purchase_id, product_id) = (Uuid::new_v4(), Uuid::new_v4());
    let cancel = purchase_order::Command::CancelPurchase { purchase_id, product_id };
    let _: Vec<purchase_order::Reply> = handle_as(&worker, &pool, &cancel).await;
    let place = purchase_order::Command::PlacePurchase { purchase_id, product_id, quantity: 40 };
    let replies: Vec<purchase_order::Reply> = handle_as(&worker, &pool, &place).await;
    assert!(matches!(replies[1], purchase_order::Reply::PurchaseDeclined { .. }), "{replies:?}");
    assert_eq!(supplier::ship_due(&pool).await.unwrap(), 0, "nothing ships");
}

#[tokio::test]
async fn each_worker_keeps_its_inbox_under_its_participants_name() {
    let config = Config::from_env().expect("test environment is valid");
    let services = Services::new(config, database().await, &sagas::registry()).unwrap();
    for worker in participants::WORKERS {
        let handler = (worker.handler)(&services).expect("the default settings are valid");
        assert_eq!(handler.inbox_name(), worker.participant.name);
    }
}
