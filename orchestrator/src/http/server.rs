//! The HTTP server: poem's endpoints served over hyper's HTTP/1.1 connections, with the bounds
//! poem's own server lacks. A client has `read_timeout` to send a request's headers, counted
//! from when the connection is ready for a request (so an idle kept-alive connection is closed
//! after it too); the body has the same again (in `access`). At most `max_connections` are
//! served at once; more wait in the listen backlog until one closes. Half-sent requests cannot
//! pile up.

use std::{convert::Infallible, io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use platform::shutdown::Shutdown;
use poem::{
    Endpoint, EndpointExt,
    http::uri::Scheme,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{net::TcpListener, sync::Semaphore};

pub struct Server {
    listener: TcpListener,
    local: SocketAddr,
    max_connections: usize,
    read_timeout: Duration,
}

impl Server {
    pub async fn bind(addr: SocketAddr, max_connections: usize, read_timeout: Duration) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok(Self { listener, local, max_connections, read_timeout })
    }

    /// Where it listens (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until shutdown, then lets requests in flight finish for up to `drain`.
    pub async fn run(self, endpoint: impl Endpoint + 'static, mut shutdown: Shutdown, drain: Duration) {
        let endpoint = Arc::new(endpoint.map_to_response().boxed());
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let graceful = GracefulShutdown::new();
        let local = LocalAddr(self.local.into());
        loop {
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                _ = shutdown.wait() => break,
            };
            let (stream, remote) = tokio::select! {
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
            let (endpoint, local, remote) = (endpoint.clone(), local.clone(), RemoteAddr(remote.into()));
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let (endpoint, local, remote) = (endpoint.clone(), local.clone(), remote.clone());
                async move {
                    let request = poem::Request::from((request, local, remote, Scheme::HTTP));
                    let response: hyper::Response<BoxBody<Bytes, io::Error>> =
                        endpoint.get_response(request).await.into();
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.read_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            metrics::gauge!("http_open_connections").increment(1.0);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
                metrics::gauge!("http_open_connections").decrement(1.0);
                drop(slot);
            });
        }
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(drain) => tracing::warn!("requests still in flight after {} s; stopping anyway", drain.as_secs()),
        }
    }
}
