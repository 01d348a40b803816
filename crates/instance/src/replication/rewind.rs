//! Facts from pg_controldata (cluster state, latest checkpoint location and timeline), pg_rewind
//! of a stopped data directory onto a new primary, and the HA replication slot a repointed
//! standby needs on its new upstream.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::role::Upstream;
use super::standby;
use crate::config::Config;
use crate::pgbin::PgBinaries;
use crate::supervisor::reaper::Reaper;

/// What pg_controldata says about a data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlFacts {
    /// "Database cluster state" (`shut down`, `shut down in recovery`, `in production`, ...).
    pub state: String,
    /// "Latest checkpoint location".
    pub checkpoint_lsn: Option<String>,
    /// "Latest checkpoint's TimeLineID".
    pub timeline: Option<u32>,
}

/// Run pg_controldata on `pgdata`.
pub async fn controldata(
    reaper: &Reaper,
    bins: &PgBinaries,
    pgdata: &Path,
) -> Result<ControlFacts> {
    let mut command = Command::new(bins.bin("pg_controldata"));
    command.arg("-D").arg(pgdata).env("LC_ALL", "C");
    let (exit, stdout, stderr) = reaper
        .output(&mut command)
        .await
        .context("running pg_controldata")?;
    if !exit.success() {
        bail!("pg_controldata failed ({exit}): {}", stderr.trim());
    }
    Ok(parse_controldata(&stdout))
}

fn parse_controldata(text: &str) -> ControlFacts {
    let mut facts = ControlFacts::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Database cluster state" => facts.state = value.to_owned(),
            "Latest checkpoint location" => facts.checkpoint_lsn = Some(value.to_owned()),
            "Latest checkpoint's TimeLineID" => facts.timeline = value.parse().ok(),
            _ => {}
        }
    }
    facts
}

/// What pg_rewind did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewind {
    /// The data directory was already on the source's history.
    NotNeeded,
    /// Rewound.
    Rewound,
}

/// Run pg_rewind on the stopped `pgdata` with `upstream` as the source server
/// (`--restore-target-wal` when an archive is configured). pg_rewind itself runs crash
/// recovery (single-user postgres) on a directory that was not shut down cleanly.
pub async fn rewind(
    reaper: &Reaper,
    bins: &PgBinaries,
    config: &Config,
    pgdata: &Path,
    upstream: &Upstream,
) -> Result<Rewind> {
    let source = format!(
        "{} dbname=postgres",
        standby::conninfo(config, upstream, None)
    );
    let mut command = Command::new(bins.bin("pg_rewind"));
    command
        .arg("-D")
        .arg(pgdata)
        .arg("--source-server")
        .arg(&source)
        .arg("--progress")
        .env("LC_ALL", "C")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null());
    if config.archive.destination.is_some() {
        command.arg("--restore-target-wal");
    }
    if let Some(path) = config.replication_password_file() {
        let password = crate::bootstrap::read_secret(path, "replication password")?;
        command.env("PGPASSWORD", password);
    }
    let started = std::time::Instant::now();
    tracing::info!(upstream_host = %upstream.host, upstream_port = upstream.port, "running pg_rewind");
    let (exit, stdout, stderr) = reaper
        .output(&mut command)
        .await
        .context("running pg_rewind")?;
    let output = format!("{stdout}{stderr}");
    if !exit.success() {
        let tail: Vec<&str> = output.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("pg_rewind failed ({exit}): {}", tail.join(" / "));
    }
    let result = if output.contains("no rewind required") {
        Rewind::NotNeeded
    } else {
        Rewind::Rewound
    };
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        rewound = result == Rewind::Rewound,
        "pg_rewind finished"
    );
    Ok(result)
}

/// Create this instance's replication slot on `upstream` when it is missing (errors are
/// logged: the standby then retries streaming, or replays from the archive).
pub async fn ensure_slot(config: &Config, upstream: &Upstream) {
    if let Err(e) = try_ensure_slot(config, upstream).await {
        tracing::warn!(error = %format!("{e:#}"), upstream_host = %upstream.host, upstream_port = upstream.port, "could not create the replication slot on the new upstream");
    }
}

async fn try_ensure_slot(config: &Config, upstream: &Upstream) -> Result<()> {
    let bb = &config.bootstrap.basebackup;
    let mut pg = tokio_postgres::Config::new();
    pg.host(&upstream.host)
        .port(upstream.port)
        .user(&bb.user)
        .dbname("postgres")
        .application_name("pgsteward")
        .connect_timeout(Duration::from_secs(5));
    if let Some(path) = config.replication_password_file() {
        pg.password(crate::bootstrap::read_secret(path, "replication password")?);
    }
    let (client, connection) =
        tokio::time::timeout(Duration::from_secs(10), pg.connect(tokio_postgres::NoTls))
            .await
            .context("connecting to the new upstream timed out")?
            .context("connecting to the new upstream")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection closed");
        }
    });
    let slot = standby::slot_name(&config.instance_name);
    let created = client
        .query(
            "SELECT pg_create_physical_replication_slot($1, true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .context("creating the replication slot")?;
    if !created.is_empty() {
        tracing::info!(slot = %slot, upstream_host = %upstream.host, upstream_port = upstream.port, "replication slot created on the new upstream");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controldata_is_parsed() {
        let text = "Database cluster state:               shut down\nLatest checkpoint location:           0/3000028\nLatest checkpoint's TimeLineID:       2\n";
        let facts = parse_controldata(text);
        assert_eq!(facts.state, "shut down");
        assert_eq!(facts.checkpoint_lsn.as_deref(), Some("0/3000028"));
        assert_eq!(facts.timeline, Some(2));
    }
}
