//! The warehouse worker process: consumes its command queue and relays its replies.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    participants::process::run_worker(participants::protocol::Participant::Warehouse).await
}
