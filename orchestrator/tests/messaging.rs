//! Dead letters, against a real RabbitMQ: a message no consumer can ever handle goes to the dead
//! letters at once, is stored in Postgres with the reason, and an operator can replay it once or
//! delete it.

mod support;

use std::time::Duration;

use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use platform::{
    messaging::{Exchange, Queue, connect, relay::RelayFaults},
    saga::Actor,
};
use poem::http::StatusCode;
use sagas::fulfilment;
use serde_json::Value;
use support::{ADMIN_KEY, TestEnv, client, eventually, stocked_store};
use uuid::Uuid;

#[tokio::test]
async fn poison_messages_are_stored_with_their_reason_and_can_be_replayed_once() {
    let env = TestEnv::new().await;
    let app = env.start(support::everything(), RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let topology = sagas::registry().topology(env.config.namespace.clone());
    let connection = connect(&env.config.amqp_url, "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();

    let future_version = br#"{"version": 99, "message_id": "00000000-0000-0000-0000-000000000001"}"#.to_vec();
    let unknown_type = serde_json::to_vec(&serde_json::json!({
        "version": 1, "message_id": uuid::Uuid::new_v4(), "sent_at": "2026-01-01T00:00:00Z",
        "type": "LaunchRocket", "payload": {}
    }))
    .unwrap();
    // (route, body, the queue it dies in, what the reason must say)
    let poison: [(&str, Vec<u8>, Queue, &str); 3] = [
        ("warehouse", b"{not json".to_vec(), Queue::Commands(sagas::WAREHOUSE), "malformed"),
        ("inventory", future_version, Queue::Commands(sagas::INVENTORY), "version 99"),
        ("orchestrator", unknown_type, Queue::Replies, "correlation id"),
    ];
    for (route, body, _, _) in &poison {
        let exchange = if *route == "orchestrator" { Exchange::Replies } else { Exchange::Commands };
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let properties = BasicProperties::default().with_message_id(uuid::Uuid::new_v4().to_string().into());
        channel
            .basic_publish(topology.exchange(exchange).into(), (*route).into(), options, body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let list = || async {
        let response = api.get("/dead-letters").send().await;
        response.assert_status_is_ok();
        let page: Value = response.0.into_body().into_json().await.unwrap();
        page["items"].as_array().unwrap().clone()
    };
    let stored = eventually(Duration::from_secs(10), "three stored dead letters", || async {
        Some(list().await).filter(|l| l.len() == 3)
    })
    .await;
    for (_, body, queue, reason) in &poison {
        let letter = stored
            .iter()
            .find(|l| l["body"].as_str().unwrap().as_bytes() == body.as_slice())
            .unwrap_or_else(|| panic!("{} was not stored", String::from_utf8_lossy(body)));
        assert_eq!(letter["queue"], topology.queue(*queue), "{letter}");
        assert!(letter["reason"].as_str().unwrap().contains(reason), "{letter}");
        assert!(letter["replayed_at"].is_null());
    }

    // Replayed once: the message goes back to its queue, dies again there, and is a new dead letter.
    let rocket = stored.iter().find(|l| l["queue"] == topology.queue(Queue::Replies)).unwrap();
    let replay = format!("/dead-letters/{}/replay", rocket["id"]);
    let replayed: Value = {
        let response = api.post(&replay).send().await;
        response.assert_status_is_ok();
        response.0.into_body().into_json().await.unwrap()
    };
    assert!(replayed["replayed_at"].is_string() && replayed["replay_message_id"].is_string(), "{replayed}");
    api.post(&replay).send().await.assert_status(StatusCode::CONFLICT);
    let again = eventually(Duration::from_secs(10), "the replayed message dead again", || async {
        list().await.into_iter().find(|l| l["id"] != rocket["id"] && l["body"] == rocket["body"])
    })
    .await;
    assert!(again["replayed_at"].is_null());

    // Deleted: gone, and a second delete says so.
    let path = format!("/dead-letters/{}", again["id"]);
    api.delete(&path).send().await.assert_status(StatusCode::NO_CONTENT);
    api.get(&path).send().await.assert_status(StatusCode::NOT_FOUND);
    api.delete(&path).send().await.assert_status(StatusCode::NOT_FOUND);
    api.post("/dead-letters/999999/replay").send().await.assert_status(StatusCode::NOT_FOUND);

    platform::messaging::close(&connection, "done").await;
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn a_command_refused_for_good_fails_its_step_at_once_with_the_real_reason() {
    let mut env = TestEnv::new().await;
    // A deadline far longer than the test: whatever unwinds the saga, it is not a resend.
    env.config.saga.command_timeout = Duration::from_secs(30);
    env.config.saga.max_timeout = Duration::from_secs(30);
    let app = env.start(support::everything(), RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let (store, product) = stocked_store(&api).await;
    let (store_id, product_id): (Uuid, Uuid) = (store.parse().unwrap(), product.parse().unwrap());

    // An order whose charge the payment side can never take: a negative amount breaks its rules.
    // (The API refuses such an order; this one is made below it, to prove the engine's path.)
    let order_id = Uuid::now_v7();
    let pool = env.pool().await;
    let mut tx = pool.begin().await.unwrap();
    stock::level::reserve(&mut tx, store_id, product_id, 1).await.unwrap().expect("the store has stock");
    let items = vec![fulfilment::Line { product_id, quantity: 1 }];
    let data = fulfilment::Data { store_id, items, amount_cents: -100, handed_over: false };
    fulfilment::start(&mut tx, &env.config.saga, order_id, &data, Actor::Engine, Vec::new()).await.unwrap();
    tx.commit().await.unwrap();
    app.context().outbox.notify();

    let saga = eventually(Duration::from_secs(15), "the order's saga to unwind", || async {
        let saga: Value = api.get(format!("/sagas/{order_id}")).send().await.json().await.value().deserialize();
        (saga["state"] == "cancelled").then_some(saga)
    })
    .await;
    let events: Vec<&str> =
        saga["transitions"].as_array().unwrap().iter().map(|t| t["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["Started", "CommandRefused", "PaymentRefunded", "ReservationReleased"], "{saga}");
    let refused = &saga["transitions"][1];
    assert_eq!(refused["detail"]["command"], "ChargePayment", "{saga}");
    let reason = refused["detail"]["reason"].as_str().unwrap();
    assert!(reason.contains("payment_amount_cents_check"), "the timeline names the real reason: {reason}");
    // Sent once, refused once: one dead letter.
    let letters: Value = api.get("/dead-letters").send().await.json().await.value().deserialize();
    let letters = letters["items"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["type"], "ChargePayment", "{letters:?}");
    app.stop().await;
    env.teardown().await;
}
