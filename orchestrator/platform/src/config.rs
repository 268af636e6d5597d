//! Configuration, read once from the environment with localhost defaults.
//!
//! Every process (API, engine, workers) takes the same [`Config`], so one set of variables
//! describes a deployment. Nothing else in the code base reads the environment.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

/// Everything a process needs to know about its deployment.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub redis_url: String,
    pub amqp_url: String,
    pub http_addr: SocketAddr,
    /// Prefix of every exchange, queue and cache key, so deployments (and parallel tests) can share
    /// one broker and one Redis.
    pub namespace: String,
    pub db_max_connections: u32,
    /// `DB_STATEMENT_TIMEOUT_MS`: Postgres cancels a statement that runs (or waits on a lock)
    /// longer, and rolls its transaction back; zero means no limit. Migrations are not bound by it.
    pub db_statement_timeout: Duration,
    /// Deliveries a consumer may hold unacknowledged.
    pub prefetch: u16,
    pub saga: SagaTiming,
    /// How long history is kept before the janitor ([`crate::retention`]) removes it.
    pub retention: Retention,
    /// The environment as it was read, for the settings that parts of the system own ([`Section`]).
    pub vars: Vars,
    /// This machine's name, for the processes' liveness (`/proc/sys/kernel/hostname`, else
    /// `HOSTNAME`).
    pub hostname: String,
    /// Log lines as JSON objects instead of text.
    pub log_json: bool,
    /// Fault injection (`FAULT_DUPLICATE_DELIVERY=true`): the process's outbox relay publishes
    /// every message twice, so every consumer sees each delivery twice. For the fault suite, which
    /// runs the real binaries and can switch their behaviour only through the environment; never
    /// set in production.
    pub duplicate_delivery: bool,
    /// How the HTTP API admits callers: keys, rate limits, connections, CORS.
    pub api: ApiConfig,
}

/// The HTTP API's door: who gets in, how fast, and for how long a request may take to arrive.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `BOOTSTRAP_ADMIN_KEY`: this exact secret is an admin key from start-up on.
    pub bootstrap_admin_key: Option<Secret>,
    pub rate_limits: RateLimits,
    /// `HTTP_MAX_CONNECTIONS`: connections served at once; more wait to be accepted. Near it,
    /// idle connections are closed to make room.
    pub max_connections: usize,
    /// `HTTP_MAX_CONNECTIONS_PER_CLIENT`: connections one client address may hold at once; behind
    /// a trusted proxy, requests one client address may have in flight at once.
    pub max_connections_per_client: usize,
    /// `HTTP_MAX_HEADER_BYTES`: the most a request line and its headers may take; the read buffer
    /// of a connection is bounded by it too.
    pub max_header_bytes: usize,
    /// `HTTP_READ_TIMEOUT_MS`: the time a client has to send a request's headers (or to start
    /// its next request on a kept-alive connection), and again to send its body.
    pub read_timeout: Duration,
    /// `HTTP_REQUEST_TIMEOUT_MS`: the time a request's handler has, once its body arrived; past
    /// it the request is abandoned, its transaction rolled back, and the answer is a 503.
    pub request_timeout: Duration,
    /// `HTTP_TRUSTED_PROXIES`: the proxies and load balancers (addresses or networks) whose
    /// `Forwarded` / `X-Forwarded-For` headers name the client. Nobody else's are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `CORS_ALLOWED_ORIGINS`: origins whose pages may call the API from a browser; none when empty.
    pub cors_origins: Vec<String>,
}

/// A value that must not reach logs: `Debug` shows only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A token bucket's size: `per_second` requests on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub per_second: u32,
    pub burst: u32,
}

impl std::str::FromStr for Budget {
    type Err = ();

    /// `<per second>,<burst>`, e.g. `100,200`.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (rate, burst) = s.split_once(',').ok_or(())?;
        let budget =
            Self { per_second: rate.trim().parse().map_err(|_| ())?, burst: burst.trim().parse().map_err(|_| ())? };
        if budget.per_second == 0 || budget.burst == 0 { Err(()) } else { Ok(budget) }
    }
}

/// The request budget of each caller: a key's by its role, and each client address's for
/// requests without a valid key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub anonymous: Budget,
    pub client: Budget,
    pub operator: Budget,
    pub admin: Budget,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            bootstrap_admin_key: None,
            rate_limits: RateLimits {
                // Health probes and first contact: a load balancer needs far less.
                anonymous: Budget { per_second: 5, burst: 10 },
                // A store front or picker app serves many people through one key.
                client: Budget { per_second: 100, burst: 200 },
                operator: Budget { per_second: 50, burst: 100 },
                admin: Budget { per_second: 10, burst: 20 },
            },
            max_connections: 1024,
            // A benchmark's or a busy store front's 64 connections fit twice over.
            max_connections_per_client: 128,
            max_header_bytes: 16 * 1024,
            read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}

/// Bounds of `HTTP_MAX_HEADER_BYTES`: below 8 KiB the HTTP parser cannot work; above 1 MiB one
/// connection's buffer would be worth a thousand.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;
const HEADER_BYTES: &str = "a number of bytes from 8192 to 1048576";

/// The shortest secret `BOOTSTRAP_ADMIN_KEY` may be: shorter ones can be guessed.
pub const MIN_SECRET_LEN: usize = 32;
/// The longest API key accepted.
pub const MAX_SECRET_LEN: usize = 256;

/// Whether `secret` may be an API key: visible ASCII of a length between the bounds.
pub fn valid_secret(secret: &str) -> bool {
    (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len()) && secret.bytes().all(|b| b.is_ascii_graphic())
}

/// How long the engine waits for a reply, and how often it asks again.
#[derive(Clone, Copy, Debug)]
pub struct SagaTiming {
    /// Deadline of the first send of a command; each resend doubles it, up to `max_timeout`.
    pub command_timeout: Duration,
    pub max_timeout: Duration,
    /// Sends of one command (the first included) before the saga gives up on the step.
    pub max_attempts: i32,
    /// Deadline of each send of a command that waits on a person (a picker handing an order
    /// over), not on a worker: people take minutes, and their time does not double.
    pub person_timeout: Duration,
}

/// How long each kind of history is kept, and how often it is pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// `OUTBOX_RETENTION_MS`: published messages are removed once they were written this long ago
    /// (unpublished ones never are). Until then the saga detail lists them.
    pub outbox: Duration,
    /// `INBOX_RETENTION_MS`: the deduplication window. A consumer's record of a handled message
    /// is removed this long after it was handled; a redelivery after that would be handled again.
    pub inbox: Duration,
    /// `SAGA_RETENTION_MS`: a closed saga, with its timeline, is removed this long after it
    /// closed. Failed sagas, which wait for an operator, are kept.
    pub saga: Duration,
    /// `RETENTION_INTERVAL_MS`: the time between two passes of the janitor.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const HOUR: Duration = Duration::from_secs(3600);
        Self { outbox: HOUR, inbox: 7 * 24 * HOUR, saga: 30 * 24 * HOUR, interval: Duration::from_secs(60) }
    }
}

/// The longest retention accepted: beyond it the cutoff falls outside what Postgres's intervals
/// can express, and every pass would fail.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A variable was set to something unusable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {expected}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// The environment variables as a process read them at start-up (those set and not empty). The
/// values stay out of `Debug`: some are secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    /// This process's environment.
    pub fn from_env() -> Self {
        std::env::vars().collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|value| !value.is_empty())
    }

    /// Sets a variable, as the environment would: for tests, and processes started from them.
    pub fn set(&mut self, name: &str, value: impl ToString) {
        self.0.insert(name.to_owned(), value.to_string());
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Reads `name` into `target` when it is set; `expected` says what it must be.
    pub fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        expected: &'static str,
        target: &mut T,
    ) -> Result<(), ConfigError> {
        if let Some(value) = self.get(name) {
            *target = value.parse().map_err(|_| ConfigError { name, value: value.to_owned(), expected })?;
        }
        Ok(())
    }

    /// Reads a number of milliseconds.
    pub fn millis(&self, name: &'static str, target: &mut Duration) -> Result<(), ConfigError> {
        let mut ms = u64::try_from(target.as_millis()).unwrap_or(u64::MAX);
        self.parse(name, "a whole number of milliseconds", &mut ms)?;
        *target = Duration::from_millis(ms);
        Ok(())
    }

    /// Reads a fraction from 0.0 to 1.0.
    pub fn rate(&self, name: &'static str, target: &mut f64) -> Result<(), ConfigError> {
        const EXPECTED: &str = "a number from 0.0 to 1.0";
        self.parse(name, EXPECTED, target)?;
        if (0.0..=1.0).contains(target) {
            Ok(())
        } else {
            Err(ConfigError { name, value: target.to_string(), expected: EXPECTED })
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Vars {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Settings one part of the system owns (a participant's simulated world, say), read from the
/// same variables as [`Config`], with the same precise errors. Read each at start-up, so that a
/// bad value stops the process before it serves.
pub trait Section: Sized {
    fn read(vars: &Vars) -> Result<Self, ConfigError>;
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            namespace: "darkstores".into(),
            db_max_connections: 16,
            db_statement_timeout: Duration::from_secs(10),
            prefetch: 256,
            saga: SagaTiming {
                command_timeout: Duration::from_secs(5),
                max_timeout: Duration::from_secs(60),
                max_attempts: 5,
                person_timeout: Duration::from_secs(15 * 60),
            },
            retention: Retention::default(),
            vars: Vars::default(),
            hostname: "unknown".into(),
            log_json: false,
            duplicate_delivery: false,
            api: ApiConfig::default(),
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(Vars::from_env())
    }

    /// A part of the system's own settings, read from the same variables.
    pub fn section<S: Section>(&self) -> Result<S, ConfigError> {
        S::read(&self.vars)
    }

    /// Builds a config from variables; `from_env` and tests share it.
    pub fn from_vars(vars: Vars) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        let text = |name: &str, target: &mut String| {
            if let Some(value) = vars.get(name) {
                *target = value.to_owned();
            }
        };
        text("DATABASE_URL", &mut config.database_url);
        text("REDIS_URL", &mut config.redis_url);
        text("AMQP_URL", &mut config.amqp_url);
        text("NAMESPACE", &mut config.namespace);
        if !valid_namespace(&config.namespace) {
            return Err(ConfigError {
                name: "NAMESPACE",
                value: config.namespace,
                expected: "1-64 characters of a-z, 0-9, '-', '_' or '.'",
            });
        }
        vars.parse("HTTP_ADDR", "an address such as 127.0.0.1:8080", &mut config.http_addr)?;
        vars.parse("DB_MAX_CONNECTIONS", "a positive integer", &mut config.db_max_connections)?;
        vars.millis("DB_STATEMENT_TIMEOUT_MS", &mut config.db_statement_timeout)?;
        vars.parse("PREFETCH", "an integer from 1 to 65535", &mut config.prefetch)?;
        vars.parse("COMMAND_MAX_ATTEMPTS", "a positive integer", &mut config.saga.max_attempts)?;
        vars.parse("LOG_JSON", "true or false", &mut config.log_json)?;
        vars.parse("FAULT_DUPLICATE_DELIVERY", "true or false", &mut config.duplicate_delivery)?;
        vars.millis("COMMAND_TIMEOUT_MS", &mut config.saga.command_timeout)?;
        vars.millis("COMMAND_MAX_TIMEOUT_MS", &mut config.saga.max_timeout)?;
        vars.millis("PERSON_STEP_TIMEOUT_MS", &mut config.saga.person_timeout)?;
        vars.millis("OUTBOX_RETENTION_MS", &mut config.retention.outbox)?;
        vars.millis("INBOX_RETENTION_MS", &mut config.retention.inbox)?;
        vars.millis("SAGA_RETENTION_MS", &mut config.retention.saga)?;
        vars.millis("RETENTION_INTERVAL_MS", &mut config.retention.interval)?;
        if let Some(secret) = vars.get("BOOTSTRAP_ADMIN_KEY").map(str::to_owned) {
            if !valid_secret(&secret) {
                return Err(ConfigError {
                    name: "BOOTSTRAP_ADMIN_KEY",
                    value: "***".into(),
                    expected: "32 to 256 visible ASCII characters (no spaces)",
                });
            }
            config.api.bootstrap_admin_key = Some(Secret(secret));
        }
        let budget = "<requests per second>,<burst>: two positive integers, e.g. 100,200";
        vars.parse("RATE_LIMIT_ANONYMOUS", budget, &mut config.api.rate_limits.anonymous)?;
        vars.parse("RATE_LIMIT_CLIENT", budget, &mut config.api.rate_limits.client)?;
        vars.parse("RATE_LIMIT_OPERATOR", budget, &mut config.api.rate_limits.operator)?;
        vars.parse("RATE_LIMIT_ADMIN", budget, &mut config.api.rate_limits.admin)?;
        vars.parse("HTTP_MAX_CONNECTIONS", "a positive integer", &mut config.api.max_connections)?;
        vars.parse(
            "HTTP_MAX_CONNECTIONS_PER_CLIENT",
            "a positive integer",
            &mut config.api.max_connections_per_client,
        )?;
        vars.parse("HTTP_MAX_HEADER_BYTES", HEADER_BYTES, &mut config.api.max_header_bytes)?;
        vars.millis("HTTP_READ_TIMEOUT_MS", &mut config.api.read_timeout)?;
        vars.millis("HTTP_REQUEST_TIMEOUT_MS", &mut config.api.request_timeout)?;
        if let Some(proxies) = vars.get("HTTP_TRUSTED_PROXIES").map(str::to_owned) {
            config.api.trusted_proxies = proxies
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)))
                .collect::<Result<_, _>>()
                .map_err(|_| ConfigError {
                    name: "HTTP_TRUSTED_PROXIES",
                    value: proxies.clone(),
                    expected: "comma-separated addresses or networks, such as 10.0.0.5, 10.1.0.0/16, fd00::/8",
                })?;
        }
        if let Some(origins) = vars.get("CORS_ALLOWED_ORIGINS").map(str::to_owned) {
            config.api.cors_origins =
                origins.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned).collect();
            if let Some(bad) = config.api.cors_origins.iter().find(|o| !valid_origin(o)) {
                return Err(ConfigError {
                    name: "CORS_ALLOWED_ORIGINS",
                    value: bad.clone(),
                    expected: "comma-separated origins such as https://ops.example.com",
                });
            }
        }
        let api = &config.api;
        if api.max_connections == 0
            || api.max_connections_per_client == 0
            || api.read_timeout.is_zero()
            || api.request_timeout.is_zero()
        {
            return Err(ConfigError {
                name: "HTTP_MAX_CONNECTIONS/HTTP_MAX_CONNECTIONS_PER_CLIENT/HTTP_READ_TIMEOUT_MS/HTTP_REQUEST_TIMEOUT_MS",
                value: format!(
                    "{}/{}/{}/{}",
                    api.max_connections,
                    api.max_connections_per_client,
                    api.read_timeout.as_millis(),
                    api.request_timeout.as_millis()
                ),
                expected: "each at least 1",
            });
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&api.max_header_bytes) {
            return Err(ConfigError {
                name: "HTTP_MAX_HEADER_BYTES",
                value: api.max_header_bytes.to_string(),
                expected: HEADER_BYTES,
            });
        }
        // Published messages may go at the next pass (0); a deduplication window, a closed saga's
        // history or the time between passes of 0 would make no sense.
        let retention = &config.retention;
        let bounds = [
            ("OUTBOX_RETENTION_MS", retention.outbox, Duration::ZERO),
            ("INBOX_RETENTION_MS", retention.inbox, Duration::from_millis(1)),
            ("SAGA_RETENTION_MS", retention.saga, Duration::from_millis(1)),
            ("RETENTION_INTERVAL_MS", retention.interval, Duration::from_millis(1)),
        ];
        if let Some((name, value, min)) =
            bounds.into_iter().find(|(_, value, min)| value < min || *value > MAX_RETENTION)
        {
            return Err(ConfigError {
                name,
                value: value.as_millis().to_string(),
                expected: if min.is_zero() {
                    "a whole number of milliseconds up to 3153600000000 (100 years)"
                } else {
                    "a whole number of milliseconds from 1 to 3153600000000 (100 years)"
                },
            });
        }
        if config.saga.max_attempts < 1 || config.db_max_connections < 1 || config.prefetch < 1 {
            return Err(ConfigError {
                name: "COMMAND_MAX_ATTEMPTS/DB_MAX_CONNECTIONS/PREFETCH",
                value: format!("{}/{}/{}", config.saga.max_attempts, config.db_max_connections, config.prefetch),
                expected: "each at least 1",
            });
        }
        config.hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .or_else(|| vars.get("HOSTNAME").map(str::to_owned))
            .unwrap_or(config.hostname);
        config.vars = vars;
        Ok(config)
    }
}

/// `scheme://host[:port]`, nothing more: what a browser sends in `Origin`.
fn valid_origin(origin: &str) -> bool {
    let Some((scheme, host)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

fn valid_namespace(namespace: &str) -> bool {
    (1..=64).contains(&namespace.len())
        && namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().copied().collect())
    }

    #[test]
    fn defaults_point_at_localhost() {
        let c = config(&[]).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert!(c.database_url.contains("127.0.0.1:5432"));
        assert_eq!(c.namespace, "darkstores");
        assert!(!c.duplicate_delivery, "fault injection is off unless asked for");
    }

    #[test]
    fn variables_override_defaults() {
        let c = config(&[
            ("NAMESPACE", "t1"),
            ("COMMAND_TIMEOUT_MS", "250"),
            ("HTTP_ADDR", "0.0.0.0:9"),
            ("FAULT_DUPLICATE_DELIVERY", "true"),
            ("PERSON_STEP_TIMEOUT_MS", "60000"),
            ("PAYMENT_DECLINE_RATE", "0.25"),
        ])
        .unwrap();
        assert_eq!(c.namespace, "t1");
        assert_eq!(c.saga.person_timeout, Duration::from_secs(60));
        assert_eq!(c.vars.get("PAYMENT_DECLINE_RATE"), Some("0.25"), "kept for the section that owns it");
        assert!(c.duplicate_delivery);
        assert_eq!(c.saga.command_timeout, Duration::from_millis(250));
        assert_eq!(c.http_addr.port(), 9);
    }

    #[test]
    fn a_section_reads_its_own_variables_with_the_same_errors() {
        let vars: Vars = [("RATE", "0.25"), ("DELAY_MS", "1500"), ("BAD", "1.5"), ("EMPTY", "")].into_iter().collect();
        let (mut rate, mut delay, mut bad, mut empty) = (0.0, Duration::ZERO, 0.0, 0.5);
        vars.rate("RATE", &mut rate).unwrap();
        vars.millis("DELAY_MS", &mut delay).unwrap();
        vars.rate("EMPTY", &mut empty).unwrap();
        assert_eq!((rate, delay, empty), (0.25, Duration::from_millis(1500), 0.5), "an empty value is unset");
        let err = vars.rate("BAD", &mut bad).unwrap_err().to_string();
        assert!(err.contains("BAD") && err.contains("0.0 to 1.0"), "{err}");
        let secret: Vars = [("BOOTSTRAP_ADMIN_KEY", "k".repeat(40))].into_iter().collect();
        assert!(!format!("{secret:?}").contains("kkkk"), "values stay out of Debug output");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("HTTP_ADDR", "nowhere")]).unwrap_err().to_string();
        assert!(err.contains("HTTP_ADDR"), "{err}");
        assert!(config(&[("NAMESPACE", "Has Spaces")]).is_err());
        assert!(config(&[("COMMAND_MAX_ATTEMPTS", "0")]).is_err());
        assert!(config(&[("FAULT_DUPLICATE_DELIVERY", "yes")]).is_err());
    }

    #[test]
    fn retention_has_defaults_and_bounds() {
        let day = Duration::from_secs(24 * 3600);
        let defaults = config(&[]).unwrap().retention;
        assert_eq!(
            defaults,
            Retention {
                outbox: Duration::from_secs(3600),
                inbox: 7 * day,
                saga: 30 * day,
                interval: Duration::from_secs(60)
            }
        );
        let set = config(&[
            ("OUTBOX_RETENTION_MS", "0"),
            ("INBOX_RETENTION_MS", "60000"),
            ("SAGA_RETENTION_MS", "120000"),
            ("RETENTION_INTERVAL_MS", "500"),
        ])
        .unwrap()
        .retention;
        assert_eq!(
            set,
            Retention {
                outbox: Duration::ZERO,
                inbox: Duration::from_secs(60),
                saga: Duration::from_secs(120),
                interval: Duration::from_millis(500),
            }
        );
        for name in ["INBOX_RETENTION_MS", "SAGA_RETENTION_MS", "RETENTION_INTERVAL_MS"] {
            let err = config(&[(name, "0")]).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("from 1"), "{err}");
        }
        for name in ["OUTBOX_RETENTION_MS", "INBOX_RETENTION_MS", "SAGA_RETENTION_MS", "RETENTION_INTERVAL_MS"] {
            let err = config(&[(name, "3153600000001")]).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("100 years"), "{err}");
            assert!(config(&[(name, "3153600000000")]).is_ok(), "{name} accepts 100 years");
            assert!(config(&[(name, "7d")]).is_err(), "{name} is in milliseconds");
        }
    }

    #[test]
    fn the_api_door_is_configurable() {
        let c = config(&[
            ("BOOTSTRAP_ADMIN_KEY", "k".repeat(40).as_str()),
            ("RATE_LIMIT_CLIENT", "7,9"),
            ("HTTP_READ_TIMEOUT_MS", "1500"),
            ("CORS_ALLOWED_ORIGINS", "https://ops.example.com, http://localhost:3000"),
        ])
        .unwrap();
        assert_eq!(c.api.bootstrap_admin_key, Some(Secret("k".repeat(40))));
        assert_eq!(c.api.rate_limits.client, Budget { per_second: 7, burst: 9 });
        assert_eq!(c.api.read_timeout, Duration::from_millis(1500));
        assert_eq!(c.api.cors_origins, ["https://ops.example.com", "http://localhost:3000"]);
        assert!(!format!("{c:?}").contains("kkkk"), "the secret stays out of Debug output");
        assert!(config(&[]).unwrap().api.cors_origins.is_empty(), "CORS is closed unless configured");
        let proxied =
            config(&[("HTTP_TRUSTED_PROXIES", "10.0.0.5, 10.1.0.0/16,fd00::/8"), ("HTTP_MAX_HEADER_BYTES", "8192")])
                .unwrap()
                .api;
        let proxies: Vec<String> = proxied.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(proxies, ["10.0.0.5/32", "10.1.0.0/16", "fd00::/8"]);
        assert_eq!(proxied.max_header_bytes, 8192);
        let defaults = config(&[]).unwrap().api;
        assert!(defaults.trusted_proxies.is_empty(), "no proxy is trusted unless configured");
        assert!(defaults.max_connections_per_client >= 64, "a benchmark's 64 clients from one address fit");
    }

    #[test]
    fn weak_or_malformed_door_settings_are_refused() {
        let err = config(&[("BOOTSTRAP_ADMIN_KEY", "short")]).unwrap_err().to_string();
        assert!(err.contains("BOOTSTRAP_ADMIN_KEY") && !err.contains("short"), "{err}");
        assert!(config(&[("BOOTSTRAP_ADMIN_KEY", &format!("{} x", "k".repeat(40)))]).is_err());
        assert!(config(&[("RATE_LIMIT_ADMIN", "10")]).is_err());
        assert!(config(&[("RATE_LIMIT_ADMIN", "0,10")]).is_err());
        assert!(config(&[("HTTP_MAX_CONNECTIONS", "0")]).is_err());
        assert!(config(&[("HTTP_MAX_CONNECTIONS_PER_CLIENT", "0")]).is_err());
        assert!(config(&[("HTTP_REQUEST_TIMEOUT_MS", "0")]).is_err());
        for bytes in ["4096", "2000000", "16k"] {
            let err = config(&[("HTTP_MAX_HEADER_BYTES", bytes)]).unwrap_err().to_string();
            assert!(err.contains("HTTP_MAX_HEADER_BYTES"), "{err}");
        }
        assert!(config(&[("CORS_ALLOWED_ORIGINS", "*")]).is_err());
        for proxies in ["10.0.0.1/33", "proxy.local", "10.0.0.1;10.0.0.2"] {
            let err = config(&[("HTTP_TRUSTED_PROXIES", proxies)]).unwrap_err().to_string();
            assert!(err.contains("HTTP_TRUSTED_PROXIES"), "{err}");
        }
    }
}
