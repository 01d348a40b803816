//! `pgsteward-coordinator`: command line (`--config FILE`), JSON logs, the API listener and
//! the polling loop.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pgsteward_coordinator::api;
use pgsteward_coordinator::config::Config;
use pgsteward_coordinator::run::Coordinator;

/// Watches pgsteward instance managers and fails over to the most advanced replica.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (YAML).
    #[arg(long, short, env = "PGSTEWARD_COORDINATOR_CONFIG")]
    config: PathBuf,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run(cli) {
        tracing::error!(error = %format!("{e:#}"), "coordinator failed");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listen = config.listen;
        let (coordinator, shared) = Coordinator::new(config)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        tracing::info!(%listen, "coordinator API listening");
        let server = axum::serve(listener, api::router(shared));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            () = coordinator.run() => Ok(()),
            served = server => served.context("serving the API"),
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted, exiting"); Ok(()) }
            _ = term.recv() => { tracing::info!("SIGTERM, exiting"); Ok(()) }
        }
    })
}
