//! A client no one here wrote drives the README's walk against a running system over HTTP:
//! `darkstores-client`, which progenitor generates from the committed spec when it builds. A spec
//! a client generator cannot read, an operation renamed, or an answer that breaks its schema
//! fails here.

mod support;

use std::time::Duration;

use darkstores_client::{Client, types};
use orchestrator::app::Roles;
use platform::messaging::relay::RelayFaults;
use support::{ADMIN_KEY, TestEnv, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_client_runs_the_walk() {
    let env = TestEnv::new().await;
    let roles = Roles::all(participants::WORKERS).expect("every participant has a worker");
    let app = env.start(roles, RelayFaults::default()).await;
    let addr = app.addr().expect("the API listens");
    let auth = format!("Bearer {ADMIN_KEY}").parse().unwrap();
    let http = reqwest::Client::builder()
        .default_headers([(reqwest::header::AUTHORIZATION, auth)].into_iter().collect())
        .build()
        .unwrap();
    let api = Client::new_with_client(&format!("http://{addr}"), http);

    let store =
        types::NewStore { name: "Riverside".parse().unwrap(), service_area: "the river district".parse().unwrap() };
    let store = api.create_store(&store).await.expect("a store").into_inner();
    let product = types::NewProduct {
        sku: "OAT-MILK-1L".parse().unwrap(),
        name: "Oat milk 1 l".parse().unwrap(),
        price_cents: None,
    };
    let product = api.create_product(&product).await.expect("a product").into_inner();
    let stock = types::SetWarehouseStock { on_hand: 100, reorder: None };
    api.set_warehouse_stock(&product.id, &stock).await.expect("warehouse stock");
    let levels = types::SetInventory { on_hand: 10, reorder_threshold: 5, target_level: 20.try_into().unwrap() };
    api.set_inventory(&store.id, &product.id, &levels).await.expect("the store's levels");

    let item = types::OrderItem { product_id: product.id, quantity: 6.try_into().unwrap() };
    let order = types::NewOrder { store_id: store.id, items: vec![item] };
    let key = format!("basket-{}", store.id).parse().unwrap();
    let placed = api.place_order(Some(&key), &order).await.expect("an order").into_inner();
    assert_eq!(placed.status, types::OrderStatus::Reserved);

    // An error answer reaches the generated client with its status: 100 more cannot be reserved.
    let short = types::NewOrder {
        store_id: store.id,
        items: vec![types::OrderItem { product_id: product.id, quantity: 100.try_into().unwrap() }],
    };
    let refused = api.place_order(None, &short).await.expect_err("short stock is refused");
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(409), "{refused}");

    let kind = "replenishment".parse().unwrap();
    let sagas = api
        .list_sagas(None, None, None, Some(&kind), None, None, None, Some(&store.id), None, None, None, None)
        .await
        .expect("the store's replenishments")
        .into_inner();
    let [saga] = &sagas.items[..] else { panic!("one replenishment for the store: {:?}", sagas.items) };
    let saga = eventually(Duration::from_secs(20), "the replenishment to be received", || async {
        let saga = api.get_saga(&saga.id).await.ok()?.into_inner();
        (saga.state == "received").then_some(saga)
    })
    .await;
    let timeline: Vec<(&str, &str)> = saga.transitions.iter().map(|t| (t.to.as_str(), t.event.as_str())).collect();
    assert_eq!(
        timeline,
        [("requested", "Started"), ("dispatched", "ShipmentDispatched"), ("received", "StockReceived")]
    );
    let inventory = api.get_inventory(&store.id, &product.id).await.expect("the store's stock").into_inner();
    assert_eq!((inventory.on_hand, inventory.reserved, inventory.available), (26, 6, 20));
    let warehouse = api.get_warehouse_stock(&product.id).await.expect("the warehouse's stock").into_inner();
    assert_eq!(warehouse.on_hand, 84);

    app.stop().await;
    env.teardown().await;
}
