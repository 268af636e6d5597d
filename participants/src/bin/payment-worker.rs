//! The payment worker process: consumes its command queue and relays its replies.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    participants::run_worker(sagas::PAYMENT).await
}
