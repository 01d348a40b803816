//! Wire types of the managers' high-availability checks: what a manager reports about its
//! contact with the coordinator and its peers (`HaStatus` in `/pg/status`), and the part of
//! the coordinator's `GET /status` a manager reads to learn its role (`ClusterView`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `ha` in `/pg/status` (present when `ha.coordinator_url` is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HaStatus {
    /// The coordinator the manager asks for its role.
    pub coordinator_url: String,
    /// Number of configured peers (other members' manager APIs).
    pub peers: usize,
    /// The coordinator answered the latest check.
    pub coordinator_reachable: bool,
    /// Why the latest coordinator check failed.
    #[serde(default)]
    pub coordinator_error: Option<String>,
    /// Peers that answered the latest check.
    pub reachable_peers: usize,
    /// Why a peer did not answer the latest check (the first failure; a certificate that
    /// fails verification shows here).
    #[serde(default)]
    pub peer_error: Option<String>,
    /// Seconds since the coordinator or a peer last answered (None before the first check).
    pub seconds_since_contact: Option<f64>,
    /// `ha.isolation_timeout` in seconds (0: self-fencing is off).
    pub isolation_timeout_seconds: f64,
    /// Times this manager stopped its primary because it was isolated or superseded.
    pub self_fences: u64,
    /// While `awaiting_role`: what the manager waits for, or why it cannot tell yet.
    pub waiting_for: Option<String>,
}

/// The fields of the coordinator's `GET /status` that tell a manager its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterView {
    /// Highest term the coordinator knows of.
    pub term: u64,
    /// Member name of the current primary, if any.
    #[serde(default)]
    pub primary: Option<String>,
    /// `instance_name` of the current primary as its manager reports it.
    #[serde(default)]
    pub primary_instance: Option<String>,
    /// Term the current primary was promoted in.
    #[serde(default)]
    pub primary_term: Option<u64>,
}
