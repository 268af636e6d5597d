//! The supplier worker process: consumes its command queue, ships orders as their lead time
//! passes, and relays its replies.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    participants::run_worker(sagas::purchase_order::SUPPLIER).await
}
