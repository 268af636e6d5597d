//! Configuration, read once from the environment with localhost defaults.
//!
//! Every process (API, engine, workers) takes the same [`Config`], so one set of variables
//! describes a deployment. Nothing else in the code base reads the environment.

use std::{net::SocketAddr, time::Duration};

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
    /// Deliveries a consumer may hold unacknowledged.
    pub prefetch: u16,
    pub saga: SagaTiming,
    pub simulation: Simulation,
    /// Log lines as JSON objects instead of text.
    pub log_json: bool,
    /// Fault injection (`FAULT_DUPLICATE_DELIVERY=true`): the process's outbox relay publishes
    /// every message twice, so every consumer sees each delivery twice. For the fault suite, which
    /// runs the real binaries and can switch their behaviour only through the environment; never
    /// set in production.
    pub duplicate_delivery: bool,
}

/// How long the engine waits for a reply, and how often it asks again.
#[derive(Clone, Copy, Debug)]
pub struct SagaTiming {
    /// Deadline of the first send of a command; each resend doubles it, up to `max_timeout`.
    pub command_timeout: Duration,
    pub max_timeout: Duration,
    /// Sends of one command (the first included) before the saga gives up on the step.
    pub max_attempts: i32,
}

/// The simulated physical world of the participants.
#[derive(Clone, Copy, Debug, Default)]
pub struct Simulation {
    /// Time a shipment spends on the road before the store can receive it.
    pub transit_delay: Duration,
    /// Fraction (0.0–1.0) of receipts that fail at the store (damaged goods, refused delivery).
    pub receipt_failure_rate: f64,
}

/// A variable was set to something unusable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {expected}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    expected: &'static str,
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
            prefetch: 256,
            saga: SagaTiming {
                command_timeout: Duration::from_secs(5),
                max_timeout: Duration::from_secs(60),
                max_attempts: 5,
            },
            simulation: Simulation::default(),
            log_json: false,
            duplicate_delivery: false,
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a config from any variable source; `from_env` and tests share it.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        let text = |name: &str, target: &mut String| {
            if let Some(value) = get(name).filter(|v| !v.is_empty()) {
                *target = value;
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
        parse(&get, "HTTP_ADDR", "an address such as 127.0.0.1:8080", &mut config.http_addr)?;
        parse(&get, "DB_MAX_CONNECTIONS", "a positive integer", &mut config.db_max_connections)?;
        parse(&get, "PREFETCH", "an integer from 1 to 65535", &mut config.prefetch)?;
        parse(&get, "COMMAND_MAX_ATTEMPTS", "a positive integer", &mut config.saga.max_attempts)?;
        parse(&get, "LOG_JSON", "true or false", &mut config.log_json)?;
        parse(&get, "FAULT_DUPLICATE_DELIVERY", "true or false", &mut config.duplicate_delivery)?;
        parse(&get, "RECEIPT_FAILURE_RATE", "a number from 0.0 to 1.0", &mut config.simulation.receipt_failure_rate)?;
        millis(&get, "COMMAND_TIMEOUT_MS", &mut config.saga.command_timeout)?;
        millis(&get, "COMMAND_MAX_TIMEOUT_MS", &mut config.saga.max_timeout)?;
        millis(&get, "TRANSIT_DELAY_MS", &mut config.simulation.transit_delay)?;
        let rate = config.simulation.receipt_failure_rate;
        if !(0.0..=1.0).contains(&rate) {
            return Err(ConfigError {
                name: "RECEIPT_FAILURE_RATE",
                value: rate.to_string(),
                expected: "a number from 0.0 to 1.0",
            });
        }
        if config.saga.max_attempts < 1 || config.db_max_connections < 1 || config.prefetch < 1 {
            return Err(ConfigError {
                name: "COMMAND_MAX_ATTEMPTS/DB_MAX_CONNECTIONS/PREFETCH",
                value: format!("{}/{}/{}", config.saga.max_attempts, config.db_max_connections, config.prefetch),
                expected: "each at least 1",
            });
        }
        Ok(config)
    }
}

fn valid_namespace(namespace: &str) -> bool {
    (1..=64).contains(&namespace.len())
        && namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn parse<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    expected: &'static str,
    target: &mut T,
) -> Result<(), ConfigError> {
    if let Some(value) = get(name).filter(|v| !v.is_empty()) {
        *target = value.parse().map_err(|_| ConfigError { name, value, expected })?;
    }
    Ok(())
}

fn millis(get: &impl Fn(&str) -> Option<String>, name: &'static str, target: &mut Duration) -> Result<(), ConfigError> {
    let mut ms = u64::try_from(target.as_millis()).unwrap_or(u64::MAX);
    parse(get, name, "a whole number of milliseconds", &mut ms)?;
    *target = Duration::from_millis(ms);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_string()))
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
        ])
        .unwrap();
        assert_eq!(c.namespace, "t1");
        assert!(c.duplicate_delivery);
        assert_eq!(c.saga.command_timeout, Duration::from_millis(250));
        assert_eq!(c.http_addr.port(), 9);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("HTTP_ADDR", "nowhere")]).unwrap_err().to_string();
        assert!(err.contains("HTTP_ADDR"), "{err}");
        assert!(config(&[("NAMESPACE", "Has Spaces")]).is_err());
        assert!(config(&[("RECEIPT_FAILURE_RATE", "1.5")]).is_err());
        assert!(config(&[("COMMAND_MAX_ATTEMPTS", "0")]).is_err());
        assert!(config(&[("FAULT_DUPLICATE_DELIVERY", "yes")]).is_err());
    }
}
