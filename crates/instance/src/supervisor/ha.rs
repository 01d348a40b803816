//! The supervisor's side of high availability: whether a start must wait for the
//! coordinator (a former primary's data directory, invariant 2), and the HA monitor's
//! commands: stop an isolated primary and wait, start once confirmed, stay fenced once
//! superseded.

use std::time::Duration;

use pgsteward_api::InstanceState;
use tokio::time::Instant;

use super::postmaster::Postmaster;
use super::shared::{HaCommand, ShutdownMode};
use super::{shutdown, Supervisor};
use crate::replication::role::{self, PersistedRole};

/// How long a self-fence's fast shutdown may take before it becomes immediate (an isolated
/// primary's walsenders cannot deliver their last WAL; they would hold a fast shutdown until
/// `wal_sender_timeout`).
const SELF_FENCE_FAST_LIMIT: Duration = Duration::from_secs(1);

/// Why postgres must not start before the coordinator confirms the role, or None: `ha`
/// configured with `wait_for_role`, a primary's data directory (by its role file, or no role
/// file and no `standby.signal`), not initialised by this run.
pub fn must_wait_for_role(
    config: &crate::config::Config,
    pgdata: &std::path::Path,
    initialised_now: bool,
) -> Option<String> {
    let url = config.ha.coordinator_url.as_deref()?;
    if !config.ha.wait_for_role || initialised_now {
        return None;
    }
    let primary = match role::read(pgdata) {
        Ok(Some(state)) => state.role == PersistedRole::Primary,
        Ok(None) => !pgdata.join("standby.signal").exists(),
        // An unreadable role file: be safe, wait (the error shows in the log).
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot read the role file; waiting for the coordinator");
            true
        }
    };
    primary.then(|| {
        format!("this data directory was a primary: waiting for the coordinator ({url}) to confirm it as the primary of its term")
    })
}

impl Supervisor {
    /// Handle a command of the HA monitor.
    pub(super) async fn ha_command(
        &mut self,
        command: HaCommand,
        state: InstanceState,
        postmaster: &mut Option<Postmaster>,
        next_start: &mut Option<Instant>,
    ) {
        match command {
            HaCommand::AwaitRole { reason } => {
                if !matches!(
                    state,
                    InstanceState::Running
                        | InstanceState::Starting
                        | InstanceState::CrashBackoff
                        | InstanceState::Restarting
                ) {
                    return;
                }
                tracing::error!(reason = %reason, "self-fencing: postgres stops until the coordinator confirms this primary");
                *next_start = None;
                self.stop_for_self_fence(postmaster).await;
                self.fail_restart_reply("the instance fenced itself".into());
                self.shared.metrics.ha.self_fences.inc();
                self.shared.with_runtime(|r| r.last_error = Some(reason));
                self.shared
                    .state
                    .transition(InstanceState::AwaitingRole, "isolated");
            }
            HaCommand::Confirmed { term } => {
                if state != InstanceState::AwaitingRole {
                    return;
                }
                tracing::info!(
                    term,
                    "the coordinator confirms this instance as the primary of its term: starting postgres"
                );
                self.shared.with_runtime(|r| r.last_error = None);
                *next_start = Some(Instant::now());
            }
            HaCommand::Superseded { reason } => {
                if matches!(
                    state,
                    InstanceState::Fenced | InstanceState::ShuttingDown | InstanceState::Stopped
                ) {
                    return;
                }
                if let Err(e) =
                    crate::replication::fence::set_with_reason(&self.shared.pgdata, Some(&reason))
                {
                    tracing::error!(error = %format!("{e:#}"), "writing the fence marker failed");
                }
                tracing::error!(reason = %reason, "superseded: postgres stays stopped until the coordinator re-admits this instance (POST /pg/follow) or POST /pg/unfence");
                *next_start = None;
                if postmaster.is_some() {
                    self.shared.metrics.ha.self_fences.inc();
                }
                self.stop_for_self_fence(postmaster).await;
                self.fail_restart_reply("the instance was superseded".into());
                self.shared.with_runtime(|r| r.last_error = Some(reason));
                self.shared
                    .state
                    .transition(InstanceState::Fenced, "superseded by a newer primary");
            }
        }
    }

    /// Fast shutdown, immediate after `SELF_FENCE_FAST_LIMIT`.
    async fn stop_for_self_fence(&mut self, postmaster: &mut Option<Postmaster>) {
        let Some(mut pm) = postmaster.take() else {
            return;
        };
        self.shared.metrics.postgres_up.set(0);
        let mut limits = self.shared.config().shutdown;
        limits.stop_delay = limits.stop_delay.min(SELF_FENCE_FAST_LIMIT);
        let outcome = shutdown::stop(&mut pm, ShutdownMode::Fast, &limits, None).await;
        self.shared.with_runtime(|r| r.postmaster_pid = None);
        tracing::info!(status = %outcome.ended, "postgres stopped (self-fence)");
    }
}
