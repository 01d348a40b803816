//! The instance state machine: one `tokio::sync::watch` channel holds the current state; every
//! transition is checked against the allowed edges, logged, and mirrored in the
//! `<ns>_manager_state{state}` metric. The diagram is in `crates/instance/README.md`.

use std::sync::Arc;

use pgsteward_api::InstanceState;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// True when the manager may move from `from` to `to`.
pub fn is_allowed(from: InstanceState, to: InstanceState) -> bool {
    use InstanceState::*;
    if from == to {
        return false;
    }
    match (from, to) {
        // Any live state can be asked to shut down or can fail.
        (Stopped | Failed, _) => false,
        (_, ShuttingDown) => from != Stopped,
        (_, Failed) => true,
        (Initializing, Bootstrapping | Starting) => true,
        (Bootstrapping, Starting) => true,
        (Starting, Running | CrashBackoff) => true,
        (Running, Restarting | CrashBackoff) => true,
        (Restarting, Starting | CrashBackoff) => true,
        (CrashBackoff, Starting) => true,
        (Initializing | Starting | Running | Restarting | CrashBackoff, Fenced) => true,
        (Fenced, Starting) => true,
        // A former primary waits for the coordinator (at start, or after isolation).
        (Initializing | Starting | Running | Restarting | CrashBackoff, AwaitingRole) => true,
        (AwaitingRole, Starting | Fenced | Restarting) => true,
        (ShuttingDown, Stopped) => true,
        _ => false,
    }
}

/// Shared handle on the state machine.
#[derive(Clone)]
pub struct StateMachine {
    tx: Arc<watch::Sender<InstanceState>>,
    metrics: Metrics,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("state", &self.current())
            .finish()
    }
}

impl StateMachine {
    /// A machine in `Initializing`.
    pub fn new(metrics: Metrics) -> Self {
        let (tx, _rx) = watch::channel(InstanceState::Initializing);
        metrics.set_state(InstanceState::Initializing);
        StateMachine {
            tx: Arc::new(tx),
            metrics,
        }
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<InstanceState> {
        self.tx.subscribe()
    }

    /// The current state.
    pub fn current(&self) -> InstanceState {
        *self.tx.borrow()
    }

    /// Move to `to` if the edge is allowed; returns whether the state changed. A refused
    /// transition is logged (it reveals a bug, or a shutdown that already started).
    pub fn transition(&self, to: InstanceState, reason: &str) -> bool {
        let mut changed_from = None;
        self.tx.send_if_modified(|state| {
            if is_allowed(*state, to) {
                changed_from = Some(*state);
                *state = to;
                true
            } else {
                false
            }
        });
        match changed_from {
            Some(from) => {
                self.metrics.set_state(to);
                tracing::info!(from = %from, to = %to, reason, "instance state changed");
                true
            }
            None => {
                let current = self.current();
                if current != to {
                    tracing::debug!(from = %current, to = %to, reason, "state transition refused");
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::*;

    #[test]
    fn terminal_states_are_terminal() {
        for to in InstanceState::ALL {
            assert!(!is_allowed(Stopped, to));
            assert!(!is_allowed(Failed, to));
        }
    }

    #[test]
    fn normal_lifecycle_is_allowed() {
        let path = [
            Initializing,
            Bootstrapping,
            Starting,
            Running,
            Restarting,
            Starting,
            Running,
            CrashBackoff,
            Starting,
            Running,
            ShuttingDown,
            Stopped,
        ];
        for pair in path.windows(2) {
            assert!(
                is_allowed(pair[0], pair[1]),
                "{:?} -> {:?}",
                pair[0],
                pair[1]
            );
        }
        assert!(!is_allowed(Running, Bootstrapping));
        for pair in [
            (Initializing, AwaitingRole),
            (AwaitingRole, Starting),
            (Running, AwaitingRole),
            (AwaitingRole, Fenced),
            (AwaitingRole, ShuttingDown),
        ] {
            assert!(is_allowed(pair.0, pair.1), "{:?} -> {:?}", pair.0, pair.1);
        }
        assert!(!is_allowed(AwaitingRole, Running));
        assert!(!is_allowed(Fenced, AwaitingRole));
        assert!(!is_allowed(ShuttingDown, Running));
    }

    #[test]
    fn transitions_update_the_metric() {
        let metrics = Metrics::new("test").unwrap_or_else(|e| panic!("{e}"));
        let machine = StateMachine::new(metrics.clone());
        assert!(machine.transition(Starting, "test"));
        assert!(!machine.transition(Stopped, "not allowed"));
        assert_eq!(machine.current(), Starting);
        let text = metrics.render();
        assert!(
            text.contains("test_manager_state{state=\"starting\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("test_manager_state{state=\"initializing\"} 0"),
            "{text}"
        );
    }
}
