//! `cargo xtask bench <NAME>`: benchmarks against real servers and the real peer tools.
//! `wal-archive` (in `wal_archive`) times WAL archiving and restore of pgsteward, barman-cloud
//! and pgBackRest on one PostgreSQL 15 backlog and one S3 server (s3s-fs behind an nginx TLS
//! proxy), and writes its tables into docs/benchmarks.md. `backup` (in `backup`) times base
//! backups and their restores of the same three tools on one pgbench database run by the
//! pgsteward manager.
//!
//! Modules: `cluster` (postgres as the postgres user), `s3` (the S3 server, `s3_server`:
//! s3s-fs with TCP_NODELAY, + TLS proxy), `procs`
//! (spawning, deadlines, CPU/RSS accounting), `tools` (each tool's configuration, and the
//! pgsteward hook), `report` (tables and the docs section), `rounds` (repeated rounds of
//! `wal-archive`: medians, round-by-round ratios). `failover` (in `failover`) measures
//! write unavailability and lost commits across faults on a three-instance cluster.

mod backup;
mod cluster;
pub(crate) mod failover;
pub(crate) mod procs;
mod report;
mod rounds;
mod s3;
pub(crate) mod s3_server;
mod table;
mod tools;
mod wal_archive;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

/// gzip level every tool compresses WAL with.
pub const GZIP_LEVEL: u32 = 6;
/// Parallel uploads/downloads where a tool has the setting (pgBackRest's process-max is 2, as
/// the issue asks).
pub const PARALLEL: u32 = 4;
/// barman server name / pgBackRest stanza.
pub const SERVER_NAME: &str = "bench";

/// The benchmarks `bench` knows.
pub const NAMES: &[&str] = &["wal-archive", "backup", "failover"];

/// Runs the benchmark `name`; None when there is no such benchmark.
pub fn run(root: &Path, name: &str) -> Option<Result<ExitCode>> {
    match name {
        "wal-archive" => Some(wal_archive::run(root)),
        "backup" => Some(backup::run(root)),
        "failover" => Some(failover::run(root, &[])),
        _ => None,
    }
}
