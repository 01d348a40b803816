//! Replica bootstrap by cloning a running primary with pg_basebackup (`bootstrap.method:
//! basebackup`). The copy goes into a hidden directory inside the empty PGDATA, under the
//! bootstrap marker, and its entries are moved up only once it is complete; on any failure
//! the directory is emptied again. A crash half-way leaves the marker (and no PG_VERSION at
//! the top until the very last move), so a partial copy never starts: the next start with
//! `method: basebackup` empties the directory and clones again, any other start refuses it.
//!
//! Slots: the replica creates its own HA slot (named after the instance) on the primary
//! with `--create-slot --slot`, reusing a slot of that name when it already exists.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;

use super::role::{self, RoleState, Upstream};
use super::standby;
use crate::config::Config;
use crate::pgbin::PgBinaries;
use crate::supervisor::reaper::Reaper;

/// Hidden directory inside PGDATA that receives the copy.
pub const CLONE_DIR: &str = ".pgsteward-clone";
/// How often copy progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Check what the clone needs before anything is created.
pub fn preflight(config: &Config) -> Result<()> {
    let bb = &config.bootstrap.basebackup;
    if bb.host.is_none() {
        bail!("bootstrap.basebackup.host is required with bootstrap.method: basebackup");
    }
    if let Some(path) = &bb.password_file {
        crate::bootstrap::read_secret(
            path,
            "replication password (bootstrap.basebackup.password_file)",
        )?;
    }
    Ok(())
}

/// Content of the bootstrap marker while a clone runs.
const MARKER_CONTENT: &str = "basebackup clone in progress\n";

/// Before the data directory is inspected: when an earlier clone was interrupted (the
/// marker says so; the directory holds only a partial copy of the primary, nothing of this
/// instance) and this configuration clones, empty the directory so the clone starts over.
/// Returns true when it did. Refuses while another manager holds the directory.
pub fn discard_interrupted_clone(config: &Config, pgdata: &Path) -> Result<bool> {
    use crate::config::replication::BootstrapMethod;
    let marker = pgdata.join(crate::bootstrap::MARKER);
    if config.bootstrap.method != BootstrapMethod::Basebackup
        || std::fs::read_to_string(&marker).ok().as_deref() != Some(MARKER_CONTENT)
    {
        return Ok(false);
    }
    let lock = crate::pgdata::lock(pgdata)?;
    tracing::warn!(pgdata = %pgdata.display(), "an earlier clone was interrupted: emptying the data directory to clone again");
    empty_dir(pgdata);
    drop(lock);
    if std::fs::read_dir(pgdata)
        .map(|mut d| d.next().is_some())
        .unwrap_or(true)
    {
        bail!(
            "could not empty {} after an interrupted clone; empty it by hand",
            pgdata.display()
        );
    }
    Ok(true)
}

/// Clone the primary into the empty `pgdata` and configure it as its standby.
pub async fn run(reaper: &Reaper, bins: &PgBinaries, config: &Config, pgdata: &Path) -> Result<()> {
    preflight(config)?;
    let bb = &config.bootstrap.basebackup;
    let host = bb.host.clone().unwrap_or_default();
    let marker = pgdata.join(crate::bootstrap::MARKER);
    let clone = pgdata.join(CLONE_DIR);
    std::fs::write(&marker, MARKER_CONTENT).context("writing the bootstrap marker")?;
    let started = Instant::now();
    tracing::info!(primary_host = %host, primary_port = bb.port, user = %bb.user, slot = %standby::slot_name(&config.instance_name), "cloning the primary with pg_basebackup");
    let mut result = copy(reaper, bins, config, &clone, bb.create_slot).await;
    if let Err(e) = &result {
        if bb.create_slot && format!("{e:#}").contains("already exists") {
            tracing::warn!(
                "the replication slot already exists on the primary: cloning again, reusing it"
            );
            empty_dir(&clone);
            result = copy(reaper, bins, config, &clone, false).await;
        }
    }
    let result = match result {
        Ok(()) => install(
            config,
            pgdata,
            &clone,
            Upstream {
                host,
                port: bb.port,
            },
        ),
        Err(e) => Err(e),
    };
    match result {
        Ok(term) => {
            std::fs::remove_file(&marker).context("removing the bootstrap marker")?;
            role::sync_dir(pgdata);
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                term,
                "clone complete: this instance is a standby"
            );
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "clone failed: emptying the data directory");
            empty_dir(pgdata);
            Err(e)
        }
    }
}

/// Run pg_basebackup into `clone`, logging its progress.
async fn copy(
    reaper: &Reaper,
    bins: &PgBinaries,
    config: &Config,
    clone: &Path,
    create_slot: bool,
) -> Result<()> {
    let bb = &config.bootstrap.basebackup;
    let upstream = Upstream {
        host: bb.host.clone().unwrap_or_default(),
        port: bb.port,
    };
    let dbname = format!(
        "{} connect_timeout=10",
        standby::conninfo(config, &upstream, None)
    );
    let slot = standby::slot_name(&config.instance_name);
    let mut command = Command::new(bins.bin("pg_basebackup"));
    command
        .arg("-D")
        .arg(clone)
        .arg("--dbname")
        .arg(&dbname)
        .arg("--wal-method=stream")
        .arg(format!("--checkpoint={}", bb.checkpoint.as_str()))
        .arg("--progress")
        .arg("--verbose")
        .arg("--no-password")
        .arg("--slot")
        .arg(&slot)
        .env("LC_ALL", "C")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if create_slot {
        command.arg("--create-slot");
    }
    if let Some(rate) = &bb.max_rate {
        command.arg(format!("--max-rate={rate}"));
    }
    if let Some(path) = config.replication_password_file() {
        let password = crate::bootstrap::read_secret(path, "replication password")?;
        command.env("PGPASSWORD", password);
    }
    let mut spawned = reaper
        .spawn(&mut command)
        .context("starting pg_basebackup")?;
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
    if let Some(mut stderr) = spawned.child.stderr.take() {
        tokio::task::spawn_blocking(move || {
            let mut buffer = [0u8; 4096];
            let mut pending = Vec::new();
            while let Ok(n) = stderr.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                for &byte in &buffer[..n] {
                    if byte == b'\n' || byte == b'\r' {
                        if !pending.is_empty() {
                            let _ = lines_tx.send(String::from_utf8_lossy(&pending).into_owned());
                            pending.clear();
                        }
                    } else {
                        pending.push(byte);
                    }
                }
            }
            if !pending.is_empty() {
                let _ = lines_tx.send(String::from_utf8_lossy(&pending).into_owned());
            }
        });
    }
    let deadline = tokio::time::Instant::now() + bb.timeout;
    let mut messages: Vec<String> = Vec::new();
    let mut last_logged: Option<Instant> = None;
    let mut exit = spawned.exit;
    let mut lines_open = true;
    let status = loop {
        tokio::select! {
            status = &mut exit => break Some(status),
            line = lines.recv(), if lines_open => match line {
                Some(line) => on_line(&line, &mut messages, &mut last_logged),
                None => lines_open = false,
            },
            _ = tokio::time::sleep_until(deadline) => break None,
        }
    };
    if status.is_some() {
        // It exited, but its last words (the error) may still be in the pipe: read to the
        // end, bounded in case a descendant holds the pipe open.
        let drained_by = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while lines_open {
            match tokio::time::timeout_at(drained_by, lines.recv()).await {
                Ok(Some(line)) => on_line(&line, &mut messages, &mut last_logged),
                Ok(None) | Err(_) => lines_open = false,
            }
        }
    }
    let tail = messages
        .iter()
        .rev()
        .take(6)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join(" | ");
    match status {
        None => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(spawned.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            bail!(
                "pg_basebackup did not finish within {} (bootstrap.basebackup.timeout)",
                humantime::format_duration(bb.timeout)
            )
        }
        Some(Err(_)) => bail!("lost track of pg_basebackup's exit status"),
        Some(Ok(kind)) if kind.success() => Ok(()),
        Some(Ok(kind)) => bail!(
            "pg_basebackup from {}:{} failed ({kind}): {tail}",
            upstream.host,
            upstream.port
        ),
    }
}

/// Log a progress line at most every [`PROGRESS_EVERY`]; keep other lines for errors.
fn on_line(line: &str, messages: &mut Vec<String>, last_logged: &mut Option<Instant>) {
    if let Some((done_kb, total_kb, percent)) = parse_progress(line) {
        if last_logged.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) || percent >= 100 {
            *last_logged = Some(Instant::now());
            tracing::info!(
                copied_kb = done_kb,
                total_kb,
                percent,
                "pg_basebackup progress"
            );
        }
        return;
    }
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    tracing::info!(output = %line, "pg_basebackup");
    messages.push(line.to_owned());
}

/// `1234/5678 kB (21%), 0/1 tablespace ...` → (1234, 5678, 21).
fn parse_progress(line: &str) -> Option<(u64, u64, u32)> {
    let line = line.trim();
    let (sizes, rest) = line.split_once(" kB (")?;
    let (done, total) = sizes.trim().split_once('/')?;
    let percent = rest.split_once('%')?.0;
    Some((
        done.parse().ok()?,
        total.parse().ok()?,
        percent.parse().ok()?,
    ))
}

/// Move the finished copy into place and configure the standby; returns the term learnt
/// from the primary's role file (1 when it has none).
fn install(config: &Config, pgdata: &Path, clone: &Path, upstream: Upstream) -> Result<u64> {
    let primary_role = role::read(clone).ok().flatten();
    let term = primary_role.map_or(1, |r| r.term);
    // Files of the primary that describe the primary, not this instance.
    for name in [
        role::ROLE_FILE,
        standby::PASSFILE,
        standby::REPLICATION_FILE,
        standby::STANDBY_SIGNAL,
        super::fence::FENCE_FILE,
        "recovery.signal",
    ] {
        let _ = std::fs::remove_file(clone.join(name));
    }
    let logs = clone.join(crate::config::render::LOG_DIRECTORY);
    if logs.is_dir() {
        empty_dir(&logs);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(clone)
        .with_context(|| format!("reading {}", clone.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    // PG_VERSION last: until it is in place the directory is not a postgres directory.
    entries.sort_by_key(|p| p.file_name().is_some_and(|n| n == "PG_VERSION"));
    for entry in entries {
        let Some(name) = entry.file_name() else {
            continue;
        };
        let target = pgdata.join(name);
        std::fs::rename(&entry, &target)
            .with_context(|| format!("moving {} into {}", entry.display(), pgdata.display()))?;
    }
    std::fs::remove_dir(clone).with_context(|| format!("removing {}", clone.display()))?;
    let state = RoleState::replica(term, upstream);
    role::write(pgdata, &state)?;
    standby::write(config, &state, pgdata)?;
    Ok(term)
}

/// Remove everything inside `dir` (errors logged).
pub(crate) fn empty_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = result {
            tracing::error!(path = %path.display(), error = %e, "cannot remove a file of the failed clone");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_lines_parse() {
        assert_eq!(
            super::parse_progress("  22866/22866 kB (100%), 1/1 tablespace"),
            Some((22866, 22866, 100))
        );
        assert_eq!(
            super::parse_progress(
                "1024/30000 kB (3%), 0/1 tablespace (/data/.pgsteward-clone/base/1/1259)"
            ),
            Some((1024, 30000, 3))
        );
        assert_eq!(
            super::parse_progress("pg_basebackup: starting background WAL receiver"),
            None
        );
    }
}
