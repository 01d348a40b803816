//! pgsteward instance manager: the PID 1 of a Postgres container (or the service of a VM).
//! It drops privileges, bootstraps or re-attaches to the data directory, renders the managed
//! configuration, supervises the postmaster (restarts, shutdown escalation, orphan reaping),
//! and serves the local HTTP API and Prometheus metrics. `main.rs` is only the CLI front.

pub mod api_client;
pub mod archiver;
pub mod backup_cmd;
pub mod backups;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod database_metrics;
pub mod drill;
pub mod ha;
pub mod http;
pub mod kept_connection;
pub mod logs;
pub mod metrics;
pub mod pgbin;
pub mod pgconn;
pub mod pgdata;
pub mod primary_schedule;
pub mod privileges;
pub mod recovery;
pub mod replication;
pub mod restore_cmd;
pub mod retention_task;
pub mod run;
pub mod state;
pub mod status;
pub mod status_cmd;
pub mod supervisor;
pub mod wal_check_cmd;
pub mod wal_check_task;
pub mod wal_cmd;
