//! Stopping and starting the shared services (Postgres, RabbitMQ, Redis) under the running
//! system.
//!
//! The commands default to those of a machine with the Debian packages (the development machine
//! and CI); each can be replaced through the environment, e.g. for docker compose:
//! `FAULT_STOP_RABBITMQ='docker compose stop rabbitmq' FAULT_START_RABBITMQ='docker compose start rabbitmq'`.
//! A stopped service is always started again: by [`Outage::end`], or by the guard's `Drop` when
//! the test fails in between, since other test runs may share the service.

use std::{
    net::{TcpStream, ToSocketAddrs},
    process::Command,
    time::{Duration, Instant},
};

use platform::{config::Config, messaging, redis::Redis};
use sqlx::{Connection, PgConnection};

use crate::support::eventually;

/// A stop or a start (with its readiness) that takes longer than this is a failure.
const WITHIN: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Postgres,
    RabbitMq,
    Redis,
}

impl Service {
    fn var(self, action: &str) -> String {
        let name = match self {
            Self::Postgres => "POSTGRES",
            Self::RabbitMq => "RABBITMQ",
            Self::Redis => "REDIS",
        };
        format!("FAULT_{action}_{name}")
    }

    /// The commands that started the services on this machine kind, and their opposites. The
    /// stops return once the server is down: pg_ctl waits, `rabbitmqctl shutdown` waits for the
    /// Erlang VM to exit, and Redis closes the connection as it exits.
    fn default_command(self, action: &str) -> &'static str {
        match (self, action) {
            (Self::Postgres, "STOP") => {
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main stop -m fast"
            }
            (Self::Postgres, _) => "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            (Self::RabbitMq, "STOP") => "rabbitmqctl shutdown",
            (Self::RabbitMq, _) => "rabbitmq-server -detached",
            (Self::Redis, "STOP") => "redis-cli -p 6379 shutdown nosave",
            (Self::Redis, _) => {
                "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no \
                 --dir /var/lib/redis --logfile /var/log/redis/ci.log"
            }
        }
    }

    fn command(self, action: &str) -> String {
        std::env::var(self.var(action))
            .ok()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| self.default_command(action).to_owned())
    }

    /// Whether the service answers its own protocol (a TCP accept is not enough: a booting
    /// RabbitMQ or a recovering Postgres accepts and then refuses).
    async fn answers(self, config: &Config, admin_url: &str) -> bool {
        let probe = async {
            match self {
                Self::Postgres => match PgConnection::connect(admin_url).await {
                    Ok(mut conn) => sqlx::query("SELECT 1").execute(&mut conn).await.is_ok(),
                    Err(_) => false,
                },
                Self::RabbitMq => match messaging::connect(&config.amqp_url, "fault-suite-probe").await {
                    Ok(connection) => {
                        let usable = connection.create_channel().await.is_ok();
                        messaging::close(&connection, "probed").await;
                        usable
                    }
                    Err(_) => false,
                },
                Self::Redis => match Redis::new(&config.redis_url) {
                    Ok(redis) => redis.ping().await,
                    Err(_) => false,
                },
            }
        };
        tokio::time::timeout(Duration::from_secs(5), probe).await.unwrap_or(false)
    }
}

/// Runs `sh -c command`, panicking with its output when it fails.
fn run(command: &str) {
    let output = Command::new("sh").arg("-c").arg(command).output().unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    assert!(
        output.status.success(),
        "`{command}` failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A service stopped by the test. Dropping it without [`Outage::end`] starts the service again.
pub struct Outage {
    service: Service,
    config: Config,
    admin_url: String,
    started: Instant,
    up: bool,
}

impl Outage {
    /// Stops `service` and waits until it no longer answers.
    pub async fn begin(service: Service, config: &Config, admin_url: &str) -> Self {
        let mut outage = Self {
            service,
            config: config.clone(),
            admin_url: admin_url.to_owned(),
            started: Instant::now(),
            up: true,
        };
        let command = service.command("STOP");
        eprintln!("stopping {service:?}: {command}");
        outage.up = false;
        tokio::task::block_in_place(|| run(&command));
        let (config, admin_url) = (&outage.config, outage.admin_url.as_str());
        eventually(WITHIN, &format!("{service:?} to stop answering"), || async move {
            (!service.answers(config, admin_url).await).then_some(())
        })
        .await;
        outage
    }

    /// Starts the service again and waits until it answers; returns how long it was down.
    pub async fn end(mut self) -> Duration {
        let command = self.service.command("START");
        eprintln!("starting {:?}: {command}", self.service);
        tokio::task::block_in_place(|| run(&command));
        let (service, config, admin_url) = (self.service, &self.config, self.admin_url.as_str());
        eventually(WITHIN, &format!("{service:?} to answer again after `{command}`"), || async move {
            service.answers(config, admin_url).await.then_some(())
        })
        .await;
        self.up = true;
        let down = self.started.elapsed();
        eprintln!("{service:?} is back after {down:.1?}");
        down
    }

    /// Stops and starts `service` at once: a restart.
    pub async fn restart(service: Service, config: &Config, admin_url: &str) -> Duration {
        Self::begin(service, config, admin_url).await.end().await
    }
}

impl Drop for Outage {
    /// The test failed with the service down: start it again for whoever shares it, and wait
    /// (blocking, as a destructor must) until it accepts connections.
    fn drop(&mut self) {
        if self.up {
            return;
        }
        let command = self.service.command("START");
        eprintln!("the test stopped with {:?} down; starting it again: {command}", self.service);
        let _ = Command::new("sh").arg("-c").arg(&command).status();
        let url = match self.service {
            Service::Postgres => &self.admin_url,
            Service::RabbitMq => &self.config.amqp_url,
            Service::Redis => &self.config.redis_url,
        };
        let deadline = Instant::now() + WITHIN;
        while Instant::now() < deadline && !accepts(url) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Whether something accepts TCP connections at the host and port of `url`.
fn accepts(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}
