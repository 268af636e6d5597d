//! The benchmark's HTTP client: one keep-alive HTTP/1.1 connection per simulated client, on
//! hyper's client, so what is measured is the server and not a hand-rolled parser.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, client::conn::http1};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

pub struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
    key: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr, key: &str) -> Self {
        let stream = TcpStream::connect(addr).await.expect("the API accepts connections");
        stream.set_nodelay(true).expect("can set TCP_NODELAY");
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("bench connection closed: {error}");
            }
        });
        Self { sender, key: format!("Bearer {key}") }
    }

    /// Sends one request and returns the status and the JSON body (`Null` when there is none).
    pub async fn send(&mut self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "bench")
            .header("authorization", &self.key)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("a well-formed request");
        self.sender.ready().await.expect("the connection stays open");
        let response = tokio::time::timeout(Duration::from_secs(60), self.sender.send_request(request))
            .await
            .expect("the API answers within a minute")
            .expect("the API answers");
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.expect("a complete body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> (u16, Value) {
        self.send(Method::POST, path, Some(body)).await
    }
}
