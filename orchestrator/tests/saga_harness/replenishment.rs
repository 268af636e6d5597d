//! The harness's runs over replenishments: how to start one, how a participant refuses each of its
//! commands, and where its effects must be at each end.

use super::*;

struct ReplenishmentUnderTest;

impl KindUnderTest for ReplenishmentUnderTest {
    type Kind = sagas::replenishment::Replenishment;

    async fn start(h: &Harness) -> Uuid {
        h.start_saga().await
    }

    async fn refuse(h: &mut Harness, command: &str) -> bool {
        match command {
            "DispatchShipment" => {
                inventory::set_warehouse(&h.ctx, &audit(h.pool()).await, h.product_id, 0, Reorder::Keep).await.unwrap();
            }
            "ReceiveShipment" => h.set("RECEIPT_FAILURE_RATE", "1"),
            other => panic!("say how a participant refuses {other}"),
        }
        true
    }

    async fn check_effects(h: &Harness, saga: Uuid, end: &str) {
        // The goods are where the shipment says: in the store once received, else back home.
        let shipment: Option<String> = sqlx::query_scalar("SELECT status FROM shipment WHERE replenishment_id = $1")
            .bind(saga)
            .fetch_optional(h.pool())
            .await
            .unwrap();
        let received = shipment.as_deref() == Some("received");
        match end {
            "received" => assert!(received, "{shipment:?}"),
            "compensated" => assert!(!received, "{shipment:?}"),
            // The cancel was refused (the goods are in the store) or never confirmed (it ran).
            "failed" => assert!(matches!(shipment.as_deref(), Some("received" | "cancelled")), "{shipment:?}"),
            other => panic!("no effects defined for a replenishment that ended {other}"),
        }
        let (store, warehouse) = h.stock().await;
        let warehouse_had = if warehouse == 0 { 0 } else { WAREHOUSE };
        let moved = if received { REQUESTED } else { 0 };
        assert_eq!((store, warehouse), (10 + moved, warehouse_had - moved), "ended {end}: (store, warehouse)");
    }
}

#[tokio::test]
async fn every_replenishment_step_fails_in_turn_and_unwinds_cleanly() {
    let runs = every_step_fails_in_turn::<ReplenishmentUnderTest>().await;
    assert!(runs >= 9, "{runs} runs");
}
