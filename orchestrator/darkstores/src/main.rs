//! `darkstores`: the whole system in one process. The orchestrator's API and saga engine, and the
//! worker of every participant the saga kinds declare: what the quick start and the compose file
//! run. The same parts run as separate processes with `orchestrator serve` and the workers'
//! binaries; this crate is the only one that links both sides.

use orchestrator::app::{Application, Roles};
use platform::{
    config::Config,
    process::{init_logging, relay_faults},
};

const USAGE: &str = "usage: darkstores

Runs the API, the saga engine and every participant's worker in one process. Configuration comes
from the environment: DATABASE_URL, REDIS_URL, AMQP_URL, HTTP_ADDR (default 127.0.0.1:8080),
NAMESPACE, RUST_LOG, LOG_JSON; see docs/operations.md for the rest. `orchestrator openapi` and
`orchestrator asyncapi` print the contracts.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(argument) = std::env::args().nth(1) {
        let help = matches!(argument.as_str(), "-h" | "--help" | "help");
        if help {
            println!("{USAGE}");
            return Ok(());
        }
        eprintln!("darkstores takes no argument, not {argument:?}\n\n{USAGE}");
        std::process::exit(2);
    }
    let config = Config::from_env()?;
    init_logging(config.log_json);
    let faults = relay_faults(&config);
    let roles = Roles::all(participants::WORKERS)?;
    Application::build(config, roles, faults).await?.run_until_signal().await;
    Ok(())
}
