//! History mode: closed replenishments stored before a run, with the rows a real one leaves
//! behind (the saga, its four transitions, its replenishment and shipment, two stock movements,
//! nine outbox rows and four inbox rows), so that a run shows what a full database costs.
//!
//! Their ids are ordered by time, as the system's own (UUID v7) are, so that the indexes on them
//! grow the way they do in production.
//!
//! Their times fall within the last 50 minutes: inside every retention window, so that the
//! janitor leaves all of them in place while the run is measured (the worst case: every table
//! as full as it gets).

use sqlx::PgPool;

/// Stores `count` closed sagas over the seeded (store, product) pairs, in batches.
pub async fn store(pool: &PgPool, count: usize) {
    const BATCH: usize = 50_000;
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done) as i64;
        let mut tx = pool.begin().await.unwrap();
        for statement in STATEMENTS {
            let statement = statement.replace("$n", &n.to_string());
            sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        tx.commit().await.unwrap();
        done += n as usize;
        eprintln!("history: {done}/{count} closed sagas stored");
    }
    // As a database that has held its history for a while: vacuumed, analysed, checkpointed, so
    // that the run does not pay for the bulk load's aftermath.
    for maintenance in ["VACUUM ANALYZE", "CHECKPOINT"] {
        sqlx::query(maintenance).execute(pool).await.unwrap();
    }
}

const STATEMENTS: &[&str] = &[
    // A time-ordered id, as a v7 UUID is: the milliseconds first, then random bits.
    "CREATE OR REPLACE FUNCTION pg_temp.v7(at timestamptz) RETURNS uuid VOLATILE LANGUAGE sql AS
     $$ SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::int8), 12, '0') || substr(md5(random()::text), 1, 20))::uuid $$",
    "CREATE TEMP TABLE h ON COMMIT DROP AS
     SELECT pg_temp.v7(at) AS id, pg_temp.v7(at + interval '10 ms') AS shipment, store_id, product_id, quantity, at
     FROM (SELECT i.store_id, i.product_id, 1 + (random() * 9)::int8 AS quantity,
                  now() - random() * interval '50 minutes' AS at
     FROM generate_series(1, $n) g
     JOIN (SELECT store_id, product_id, row_number() OVER () - 1 AS k, count(*) OVER () AS total FROM inventory) i
       ON i.k = g % i.total) drawn",
    "INSERT INTO saga (id, kind, state, data, version, attempt, created_at, updated_at, closed_at, trace_id)
     SELECT id, 'replenishment', 'received',
            jsonb_build_object('store_id', store_id, 'product_id', product_id, 'quantity_requested', quantity,
                               'shipment_id', shipment, 'quantity_shipped', quantity),
            3, 1, at, at + interval '30 ms', at + interval '30 ms', replace(gen_random_uuid()::text, '-', '')
     FROM h",
    "INSERT INTO replenishment (saga_id, store_id, product_id, quantity_requested, quantity_shipped, shipment_id, status, created_at, closed_at)
     SELECT id, store_id, product_id, quantity, quantity, shipment, 'received', at, at + interval '30 ms' FROM h",
    "INSERT INTO shipment (id, replenishment_id, store_id, product_id, quantity, status, created_at, updated_at)
     SELECT shipment, id, store_id, product_id, quantity, 'received', at, at + interval '20 ms' FROM h",
    "INSERT INTO saga_transition (saga_id, from_state, to_state, event, detail, actor, at)
     SELECT id, s.from_state, s.to_state, s.event, s.detail, s.actor, at + s.after
     FROM h, (VALUES (NULL, 'requested', 'Started', '{\"reason\": \"bench history\"}'::jsonb, 'api', interval '0'),
                     ('requested', 'dispatched', 'Dispatched', '{\"quantity\": 5}', 'engine', interval '10 ms'),
                     ('dispatched', 'received', 'Received', '{}', 'engine', interval '30 ms'),
                     ('received', 'received', 'Closed', '{}', 'engine', interval '30 ms'))
              AS s(from_state, to_state, event, detail, actor, after)",
    "INSERT INTO stock_movement (store_id, product_id, on_hand_delta, reserved_delta, reason, reference, at)
     SELECT NULL, product_id, -quantity, 0, 'shipment_dispatched', id, at + interval '10 ms' FROM h
     UNION ALL
     SELECT store_id, product_id, quantity, 0, 'replenishment_received', id, at + interval '20 ms' FROM h",
    "INSERT INTO outbox (message_id, exchange, routing_key, message_type, correlation_id, headers, body, created_at)
     SELECT pg_temp.v7(at + m.after), m.exchange, m.route, m.type, id,
            jsonb_build_object('traceparent', '00-' || md5(id::text) || '-' || left(md5(m.type), 16) || '-01'),
            jsonb_build_object('saga_id', id, 'store_id', store_id, 'product_id', product_id, 'quantity', quantity),
            at + m.after
     FROM h, (VALUES ('saga.commands', 'warehouse', 'DispatchShipment', interval '0'),
                     ('warehouse.events', 'replenishment.created', 'replenishment.created', interval '0'),
                     ('saga.replies', 'replies', 'ShipmentDispatched', interval '8 ms'),
                     ('warehouse.events', 'shipment.dispatched', 'shipment.dispatched', interval '8 ms'),
                     ('saga.commands', 'inventory', 'ReceiveShipment', interval '10 ms'),
                     ('saga.replies', 'replies', 'ShipmentReceived', interval '20 ms'),
                     ('inventory.events', 'stock.replenished', 'stock.replenished', interval '20 ms'),
                     ('warehouse.events', 'shipment.received', 'shipment.received', interval '20 ms'),
                     ('inventory.events', 'stock.low', 'stock.low', interval '0'))
              AS m(exchange, route, type, after)",
    "INSERT INTO inbox (consumer, message_id, message_type, correlation_id, received_at)
     SELECT m.consumer, pg_temp.v7(at + m.after), m.type, id, at + m.after
     FROM h, (VALUES ('warehouse', 'DispatchShipment', interval '1 ms'),
                     ('orchestrator', 'ShipmentDispatched', interval '9 ms'),
                     ('inventory', 'ReceiveShipment', interval '11 ms'),
                     ('orchestrator', 'ShipmentReceived', interval '21 ms')) AS m(consumer, type, after)",
];
