//! pgsteward coordinator: polls a static list of instance managers, decides failovers with a
//! pure function (`decide`), acts through the managers' APIs (`client`), persists its term
//! (`state`), drops members' stale replication slots (`slots`), serves its own status and
//! metrics (`api`, `metrics`) and re-reads its configuration on SIGHUP (`reload`).

pub mod api;
pub mod backup;
pub mod client;
pub mod config;
pub mod decide;
pub mod lsn;
pub mod metrics;
pub mod observe;
pub mod readmit;
pub mod reload;
pub mod run;
pub mod shared;
pub mod slots;
pub mod state;
pub mod switchover;
pub mod synchronous;
pub mod tls_watch;
