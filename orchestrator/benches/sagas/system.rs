//! The system under test, `darkstores` (the whole system in one process) as its own process, and what the benchmark reads
//! about it and about the services: CPU time per process from `/proc`, resident memory, and
//! Postgres's own counters.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{ADMIN_KEY, TestEnv, eventually};

/// A running `darkstores` on its own database and broker namespace.
pub struct System {
    pub env: TestEnv,
    pub pool: PgPool,
    pub addr: SocketAddr,
    pub postmasters: Postmasters,
    child: Child,
}

/// The postmasters of the primary and of the read replica (when `DATABASE_REPLICA_URL` names
/// one): a Postgres process is counted for the cluster whose postmaster it is or runs under.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postmasters {
    pub primary: Option<u32>,
    pub replica: Option<u32>,
}

impl Postmasters {
    async fn find(primary: &PgPool) -> Self {
        let replica = match std::env::var("DATABASE_REPLICA_URL") {
            Ok(url) if !url.is_empty() => match PgPool::connect(&url).await {
                Ok(pool) => {
                    let found = postmaster_of(&pool).await;
                    pool.close().await;
                    found
                }
                Err(_) => None,
            },
            _ => None,
        };
        Self { primary: postmaster_of(primary).await, replica }
    }
}

/// The postmaster of the cluster `pool` connects to: the parent of a backend.
async fn postmaster_of(pool: &PgPool) -> Option<u32> {
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(pool).await.ok()?;
    parent_of(u32::try_from(backend).ok()?)
}

/// A process's parent, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

impl System {
    /// Starts the release binary with the production defaults, except that no rate limit stops
    /// the benchmark's clients and `extra` environment variables on top.
    pub async fn start(extra: &[(&str, String)]) -> Self {
        Self::start_in(TestEnv::new().await, extra).await
    }

    /// [`System::start`], reading that may lag from the replica `DATABASE_REPLICA_URL` names, in
    /// this deployment's database there.
    pub async fn start_with_replica() -> Self {
        let mut env = TestEnv::new().await;
        env.use_replica();
        let url = env.config.vars.get("DATABASE_REPLICA_URL").expect("use_replica set it").to_owned();
        Self::start_in(env, &[("DATABASE_REPLICA_URL", url)]).await
    }

    async fn start_in(env: TestEnv, extra: &[(&str, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench");
        std::fs::create_dir_all(&log_dir).expect("can create the log folder");
        let log = std::fs::File::create(log_dir.join(format!("{}.log", env.config.namespace))).unwrap();
        const UNLIMITED: &str = "1000000,1000000";
        // BENCH_BINARY runs another build (an earlier commit's, say) under the same workload: a
        // command and its arguments (`…/orchestrator all` for a build from before `darkstores`).
        let other = std::env::var("BENCH_BINARY").unwrap_or_default();
        let mut words = other.split_whitespace();
        let binary = words.next().map_or_else(|| crate::support::process::built("darkstores"), PathBuf::from);
        let child = Command::new(binary)
            .args(words)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &env.config.database_url)
            .env("REDIS_URL", &env.config.redis_url)
            .env("AMQP_URL", &env.config.amqp_url)
            .env("NAMESPACE", &env.config.namespace)
            .env("HTTP_ADDR", addr.to_string())
            .env("BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("RATE_LIMIT_ANONYMOUS", UNLIMITED)
            .env("RATE_LIMIT_CLIENT", UNLIMITED)
            .env("RATE_LIMIT_OPERATOR", UNLIMITED)
            .env("RATE_LIMIT_ADMIN", UNLIMITED)
            .env("LOG_JSON", "true")
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("can start the orchestrator binary");
        eventually(Duration::from_secs(60), "the orchestrator is ready", || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        let pool = env.pool().await;
        // Statement counts, where the server loads the module (shared_preload_libraries).
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&pool).await;
        let postmasters = Postmasters::find(&pool).await;
        Self { env, pool, addr, postmasters, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the orchestrator now and at its peak, in MiB.
    pub fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(f64::NAN, |kib| kib / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Postgres's counters for this database, and the cluster's WAL position.
    pub async fn pg_counters(&self) -> PgCounters {
        let (xacts, inserted, updated, deleted): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()),
                    COALESCE(sum(n_tup_ins), 0)::int8, COALESCE(sum(n_tup_upd), 0)::int8, COALESCE(sum(n_tup_del), 0)::int8
             FROM pg_stat_user_tables",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        let wal: i64 =
            sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0')::int8").fetch_one(&self.pool).await.unwrap();
        let statements = sqlx::query_scalar::<_, i64>(
            "SELECT sum(calls)::int8 FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&self.pool)
        .await
        .ok();
        let messages: i64 =
            sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM outbox").fetch_one(&self.pool).await.unwrap();
        PgCounters { xacts, inserted, updated, deleted, wal, statements, messages }
    }

    /// Rows in the database's tables (live tuples), and its size on disk in MiB.
    pub async fn size(&self) -> (i64, f64) {
        sqlx::query_as(
            "SELECT COALESCE(sum(n_live_tup), 0)::int8, pg_database_size(current_database())::float8 / 1048576
             FROM pg_stat_user_tables",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    pub async fn stop(mut self) {
        // SIGINT: the graceful stop an operator would use.
        let _ = Command::new("kill").arg("-INT").arg(self.pid().to_string()).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.pool.close().await;
        self.env.teardown().await;
    }
}

/// Cumulative counters read from Postgres; a phase reports the difference of two readings.
#[derive(Clone, Copy, Debug)]
pub struct PgCounters {
    pub xacts: i64,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub wal: i64,
    /// `None` where `pg_stat_statements` is not loaded.
    pub statements: Option<i64>,
    /// Messages written to the outbox (its identity), by every role: each is published once.
    pub messages: i64,
}

impl PgCounters {
    /// Per unit of work, between `self` (before) and `after`.
    pub fn per(&self, after: &Self, units: f64) -> Value {
        let per = |a: i64, b: i64| ((b - a) as f64 / units * 10.0).round() / 10.0;
        json!({
            "transactions": per(self.xacts, after.xacts),
            "statements": match (self.statements, after.statements) {
                (Some(a), Some(b)) => json!(per(a, b)),
                _ => json!("pg_stat_statements is not loaded"),
            },
            "rows_inserted": per(self.inserted, after.inserted),
            "rows_updated": per(self.updated, after.updated),
            "rows_deleted": per(self.deleted, after.deleted),
            "wal_kib": ((after.wal - self.wal) as f64 / 1024.0 / units * 10.0).round() / 10.0,
            "messages": per(self.messages, after.messages),
        })
    }
}

/// CPU time (user + system) so far, in milliseconds, of the processes the benchmark accounts for.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub orchestrator: f64,
    /// The primary's processes.
    pub postgres: f64,
    /// The read replica's processes, when there is one.
    pub replica: f64,
    pub rabbitmq: f64,
    pub redis: f64,
    pub bench: f64,
}

impl Cpu {
    /// Reads `/proc`: the orchestrator by pid, Postgres by cluster (its postmaster and the
    /// processes under it; by name alone when the postmaster is unknown), the other services by
    /// process name. A postmaster's figure includes what it has reaped from backends that ended.
    pub fn read(orchestrator: u32, postmasters: Postmasters) -> Self {
        let tick = 1000.0 / clock_ticks();
        let mut cpu = Self::default();
        let me = std::process::id();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let name = &stat[open + 1..close];
            let fields: Vec<f64> = stat[close + 2..].split(' ').map(|f| f.parse().unwrap_or(0.0)).collect();
            // Fields 14-17 of stat(5): utime, stime, cutime, cstime; `fields` starts at field 3.
            let (own, reaped) = (fields[11] + fields[12], fields[13] + fields[14]);
            let ms = own * tick;
            let parent = fields[1] as u32;
            let of = |postmaster: Option<u32>| postmaster.is_some_and(|p| pid == p || parent == p);
            if pid == orchestrator {
                cpu.orchestrator += ms;
            } else if pid == me {
                cpu.bench += ms;
            } else if name == "postgres" {
                if of(postmasters.replica) {
                    cpu.replica += ms + reaped * tick;
                } else if of(postmasters.primary) || postmasters.primary.is_none() {
                    cpu.postgres += ms + reaped * tick;
                }
            } else if name == "beam.smp" || name == "epmd" || name.starts_with("erl_child") {
                cpu.rabbitmq += ms;
            } else if name == "redis-server" {
                cpu.redis += ms;
            }
        }
        cpu
    }

    /// Milliseconds per unit of work between `self` (before) and `after`.
    pub fn per(&self, after: &Self, units: f64) -> Value {
        let per = |a: f64, b: f64| ((b - a) / units * 100.0).round() / 100.0;
        let ours = per(self.orchestrator, after.orchestrator);
        let (postgres, rabbitmq, redis) =
            (per(self.postgres, after.postgres), per(self.rabbitmq, after.rabbitmq), per(self.redis, after.redis));
        let replica = per(self.replica, after.replica);
        json!({
            "orchestrator": ours,
            "postgres": postgres,
            "postgres_replica": replica,
            "rabbitmq": rabbitmq,
            "redis": redis,
            "total": ((ours + postgres + replica + rabbitmq + redis) * 100.0).round() / 100.0,
            "bench_client": per(self.bench, after.bench),
        })
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

impl System {
    /// Exact row counts of the tables retention bounds, and their size on disk (with indexes) in MiB.
    pub async fn retained_rows(&self) -> Value {
        let (sagas, transitions, outbox, inbox, mib): (i64, i64, i64, i64, f64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM saga), (SELECT count(*) FROM saga_transition),
                    (SELECT count(*) FROM outbox), (SELECT count(*) FROM inbox),
                    (SELECT sum(pg_total_relation_size(t))::float8 / 1048576
                     FROM unnest(ARRAY['saga', 'saga_transition', 'outbox', 'inbox', 'replenishment']::regclass[]) t)",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        let mib = (mib * 10.0).round() / 10.0;
        json!({ "saga": sagas, "saga_transition": transitions, "outbox": outbox, "inbox": inbox, "size_mib": mib })
    }
}
