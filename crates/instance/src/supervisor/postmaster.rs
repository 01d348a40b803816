//! The postmaster process: started as a direct child (`postgres -D`, own process group, output
//! re-emitted as JSON), or re-attached after a manager restart (found through
//! `postmaster.pid`). Either way the supervisor can signal it and wait for it to exit.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::reaper::{ExitKind, Reaper};
use crate::pgbin::PgBinaries;
use crate::pgdata::{is_live_postgres, read_postmaster_pid};

/// A running postmaster.
#[derive(Debug)]
pub struct Postmaster {
    pid: i32,
    /// Some for a child (its exit status arrives here), None for an attached postmaster.
    exit: Option<oneshot::Receiver<ExitKind>>,
}

/// How a postmaster's life ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Our child, with its status.
    Exited(ExitKind),
    /// An attached postmaster: gone, status unknown.
    Vanished,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(kind) => write!(f, "{kind}"),
            Ended::Vanished => f.write_str("exited (re-attached process, status unknown)"),
        }
    }
}

impl Postmaster {
    /// Start `postgres -D pgdata` with extra `-c name=value` settings.
    pub fn spawn(
        reaper: &Reaper,
        bins: &PgBinaries,
        pgdata: &Path,
        settings: &[(&str, String)],
    ) -> Result<Self> {
        let mut command = Command::new(bins.bin("postgres"));
        command.arg("-D").arg(pgdata);
        for (name, value) in settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut spawned = reaper.spawn(&mut command).context("starting postgres")?;
        if let Some(out) = spawned.child.stdout.take() {
            crate::logs::forward_pipe(out);
        }
        if let Some(err) = spawned.child.stderr.take() {
            crate::logs::forward_pipe(err);
        }
        tracing::info!(pid = spawned.pid, "postmaster started");
        Ok(Postmaster {
            pid: spawned.pid,
            exit: Some(spawned.exit),
        })
    }

    /// Attach to a postmaster that already runs on `pgdata` (the manager was restarted).
    pub fn attach(pgdata: &Path) -> Option<Self> {
        let pid_file = read_postmaster_pid(pgdata)?;
        if !is_live_postgres(pid_file.pid) {
            return None;
        }
        // The postmaster's working directory is its data directory: this rules out a reused
        // pid that happens to belong to another postgres.
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", pid_file.pid)).ok();
        let ours = std::fs::canonicalize(pgdata).ok();
        if cwd.is_none() || cwd != ours {
            tracing::warn!(pid = pid_file.pid, cwd = ?cwd, "postmaster.pid names a postgres of another data directory: not attaching");
            return None;
        }
        tracing::info!(pid = pid_file.pid, "re-attached to the running postmaster");
        Some(Postmaster {
            pid: pid_file.pid,
            exit: None,
        })
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Send `signal` to the postmaster.
    pub fn signal(&self, signal: Signal) {
        if let Err(e) = kill(Pid::from_raw(self.pid), signal) {
            tracing::warn!(pid = self.pid, ?signal, error = %e, "signalling the postmaster failed");
        }
    }

    /// Kill the whole process group (last resort after an immediate shutdown hangs).
    pub fn kill_group(&self) {
        let _ = kill(Pid::from_raw(-self.pid), Signal::SIGKILL);
    }

    /// Wait until the postmaster is gone. Cancel-safe.
    pub async fn wait(&mut self) -> Ended {
        match &mut self.exit {
            Some(rx) => match rx.await {
                Ok(kind) => Ended::Exited(kind),
                Err(_) => Ended::Vanished,
            },
            None => {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    if !is_live_postgres(self.pid) {
                        return Ended::Vanished;
                    }
                }
            }
        }
    }
}
