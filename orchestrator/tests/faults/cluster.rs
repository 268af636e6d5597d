//! The system under test as real OS processes: `orchestrator serve` and the worker binary of every
//! participant, built by cargo and configured by environment variables, as in production.
//! A kill is a real SIGKILL: no destructor, no graceful shutdown, unacknowledged deliveries and
//! uncommitted transactions left to the broker and the database.
//!
//! Each process writes its log to a file under `target/fault-suite/<test>/`; the paths are
//! printed when a test fails. Every process is killed when the [`Cluster`] is dropped, also
//! when a test fails, so nothing is left running.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

use platform::{
    config::Config,
    messaging::{Participant, Queue},
};
use serde_json::Value;

use super::{broker, http::Client};
pub use crate::support::process::target_dir;
use crate::support::{
    eventually,
    process::{self, free_port, tail},
};

/// How long a process may take to start and be ready: the first one also migrates the database.
const START_WITHIN: Duration = Duration::from_secs(60);

/// What a process of the cluster runs: the orchestrator (API and engine), or the worker of one
/// participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Orchestrator,
    Worker(Participant),
}

impl Role {
    /// The orchestrator, and the worker of every participant the registered kinds declare.
    pub fn all() -> Vec<Self> {
        let workers =
            sagas::registry().participants().iter().map(|participant| Self::Worker(*participant)).collect::<Vec<_>>();
        std::iter::once(Self::Orchestrator).chain(workers).collect()
    }

    /// Its binary: `orchestrator`, or `<participant>-worker`.
    fn binary(self) -> String {
        match self {
            Self::Orchestrator => "orchestrator".to_owned(),
            Self::Worker(participant) => format!("{}-worker", participant.name),
        }
    }

    /// The queue each process of this role consumes.
    pub fn queue(self) -> Queue {
        match self {
            Self::Orchestrator => Queue::Replies,
            Self::Worker(participant) => Queue::Commands(participant),
        }
    }
}

/// How many processes of each role run.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub copies: usize,
}

impl Shape {
    pub const SINGLE: Self = Self { copies: 1 };
    pub const DOUBLE: Self = Self { copies: 2 };
}

fn binary(role: Role) -> PathBuf {
    process::built(&role.binary())
}

/// One process slot: a role, and the process currently filling it (none once killed for good).
struct Slot {
    role: Role,
    name: String,
    /// The orchestrator's API address; a restarted process listens on the same one.
    http: Option<SocketAddr>,
    child: Option<Child>,
    logs: Vec<PathBuf>,
}

pub struct Cluster {
    config: Config,
    /// Variables every process gets on top of those derived from `config`.
    extra_env: Vec<(String, String)>,
    log_dir: PathBuf,
    slots: Vec<Slot>,
    /// SIGKILLs sent so far.
    pub killed: usize,
}

impl Cluster {
    /// Starts the processes of `shape` for the deployment `config` describes, and waits until
    /// each one serves its API or consumes its queue.
    pub async fn start(config: &Config, shape: Shape, extra_env: Vec<(String, String)>, log_dir: PathBuf) -> Self {
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir).expect("can create the log directory");
        let mut cluster = Self { config: config.clone(), extra_env, log_dir, slots: Vec::new(), killed: 0 };
        for role in Role::all() {
            for n in 1..=shape.copies {
                let http = (role == Role::Orchestrator).then(free_port);
                let name = format!("{}-{n}", role.binary());
                cluster.slots.push(Slot { role, name, http, child: None, logs: Vec::new() });
            }
        }
        cluster.spawn_all().await;
        cluster
    }

    async fn spawn_all(&mut self) {
        // The first process migrates the database; the others would wait on its lock anyway.
        self.spawn(0);
        self.wait_ready().await;
        for index in 1..self.slots.len() {
            self.spawn(index);
        }
        self.wait_ready().await;
    }

    /// SIGKILLs every process, as the loss of the machine they run on would.
    pub fn kill_all(&mut self) {
        for role in Role::all() {
            let copies = self.slots.iter().filter(|s| s.role == role).count();
            for n in 0..copies {
                self.kill(role, n);
            }
        }
    }

    /// Points the stopped deployment at what `config` now describes (a restored database).
    pub fn reconfigure(&mut self, config: &Config) {
        assert!(self.slots.iter().all(|s| s.child.is_none()), "every process is stopped first");
        self.config = config.clone();
    }

    /// Starts every stopped process again, each in its slot and at its address, and waits until
    /// all are ready.
    pub async fn start_again(&mut self) {
        assert!(self.slots.iter().all(|s| s.child.is_none()), "every process is stopped first");
        self.spawn_all().await;
    }

    /// Runs `orchestrator <mode>` once for this deployment, to its end; returns what it printed.
    pub fn run_once(&self, mode: &str) -> String {
        let log = self.log_dir.join(format!("orchestrator-{mode}.log"));
        let mut command = process::command(&binary(Role::Orchestrator), &self.config, None, &log);
        let status = command.arg(mode).status().unwrap_or_else(|e| panic!("cannot run orchestrator {mode}: {e}"));
        let printed = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "orchestrator {mode} failed ({status}):\n{printed}");
        printed
    }

    /// The API addresses of the running orchestrators. A restarted one keeps its address, so a
    /// client given this list before a kill finds the instance again, or moves on to another.
    pub fn api(&self) -> Vec<SocketAddr> {
        self.slots.iter().filter(|s| s.child.is_some()).filter_map(|s| s.http).collect()
    }

    fn slot(&self, role: Role, n: usize) -> usize {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.role == role)
            .nth(n)
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no {role:?} number {n}"))
    }

    fn spawn(&mut self, index: usize) {
        /// The suite's clients are the load, not what it tests: no budget stops them.
        const UNLIMITED: &str = "1000000,1000000";
        let slot = &mut self.slots[index];
        let log = self.log_dir.join(format!("{}.{}.log", slot.name, slot.logs.len() + 1));
        let mut command = process::command(&binary(slot.role), &self.config, slot.http, &log);
        if slot.role == Role::Orchestrator {
            command.arg("serve");
        }
        command
            .env("RATE_LIMIT_ANONYMOUS", UNLIMITED)
            .env("RATE_LIMIT_CLIENT", UNLIMITED)
            .env("RATE_LIMIT_OPERATOR", UNLIMITED)
            .env("RATE_LIMIT_ADMIN", UNLIMITED)
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        slot.child = Some(command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", slot.name)));
        slot.logs.push(log);
    }

    /// SIGKILLs process number `n` (from 0) of `role` and reaps it.
    pub fn kill(&mut self, role: Role, n: usize) {
        let index = self.slot(role, n);
        let slot = &mut self.slots[index];
        let mut child = slot.child.take().unwrap_or_else(|| panic!("{} is not running", slot.name));
        assert!(child.try_wait().expect("can poll the child").is_none(), "{} died before it was killed", slot.name);
        // On Unix, Child::kill sends SIGKILL.
        child.kill().expect("can send SIGKILL");
        // The process cannot survive SIGKILL: waiting for it is only reaping.
        let status = child.wait().expect("can reap the killed process");
        eprintln!("killed {} with SIGKILL ({status})", slot.name);
        self.killed += 1;
    }

    /// Starts a fresh process in the slot of process `n` of `role` and waits until it is ready.
    pub async fn restart(&mut self, role: Role, n: usize) {
        let index = self.slot(role, n);
        assert!(self.slots[index].child.is_none(), "{} is still running", self.slots[index].name);
        self.spawn(index);
        self.wait_ready().await;
    }

    /// Waits until every running orchestrator answers over HTTP and every queue has one
    /// consumer per running process of its role: after a start, a restart, or a broker restart
    /// (which every process must survive by reconnecting).
    pub async fn wait_ready(&mut self) {
        self.assert_running();
        for addr in self.slots.iter().filter(|s| s.child.is_some()).filter_map(|s| s.http) {
            let what = format!("the API at {addr} to answer{}", self.logs_hint());
            eventually(START_WITHIN, &what, || async move {
                let mut client = Client::new(vec![addr], 0);
                let answer = client.send("GET", "/health/live", &[], &Value::Null).await.ok()?;
                (answer.status == 200).then_some(())
            })
            .await;
        }
        for role in Role::all() {
            let expected = self.slots.iter().filter(|s| s.role == role && s.child.is_some()).count() as u32;
            let (amqp_url, namespace) = (&self.config.amqp_url, &self.config.namespace);
            // At least, not exactly: after a broker restart a quorum queue may go on counting a
            // consumer of a connection the restart closed (rabbitmq-server#2420). Deliveries are
            // what matter, and the run's end checks prove every message was handled.
            let what = format!("{expected} consumer(s) on the {role:?} queue{}", self.logs_hint());
            eventually(START_WITHIN, &what, || async move {
                let queue = broker::queue_state(amqp_url, namespace, role.queue()).await.ok()?;
                (queue.consumers >= expected).then_some(())
            })
            .await;
        }
        self.assert_running();
    }

    /// Panics, naming the process and its log, if one that should be running has exited.
    pub fn assert_running(&mut self) {
        for slot in &mut self.slots {
            if let Some(child) = &mut slot.child
                && let Some(status) = child.try_wait().expect("can poll the child")
            {
                let log = slot.logs.last().expect("a started process has a log");
                panic!("{} exited on its own ({status}); its log: {}\n{}", slot.name, log.display(), tail(log));
            }
        }
    }

    /// Every log file written so far, for counting what the processes reported.
    pub fn logs(&self) -> impl Iterator<Item = (Role, &Path)> {
        self.slots.iter().flat_map(|s| s.logs.iter().map(move |l| (s.role, l.as_path())))
    }

    fn logs_hint(&self) -> String {
        format!("; process logs in {}", self.log_dir.display())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the processes' logs are kept for a post-mortem:");
            for (_, log) in self.logs() {
                eprintln!("  {}", log.display());
            }
        }
        for slot in &mut self.slots {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
