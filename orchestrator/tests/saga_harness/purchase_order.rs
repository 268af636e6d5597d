//! The harness's runs over purchase orders: how to start one, how a participant refuses each of its
//! commands, and where its effects must be at each end.

use super::*;

/// Purchase orders, started by hand for 50 while the warehouse holds 100.
struct PurchaseOrderUnderTest;

const PURCHASED: i64 = 50;

impl KindUnderTest for PurchaseOrderUnderTest {
    type Kind = sagas::purchase_order::PurchaseOrder;

    async fn start(h: &Harness) -> Uuid {
        let mut conn = h.pool().acquire().await.unwrap();
        let audit = audit(h.pool()).await;
        orchestrator::purchasing::start(&h.ctx, &mut conn, &audit, h.product_id, PURCHASED, None).await.unwrap()
    }

    async fn refuse(h: &mut Harness, command: &str) -> bool {
        match command {
            "PlacePurchase" => h.set("SUPPLIER_DECLINE_RATE", "1"),
            // The warehouse takes every delivery in.
            "ReceivePurchase" => return false,
            other => panic!("say how a participant refuses {other}"),
        }
        true
    }

    async fn check_effects(h: &Harness, saga: Uuid, end: &str) {
        let (booked, quantity): (i64, i64) = sqlx::query_as(
            "SELECT count(*), COALESCE(sum(on_hand_delta), 0)::int8 FROM stock_movement
             WHERE reference = $1 AND reason = 'purchase_received'",
        )
        .bind(saga)
        .fetch_one(h.pool())
        .await
        .unwrap();
        match end {
            "received" => assert_eq!((booked, quantity), (1, PURCHASED)),
            "cancelled" => assert_eq!(booked, 0),
            // The booking's answer, or the cancel's, never confirmed: whatever ran, ran once.
            "failed" => assert!(booked <= 1),
            other => panic!("no effects defined for a purchase order that ended {other}"),
        }
        assert_eq!(h.stock().await.1, WAREHOUSE + quantity, "the warehouse holds what was booked in, once");
    }
}

#[tokio::test]
async fn every_purchase_order_step_fails_in_turn_and_unwinds_cleanly() {
    let runs = every_step_fails_in_turn::<PurchaseOrderUnderTest>().await;
    assert!(runs >= 8, "{runs} runs");
}
