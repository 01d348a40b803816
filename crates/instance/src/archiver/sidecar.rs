//! `pgsteward archiver --pgdata DIR`: the WAL archiver alone, beside a postgres that something
//! else supervises (a VM with its own service manager, or a benchmark). It serves the same
//! socket `wal-archive` calls use and uploads `.ready` segments ahead of postgres, and it exits
//! when the postmaster it saw running on DIR exits (or on SIGTERM/SIGINT).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use super::settings::ArchiveSettings;
use super::Archiver;
use crate::metrics::Metrics;
use crate::pgdata::{is_live_postgres, read_postmaster_pid};

/// Run the sidecar; returns the exit code.
pub fn run(pgdata: &Path) -> i32 {
    if let Err(e) = crate::logs::init("info") {
        eprintln!("pgsteward archiver: {e:#}");
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "starting the async runtime failed");
            return 1;
        }
    };
    match runtime.block_on(serve(pgdata)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the archiver stopped");
            1
        }
    }
}

async fn serve(pgdata: &Path) -> Result<()> {
    let settings = ArchiveSettings::read(pgdata)?;
    let metrics = Metrics::new("pgsteward").context("creating metrics")?;
    let archiver = Archiver::new(settings, pgdata, metrics, 16 << 20).await?;
    archiver.spawn()?;
    tracing::info!(pgdata = %pgdata.display(), destination = %archiver.wal().store().describe(), "archiver sidecar running");
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
