//! The one place that waits for child processes. As PID 1 (or a child subreaper) the manager
//! inherits every orphan, and a blanket `waitpid(-1)` would steal exit statuses from anyone
//! else waiting on their own children, so nothing else in the process may wait: every child
//! is spawned through [`Reaper::spawn`], which registers its pid under a lock before any
//! `waitpid` can see it, and the SIGCHLD loop dispatches each status to its owner. Pids nobody
//! registered are orphans: they are reaped and logged.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitKind {
    /// True for exit code 0.
    pub fn success(self) -> bool {
        self == ExitKind::Code(0)
    }
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Code(code) => write!(f, "exit code {code}"),
            ExitKind::Signal(sig) => write!(f, "killed by signal {sig}"),
        }
    }
}

/// Handle on the reaper; clone freely.
#[derive(Clone, Default)]
pub struct Reaper {
    owners: Arc<Mutex<HashMap<i32, oneshot::Sender<ExitKind>>>>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reaper")
    }
}

/// A spawned child: its pipes, pid, and a receiver that resolves when it exits.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub pid: i32,
    pub exit: oneshot::Receiver<ExitKind>,
}

impl Reaper {
    /// Start the SIGCHLD loop on the current tokio runtime.
    pub fn start() -> Result<Self> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child()).context("installing the SIGCHLD handler")?;
        let looping = reaper.clone();
        tokio::spawn(async move {
            loop {
                looping.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        // Catch anything that exited between the manager's start and the handler.
        reaper.reap_all();
        Ok(reaper)
    }

    /// Spawn `command`, registering its pid before the lock is released.
    pub fn spawn(&self, command: &mut Command) -> Result<Spawned> {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let child = command
            .spawn()
            .with_context(|| format!("starting {:?}", command.get_program()))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        let (tx, rx) = oneshot::channel();
        owners.insert(pid, tx);
        Ok(Spawned {
            child,
            pid,
            exit: rx,
        })
    }

    /// Spawn `command` and wait for it, collecting stdout and stderr.
    pub async fn output(&self, command: &mut Command) -> Result<(ExitKind, String, String)> {
        use std::io::Read;
        use std::process::Stdio;
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut spawned = self.spawn(command)?;
        let stdout = spawned.child.stdout.take();
        let stderr = spawned.child.stderr.take();
        let read_out = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            if let Some(mut out) = stdout {
                let _ = out.read_to_string(&mut text);
            }
            text
        });
        let read_err = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            if let Some(mut err) = stderr {
                let _ = err.read_to_string(&mut text);
            }
            text
        });
        let exit = spawned
            .exit
            .await
            .context("reaper dropped the child's status")?;
        let out = read_out.await.unwrap_or_default();
        let err = read_err.await.unwrap_or_default();
        Ok((exit, out, err))
    }

    /// Reap every exited child, dispatching statuses to their owners.
    pub fn reap_all(&self) {
        loop {
            let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => status,
                Err(nix::errno::Errno::ECHILD) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waitpid failed");
                    return;
                }
            };
            let (pid, kind) = match status {
                WaitStatus::Exited(pid, code) => (pid, ExitKind::Code(code)),
                WaitStatus::Signaled(pid, sig, _) => (pid, ExitKind::Signal(sig as i32)),
                _ => continue,
            };
            match owners.remove(&pid.as_raw()) {
                Some(owner) => {
                    let _ = owner.send(kind);
                }
                None => {
                    tracing::debug!(pid = pid.as_raw(), status = %kind, "reaped orphaned process");
                }
            }
        }
    }
}
