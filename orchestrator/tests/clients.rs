//! Who a request comes from, as the server's caps and budgets count it: connections per client
//! address, idle connections making room near the global cap, and trusted proxies naming their
//! clients (while anyone else's forwarding headers are ignored). Each test runs the real server
//! on a port of its own and connects from several loopback addresses, as several clients would.

mod support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use orchestrator::app::Roles;
use platform::{
    config::{Budget, RateLimits},
    messaging::relay::RelayFaults,
};
use support::{
    ADMIN_KEY, TestEnv, UNLIMITED,
    http::{Connection, connect},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const API_ONLY: Roles = Roles { api: true, engine: false, workers: Vec::new() };

fn local(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Sends `request` on `stream` and reads until the server closes it or `wait` passes.
async fn exchange(mut stream: TcpStream, request: &str, wait: Duration) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether the server closed `stream` within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(wait, stream.read_to_end(&mut rest)).await.is_ok()
}

const LIVE: &str = "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn one_address_holds_at_most_its_cap_and_the_next_connection_is_told_why() {
    let mut env = TestEnv::new().await;
    env.config.api.max_connections_per_client = 3;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let addr = app.addr().unwrap();

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(addr, Some(local(11))).await.unwrap());
    }
    // The server counts a connection once it has accepted it: the fourth is refused, with a
    // problem that names the setting, and closed.
    let fourth = support::eventually(Duration::from_secs(5), "a fourth connection to be refused", || async {
        let answer = exchange(connect(addr, Some(local(11))).await.unwrap(), LIVE, Duration::from_secs(3)).await;
        answer.starts_with("HTTP/1.1 429").then_some(answer)
    })
    .await;
    assert!(
        fourth.contains("HTTP_MAX_CONNECTIONS_PER_CLIENT") && fourth.to_lowercase().contains("retry-after: 1"),
        "{fourth}"
    );
    assert!(fourth.contains("application/problem+json"), "{fourth}");
    // Another address is not counted against this one.
    let other = exchange(connect(addr, Some(local(12))).await.unwrap(), LIVE, Duration::from_secs(3)).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // A connection given back makes room for the same address again.
    drop(held.pop());
    support::eventually(Duration::from_secs(5), "the address to be served again", || async {
        let answer = exchange(connect(addr, Some(local(11))).await.unwrap(), LIVE, Duration::from_secs(3)).await;
        answer.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    app.stop().await;
    env.teardown().await;
}

#[tokio::test]
async fn near_the_cap_the_connection_idle_for_longest_makes_room_for_a_new_one() {
    let mut env = TestEnv::new().await;
    env.config.api.max_connections = 8;
    env.config.api.read_timeout = Duration::from_secs(4);
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let addr = app.addr().unwrap();

    // Eight silent connections fill the server, the first one the longest idle.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect(addr, Some(local(21))).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A newcomer is served at once, well within the read timeout (4 s) that would otherwise have
    // been the wait.
    let started = std::time::Instant::now();
    let answer = exchange(connect(addr, Some(local(22))).await.unwrap(), LIVE, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "the newcomer waited {:?}", started.elapsed());
    assert!(closed_within(&mut idle[0], Duration::from_secs(2)).await, "the oldest idle connection made room");
    assert!(!closed_within(&mut idle[7], Duration::from_millis(200)).await, "the newest idle connection stays");

    // A connection busy with a request is never the one to go: a half-sent body keeps its
    // handler waiting while newcomers arrive.
    let mut busy = connect(addr, Some(local(23))).await.unwrap();
    let head = format!(
        "POST /stores HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    busy.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..8 {
        let answer = exchange(connect(addr, Some(local(24))).await.unwrap(), LIVE, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), busy.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "the busy connection was answered, not cut: {answer}");
    app.stop().await;
    env.teardown().await;
}

/// A budget of 2 requests, refilled at 1 a second: a third at once is a 429.
const TIGHT: Budget = Budget { per_second: 1, burst: 2 };

async fn statuses(addr: SocketAddr, from: IpAddr, headers: &[(&str, &str)], count: usize) -> Vec<u16> {
    let mut connection = Connection::open_with(addr, Some(from), "").await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..count {
        statuses.push(connection.send("GET", "/health/live", headers, None).await.unwrap().status);
    }
    statuses
}

#[tokio::test]
async fn a_trusted_proxy_names_its_clients_and_anyone_else_is_not_believed() {
    let mut env = TestEnv::new().await;
    env.config.api.rate_limits =
        RateLimits { anonymous: TIGHT, client: UNLIMITED, operator: UNLIMITED, admin: UNLIMITED };
    env.config.api.trusted_proxies = vec!["127.0.0.31/32".parse().unwrap()];
    env.config.api.max_connections_per_client = 2;
    let app = env.start(API_ONLY, RelayFaults::default()).await;
    let addr = app.addr().unwrap();
    let (proxy, stranger) = (local(31), local(32));

    // Through the proxy, each client has a budget of its own.
    let first = statuses(addr, proxy, &[("x-forwarded-for", "198.51.100.1")], 3).await;
    assert_eq!(first, [200, 200, 429], "one client behind the proxy, over its budget");
    let second = statuses(addr, proxy, &[("forwarded", "for=198.51.100.2;proto=https")], 2).await;
    assert_eq!(second, [200, 200], "another client behind the same proxy has its own budget");
    // A client naming a trusted proxy as a hop does not escape: the nearest untrusted hop counts.
    let hiding = statuses(addr, proxy, &[("x-forwarded-for", "198.51.100.1, 127.0.0.31")], 1).await;
    assert_eq!(hiding, [429], "the same client, behind a hop it claims is the proxy");

    // Anyone else's forwarding headers are ignored: each claim draws on the sender's own bucket.
    let mut spoofed = Vec::new();
    for n in 0..3 {
        let claim = format!("203.0.113.{n}");
        spoofed.extend(statuses(addr, stranger, &[("x-forwarded-for", claim.as_str())], 1).await);
    }
    assert_eq!(spoofed, [200, 200, 429], "a stranger cannot choose whose budget it spends");

    // The proxy's connections carry many clients: the per-client cap does not count them.
    let mut through = Vec::new();
    for _ in 0..4 {
        through.push(Connection::open_with(addr, Some(proxy), "").await.unwrap());
    }
    for (n, connection) in through.iter_mut().enumerate() {
        let client = format!("198.51.100.{}", 10 + n);
        let answer = connection.send("GET", "/health/live", &[("x-forwarded-for", &client)], None).await.unwrap();
        assert_eq!(answer.status, 200, "connection {n} through the proxy");
    }
    // But each client behind it may have only its cap of requests in flight: two half-sent
    // bodies hold two, and a third request of that client is refused while they wait.
    let body_head = |client: &str| {
        format!(
            "POST /stores HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        )
    };
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(addr, Some(proxy)).await.unwrap();
        stream.write_all(body_head("198.51.100.50").as_bytes()).await.unwrap();
        waiting.push(stream);
    }
    let third = support::eventually(Duration::from_secs(5), "a third request in flight to be refused", || async {
        let request =
            "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.50\r\nConnection: close\r\n\r\n";
        let answer = exchange(connect(addr, Some(proxy)).await.unwrap(), request, Duration::from_secs(3)).await;
        answer.starts_with("HTTP/1.1 429").then_some(answer)
    })
    .await;
    assert!(third.contains("requests in flight"), "{third}");
    let other = "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.51\r\nConnection: close\r\n\r\n";
    let answer = exchange(connect(addr, Some(proxy)).await.unwrap(), other, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "another client behind the proxy: {answer}");
    drop(waiting);
    app.stop().await;
    env.teardown().await;
}
