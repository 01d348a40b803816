//! `pgsteward-coordinator`: command line (`--config FILE` runs the coordinator: JSON logs,
//! the API listener, HTTP or HTTPS, and the polling loop; `switchover --to NAME` asks a running
//! coordinator for a switchover and prints its answer).

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
    /// Configuration file (YAML); runs the coordinator.
    #[arg(long, short, env = "PGSTEWARD_COORDINATOR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Ask a running coordinator to move the primary role to another member (demote,
    /// wait until it has received everything, promote, repoint the others).
    Switchover {
        /// The member to promote.
        #[arg(long)]
        to: String,
        /// The coordinator's API.
        #[arg(long, default_value = "http://127.0.0.1:8100")]
        url: String,
        /// File whose first line is the coordinator's API token (its `api_token_file`); not
        /// needed with a client certificate it accepts (`api_tls.client_ca_file`).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// CA (PEM) of the coordinator's certificate, for an https:// URL (default: the
        /// system's roots).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Client certificate (PEM) to present to a coordinator with
        /// `api_tls.client_ca_file`.
        #[arg(long, requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, requires = "client_cert")]
        client_key: Option<PathBuf>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Some(Sub::Switchover {
        to,
        url,
        token_file,
        ca_file,
        client_cert,
        client_key,
        timeout,
    }) = cli.command
    {
        let identity = pgsteward_tls::client::ClientIdentity::from_files(
            client_cert.as_deref(),
            client_key.as_deref(),
        );
        std::process::exit(switchover_command(
            &to,
            &url,
            token_file.as_deref(),
            ca_file.as_deref(),
            identity.as_ref(),
            timeout,
        ));
    }
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

/// `switchover --to`: prints the answer; exit 0 on success, 1 otherwise.
fn switchover_command(
    to: &str,
    url: &str,
    token_file: Option<&std::path::Path>,
    ca_file: Option<&std::path::Path>,
    identity: Option<&pgsteward_tls::client::ClientIdentity>,
    timeout: std::time::Duration,
) -> i32 {
    let result = (|| -> anyhow::Result<(u16, String)> {
        let token = match token_file {
            Some(path) => Some(pgsteward_coordinator::config::read_token_file(path)?),
            None if identity.is_some() => None,
            None => anyhow::bail!(
                "--token-file must name the coordinator's API token file (api_token_file), or --client-cert and --client-key a client certificate it accepts (api_tls.client_ca_file)"
            ),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        runtime.block_on(async {
            let client = pgsteward_coordinator::client::Client::new(ca_file, identity)?;
            let body = serde_json::json!({ "to": to });
            match client
                .post(url, "/switchover", token.as_deref(), Some(body), timeout)
                .await
            {
                Ok(answer) => Ok((200, serde_json::to_string_pretty(&answer)?)),
                Err(pgsteward_coordinator::client::ClientError::Status { status, body }) => {
                    Ok((status, body))
                }
                Err(e) => Err(anyhow::anyhow!("asking {url} for a switchover: {e}")),
            }
        })
    })();
    match result {
        Ok((200, text)) => {
            println!("{text}");
            0
        }
        Ok((status, text)) => {
            eprintln!("switchover refused (HTTP {status}): {text}");
            1
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(path) = cli.config else {
        anyhow::bail!("--config FILE is required to run the coordinator (or use a subcommand)");
    };
    let config = Config::load(&path)?;
    for warning in config.warnings() {
        tracing::warn!(%warning, "configuration");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listen = config.listen;
        let acceptor = match &config.api_tls {
            Some(tls) => Some(pgsteward_tls::server::ReloadableAcceptor::new(
                pgsteward_tls::server::acceptor(
                    &tls.cert_file,
                    &tls.key_file,
                    tls.client_ca_file.as_deref(),
                )?,
            )),
            None => None,
        };
        let watched = config.clone();
        let (coordinator, shared) = Coordinator::new(config)?;
        pgsteward_coordinator::reload::spawn_sighup_handler(path.clone(), shared.clone())?;
        pgsteward_coordinator::tls_watch::spawn(
            &watched,
            coordinator.client(),
            acceptor.clone(),
            shared.clone(),
        );
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let scheme = if acceptor.is_some() { "HTTPS" } else { "HTTP" };
        tracing::info!(%listen, "coordinator API listening ({scheme})");
        let server =
            pgsteward_tls::server::serve_http_or_https(listener, acceptor, api::router(shared));
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
