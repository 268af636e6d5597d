//! Dead letters, against a real RabbitMQ: a message no consumer can ever handle goes to the dead
//! letters at once, is stored in Postgres with the reason, and an operator can replay it once or
//! delete it.

mod support;

use std::time::Duration;

use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use orchestrator::app::Roles;
use platform::messaging::{Exchange, Queue, Topology, connect, relay::RelayFaults};
use poem::http::StatusCode;
use serde_json::Value;
use support::{ADMIN_KEY, TestEnv, client, eventually};

#[tokio::test]
async fn poison_messages_are_stored_with_their_reason_and_can_be_replayed_once() {
    let env = TestEnv::new().await;
    let app = env.start(Roles::all(), RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    let topology = Topology::new(env.config.namespace.clone(), sagas::registry().participants());
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
