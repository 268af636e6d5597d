//! A client of an API running in another process: one keep-alive HTTP/1.1 connection on
//! hyper's client, the admin key on every request. The benchmark and the fault suite drive their
//! `orchestrator` processes with it; tests of an application in their own process use poem's
//! test client instead.
//!
//! hyper's connection-level client rather than a pooled one: each simulated client owns exactly
//! one connection, a lost connection is the caller's to notice (the fault suite moves to another
//! instance, the benchmark stops), and a request costs no pool lookup.

use std::{
    error::Error as _,
    io,
    net::{IpAddr, SocketAddr},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request,
    client::conn::http1,
    header::{self, HeaderValue},
};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};

use super::ADMIN_KEY;

/// An answer: status and JSON body (`Null` when there was none, or it was not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// One open connection to an API instance.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    host: HeaderValue,
    /// None for a connection that sends no key.
    authorization: Option<HeaderValue>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> io::Result<Self> {
        Self::open_with(addr, None, ADMIN_KEY).await
    }

    /// A connection from the local address `from` (on loopback, any of 127.0.0.0/8: another
    /// client, as the server sees it), sending `key` (none when empty).
    pub async fn open_with(addr: SocketAddr, from: Option<IpAddr>, key: &str) -> io::Result<Self> {
        let stream = connect(addr, from).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(io_error)?;
        // Reads and writes the socket; ends when either side closes it. A failure reaches the
        // caller through the request in flight, or the next `ready`.
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: HeaderValue::from_str(&addr.to_string()).expect("an address is a valid host"),
            authorization: (!key.is_empty())
                .then(|| HeaderValue::from_str(&format!("Bearer {key}")).expect("the key is visible ASCII")),
        })
    }

    /// Waits until the connection can take another request; `false` once it is closed (the
    /// server answered with `connection: close`, or went away).
    pub async fn ready(&mut self) -> bool {
        self.sender.ready().await.is_ok()
    }

    /// Sends one request with `headers` on top of the usual ones, and reads the whole answer.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> io::Result<Answer> {
        let (status, bytes) = self.exchange(method, path, headers, body).await?;
        Ok(Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }

    /// Sends a request without a body and reads its answer as text (`/metrics`, say).
    pub async fn send_text(&mut self, method: &str, path: &str) -> io::Result<String> {
        let (_, bytes) = self.exchange(method, path, &[], None).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> io::Result<(u16, Bytes)> {
        let mut request = Request::builder().method(method).uri(path).header(header::HOST, self.host.clone());
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
        let request = request.body(Full::new(body)).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.sender.ready().await.map_err(io_error)?;
        let response = self.sender.send_request(request).await.map_err(io_error)?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map_err(io_error)?.to_bytes();
        Ok((status, bytes))
    }
}

/// hyper's error as an I/O error of the kind that says what happened to the connection: the
/// socket's own error when there is one, an early end of the stream when the server closed it.
fn io_error(error: hyper::Error) -> io::Error {
    let kind = match error.source().and_then(|source| source.downcast_ref::<io::Error>()) {
        Some(cause) => cause.kind(),
        None if error.is_incomplete_message() || error.is_closed() || error.is_canceled() => {
            io::ErrorKind::UnexpectedEof
        }
        None => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, error)
}

/// A TCP connection to `addr`, from the local address `from` when given.
pub async fn connect(addr: SocketAddr, from: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect(addr).await;
    };
    let socket = if from.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}
