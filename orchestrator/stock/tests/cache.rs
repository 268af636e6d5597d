//! The inventory cache against a real Redis: an older version never replaces a newer one, and a
//! Redis that does not answer makes the cache miss rather than fail.

use platform::{config::Config, redis::Redis};
use stock::{Cache, StockLevel};
use uuid::Uuid;

fn level(store_id: Uuid, product_id: Uuid, version: i64, on_hand: i64) -> StockLevel {
    StockLevel {
        store_id,
        product_id,
        on_hand,
        reserved: 0,
        reorder_threshold: 1,
        target_level: 10,
        version,
        // A fixed time, so two levels built alike compare equal.
        updated_at: chrono::DateTime::UNIX_EPOCH,
    }
}

fn namespace() -> String {
    format!("test-{}", &Uuid::new_v4().simple().to_string()[..12])
}

#[tokio::test]
async fn an_older_version_never_replaces_a_newer_one() {
    let config = Config::from_env().unwrap();
    let cache = Cache::new(Redis::new(&config.redis_url).unwrap(), &namespace());
    assert!(cache.ping().await, "Redis answers at {} (see scripts/test)", config.redis_url);
    let (store, product) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(cache.get(store, product).await, None);

    cache.put(&level(store, product, 2, 20)).await;
    // A slow reader that read version 1 before the change tries to fill the cache afterwards.
    cache.put(&level(store, product, 1, 10)).await;
    assert_eq!(cache.get(store, product).await, Some(level(store, product, 2, 20)));

    cache.put(&level(store, product, 3, 30)).await;
    assert_eq!(cache.get(store, product).await.map(|l| l.on_hand), Some(30));
}

#[tokio::test]
async fn namespaces_do_not_share_entries() {
    let config = Config::from_env().unwrap();
    let (a, b) = (
        Cache::new(Redis::new(&config.redis_url).unwrap(), &namespace()),
        Cache::new(Redis::new(&config.redis_url).unwrap(), &namespace()),
    );
    let (store, product) = (Uuid::new_v4(), Uuid::new_v4());
    a.put(&level(store, product, 1, 5)).await;
    assert!(a.get(store, product).await.is_some());
    assert_eq!(b.get(store, product).await, None);
}

#[tokio::test]
async fn an_unreachable_redis_is_a_miss_not_an_error() {
    let cache = Cache::new(Redis::new("redis://127.0.0.1:1").unwrap(), &namespace());
    let (store, product) = (Uuid::new_v4(), Uuid::new_v4());
    cache.put(&level(store, product, 1, 5)).await;
    assert_eq!(cache.get(store, product).await, None);
    assert!(!cache.ping().await);
}

#[tokio::test]
async fn a_level_about_to_change_is_gone_until_its_new_version_is_written() {
    let config = Config::from_env().unwrap();
    let namespace = namespace();
    let (writer, reader) = (
        Cache::new(Redis::new(&config.redis_url).unwrap(), &namespace),
        Cache::new(Redis::new(&config.redis_url).unwrap(), &namespace),
    );
    let (store, product) = (Uuid::new_v4(), Uuid::new_v4());
    writer.put(&level(store, product, 1, 10)).await;
    // The writer forgets the entry before its commit, and could die before writing version 2:
    // another process's read then misses and goes to Postgres instead of returning version 1.
    writer.forget([(store, product)]).await;
    assert_eq!(reader.get(store, product).await, None);
    writer.put(&level(store, product, 2, 7)).await;
    assert_eq!(reader.get(store, product).await.map(|l| l.version), Some(2));
}
