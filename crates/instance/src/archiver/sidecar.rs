//! `pgsteward archiver --pgdata DIR`: the WAL archiver alone, beside a postgres that something
//! else supervises (a VM with its own service manager, or a benchmark). It serves the same
//! socket `wal-archive` calls use and uploads `.ready` segments ahead of postgres, and it exits
//! when the postmaster it saw running on DIR exits (or on SIGTERM/SIGINT). With
//! `--metrics-listen ADDR` it serves its `wal_*` metrics on `GET /metrics`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use super::settings::ArchiveSettings;
use super::Archiver;
use crate::metrics::Metrics;
use crate::pgdata::{is_live_postgres, read_postmaster_pid};

/// Serve `GET /metrics` on `listen` (a bind failure stops the sidecar before it starts).
async fn serve_metrics(listen: SocketAddr, metrics: Metrics) -> Result<()> {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "archiver metrics listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "archiver metrics server stopped");
        }
    });
    Ok(())
}

/// Run the sidecar; returns the exit code.
pub fn run(pgdata: &Path, metrics_listen: Option<SocketAddr>, log_level: &str) -> i32 {
    if let Err(e) = crate::logs::init(log_level) {
        eprintln!("pgsteward archiver: --log-level: {e:#}");
        return 1;
    }
    crate::cli::block_on("archiver", crate::cli::CommandRuntime::TwoWorkers, async {
        match serve(pgdata, metrics_listen).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the archiver stopped");
                1
            }
        }
    })
}

async fn serve(pgdata: &Path, metrics_listen: Option<SocketAddr>) -> Result<()> {
    let settings = ArchiveSettings::read(pgdata)?;
    let metrics = Metrics::new("pgsteward").context("creating metrics")?;
    if let Some(listen) = metrics_listen {
        serve_metrics(listen, metrics.clone()).await?;
    }
    let segment_bytes = crate::pgdata::wal_segment_size(pgdata).unwrap_or(16 << 20);
    let archiver = Archiver::new(settings, pgdata, metrics, segment_bytes).await?;
    archiver.spawn()?;
    tracing::info!(pgdata = %pgdata.display(), destination = %archiver.wal().store().describe(), segment_bytes, "archiver sidecar running");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut seen: Option<i32> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                let live = read_postmaster_pid(pgdata).map(|p| p.pid).filter(|pid| is_live_postgres(*pid));
                match (seen, live) {
                    (None, Some(pid)) => seen = Some(pid),
                    (Some(_), None) => {
                        tracing::info!("the postmaster exited: archiver sidecar stopping");
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    let status = archiver.status();
    tracing::info!(
        archived = status.archived_count,
        failed = status.failed_count,
        backlog = status.ready_backlog,
        "archiver sidecar stopped"
    );
    Ok(())
}
