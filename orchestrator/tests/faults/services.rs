//! The suite's own Postgres, RabbitMQ and Redis, for the tests that stop and start one under the
//! running system: throwaway servers started from the machine's packages, on free ports, with
//! their data under `target/fault-suite/services/<test>/`. The servers the machine already runs
//! are never stopped (`scripts/test` checks that they were not restarted).
//!
//! A server is started as the user its package runs it as when the suite runs as root (Postgres
//! refuses root), and as the current user otherwise. Dropping one stops it, whatever the test's
//! outcome; its data and log stay until the next run, for inspection.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use platform::{messaging, redis::Redis};
use sqlx::{Connection, PgConnection};

use crate::{cluster::target_dir, support::eventually};

/// A stop or a start (with its readiness) that takes longer than this is a failure.
const WITHIN: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Postgres,
    RabbitMq,
    Redis,
}

/// One throwaway server; see the module's documentation.
pub struct Private {
    pub service: Service,
    dir: PathBuf,
    /// Postgres's data directory: `data` under `dir`, or the restored copy after a restore.
    data: PathBuf,
    port: u16,
    /// RabbitMQ's Erlang distribution port, so that it needs none of the machine's.
    dist_port: u16,
    up: bool,
}

impl Private {
    /// Starts a fresh server of `service` for `test` and waits until it answers.
    pub async fn start(service: Service, test: &str) -> Self {
        let slug: String = test.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let dir = target_dir().join("fault-suite").join("services").join(slug).join(format!("{service:?}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cannot clear {}: {e}", dir.display()));
        }
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let data = dir.join("data");
        let mut private = Self { service, dir, data, port: free_port(), dist_port: free_port(), up: false };
        private.prepare();
        private.start_again().await;
        private
    }

    /// The URL clients reach it at.
    pub fn url(&self) -> String {
        match self.service {
            Service::Postgres => format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port),
            Service::RabbitMq => format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port),
            Service::Redis => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (as a crash of the service would look to its clients: connections
    /// dropped) and waits until it no longer answers.
    pub async fn stop(&mut self) {
        eprintln!("stopping the suite's own {:?} ({})", self.service, self.url());
        self.up = false;
        let command = self.command("stop");
        tokio::task::block_in_place(|| run(command));
        self.until_answering(false).await;
    }

    /// Starts the server on its existing data and waits until it answers.
    pub async fn start_again(&mut self) {
        let command = self.command("start");
        tokio::task::block_in_place(|| run(command));
        self.until_answering(true).await;
        self.up = true;
    }

    /// Waits until the server answers, or until it no longer does.
    async fn until_answering(&self, wanted: bool) {
        let (service, url) = (self.service, self.url());
        let what =
            if wanted { format!("{service:?} to answer at {url}") } else { format!("{service:?} to stop answering") };
        eventually(WITHIN, &what, || {
            let url = url.clone();
            async move { (answers(service, &url).await == wanted).then_some(()) }
        })
        .await;
    }

    /// Stops and starts the server at once; returns how long it was down.
    pub async fn restart(&mut self) -> Duration {
        let started = Instant::now();
        self.stop().await;
        self.start_again().await;
        let down = started.elapsed();
        eprintln!("{:?} is back after {down:.1?}", self.service);
        down
    }

    /// Restores this Postgres from `backups` to the moment `point` (`scripts/restore`) into a
    /// fresh data directory, and serves that copy from now on, on a new port: the server the
    /// backups were taken from is gone (stopped, and its data left alone).
    pub async fn restore(&mut self, backups: &Backups, point: &str) {
        assert_eq!(self.service, Service::Postgres, "only Postgres is backed up");
        assert!(!self.up, "stop the lost server first");
        let (data, port) = (self.dir.join("restored"), free_port());
        let mut restore = scripts("restore", &backups.dir, &self.url());
        restore.arg("--into").arg(&data).args(["--to", point, "--port", &port.to_string()]);
        eprintln!("restoring the suite's own Postgres to {point}");
        tokio::task::block_in_place(|| run(restore));
        (self.data, self.port) = (data, port);
        self.up = true;
        self.until_answering(true).await;
    }

    /// The one-time set-up before the first start: a Postgres cluster, RabbitMQ's empty plugin
    /// list (the machine's would start its management listener on the machine's port).
    fn prepare(&self) {
        match self.service {
            Service::Postgres => {
                self.hand_to("postgres");
                let mut initdb = self.as_user("postgres", &postgres_bin("initdb"));
                initdb.arg("-D").arg(&self.data).args(["-A", "trust", "-U", "postgres", "-E", "UTF8"]);
                initdb.arg("--no-sync");
                run(initdb);
            }
            Service::RabbitMq => {
                std::fs::write(self.dir.join("enabled_plugins"), "[].\n").expect("can write the plugin list");
                self.hand_to("rabbitmq");
            }
            Service::Redis => {}
        }
    }

    fn command(&self, action: &str) -> Command {
        let dir = &self.dir;
        let port = self.port.to_string();
        match (self.service, action) {
            (Service::Postgres, "start") => {
                let mut command = self.as_user("postgres", &postgres_bin("pg_ctl"));
                let options = format!("-p {port} -c listen_addresses=127.0.0.1 -k {}", dir.display());
                command.arg("-D").arg(&self.data).arg("-l").arg(dir.join("postgres.log"));
                command.args(["-w", "-o", &options, "start"]);
                command
            }
            (Service::Postgres, _) => {
                let mut command = self.as_user("postgres", &postgres_bin("pg_ctl"));
                command.arg("-D").arg(&self.data).args(["-w", "-m", "fast", "stop"]);
                command
            }
            (Service::RabbitMq, action) => {
                let (program, args) = match action {
                    "start" => ("rabbitmq-server", vec!["-detached"]),
                    // Returns once the Erlang VM has exited, so a start cannot race it.
                    _ => ("rabbitmqctl", vec!["-n", "", "shutdown"]),
                };
                let node = format!("faults-{port}@localhost");
                let mut command = self.as_user("rabbitmq", &rabbitmq_bin(program));
                command.args(args.iter().map(|a| if a.is_empty() { node.as_str() } else { a }));
                command
                    .current_dir(dir)
                    .env("HOME", dir)
                    .env("RABBITMQ_NODENAME", &node)
                    .env("RABBITMQ_NODE_PORT", &port)
                    .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
                    .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
                    .env("RABBITMQ_LOG_BASE", dir.join("log"))
                    .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
                    .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                    .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
                    .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
                    .env("RABBITMQ_CONF_ENV_FILE", "/dev/null");
                command
            }
            (Service::Redis, "start") => {
                let mut command = Command::new("redis-server");
                command.args(["--daemonize", "yes", "--bind", "127.0.0.1", "--port", &port, "--save", ""]);
                command.args(["--appendonly", "no", "--dir"]).arg(dir).arg("--logfile").arg(dir.join("redis.log"));
                command
            }
            (Service::Redis, _) => {
                let mut command = Command::new("redis-cli");
                command.args(["-p", &port, "shutdown", "nosave"]);
                command
            }
        }
    }

    /// `program`, run as `user` when the suite runs as root.
    fn as_user(&self, user: &str, program: &Path) -> Command {
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Gives the server's directory to `user` when the suite runs as root.
    fn hand_to(&self, user: &str) {
        if running_as_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", user]).arg(&self.dir);
            run(chown);
        }
    }
}

impl Drop for Private {
    /// Stops the server, whatever became of the test; blocking, as a destructor must.
    fn drop(&mut self) {
        // A server already stopped makes the command fail, which changes nothing.
        let _ = self.command("stop").output();
    }
}

/// `scripts/backup` against a test's own Postgres: the WAL receiver, streaming for as long as this
/// lives, and base backups on demand. Backups go under the server's directory.
pub struct Backups {
    dir: PathBuf,
    receiver: Child,
}

impl Backups {
    pub fn start(postgres: &Private) -> Self {
        let dir = postgres.dir.join("backups");
        std::fs::create_dir_all(&dir).expect("can create the backup directory");
        let log = std::fs::File::create(postgres.dir.join("wal-receiver.log")).expect("can create a log file");
        let mut wal = scripts("backup", &dir, &postgres.url());
        wal.arg("wal").stdout(log.try_clone().expect("can share the log file")).stderr(log);
        Self { receiver: wal.spawn().expect("can start the WAL receiver"), dir }
    }

    /// Takes a base backup now, and returns once it is whole and verified.
    pub fn base(&self, postgres: &Private) {
        let mut base = scripts("backup", &self.dir, &postgres.url());
        base.arg("base");
        tokio::task::block_in_place(|| run(base));
    }

    /// Waits until the receiver has the WAL up to `lsn` on disk.
    pub async fn streamed(&self, postgres: &Private, lsn: &str) {
        let url = postgres.url();
        eventually(WITHIN, &format!("the WAL receiver to flush {lsn}"), || {
            let url = url.clone();
            async move {
                let mut conn = PgConnection::connect(&url).await.ok()?;
                let flushed: Option<bool> = sqlx::query_scalar(
                    "SELECT bool_or(flush_lsn >= $1::pg_lsn) FROM pg_stat_replication WHERE application_name = 'pg_receivewal'",
                )
                .bind(lsn)
                .fetch_one(&mut conn)
                .await
                .ok()?;
                flushed.unwrap_or(false).then_some(())
            }
        })
        .await;
    }
}

impl Drop for Backups {
    /// SIGTERM, which `runuser` passes on to the receiver (a SIGKILL would orphan it).
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.receiver.id().to_string()).status();
        let _ = self.receiver.wait();
    }
}

/// `scripts/<name>` with the backups in `dir` and the server at `url`.
fn scripts(name: &str, dir: &Path, url: &str) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate is in a workspace");
    let mut command = Command::new("bash");
    command.arg(root.join("scripts").join(name)).env("BACKUP_DIR", dir).env("DATABASE_URL", url);
    command
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// A port nothing listens on now (the server binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

/// The newest installed Postgres's `program`.
fn postgres_bin(program: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort_by_key(|path| {
        path.parent().and_then(|p| p.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    versions.pop().map(|bin| bin.join(program)).filter(|path| path.exists()).unwrap_or_else(|| PathBuf::from(program))
}

/// RabbitMQ's own `program`, not Debian's wrapper, which would run the machine's node.
fn rabbitmq_bin(program: &str) -> PathBuf {
    let own = Path::new("/usr/lib/rabbitmq/bin").join(program);
    if own.exists() { own } else { PathBuf::from(program) }
}

/// Runs `command`, panicking with its output when it fails.
fn run(mut command: Command) {
    let shown = format!("{command:?}");
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether the service answers its own protocol (a TCP accept is not enough: a booting
/// RabbitMQ or a recovering Postgres accepts and then refuses).
async fn answers(service: Service, url: &str) -> bool {
    let probe = async {
        match service {
            Service::Postgres => match PgConnection::connect(url).await {
                Ok(mut conn) => sqlx::query("SELECT 1").execute(&mut conn).await.is_ok(),
                Err(_) => false,
            },
            Service::RabbitMq => match messaging::connect(url, "fault-suite-probe").await {
                Ok(connection) => {
                    let usable = connection.create_channel().await.is_ok();
                    messaging::close(&connection, "probed").await;
                    usable
                }
                Err(_) => false,
            },
            Service::Redis => match Redis::new(url) {
                Ok(redis) => redis.ping().await,
                Err(_) => false,
            },
        }
    };
    tokio::time::timeout(Duration::from_secs(5), probe).await.unwrap_or(false)
}
