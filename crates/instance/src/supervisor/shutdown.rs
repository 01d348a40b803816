//! Shutdown escalation: smart (SIGTERM) up to `smart_shutdown_timeout`, then fast (SIGINT) up
//! to `stop_delay` from the first signal, then immediate (SIGQUIT), then SIGKILL of the process
//! group. Further shutdown requests while waiting escalate at once.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::postmaster::{Ended, Postmaster};
use super::shared::{CommandError, ShutdownMode, SupervisorCommand};
use crate::config::ShutdownConfig;

/// How the stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopOutcome {
    /// The last mode signalled.
    pub mode: ShutdownMode,
    pub ended: Ended,
}

impl StopOutcome {
    /// True when postgres stopped through a smart or fast shutdown with exit code 0 (an
    /// attached postmaster's cleanliness is checked with pg_controldata by the caller).
    pub fn clean(&self) -> bool {
        self.mode != ShutdownMode::Immediate
            && matches!(self.ended, Ended::Exited(kind) if kind.success())
    }
}

fn signal_for(mode: ShutdownMode) -> Signal {
    match mode {
        ShutdownMode::Smart => Signal::SIGTERM,
        ShutdownMode::Fast => Signal::SIGINT,
        ShutdownMode::Immediate => Signal::SIGQUIT,
    }
}

/// Stop `postmaster`, escalating per `limits`. `commands`, when given, is watched for further
/// shutdown requests (other commands are refused while stopping).
pub async fn stop(
    postmaster: &mut Postmaster,
    initial: ShutdownMode,
    limits: &ShutdownConfig,
    mut commands: Option<&mut mpsc::Receiver<SupervisorCommand>>,
) -> StopOutcome {
    let started = Instant::now();
    let mut mode = initial;
    postmaster.signal(signal_for(mode));
    tracing::info!(pid = postmaster.pid(), ?mode, "stopping postgres");
    let mut killed = false;
    loop {
        let deadline = match mode {
            ShutdownMode::Smart => started + limits.smart_shutdown_timeout,
            ShutdownMode::Fast => started + limits.stop_delay,
            ShutdownMode::Immediate => Instant::now() + Duration::from_secs(30),
        };
        let next_command = async {
            match commands.as_deref_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = postmaster.wait() => {
                tracing::info!(status = %ended, ?mode, elapsed_ms = started.elapsed().as_millis() as u64, "postgres stopped");
                return StopOutcome { mode, ended };
            }
            _ = tokio::time::sleep_until(deadline) => {
                mode = match mode {
                    ShutdownMode::Smart => ShutdownMode::Fast,
                    ShutdownMode::Fast => ShutdownMode::Immediate,
                    ShutdownMode::Immediate => {
                        if killed {
                            tracing::error!(pid = postmaster.pid(), "postgres ignores SIGKILL; giving up waiting");
                            return StopOutcome { mode, ended: Ended::Vanished };
                        }
                        tracing::error!(pid = postmaster.pid(), "immediate shutdown hangs: killing the process group");
                        postmaster.kill_group();
                        killed = true;
                        continue;
                    }
                };
                tracing::warn!(?mode, "shutdown deadline passed: escalating");
                postmaster.signal(signal_for(mode));
            }
            command = next_command => match command {
                Some(SupervisorCommand::Shutdown(requested)) => {
                    let escalated = match (mode, requested) {
                        (_, ShutdownMode::Immediate) => ShutdownMode::Immediate,
                        (ShutdownMode::Smart, _) => ShutdownMode::Fast,
                        (current, _) => current,
                    };
                    if escalated != mode {
                        mode = escalated;
                        tracing::warn!(?mode, "second shutdown request: escalating");
                        postmaster.signal(signal_for(mode));
                    }
                }
                Some(SupervisorCommand::Restart { reply, .. }) => {
                    let _ = reply.send(Err(CommandError::WrongState("postgres is stopping".into())));
                }
                Some(SupervisorCommand::Reload { reply: Some(reply) }) => {
                    let _ = reply.send(Err(CommandError::WrongState("postgres is stopping".into())));
                }
                Some(SupervisorCommand::Reload { reply: None }) => {}
                Some(SupervisorCommand::Fence { reply } | SupervisorCommand::Unfence { reply }) => {
                    let _ = reply.send(Err(CommandError::WrongState("postgres is stopping".into())));
                }
                // Dropping the work drops its reply channel: the caller hears "shutting down".
                Some(SupervisorCommand::RoleChange(_)) => {}
                // The HA monitor asks again at its next check.
                Some(SupervisorCommand::Ha(_)) => {}
                None => commands = None,
            },
        }
    }
}
