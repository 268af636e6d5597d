//! The connections a server holds: how many, from which client, and which are idle. One client
//! address holds at most its cap; near the global cap, the connection idle for longest is closed
//! to make room for a new one, so that connections that do nothing cannot keep out one that
//! would.
//!
//! A connection is idle from when it opens until its first request arrives, and again from when
//! an answer has been handed to the connection until the next request. Half-sent headers count
//! as idle: no handler is working for them.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use tokio::sync::Notify;

use crate::{
    access::client::ClientAddr,
    http::refused::{self, Refusal},
};

pub struct Connections {
    state: Mutex<State>,
    /// A connection closed or fell idle: the accept loop may find room.
    changed: Notify,
    max: usize,
    per_client: usize,
    /// Past this many open, each new connection evicts the longest-idle one.
    high_water: usize,
}

#[derive(Default)]
struct State {
    open: usize,
    next_id: u64,
    /// Connections (and, through trusted proxies, requests in flight) of each client.
    per_client: HashMap<ClientAddr, usize>,
    /// Idle connections, by when they fell idle: the oldest are evicted first.
    idle: BTreeMap<(Instant, u64), Arc<Notify>>,
}

impl Connections {
    pub fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self { state: Mutex::default(), changed: Notify::new(), max, per_client, high_water: max - max / 8 })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a connection could be taken in: a slot is free, or an idle connection can
    /// give up its own.
    pub async fn room(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.lock();
                if state.open < self.max || !state.idle.is_empty() {
                    return;
                }
            }
            changed.await;
        }
    }

    /// One more connection (or proxied request) of `client`; `None` when it holds its cap.
    pub fn client_share(self: &Arc<Self>, client: ClientAddr) -> Option<Share> {
        let mut state = self.lock();
        let held = state.per_client.entry(client).or_default();
        if *held >= self.per_client {
            if *held == 0 {
                state.per_client.remove(&client);
            }
            return None;
        }
        *held += 1;
        Some(Share { connections: self.clone(), client })
    }

    /// Opens a connection holding `share` of its client. Past the high-water mark it evicts the
    /// longest-idle connection; at the cap it waits for one to close.
    pub async fn open(self: &Arc<Self>, share: Option<Share>) -> Arc<Connection> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.open >= self.high_water
                    && let Some((_, victim)) = state.idle.pop_first()
                {
                    victim.notify_one();
                    refused::record(Refusal::Evicted, || "an idle connection, near the connection cap".to_owned());
                }
                if state.open < self.max {
                    state.open += 1;
                    state.next_id += 1;
                    let (id, since, evict) = (state.next_id, Instant::now(), Arc::new(Notify::new()));
                    state.idle.insert((since, id), evict.clone());
                    metrics::gauge!("http_open_connections").set(state.open as f64);
                    return Arc::new(Connection {
                        id,
                        connections: self.clone(),
                        evict,
                        activity: Mutex::new(Activity { in_flight: 0, idle_since: Some(since) }),
                        _share: share,
                    });
                }
            }
            changed.await;
        }
    }

    /// Waits until every connection has closed.
    pub async fn drained(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.lock().open == 0 {
                return;
            }
            changed.await;
        }
    }

    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.lock().open
    }
}

/// A client's share of the cap, given back when dropped.
pub struct Share {
    connections: Arc<Connections>,
    client: ClientAddr,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut state = self.connections.lock();
        if let Some(held) = state.per_client.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                state.per_client.remove(&self.client);
            }
        }
    }
}

/// One open connection; its slot is freed when the last handle to it is dropped.
pub struct Connection {
    id: u64,
    connections: Arc<Connections>,
    evict: Arc<Notify>,
    activity: Mutex<Activity>,
    _share: Option<Share>,
}

struct Activity {
    in_flight: usize,
    /// `Some` while idle: its key in the idle list.
    idle_since: Option<Instant>,
}

impl Connection {
    /// Resolves when the server wants this connection closed to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// A request started: the connection is busy until the returned guard is dropped (with the
    /// answer's body, once it is handed over).
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        activity.in_flight += 1;
        if let Some(since) = activity.idle_since.take() {
            self.connections.lock().idle.remove(&(since, self.id));
        }
        Busy(self.clone())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let since = self.activity.get_mut().unwrap_or_else(|p| p.into_inner()).idle_since;
        let mut state = self.connections.lock();
        if let Some(since) = since {
            state.idle.remove(&(since, self.id));
        }
        state.open -= 1;
        metrics::gauge!("http_open_connections").set(state.open as f64);
        drop(state);
        self.connections.changed.notify_waiters();
    }
}

/// A request in progress on a connection.
pub struct Busy(Arc<Connection>);

impl Drop for Busy {
    fn drop(&mut self) {
        let connection = &self.0;
        let mut activity = connection.activity.lock().unwrap_or_else(|p| p.into_inner());
        activity.in_flight -= 1;
        if activity.in_flight == 0 {
            let since = Instant::now();
            activity.idle_since = Some(since);
            connection.connections.lock().idle.insert((since, connection.id), connection.evict.clone());
            drop(activity);
            connection.connections.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn client(n: u8) -> ClientAddr {
        ClientAddr::of(std::net::IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn a_client_holds_at_most_its_share() {
        let connections = Connections::new(100, 2);
        let a = connections.client_share(client(1)).unwrap();
        let _b = connections.client_share(client(1)).unwrap();
        assert!(connections.client_share(client(1)).is_none(), "a third is over the cap");
        assert!(connections.client_share(client(2)).is_some(), "another client has its own");
        drop(a);
        assert!(connections.client_share(client(1)).is_some(), "a share given back is free again");
    }

    #[tokio::test]
    async fn near_the_cap_the_longest_idle_connection_makes_room() {
        let connections = Connections::new(8, 8);
        let mut open = Vec::new();
        for _ in 0..7 {
            open.push(connections.open(None).await);
        }
        // Every connection but the first is busy; the first is the one idle.
        let busy: Vec<Busy> = open[1..].iter().map(Connection::busy).collect();
        let oldest = open[0].clone();
        let _eighth = connections.open(None).await;
        tokio::time::timeout(Duration::from_secs(1), oldest.evicted()).await.expect("the idle one is told to go");
        assert_eq!(connections.open_count(), 8);
        drop(busy);
        drop((open, oldest));
        assert_eq!(connections.open_count(), 1);
    }

    #[tokio::test]
    async fn at_the_cap_with_nothing_idle_there_is_no_room_until_one_closes() {
        let connections = Connections::new(2, 2);
        let first = connections.open(None).await;
        let second = connections.open(None).await;
        let (_a, _b) = (first.busy(), second.busy());
        assert!(tokio::time::timeout(Duration::from_millis(50), connections.room()).await.is_err());
        drop(_a);
        tokio::time::timeout(Duration::from_secs(1), connections.room()).await.expect("an idle one makes room");
    }
}
