//! What the broker holds for a namespace: messages ready in each queue and consumers on it, read
//! with a passive declare (which changes nothing).

use std::time::Duration;

use lapin::{options::QueueDeclareOptions, types::FieldTable};
use platform::messaging::{Queue, close, connect};

/// Every queue of a deployment.
pub const QUEUES: [Queue; 5] = [
    Queue::Commands(sagas::WAREHOUSE),
    Queue::Commands(sagas::INVENTORY),
    Queue::Commands(sagas::PAYMENT),
    Queue::Replies,
    Queue::DeadLetters,
];

/// A probe of a broker that is restarting must fail, not hang.
const PROBE_WITHIN: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct QueueState {
    pub queue: Queue,
    /// Ready messages (not those delivered and still unacknowledged).
    pub messages: u32,
    pub consumers: u32,
}

pub async fn queue_state(amqp_url: &str, namespace: &str, queue: Queue) -> Result<QueueState, String> {
    Ok(queue_states(amqp_url, namespace, &[queue]).await?.remove(0))
}

pub async fn queue_states(amqp_url: &str, namespace: &str, queues: &[Queue]) -> Result<Vec<QueueState>, String> {
    let probe = async {
        let connection = connect(amqp_url, "fault-suite-probe").await?;
        let channel = connection.create_channel().await?;
        let topology = sagas::registry().topology(namespace.to_owned());
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let mut states = Vec::with_capacity(queues.len());
        for &queue in queues {
            let declared = channel.queue_declare(topology.queue(queue).into(), passive, FieldTable::default()).await?;
            states.push(QueueState { queue, messages: declared.message_count(), consumers: declared.consumer_count() });
        }
        close(&connection, "probed").await;
        Ok::<_, lapin::Error>(states)
    };
    match tokio::time::timeout(PROBE_WITHIN, probe).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("the broker did not answer in time".into()),
    }
}
