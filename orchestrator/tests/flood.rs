//! One client address against a real `orchestrator` process, with its default limits, as an
//! attacker tries it: holding as many connections as it can (silent ones, half-sent headers,
//! kept-alive ones sending refused requests), and flooding the log with long paths. What must
//! hold: a client from another address is served in normal time, the process's memory stays
//! bounded and is given back, and every request costs the log a bounded number of bytes.
//!
//! Its own test target: each test runs a process of its own and measures it from outside.

mod support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use support::{
    TestEnv,
    http::{Connection, connect},
    process::{Orchestrator, rss_kib, target_dir},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const VISITOR: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// Sockets the attacker tries to hold at once.
const SOCKETS: usize = 2_000;
/// Bytes of headers a half-sent request carries before it stops, unfinished.
const HALF_SENT: usize = 380 * 1024;

/// What the attacker holds.
#[derive(Default)]
struct Held {
    open: AtomicUsize,
    connects: AtomicUsize,
    closed_by_server: AtomicUsize,
}

#[derive(Clone, Copy)]
enum Style {
    /// Connects and says nothing.
    Silent,
    /// Sends most of a huge header block, and never the end of it.
    HalfSent,
    /// Sends a refused request every second on one kept-alive connection.
    KeptAlive,
}

/// One attacker socket, reconnected whenever the server closes it, until `stop`.
async fn attack(addr: SocketAddr, style: Style, held: Arc<Held>, stop: Arc<AtomicBool>) {
    while !stop.load(Relaxed) {
        let Ok(stream) = connect(addr, Some(ATTACKER)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        held.connects.fetch_add(1, Relaxed);
        held.open.fetch_add(1, Relaxed);
        let closed = hold(stream, style, &stop).await;
        held.open.fetch_sub(1, Relaxed);
        if closed {
            held.closed_by_server.fetch_add(1, Relaxed);
            // A real attacker reconnects at once; a pause keeps this machine usable for the test.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Holds `stream` in `style` until the server closes it (`true`) or `stop` (`false`).
async fn hold(stream: TcpStream, style: Style, stop: &AtomicBool) -> bool {
    let (mut read, mut write) = stream.into_split();
    let closed = Arc::new(AtomicBool::new(false));
    let reader = {
        let closed = closed.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0; 4096];
            while matches!(read.read(&mut buffer).await, Ok(n) if n > 0) {}
            closed.store(true, Relaxed);
        })
    };
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ticks = 0u64;
    while !stop.load(Relaxed) && !closed.load(Relaxed) {
        let chunk: Vec<u8> = match style {
            Style::Silent => Vec::new(),
            Style::HalfSent if sent == 0 => b"GET /stores HTTP/1.1\r\nhost: x\r\nx-pad: ".to_vec(),
            Style::HalfSent if sent < HALF_SENT => vec![b'a'; 16 * 1024],
            Style::HalfSent => Vec::new(),
            Style::KeptAlive if ticks.is_multiple_of(10) => {
                b"PATCH /orders HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".to_vec()
            }
            Style::KeptAlive => Vec::new(),
        };
        if !chunk.is_empty() {
            match tokio::time::timeout(Duration::from_secs(1), write.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                Ok(Err(_)) => break,
                Err(_) => {} // the server reads no more: the socket is held all the same
            }
        }
        tick.tick().await;
        ticks += 1;
    }
    let closed = closed.load(Relaxed) || !stop.load(Relaxed);
    reader.abort();
    closed
}

/// Milliseconds, at the median and the worst, of `samples`.
fn median_and_max(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

/// The connections the server says it serves, read from its metrics with the admin key, from the
/// visitor's address.
async fn open_connections(addr: SocketAddr) -> u64 {
    let mut admin = Connection::open_with(addr, Some(VISITOR), support::ADMIN_KEY).await.expect("the admin connects");
    let metrics = admin.send_text("GET", "/metrics").await.expect("metrics are served");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("http_open_connections "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .expect("the gauge is there") as u64
}

/// A store and a `client` key, made with the admin key; returns the store's id and the key.
async fn store_and_client_key(addr: SocketAddr) -> (String, String) {
    let mut admin = Connection::open(addr).await.expect("the admin connects");
    let store = admin
        .send("POST", "/stores", &[], Some(&json!({"name": "Soho", "service_area": "W1"})))
        .await
        .expect("a store is made");
    assert_eq!(store.status, 201, "{:?}", store.body);
    let key = admin
        .send("POST", "/api-keys", &[], Some(&json!({"name": "store-front", "role": "client"})))
        .await
        .expect("a key is made");
    assert_eq!(key.status, 201, "{:?}", key.body);
    (store.body["id"].as_str().unwrap().to_owned(), key.body["key"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_every_socket_it_can_starves_no_one_and_memory_comes_back() {
    let env = TestEnv::new().await;
    let log = target_dir().join("flood").join("connections.log");
    let server = Orchestrator::serve(&env.config, &[], log).await;
    let (store, key) = store_and_client_key(server.addr).await;
    let path = format!("/stores/{store}");

    // The visitor, from another address: a new connection for each request, as a browser or a
    // load balancer's probe would open one.
    let visit = async |count: usize| {
        let mut millis = Vec::new();
        for _ in 0..count {
            let started = Instant::now();
            let answered = tokio::time::timeout(Duration::from_secs(60), async {
                let mut connection = Connection::open_with(server.addr, Some(VISITOR), &key).await?;
                connection.send("GET", &path, &[], None).await
            })
            .await;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            match answered {
                Ok(Ok(answer)) => assert_eq!(answer.status, 200, "the visitor is served: {:?}", answer.body),
                Ok(Err(error)) => panic!("the visitor's request failed after {elapsed:.0} ms: {error}"),
                Err(_) => panic!("the visitor waited over 60 s"),
            }
            millis.push(elapsed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        median_and_max(&mut millis)
    };
    let (calm_median, _) = visit(10).await;
    let rss_before = server.rss_kib();

    let held = Arc::new(Held::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = JoinSet::new();
    for n in 0..SOCKETS {
        let style = match n % 3 {
            0 => Style::Silent,
            1 => Style::HalfSent,
            _ => Style::KeptAlive,
        };
        attackers.spawn(attack(server.addr, style, held.clone(), stop.clone()));
    }
    // Memory, sampled while the attack runs.
    let rss_peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (rss_peak, stop, pid) = (rss_peak.clone(), stop.clone(), server.pid());
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                rss_peak.fetch_max(rss_kib(pid).unwrap_or(0) as usize, Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Every attacker socket has connected at least once, and the half-sent ones have had time
    // to send what they can.
    support::eventually(Duration::from_secs(30), "every attacker socket to connect", || {
        let connects = held.connects.load(Relaxed);
        async move { (connects >= SOCKETS).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held_during = held.open.load(Relaxed);
    let served_during = open_connections(server.addr).await;
    let (attacked_median, attacked_max) = visit(20).await;
    let held_after_visits = held.open.load(Relaxed);

    stop.store(true, Relaxed);
    while attackers.join_next().await.is_some() {}
    sampler.await.unwrap();
    let rss_peak = rss_peak.load(Relaxed) as u64;
    // Memory freed is given back: closing the sockets takes the server a moment.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rss_after = server.rss_kib();
    while rss_after > rss_before + 16 * 1024 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_after = server.rss_kib();
    }
    eprintln!(
        "connection flood: {SOCKETS} attacker sockets ({} connects, {} closed by the server); open at once on the \
         attacker's side: {held_during} ({held_after_visits} after the visits), served by the server: {served_during}; visitor: calm p50 {calm_median:.1} ms, attacked p50 \
         {attacked_median:.1} ms, max {attacked_max:.1} ms; RSS {} MiB before, {} MiB peak, {} MiB after",
        held.connects.load(Relaxed),
        held.closed_by_server.load(Relaxed),
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024,
    );
    assert!(attacked_max < 2_000.0, "the visitor waited {attacked_max:.0} ms under the attack");
    assert!(served_during <= 128 + 2, "the server served {served_during} connections, most of them one address's");
    assert!(
        rss_peak <= rss_before + 64 * 1024,
        "memory grew from {} to {} MiB under the attack",
        rss_before / 1024,
        rss_peak / 1024
    );
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "memory stayed at {} MiB after the attack, from {} MiB before",
        rss_after / 1024,
        rss_before / 1024
    );
    drop(server);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_long_paths_costs_the_log_a_few_bytes_a_request() {
    let env = TestEnv::new().await;
    let log = target_dir().join("flood").join("log.log");
    let server = Orchestrator::serve(&env.config, &[], log).await;
    let (_, key) = store_and_client_key(server.addr).await;
    let long = "a".repeat(8 * 1024);

    // Without a key, from one address: past its small budget, every request is a 429.
    let (anonymous, anonymous_bytes) = flood(&server, FLOODER, "", &format!("/{long}"), 16, 125).await;
    // With a client key: within its budget the requests reach the router and are answered.
    let (keyed, keyed_bytes) = flood(&server, FLOODER, &key, &format!("/stores/{long}"), 8, 50).await;

    let text = std::fs::read_to_string(&server.log).expect("the log is readable");
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    let (per_anonymous, per_keyed) = (anonymous_bytes as f64 / anonymous as f64, keyed_bytes as f64 / keyed as f64);
    eprintln!(
        "log flood, {}-byte paths: {anonymous} requests without a key wrote {anonymous_bytes} bytes \
         ({per_anonymous:.0} a request); {keyed} with a key wrote {keyed_bytes} bytes ({per_keyed:.0} a request); \
         longest line {longest} bytes",
        long.len() + 1
    );
    assert!(per_anonymous <= 64.0, "{per_anonymous:.0} log bytes per refused request");
    assert!(per_keyed <= 512.0, "{per_keyed:.0} log bytes per keyed request");
    assert!(longest <= 1_024, "a log line of {longest} bytes");
    drop(server);
    env.teardown().await;
}

/// Sends `per_connection` requests for `path` on each of `connections` kept-alive connections
/// from `from`, with `key` (none when empty); returns the requests sent and the log bytes they
/// caused.
async fn flood(
    server: &Orchestrator,
    from: IpAddr,
    key: &str,
    path: &str,
    connections: usize,
    per_connection: usize,
) -> (usize, u64) {
    let before = server.log_bytes();
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let (addr, key, path) = (server.addr, key.to_owned(), path.to_owned());
        tasks.spawn(async move {
            let mut sent = 0;
            let mut connection = Connection::open_with(addr, Some(from), &key).await.expect("connects");
            for _ in 0..per_connection {
                if !connection.ready().await {
                    connection = Connection::open_with(addr, Some(from), &key).await.expect("connects again");
                }
                if connection.send("GET", &path, &[], None).await.is_ok() {
                    sent += 1;
                }
            }
            sent
        });
    }
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        sent += done.unwrap();
    }
    // Each request's line, if any, is written before its answer is sent.
    (sent, server.log_bytes() - before)
}
