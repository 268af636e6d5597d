//! `orchestrator serve | after-restore | openapi | asyncapi`: see `--help`.

use orchestrator::{
    Context, after_restore,
    app::{Application, Roles},
    asyncapi, http,
};
use platform::{
    config::Config,
    process::{init_logging, relay_faults},
};

const USAGE: &str = "usage: orchestrator <serve | after-restore | openapi | asyncapi>

  serve     the API and the saga engine; each participant's worker runs as its own process
            (`<participant>-worker`, a binary of the participants crate), or all of it in one
            process with the `darkstores` binary
  after-restore
            with every process stopped, make the broker and the cache agree with a database
            restored to an earlier moment (scripts/restore): purge the deployment's queues, send
            again what the restored outbox had sent unhandled, empty the stock cache
  openapi   print the OpenAPI document and exit
  asyncapi  print the AsyncAPI document of the messages (exchanges, queues, commands, replies,
            events) and exit

Configuration comes from the environment: DATABASE_URL, REDIS_URL, AMQP_URL, HTTP_ADDR
(default 127.0.0.1:8080), NAMESPACE (prefix of every exchange, queue and cache key), RUST_LOG,
LOG_JSON; see docs/operations.md for the rest.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let roles = match mode.as_str() {
        "serve" => Roles::serve(),
        "all" => {
            eprintln!(
                "`orchestrator all` is now its own binary: run `darkstores` (the API, the engine and every worker)"
            );
            std::process::exit(2);
        }
        "openapi" => {
            let config = Config::from_env()?;
            println!("{}", http::spec(&Context::offline(&config)?));
            return Ok(());
        }
        "after-restore" => {
            let config = Config::from_env()?;
            init_logging(config.log_json);
            println!("{}", after_restore::run(&config).await?);
            return Ok(());
        }
        "asyncapi" => {
            println!("{}", asyncapi::render(&sagas::registry()));
            return Ok(());
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return Ok(());
        }
        other => {
            eprintln!("unknown mode {other:?}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let config = Config::from_env()?;
    init_logging(config.log_json);
    let faults = relay_faults(&config);
    Application::build(config, roles, faults).await?.run_until_signal().await;
    Ok(())
}
