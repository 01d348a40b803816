//! Replication wire types: the `replication` block of the instance status (role, term, WAL
//! receiver and replay lag on a standby; standbys, slots and synchronous standby names on a
//! primary) and the promotion request and response.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The role the manager persisted (what it was told to be), independent of whether postgres
/// is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationRole {
    Primary,
    Replica,
}

/// `replication` object of `GET /pg/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReplicationStatus {
    /// Persisted role (`pgsteward.role.json`).
    pub role: ReplicationRole,
    /// Term of invariant 2: the term this instance was promoted in (primary), or the highest
    /// it knows of (replica).
    pub term: u64,
    /// `host:port` a standby streams from.
    pub upstream: Option<String>,
    /// This instance's replication slot on its upstream (standbys).
    pub slot_name: Option<String>,
    /// WAL receiver and replay positions (standbys, when postgres is up).
    pub receiver: Option<ReceiverStatus>,
    /// Connected standbys (`pg_stat_replication`, primaries).
    pub standbys: Vec<StandbyStatus>,
    /// Physical replication slots of this instance.
    pub slots: Vec<SlotStatus>,
    /// Current `synchronous_standby_names` (empty: asynchronous).
    pub synchronous_standby_names: Option<String>,
}

/// A standby's view of its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReceiverStatus {
    /// `pg_stat_wal_receiver.status` (`streaming`, `catchup`, ...); None when no WAL
    /// receiver runs (not connected, or replaying from the archive).
    pub wal_receiver_status: Option<String>,
    /// Upstream host and port the WAL receiver is connected to.
    pub sender_host: Option<String>,
    pub sender_port: Option<i32>,
    /// Last WAL position received and flushed (`pg_last_wal_receive_lsn()`).
    pub received_lsn: Option<String>,
    /// Last WAL position replayed (`pg_last_wal_replay_lsn()`).
    pub replayed_lsn: Option<String>,
    /// Timeline the WAL receiver streams (None without a receiver).
    pub received_timeline: Option<u32>,
    /// Bytes received but not replayed yet.
    pub replay_lag_bytes: Option<u64>,
    /// Seconds since the last replayed transaction's commit, 0 when everything received is
    /// replayed.
    pub replay_lag_seconds: Option<f64>,
}

/// One row of `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StandbyStatus {
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub sync_state: Option<String>,
    pub sent_lsn: Option<String>,
    pub write_lsn: Option<String>,
    pub flush_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    /// Seconds (`write_lag`, `flush_lag`, `replay_lag`).
    pub write_lag_seconds: Option<f64>,
    pub flush_lag_seconds: Option<f64>,
    pub replay_lag_seconds: Option<f64>,
    /// Bytes between the current WAL position and the standby's replay position.
    pub replay_lag_bytes: Option<u64>,
}

/// One physical replication slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SlotStatus {
    pub slot_name: String,
    pub active: bool,
    pub restart_lsn: Option<String>,
    /// `wal_status` (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: Option<String>,
    /// WAL bytes the slot keeps (current position − restart_lsn).
    pub retained_bytes: Option<u64>,
}

/// `POST /pg/promote` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The new term: greater than the instance's current term (or equal, to retry a promotion
    /// this instance already performed or started for that term).
    pub term: u64,
    /// `synchronous_standby_names` the new primary must have from its first commit (the
    /// coordinator's computed value), set before the promotion; absent: keep what it has.
    #[serde(default)]
    pub synchronous_standby_names: Option<String>,
}

/// `POST /pg/promote` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PromoteResponse {
    /// The term this instance is now primary of.
    pub term: u64,
    /// Timeline after the promotion (from the checkpoint that followed it).
    pub timeline: u32,
    /// False when the instance was already primary of this term (a retry).
    pub promoted: bool,
}

/// `POST /pg/synchronous` body: the `synchronous_standby_names` the coordinator computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SynchronousRequest {
    /// The term this instance is primary of (anything else is refused).
    pub term: u64,
    /// `""` (asynchronous), or `ANY k ("a", "b")` / `FIRST k ("a", "b")` with double-quoted
    /// names of letters, digits, `_`, `-` and `.`.
    pub names: String,
}

/// `POST /pg/synchronous` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SynchronousResponse {
    pub term: u64,
    /// The value now in effect (canonical spelling).
    pub names: String,
    /// False when it already was in effect.
    pub changed: bool,
}

/// `POST /pg/fence` and `POST /pg/unfence` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FenceResponse {
    /// True when the instance is fenced after the request.
    pub fenced: bool,
    /// False when the instance already was in the requested state.
    pub changed: bool,
}

/// The primary a demoted or repointed instance streams from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAddress {
    /// Host name or address of the new primary's postgres.
    pub host: String,
    /// Its postgres port.
    pub port: u16,
}

/// `POST /pg/demote` and `POST /pg/follow` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChangeRequest {
    /// The term of the new primary: at least the instance's current term.
    pub term: u64,
    /// The new primary this instance becomes (or stays) a standby of.
    pub primary: UpstreamAddress,
}

/// `POST /pg/demote` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoteRequest {
    /// The term of the new primary: at least the instance's current term.
    pub term: u64,
    /// The new primary this instance becomes a standby of.
    pub primary: UpstreamAddress,
    /// Before shutting down, wait for this standby to confirm the CHECKPOINT's WAL; without
    /// the confirmation nothing is changed (409) and the instance stays primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_standby: Option<ConfirmStandby>,
}

/// A standby that must be receiving before a demotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmStandby {
    /// Its `application_name` in `pg_stat_replication` (a pgsteward standby's `instance_name`).
    pub application_name: String,
    /// How long to wait for its `flush_lsn` to reach the position after the CHECKPOINT.
    pub timeout_ms: u64,
}

/// `POST /pg/demote` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DemoteResponse {
    /// The term recorded.
    pub term: u64,
    /// False when the instance already was a standby of that primary in that term (a retry).
    pub changed: bool,
    /// pg_controldata "Latest checkpoint location" after the fast shutdown (the shutdown
    /// checkpoint): a candidate that has received WAL up to here has everything.
    pub shutdown_checkpoint_lsn: Option<String>,
    /// Timeline of that checkpoint.
    pub timeline: Option<u32>,
}

/// What `POST /pg/follow` had to do to the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FollowAction {
    /// Nothing: already a standby of that primary in that term.
    None,
    /// Standby settings rewritten; pg_rewind found nothing to rewind.
    Repointed,
    /// pg_rewind rewound the diverged data directory.
    Rewound,
    /// pg_rewind failed and the data directory was cloned again (`rewind_failure: reclone`).
    Recloned,
}

/// `POST /pg/follow` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FollowResponse {
    /// The term recorded.
    pub term: u64,
    /// What was done.
    pub action: FollowAction,
}
