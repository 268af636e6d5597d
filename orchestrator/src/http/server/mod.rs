//! The HTTP server: poem's endpoints served over hyper's HTTP/1.1 connections, with the bounds
//! poem's own server lacks, so that one client cannot take the service from the others:
//! - a client has `read_timeout` to send a request's headers, counted from when the connection
//!   is ready for one (so an idle kept-alive connection is closed after it too); the body has
//!   the same again (in `access`);
//! - a request's line and headers take at most `header_bytes` (a 431 past it), which bounds each
//!   connection's buffer too: a half-sent request holds little memory;
//! - at most `max_connections` are open at once; near that, the connection idle for longest is
//!   closed to make room ([`connections`]); past it, connections wait in the listen backlog;
//! - one client address holds at most `per_client` connections: the next are answered 429 and
//!   closed. A trusted proxy's connections carry many clients, so they are not capped; instead
//!   each client it forwards for may have `per_client` requests in flight.

pub mod connections;

use std::{convert::Infallible, io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use platform::{config::ApiConfig, shutdown::Shutdown};
use poem::{
    Endpoint, EndpointExt, IntoResponse,
    http::{HeaderValue, StatusCode, header, uri::Scheme},
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{
    problem::Problem,
    refused::{self, Refusal},
};
use crate::access::client::{ClientAddr, TrustedProxies};
use connections::{Connection, Connections};

/// The bounds the server keeps; `ApiConfig` documents each.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub per_client: usize,
    pub header_bytes: usize,
    pub read_timeout: Duration,
    pub trusted: TrustedProxies,
}

impl Limits {
    pub fn of(api: &ApiConfig) -> Self {
        Self {
            max_connections: api.max_connections,
            per_client: api.max_connections_per_client,
            header_bytes: api.max_header_bytes,
            read_timeout: api.read_timeout,
            trusted: TrustedProxies::new(api.trusted_proxies.clone()),
        }
    }
}

/// Connections over their client's cap answered at once, at most; past that many, a refused
/// connection is closed without a word.
const MAX_REFUSALS: usize = 64;
/// How long a refused connection may take to send the request its refusal answers.
const REFUSAL_READ: Duration = Duration::from_secs(1);
/// How long an evicted connection may take to finish what it was writing.
const EVICTION_GRACE: Duration = Duration::from_secs(1);

/// The request of a client, behind a trusted proxy, that already has its cap of requests in
/// flight: the door answers it 429.
#[derive(Clone, Copy, Debug)]
pub struct OverClientCap(pub usize);

pub struct Server {
    listener: TcpListener,
    local: SocketAddr,
    limits: Limits,
}

impl Server {
    pub async fn bind(addr: SocketAddr, limits: Limits) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok(Self { listener, local, limits })
    }

    /// Where it listens (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until shutdown, then lets requests in flight finish for up to `drain`.
    pub async fn run(self, endpoint: impl Endpoint + 'static, mut shutdown: Shutdown, drain: Duration) {
        let limits = Arc::new(self.limits);
        let connections = Connections::new(limits.max_connections, limits.per_client);
        let site = Arc::new(Site {
            endpoint: endpoint.map_to_response().boxed(),
            local: LocalAddr(self.local.into()),
            limits: limits.clone(),
            connections: connections.clone(),
        });
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
        let summaries = tokio::spawn(async {
            let mut every = tokio::time::interval(refused::WINDOW);
            loop {
                every.tick().await;
                refused::flush();
            }
        });
        loop {
            tokio::select! {
                () = connections.room() => {}
                _ = shutdown.wait() => break,
            }
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, say: wait a moment rather than spin.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.wait() => break,
            };
            let _ = stream.set_nodelay(true);
            let client = ClientAddr::of(peer.ip());
            let share = if limits.trusted.contains(peer.ip()) {
                None
            } else {
                match connections.client_share(client) {
                    Some(share) => Some(share),
                    None => {
                        refuse(stream, client, limits.per_client, &refusals);
                        continue;
                    }
                }
            };
            let connection = tokio::select! {
                connection = connections.open(share) => connection,
                _ = shutdown.wait() => break,
            };
            tokio::spawn(site.clone().serve(connection, stream, peer, shutdown.clone(), drain));
        }
        drop(self.listener);
        tokio::select! {
            () = connections.drained() => {}
            () = tokio::time::sleep(drain) => tracing::warn!("requests still in flight after {} s; stopping anyway", drain.as_secs()),
        }
        summaries.abort();
        refused::flush();
    }
}

/// What every connection of a server shares.
struct Site<E> {
    endpoint: E,
    local: LocalAddr,
    limits: Arc<Limits>,
    connections: Arc<Connections>,
}

impl<E: Endpoint<Output = poem::Response> + 'static> Site<E> {
    fn builder(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.read_timeout)
            .max_header_size(self.limits.header_bytes)
            .max_buf_size(self.limits.header_bytes.max(platform::config::MIN_HEADER_BYTES))
            .keep_alive(true);
        builder
    }

    /// Serves one connection until it closes, the server needs its room, or shutdown.
    async fn serve(
        self: Arc<Self>,
        connection: Arc<Connection>,
        stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: Shutdown,
        drain: Duration,
    ) {
        let proxied = self.limits.trusted.contains(peer.ip());
        let site = self.clone();
        let held = connection.clone();
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let (site, busy) = (site.clone(), held.busy());
            async move {
                // Behind a trusted proxy the cap counts each client's requests in flight.
                let share = proxied.then(|| {
                    let (client, _) = site.limits.trusted.client(peer.ip(), request.headers());
                    site.connections.client_share(ClientAddr::of(client))
                });
                let mut request =
                    poem::Request::from((request, site.local.clone(), RemoteAddr(peer.into()), Scheme::HTTP));
                if matches!(share, Some(None)) {
                    request.set_data(OverClientCap(site.limits.per_client));
                }
                let response: hyper::Response<BoxBody<Bytes, io::Error>> =
                    site.endpoint.get_response(request).await.into();
                // The connection stays busy, and the share held, until the body is handed over.
                let guards = (busy, share);
                Ok::<_, Infallible>(response.map(move |body| {
                    body.map_frame(move |frame| {
                        let _ = &guards;
                        frame
                    })
                    .boxed()
                }))
            }
        });
        let served = self.builder().serve_connection(TokioIo::new(stream), service);
        tokio::pin!(served);
        let grace = tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = connection.evicted() => EVICTION_GRACE,
            _ = shutdown.wait() => drain,
        };
        // An idle connection closes at once; one with a request in flight finishes it first.
        served.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(grace, served).await;
    }
}

/// Answers a connection over its client's cap with a 429 and closes it; when too many such
/// answers are under way, closes it at once.
fn refuse(stream: TcpStream, client: ClientAddr, cap: usize, refusals: &Arc<Semaphore>) {
    refused::record(Refusal::OverClientCap, || format!("{client}: a connection over its cap of {cap}"));
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let service = service_fn(move |_| async move {
            let detail = format!(
                "this client address already holds {cap} connections, the most one client may \
                 (HTTP_MAX_CONNECTIONS_PER_CLIENT); send on one of them, or retry once one has closed"
            );
            let mut response = Problem::new(StatusCode::TOO_MANY_REQUESTS, detail).into_response();
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            super::secure(&mut response, false);
            Ok::<_, Infallible>(hyper::Response::<BoxBody<Bytes, io::Error>>::from(response))
        });
        let served = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(REFUSAL_READ)
            .max_buf_size(platform::config::MIN_HEADER_BYTES)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        let _ = tokio::time::timeout(REFUSAL_READ * 2, served).await;
        drop(permit);
    });
}
