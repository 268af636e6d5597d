//! The harness's runs over orders' fulfilments: how to start one, how a participant refuses each of its
//! commands, and where its effects must be at each end.

use super::*;

pub(crate) struct FulfilmentUnderTest;

impl KindUnderTest for FulfilmentUnderTest {
    type Kind = sagas::fulfilment::Fulfilment;

    async fn start(h: &Harness) -> Uuid {
        h.place_order().await
    }

    async fn refuse(h: &mut Harness, command: &str) -> bool {
        match command {
            "ChargePayment" => h.set("PAYMENT_DECLINE_RATE", "1"),
            "ListForPicking" => h.set("PICKING_FAILURE_RATE", "1"),
            // The store refuses the record only for goods it released, which the saga never does
            // once the picker handed them over.
            "RecordHandOver" => return false,
            other => panic!("say how a participant refuses {other}"),
        }
        true
    }

    async fn act(h: &Harness, saga: Uuid) {
        // The picker taps "handed over" on whatever is paid.
        let status: String = sqlx::query_scalar("SELECT status FROM customer_order WHERE id = $1")
            .bind(saga)
            .fetch_one(h.pool())
            .await
            .unwrap();
        if status == "paid" {
            let order =
                orders::fulfil(&h.ctx, &audit(h.pool()).await, saga).await.expect("a paid order is handed over");
            assert_eq!(order.status.as_ref(), "fulfilled", "the answer to the tap");
        }
    }

    async fn check_effects(h: &Harness, saga: Uuid, end: &str) {
        let (reserved, sold, released): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE reason = 'order_reserved'), count(*) FILTER (WHERE reason = 'order_fulfilled'),
                    count(*) FILTER (WHERE reason = 'order_cancelled')
             FROM stock_movement WHERE reference = $1",
        )
        .bind(saga)
        .fetch_one(h.pool())
        .await
        .unwrap();
        let payment: Option<(String, i64)> =
            sqlx::query_as("SELECT status, amount_cents FROM payment WHERE order_id = $1")
                .bind(saga)
                .fetch_optional(h.pool())
                .await
                .unwrap();
        let handed_over: bool =
            sqlx::query_scalar("SELECT coalesce((data->>'handed_over')::bool, false) FROM saga WHERE id = $1")
                .bind(saga)
                .fetch_one(h.pool())
                .await
                .unwrap();
        let kept = payment.as_ref().filter(|(status, _)| status == "charged").map_or(0, |(_, amount)| *amount);
        let value = ORDERED * 100; // the products' default price
        match end {
            "fulfilled" => assert_eq!((reserved, sold, released, kept), (1, 1, 0, value), "{payment:?}"),
            "cancelled" => assert_eq!((reserved, sold, released, kept), (1, 0, 1, 0), "{payment:?}"),
            // Handed over, but the store's record never confirmed: paid, never released; the
            // goods left the books once if the record ran at all.
            "failed" if handed_over => {
                assert_eq!((reserved, released, kept), (1, 0, value), "{payment:?}");
                assert!(sold <= 1);
                return;
            }
            // An undo never confirmed: whatever ran, ran once; nothing was sold or kept.
            "failed" => {
                assert_eq!((reserved, sold, kept), (1, 0, 0), "{payment:?}");
                assert!(released <= 1);
                return;
            }
            other => panic!("no effects defined for an order that ended {other}"),
        }
        let held: i64 = sqlx::query_scalar("SELECT reserved FROM inventory WHERE store_id = $1 AND product_id = $2")
            .bind(h.store_id)
            .bind(h.product_id)
            .fetch_one(h.pool())
            .await
            .unwrap();
        assert_eq!(held, 0, "an ended order holds no stock");
    }
}

#[tokio::test]
async fn every_fulfilment_step_fails_in_turn_and_unwinds_cleanly() {
    let runs = every_step_fails_in_turn::<FulfilmentUnderTest>().await;
    assert!(runs >= 11, "{runs} runs");
}
