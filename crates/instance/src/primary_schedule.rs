//! The primary's periodic archive tasks (retention, the archive check): each runs every
//! interval its configuration names (read afresh each time, so a reload applies), one task per
//! manager so runs never overlap, and does its work only while postgres runs and is not in
//! recovery (`primary_now`): standbys share the archive and leave it to the primary.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pgsteward_api::InstanceState;

use crate::archiver::Archiver;
use crate::config::Config;
use crate::supervisor::shared::Shared;

/// Why a scheduled run did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NotRunning(InstanceState),
    Standby,
    Unreachable(String),
}

/// Whether a primary-only task may run on an instance in `state` whose postgres reports
/// `in_recovery`.
pub fn may_run(state: InstanceState, in_recovery: Result<bool, String>) -> Result<(), Skip> {
    if state != InstanceState::Running {
        return Err(Skip::NotRunning(state));
    }
    match in_recovery {
        Ok(false) => Ok(()),
        Ok(true) => Err(Skip::Standby),
        Err(e) => Err(Skip::Unreachable(e)),
    }
}

/// Ok when this instance runs as a primary now (asks postgres).
pub async fn primary_now(shared: &Shared) -> Result<(), Skip> {
    let state = shared.state.current();
    let in_recovery = if state == InstanceState::Running {
        crate::pgconn::probe(&shared.target(), Duration::from_secs(10))
            .await
            .map(|facts| facts.in_recovery)
            .map_err(|e| format!("{e:#}"))
    } else {
        Ok(false)
    };
    may_run(state, in_recovery)
}

/// Run `run` every `interval` of the current configuration (at least 1 s), with the
/// archiver; a no-op without an archive.
pub fn every<F, Fut>(shared: Arc<Shared>, interval: fn(&Config) -> Duration, run: F)
where
    F: Fn(Arc<Shared>, Arc<Archiver>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let Some(archiver) = shared.archiver.get().cloned() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let wait = interval(&shared.config()).max(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
            run(shared.clone(), archiver.clone()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_primary_runs_them() {
        assert_eq!(may_run(InstanceState::Running, Ok(false)), Ok(()));
        assert_eq!(
            may_run(InstanceState::Running, Ok(true)),
            Err(Skip::Standby)
        );
        assert!(matches!(
            may_run(InstanceState::Starting, Ok(false)),
            Err(Skip::NotRunning(_))
        ));
        assert!(matches!(
            may_run(InstanceState::Running, Err("refused".into())),
            Err(Skip::Unreachable(_))
        ));
    }
}
