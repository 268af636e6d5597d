//! The migrations against data written before them: what a later migration fills in for rows an
//! earlier build wrote, checked on a database migrated up to the migration before it.

mod support;

use std::borrow::Cow;

use platform::db::MIGRATOR;
use sqlx::{Connection, PgConnection, migrate::Migrator};
use support::TestEnv;
use uuid::Uuid;

/// Migrates `conn` with the migrations before `version` only.
async fn migrate_before(conn: &mut PgConnection, version: i64) {
    let earlier: Vec<_> = MIGRATOR.migrations.iter().filter(|m| m.version < version).cloned().collect();
    let migrator = Migrator { migrations: Cow::Owned(earlier), ..Migrator::DEFAULT };
    migrator.run(&mut *conn).await.expect("the earlier migrations apply");
}

#[tokio::test]
async fn sagas_written_before_0008_wait_on_what_their_kind_says_and_name_what_they_concern() {
    let env = TestEnv::new().await;
    let mut conn = PgConnection::connect(&env.config.database_url).await.unwrap();
    migrate_before(&mut conn, 8).await;
    let (store, milk, bread) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let sagas = [
        ("replenishment", "dispatched", false, serde_json::json!({"store_id": store, "product_id": milk})),
        ("replenishment", "failed", true, serde_json::json!({"store_id": store, "product_id": bread})),
        (
            "order_fulfilment",
            "charged",
            false,
            serde_json::json!({"store_id": store, "items": [{"product_id": milk, "quantity": 1},
                {"product_id": bread, "quantity": 2}], "amount_cents": 300}),
        ),
        ("order_fulfilment", "fulfilled", true, serde_json::json!({"store_id": store, "items": [], "amount_cents": 0})),
    ];
    let mut ids = Vec::new();
    for (kind, state, closed, data) in &sagas {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO saga (id, kind, state, data, closed_at) VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END)",
        )
        .bind(id)
        .bind(kind)
        .bind(state)
        .bind(data)
        .bind(closed)
        .execute(&mut conn)
        .await
        .unwrap();
        ids.push(id);
    }

    MIGRATOR.run(&mut conn).await.expect("the rest applies on top");

    let awaits: Vec<String> = sqlx::query_scalar("SELECT awaits FROM saga WHERE id = ANY($1) ORDER BY id")
        .bind(&ids)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(awaits, ["participant", "operator", "person", "nothing"]);
    let concerns: Vec<(Uuid, Option<Uuid>, Option<Uuid>)> = sqlx::query_as(
        "SELECT saga_id, store_id, product_id FROM saga_concern ORDER BY saga_id, product_id = $1 DESC NULLS LAST",
    )
    .bind(milk)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        concerns,
        [
            (ids[0], Some(store), Some(milk)),
            (ids[1], Some(store), Some(bread)),
            (ids[2], Some(store), Some(milk)),
            (ids[2], Some(store), Some(bread)),
            (ids[3], Some(store), None),
        ],
        "an order's saga concerns every product it lists; one with no line, its store"
    );
    conn.close().await.unwrap();
    env.teardown().await;
}
