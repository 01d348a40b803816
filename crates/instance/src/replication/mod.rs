//! Replication in the instance manager: the persisted role and term (`role`), the standby
//! configuration rendered before every start (`standby`), replica bootstrap with
//! pg_basebackup (`basebackup`), promotion (`promote`), demotion (`demote`), repointing with
//! pg_rewind (`follow`, `rewind`), the persisted fence (`fence`), stale slots dropped on the
//! coordinator's word (`slots`), and the replication status block and metrics (`status`,
//! `metrics`, `summary` for `pgsteward status`).

pub mod basebackup;
pub mod demote;
pub mod fence;
pub mod follow;
pub mod inherited_wal;
pub mod metrics;
pub mod promote;
pub mod rewind;
pub mod role;
pub mod slots;
pub mod standby;
pub mod status;
pub mod summary;
pub mod synchronous;

use anyhow::Result;

use crate::supervisor::shared::Shared;

/// Why a demotion or a follow was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RoleChangeError {
    /// Stale term, wrong role, shutting down: nothing was changed.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is invalid: nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// The work failed (the message says what state the instance was left in).
    #[error("{0}")]
    Failed(String),
}

/// Before postgres starts: read (or initialise) the role file and write the replication
/// files that match it (standby.signal, primary_conninfo, slot name), so a restart keeps
/// the role.
pub fn prepare_start(shared: &Shared) -> Result<()> {
    let state = role::load_or_init(&shared.pgdata)?;
    standby::write(&shared.config(), &state, &shared.pgdata)?;
    Ok(())
}

/// After a configuration reload: rewrite the standby settings for the new configuration
/// (upstream user, password file, sslmode) when a role file exists. Returns true when
/// `pgsteward.replication.conf` changed (postgres must reload; `primary_conninfo` and
/// `primary_slot_name` are reloadable).
pub fn refresh(pgdata: &std::path::Path, config: &crate::config::Config) -> Result<bool> {
    match role::read(pgdata)? {
        Some(state) => standby::write(config, &state, pgdata),
        None => Ok(false),
    }
}
