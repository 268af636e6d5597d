//! The load's client of the API instances, as a client app would be: keep-alive connections
//! (hyper's, see `support::http`), a timeout on every request, and, when an instance stops
//! answering, the next instance in the list.

use std::{io, net::SocketAddr, time::Duration};

use serde_json::Value;

pub use crate::support::http::Answer;
use crate::support::http::Connection;

/// One request's time limit: a process killed mid-request never answers, and the client must
/// notice and try again rather than hang the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of a set of API instances. It sticks to one instance while it answers.
pub struct Client {
    instances: Vec<SocketAddr>,
    current: usize,
    connection: Option<Connection>,
}

impl Client {
    pub fn new(instances: Vec<SocketAddr>, first: usize) -> Self {
        assert!(!instances.is_empty(), "a client needs an API instance");
        let current = first % instances.len();
        Self { instances, current, connection: None }
    }

    /// Sends one request (`body` unless it is `Null`). Any transport failure drops the
    /// connection and moves to the next instance for the following request; whether the request
    /// took effect is then unknown.
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
            self.connection = None;
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
        // A connection the instance closed after its last answer is opened again; only a
        // failure to do so counts against the instance.
        let open = match &mut self.connection {
            Some(connection) => connection.ready().await,
            None => false,
        };
        if !open {
            self.connection = Some(Connection::open(self.instances[self.current]).await?);
        }
        let connection = self.connection.as_mut().expect("connected above");
        connection.send(method, path, headers, (!body.is_null()).then_some(body)).await
    }
}

#[cfg(test)]
mod tests {
    use orchestrator::app::Roles;
    use platform::messaging::relay::RelayFaults;
    use serde_json::json;

    use super::*;
    use crate::support::TestEnv;

    /// An address nothing listens on.
    fn nobody() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_client_moves_to_the_next_instance_when_one_does_not_answer() {
        let env = TestEnv::new().await;
        let app = env.start(Roles { api: true, engine: false, workers: Vec::new() }, RelayFaults::default()).await;
        let api = app.addr().unwrap();
        let mut client = Client::new(vec![nobody(), api], 0);

        let refused = client.send("GET", "/health/live", &[], &Value::Null).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused, "{refused}");
        let live = client.send("GET", "/health/live", &[], &Value::Null).await.unwrap();
        assert_eq!(live.status, 200, "{:?}", live.body);

        // A body, the key and extra headers reach the API, and the JSON answer comes back whole.
        let store = json!({"name": "Corner", "service_area": "north"});
        let created = client.send("POST", "/stores", &[("x-request-id", "fault-suite-client")], &store).await.unwrap();
        assert_eq!(created.status, 201, "{:?}", created.body);
        let id = created.body["id"].as_str().expect("a created store has an id");
        let read = client.send("GET", &format!("/stores/{id}"), &[], &Value::Null).await.unwrap();
        assert_eq!((read.status, &read.body["name"]), (200, &json!("Corner")), "{:?}", read.body);
        let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit WHERE request_id = 'fault-suite-client'")
            .fetch_one(&env.pool().await)
            .await
            .unwrap();
        assert_eq!(audited, 1, "the extra header reached the API");
        let refused = client.send("GET", "/stores/not-an-id", &[], &Value::Null).await.unwrap();
        assert_eq!(refused.status, 400, "{:?}", refused.body);
        assert!(refused.body["detail"].is_string(), "a problem's body is read too: {:?}", refused.body);

        // The instance goes away with the client's connection open: the next request fails
        // rather than hangs and moves the client on, to an instance that is down too here.
        app.stop().await;
        assert!(client.send("GET", "/health/live", &[], &Value::Null).await.is_err());
        assert_eq!(client.current, 0, "moved on from the stopped instance");
        let refused = client.send("GET", "/health/live", &[], &Value::Null).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused, "{refused}");
        assert_eq!(client.current, 1);
        env.teardown().await;
    }
}
