//! Wire types shared by the pgsteward instance manager, the coordinator, the operator and the
//! CLI: the instance status JSON, request bodies, and the one error body every HTTP error uses.
//! This crate does no I/O; it only describes what crosses the wire.

mod ha;
mod replication;
mod slots;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use ha::{ClusterView, HaStatus};
pub use replication::{
    ConfirmStandby, DemoteRequest, DemoteResponse, FenceResponse, FollowAction, FollowResponse,
    PromoteRequest, PromoteResponse, ReceiverStatus, ReplicationRole, ReplicationStatus,
    RoleChangeRequest, SlotStatus, StandbyStatus, SynchronousRequest, SynchronousResponse,
    UpstreamAddress,
};
pub use slots::{is_valid_slot_name, slot_name, SlotDropRequest, SlotDropResponse, SLOT_NAME_MAX};

/// The instance manager's lifecycle state (see the state machine in `crates/instance/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// The manager is reading its configuration and inspecting the data directory.
    Initializing,
    /// initdb and post-init steps are running on an empty data directory.
    Bootstrapping,
    /// The postmaster is starting (or recovering) and does not accept connections yet.
    Starting,
    /// Postgres accepts connections.
    Running,
    /// A restart requested through the API or by configuration is in progress.
    Restarting,
    /// The postmaster exited unexpectedly; the manager waits before starting it again.
    CrashBackoff,
    /// The manager is shutting postgres down (signal received).
    ShuttingDown,
    /// Postgres is stopped after a shutdown; the manager is about to exit.
    Stopped,
    /// The manager gave up (crash loop, unrecoverable error) and is about to exit non-zero.
    Failed,
    /// Postgres is stopped on request (`POST /pg/fence`) and stays stopped, across manager
    /// restarts, until `POST /pg/unfence`; the manager keeps serving.
    Fenced,
    /// Postgres is stopped until the coordinator confirms this former primary as the
    /// primary of the current term (`ha.coordinator_url`): at start on a primary's data
    /// directory, or after it lost the coordinator and every peer for `ha.isolation_timeout`.
    AwaitingRole,
}

impl InstanceState {
    /// Every state, in declaration order (for metrics and docs).
    pub const ALL: [InstanceState; 11] = [
        InstanceState::Initializing,
        InstanceState::Bootstrapping,
        InstanceState::Starting,
        InstanceState::Running,
        InstanceState::Restarting,
        InstanceState::CrashBackoff,
        InstanceState::ShuttingDown,
        InstanceState::Stopped,
        InstanceState::Failed,
        InstanceState::Fenced,
        InstanceState::AwaitingRole,
    ];

    /// The snake_case name used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Initializing => "initializing",
            InstanceState::Bootstrapping => "bootstrapping",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Restarting => "restarting",
            InstanceState::CrashBackoff => "crash_backoff",
            InstanceState::ShuttingDown => "shutting_down",
            InstanceState::Stopped => "stopped",
            InstanceState::Failed => "failed",
            InstanceState::Fenced => "fenced",
            InstanceState::AwaitingRole => "awaiting_role",
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Replication role of the instance as postgres reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Writable primary (`pg_is_in_recovery()` is false).
    Primary,
    /// In recovery: a standby or an instance replaying archived WAL.
    Replica,
    /// Postgres is not reachable, so the role is not known.
    Unknown,
}

/// `GET /pg/status`: everything an operator, a probe or the coordinator needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceStatus {
    /// Instance name (also postgres's `cluster_name` and, later, `application_name`).
    pub instance_name: String,
    /// Manager state machine state.
    pub state: InstanceState,
    /// Role reported by postgres.
    pub role: Role,
    /// True when a connection to postgres succeeded for this status.
    pub postgres_up: bool,
    /// Postgres server version (`server_version`), when up.
    pub postgres_version: Option<String>,
    /// Major version of the binaries the manager runs.
    pub postgres_major: u32,
    /// Database system identifier from pg_control, as a decimal string (it exceeds 2^53).
    pub system_identifier: Option<String>,
    /// Current timeline.
    pub timeline: Option<u32>,
    /// Current WAL position: insert LSN on a primary, replay LSN on a replica.
    pub current_lsn: Option<String>,
    /// Postmaster process id.
    pub postmaster_pid: Option<i32>,
    /// Postmaster start time (RFC 3339).
    pub postmaster_start_time: Option<String>,
    /// True when a changed parameter needs a restart to take effect.
    pub pending_restart: bool,
    /// Names of the parameters waiting for a restart.
    pub pending_restart_parameters: Vec<String>,
    /// Manager settings changed on disk that take effect only when the manager itself
    /// restarts (e.g. `archive`, `http.listen/http.tls`); the running values stay in use.
    #[serde(default)]
    pub pending_manager_restart: Vec<String>,
    /// sha256 of the manager-rendered configuration (postgresql include file and pg_hba.conf).
    pub config_hash: String,
    /// Number of unexpected postmaster exits the manager restarted from since it started.
    pub crash_restarts: u64,
    /// Version of the pgsteward binary.
    pub manager_version: String,
    /// Last error the manager recorded (start failure, reload failure), if any.
    pub last_error: Option<String>,
    /// WAL archiving, when `archive.destination` is set.
    pub archive: Option<ArchiveStatus>,
    /// Base backups taken by this manager, when `archive.destination` is set.
    #[serde(default)]
    pub backup: Option<BackupStatus>,
    /// Replication: persisted role and term, WAL receiver or standbys, slots.
    #[serde(default)]
    pub replication: Option<ReplicationStatus>,
    /// Restore drills (`pgsteward drill`, `archive.drill`), once one ran or is scheduled.
    #[serde(default)]
    pub drill: Option<DrillStatus>,
    /// High availability checks (`ha.coordinator_url`): contact with the coordinator and the
    /// peers, self-fencing, waiting for the role.
    #[serde(default)]
    pub ha: Option<HaStatus>,
}

/// Restore drills: the latest backup restored into a scratch directory, the archived WAL
/// replayed to its end, postgres started privately and checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DrillStatus {
    /// True while a drill runs.
    pub running: bool,
    /// When the last drill started (RFC 3339).
    pub last_run_time: Option<String>,
    /// `success` or `failure`.
    pub last_result: Option<String>,
    /// Why the last drill failed.
    pub last_error: Option<String>,
    /// When a drill last succeeded (RFC 3339).
    pub last_success_time: Option<String>,
    /// The backup the last drill restored.
    pub last_backup_id: Option<String>,
    /// Duration of the last drill (restore, replay, checks).
    pub last_duration_seconds: Option<f64>,
    /// The LSN the last successful drill recovered to.
    pub recovered_lsn: Option<String>,
    /// WAL the last successful drill replayed, from its backup's start to `recovered_lsn`.
    pub wal_replayed_bytes: Option<u64>,
    /// Databases the last drill queried, and whether pg_amcheck ran.
    pub databases_checked: u32,
    pub amcheck: bool,
    /// When the next scheduled drill starts (RFC 3339).
    pub next_run_time: Option<String>,
}

/// Base backups as this manager sees them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackupStatus {
    /// The backup running now, if any.
    pub running: Option<BackupProgress>,
    /// The last backup this manager finished (successfully or not).
    pub last: Option<BackupResult>,
    /// When a backup last succeeded / failed (RFC 3339), since the manager started.
    pub last_success_time: Option<String>,
    pub last_failure_time: Option<String>,
    /// Begin time of the oldest DONE backup in the catalog (RFC 3339): the earliest point the
    /// archive can recover to. Refreshed after each backup.
    pub first_recoverability_point: Option<String>,
}

/// Progress of a running base backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackupProgress {
    pub backup_id: String,
    /// `starting`, `copying`, `stopping`, `finishing`, `done` or `failed`.
    pub phase: String,
    /// Bytes of the data directory (and tablespaces) read so far, and in total.
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Compressed bytes sent to the store.
    pub bytes_uploaded: u64,
    pub elapsed_seconds: f64,
    /// Bytes read per second so far.
    pub rate_bytes_per_second: f64,
}

/// Outcome of a finished base backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackupResult {
    pub backup_id: String,
    /// True when the backup is DONE in the catalog.
    pub succeeded: bool,
    pub error: Option<String>,
    /// When it ended (RFC 3339).
    pub finished_time: String,
    pub duration_seconds: f64,
    /// Bytes read and bytes stored.
    pub bytes_read: u64,
    pub bytes_stored: u64,
}

/// `POST /pg/backup` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Start with an immediate checkpoint (default: `archive.data.immediate_checkpoint`).
    #[serde(default)]
    pub immediate_checkpoint: Option<bool>,
}

/// `POST /pg/backup` response (202 Accepted: the backup runs in the background; follow it
/// in `GET /pg/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackupAccepted {
    pub backup_id: String,
}

/// Continuous WAL archiving as the manager sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArchiveStatus {
    /// Destination (`s3://bucket/prefix` or `file:///path`; never credentials).
    pub destination: String,
    /// Highest WAL segment archived since the manager started.
    pub last_archived_wal: Option<String>,
    /// When the last file was archived (RFC 3339).
    pub last_archived_time: Option<String>,
    /// The last file whose archiving failed, when, and why.
    pub last_failed_wal: Option<String>,
    pub last_failure_time: Option<String>,
    pub last_failure: Option<String>,
    /// Files archived and failures since the manager started.
    pub archived_count: u64,
    pub failed_count: u64,
    /// `.ready` files waiting in `pg_wal/archive_status`.
    pub ready_backlog: u64,
    /// Bytes of WAL written after the end of the last archived segment.
    pub lag_bytes: Option<u64>,
    /// Age of the oldest `.ready` file (0 when none waits).
    pub lag_seconds: f64,
}

/// `POST /pg/restart` body (optional; an empty body means the defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    /// Shutdown mode used for the stop half of the restart (default `fast`).
    #[serde(default)]
    pub mode: RestartMode,
}

/// Shutdown mode of a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    /// Wait for clients to disconnect (bounded by `smart_shutdown_timeout`, then fast).
    Smart,
    /// Disconnect clients, checkpoint, stop (default).
    #[default]
    Fast,
}

/// `POST /pg/restart` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RestartResponse {
    /// Postmaster pid before the restart.
    pub previous_postmaster_pid: Option<i32>,
    /// Postmaster pid after the restart.
    pub postmaster_pid: Option<i32>,
}

/// `POST /pg/reload` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReloadResponse {
    /// True when the rendered configuration changed and postgres was asked to reload.
    pub changed: bool,
    /// Hash of the rendered configuration now in effect.
    pub config_hash: String,
    /// Parameters that need a restart to take effect.
    pub pending_restart_parameters: Vec<String>,
    /// Manager settings that changed but take effect only when the manager restarts.
    #[serde(default)]
    pub pending_manager_restart: Vec<String>,
    /// True when the manager restarted postgres because `restart_on_pending` is set.
    pub restarted: bool,
}

/// Body of every HTTP error response: `{ "error": { "code": "...", "message": "..." } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Machine-readable code and human-readable message of an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `bad_request` (400), `unauthorized` (401), `forbidden`
    /// (403), `not_found` (404), `method_not_allowed` (405), `conflict` (409),
    /// `invalid_configuration` (412), `payload_too_large` (413), `internal` (500).
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// Body of the probe endpoints (`/healthz`, `/readyz`, `/startupz`, `/primary`, `/replica`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProbeBody {
    /// True when the probe passes (HTTP 200), false otherwise (HTTP 503).
    pub ok: bool,
    /// Manager state at the time of the probe.
    pub state: InstanceState,
    /// Why the probe passes or fails.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_match_serde() {
        for state in InstanceState::ALL {
            let json = serde_json::to_value(state).unwrap_or_default();
            assert_eq!(json, serde_json::Value::String(state.as_str().to_owned()));
        }
    }

    #[test]
    fn restart_request_rejects_unknown_fields() {
        let parsed: Result<RestartRequest, _> = serde_json::from_str(r#"{"mode":"fast","x":1}"#);
        assert!(parsed.is_err());
        let parsed: Result<RestartRequest, _> = serde_json::from_str("{}");
        assert_eq!(parsed.ok(), Some(RestartRequest::default()));
    }
}
