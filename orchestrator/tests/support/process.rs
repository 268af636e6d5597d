//! The built binaries as real OS processes, configured by environment variables as in
//! production: what the fault suite kills and what the flood tests measure from outside (memory,
//! log bytes).

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, SystemTime},
};

use platform::config::Config;

/// The command that runs `binary` for the deployment `config` describes, its output appended to
/// `log`. Variables a caller sets afterwards override these.
pub fn command(binary: &Path, config: &Config, http: Option<SocketAddr>, log: &Path) -> Command {
    let file = std::fs::File::create(log).expect("can create a log file");
    let timing = config.saga;
    let mut command = Command::new(binary);
    command
        // The variables the configuration was read from, which the parts of the system read for
        // themselves too (a participant's simulation); the typed values below take precedence.
        .envs(config.vars.iter())
        .env("DATABASE_URL", &config.database_url)
        .env("REDIS_URL", &config.redis_url)
        .env("AMQP_URL", &config.amqp_url)
        .env("NAMESPACE", &config.namespace)
        .env("HTTP_ADDR", http.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string()))
        .env("DB_MAX_CONNECTIONS", config.db_max_connections.to_string())
        .env("PREFETCH", config.prefetch.to_string())
        .env("COMMAND_TIMEOUT_MS", timing.command_timeout.as_millis().to_string())
        .env("COMMAND_MAX_TIMEOUT_MS", timing.max_timeout.as_millis().to_string())
        .env("COMMAND_MAX_ATTEMPTS", timing.max_attempts.to_string())
        .env("PERSON_STEP_TIMEOUT_MS", timing.person_timeout.as_millis().to_string())
        .env("FAULT_DUPLICATE_DELIVERY", config.duplicate_delivery.to_string())
        .env("BOOTSTRAP_ADMIN_KEY", super::ADMIN_KEY)
        .env("LOG_JSON", "false")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("can share the log file"))
        .stderr(file);
    command
}

/// `target/`, where the logs and the figures go.
pub fn target_dir() -> PathBuf {
    let orchestrator = PathBuf::from(env!("CARGO_BIN_EXE_orchestrator"));
    // target/<profile>/orchestrator
    orchestrator.ancestors().nth(2).expect("the binary lives in target/<profile>/").to_path_buf()
}

/// A binary of another crate of the workspace (a worker, `darkstores`), next to this crate's own
/// `orchestrator`. Cargo builds that one for the test, not the others: a missing or stale one
/// would make the test run old code, so it stops with what to run.
pub fn built(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_orchestrator")).with_file_name(name);
    let release = if path.parent().is_some_and(|dir| dir.ends_with("release")) { " --release" } else { "" };
    let build = format!("cargo build{release} --workspace --bins");
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: build it first with `{build}`", path.display()));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate is in a workspace");
    // What each binary is built from, exactly: cargo relinks a binary only when one of its own
    // sources changed, so a directory it does not depend on would make it look stale for ever.
    let shared = ["orchestrator/platform", "orchestrator/sagas", "orchestrator/stock", "migrations"];
    let own: &[&str] = match name {
        "orchestrator" => &["orchestrator/src"],
        "darkstores" => &["orchestrator/darkstores", "orchestrator/src", "participants/src"],
        _ => &["participants/src"],
    };
    let newest = shared.iter().chain(own).filter_map(|dir| newest_source(&workspace.join(dir))).max();
    assert!(
        newest.is_none_or(|source| source <= built),
        "{} is older than the sources it is built from: rebuild it with `{build}`",
        path.display()
    );
    path
}

/// When the newest source file under `dir` (its `.rs` and `.sql` files, outside `target/` and
/// the tests) was last changed.
fn newest_source(dir: &Path) -> Option<SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let meta = entry.metadata().ok()?;
            let name = entry.file_name();
            if meta.is_dir() {
                let skipped = ["target", "tests", "benches"].iter().any(|skip| name == *skip);
                if skipped { None } else { newest_source(&path) }
            } else if path.extension().is_some_and(|ext| ext == "rs" || ext == "sql") {
                meta.modified().ok()
            } else {
                None
            }
        })
        .max()
}

/// A port nothing listens on now. Another program could take it before the orchestrator does,
/// but on a test machine that is rare, and the start would then fail loudly.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("can bind a local port");
    listener.local_addr().expect("a bound socket has an address")
}

/// The last lines of a log, to show why a process died.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The resident memory of process `pid`, in KiB; `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// One `orchestrator` process serving its API, killed when dropped.
pub struct Orchestrator {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Orchestrator {
    /// Starts `orchestrator serve` for `config`, with `extra` variables on top, and waits until
    /// its API answers.
    pub async fn serve(config: &Config, extra: &[(&str, &str)], log: PathBuf) -> Self {
        std::fs::create_dir_all(log.parent().expect("a log file has a folder")).expect("can create the log folder");
        let addr = free_port();
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_orchestrator"));
        let mut command = command(&binary, config, Some(addr), &log);
        command.arg("serve").envs(extra.iter().copied());
        let child = command.spawn().expect("can start orchestrator");
        let mut process = Self { child, addr, log };
        let what = format!("orchestrator at {addr} to answer; its log: {}", process.log.display());
        super::eventually(Duration::from_secs(60), &what, || {
            let running = process.child.try_wait().expect("can poll the child").is_none();
            assert!(running, "orchestrator exited on its own; its log:\n{}", tail(&process.log));
            async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) }
        })
        .await;
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).expect("the process is running")
    }

    /// Bytes written to its log so far.
    pub fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the orchestrator's log is kept: {}", self.log.display());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
