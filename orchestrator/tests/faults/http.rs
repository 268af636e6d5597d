//! A small HTTP/1.1 client for driving the API of the orchestrator processes, as a client app
//! would: keep-alive connections, a timeout on every request, and, when an instance stops
//! answering, the next instance in the list. The workspace has no HTTP client crate, and poem's
//! test client only reaches an application inside the test's own process.

use std::{io, net::SocketAddr, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// One request's time limit: a process killed mid-request never answers, and the client must
/// notice and try again rather than hang the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers larger than this are a bug in the API or in this client, not something to buffer.
const MAX_BODY: usize = 1 << 20;

/// An answer: status and JSON body (`Null` when there was none).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// A client of a set of API instances. It sticks to one instance while it answers.
pub struct Client {
    instances: Vec<SocketAddr>,
    current: usize,
    stream: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(instances: Vec<SocketAddr>, first: usize) -> Self {
        assert!(!instances.is_empty(), "a client needs an API instance");
        let current = first % instances.len();
        Self { instances, current, stream: None }
    }

    /// Sends one request. Any transport failure drops the connection and moves to the next
    /// instance for the following request; whether the request took effect is then unknown.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> io::Result<Answer> {
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, headers, body)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("{method} {path}: no answer in time"))),
        };
        if result.is_err() {
            self.stream = None;
            self.current = (self.current + 1) % self.instances.len();
        }
        result
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> io::Result<Answer> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.instances[self.current]).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().expect("connected above");
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: fault-suite\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n",
            crate::support::ADMIN_KEY,
            body.len()
        );
        if !body.is_empty() {
            request.push_str("content-type: application/json\r\n");
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.get_mut().write_all(request.as_bytes()).await?;

        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the answer"));
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not a status line: {line:?}")))?;
        let (mut length, mut close) = (0, false);
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the headers"));
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad length"))?;
                } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                    close = true;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    // The API always sends a length; anything else would be read wrongly.
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {name}: {value}")));
                }
            }
        }
        if length > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a body of {length} bytes")));
        }
        let mut bytes = vec![0; length];
        stream.read_exact(&mut bytes).await?;
        if close {
            self.stream = None;
        }
        Ok(Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }
}
