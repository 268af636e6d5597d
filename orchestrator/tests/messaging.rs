//! The broker side, against a real RabbitMQ: a message no consumer can ever handle goes to the
//! dead-letter queue at once instead of being redelivered forever, and the rest keep flowing.

mod support;

use std::time::Duration;

use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
};
use orchestrator::app::Roles;
use participants::messaging::{Exchange, Queue, Topology, connect, relay::RelayFaults};
use support::{TestEnv, eventually};

#[tokio::test]
async fn poison_messages_are_dead_lettered_at_once() {
    let env = TestEnv::new().await;
    let app = env.start(Roles::ALL, RelayFaults::default()).await;
    let topology = Topology::new(env.config.namespace.clone());
    let connection = connect(&env.config.amqp_url, "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();

    let future_version = br#"{"version": 99, "message_id": "00000000-0000-0000-0000-000000000001"}"#.to_vec();
    let unknown_type = serde_json::to_vec(&serde_json::json!({
        "version": 1, "message_id": uuid::Uuid::new_v4(), "sent_at": "2026-01-01T00:00:00Z",
        "type": "LaunchRocket", "payload": {}
    }))
    .unwrap();
    let poison: [(&str, Vec<u8>); 3] =
        [("warehouse", b"{not json".to_vec()), ("inventory", future_version), ("orchestrator", unknown_type)];
    for (route, body) in &poison {
        let exchange = if *route == "orchestrator" { Exchange::Replies } else { Exchange::Commands };
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        channel
            .basic_publish(
                topology.exchange(exchange).into(),
                (*route).into(),
                options,
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let dead = std::sync::Mutex::new(Vec::new());
    let dead_letters = topology.queue(Queue::DeadLetters);
    eventually(Duration::from_secs(10), "three dead letters", || {
        let (channel, dead_letters, dead) = (&channel, &dead_letters, &dead);
        async move {
            if let Some(message) =
                channel.basic_get(dead_letters.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap()
            {
                dead.lock().unwrap().push(message.delivery.data.clone());
            }
            (dead.lock().unwrap().len() == 3).then_some(())
        }
    })
    .await;
    let dead = dead.into_inner().unwrap();
    for (_, body) in &poison {
        assert!(dead.contains(body), "{} was not dead-lettered", String::from_utf8_lossy(body));
    }

    participants::messaging::close(&connection, "done").await;
    app.stop().await;
    env.teardown().await;
}
