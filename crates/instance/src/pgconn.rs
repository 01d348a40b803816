//! The manager's own connections to postgres (Unix socket, superuser, peer authentication)
//! and the facts it reads from them for status, probes and metrics.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls};

/// Connection parameters of the local instance.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalTarget {
    pub socket_dir: std::path::PathBuf,
    pub port: u16,
    pub superuser: String,
}

impl LocalTarget {
    pub fn new(socket_dir: &Path, port: u16, superuser: &str) -> Self {
        LocalTarget {
            socket_dir: socket_dir.to_path_buf(),
            port,
            superuser: superuser.to_owned(),
        }
    }
}

/// Connect as the superuser over the Unix socket, within `timeout`.
pub async fn connect(target: &LocalTarget, dbname: &str, timeout: Duration) -> Result<Client> {
    connect_with_options(target, dbname, timeout, "").await
}

/// [`connect`] with session settings (`options`, as in libpq: `-c name=value ...`).
pub async fn connect_with_options(
    target: &LocalTarget,
    dbname: &str,
    timeout: Duration,
    options: &str,
) -> Result<Client> {
    let mut config = tokio_postgres::Config::new();
    if !options.is_empty() {
        config.options(options);
    }
    config
        .host_path(&target.socket_dir)
        .port(target.port)
        .user(&target.superuser)
        .dbname(dbname)
        .application_name("pgsteward")
        .connect_timeout(timeout);
    let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .context("connecting to postgres timed out")?
        .context("connecting to postgres")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// What postgres says about itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PgFacts {
    pub in_recovery: bool,
    pub server_version: String,
    pub system_identifier: String,
    pub timeline: Option<u32>,
    pub current_lsn: Option<String>,
    pub postmaster_start_time: String,
    pub postmaster_start_epoch: f64,
    pub pending_restart: Vec<String>,
    pub wal_receiver_status: Option<String>,
    /// Bytes received but not replayed yet (replicas).
    pub replay_lag_bytes: Option<f64>,
    /// Client backends (what counts against max_connections), and the limit.
    pub client_connections: i64,
    pub max_connections: i64,
}

const FACTS_SQL: &str = "SELECT pg_is_in_recovery(), \
    current_setting('server_version'), \
    (SELECT system_identifier::text FROM pg_control_system()), \
    CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint())::int8 \
         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END, \
    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text \
         ELSE pg_current_wal_lsn()::text END, \
    to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
    extract(epoch FROM pg_postmaster_start_time())::float8, \
    ARRAY(SELECT name FROM pg_settings WHERE pending_restart ORDER BY name), \
    (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
    pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8, \
    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int8, \
    current_setting('max_connections')::int8";

/// Read [`PgFacts`] over `client`.
pub async fn facts(client: &Client) -> Result<PgFacts> {
    let row = client
        .query_one(FACTS_SQL, &[])
        .await
        .context("reading instance facts")?;
    let timeline: Option<i64> = row.get(3);
    Ok(PgFacts {
        in_recovery: row.get(0),
        server_version: row.get(1),
        system_identifier: row.get(2),
        timeline: timeline.and_then(|t| u32::try_from(t).ok()),
        current_lsn: row.get(4),
        postmaster_start_time: row.get(5),
        postmaster_start_epoch: row.get(6),
        pending_restart: row.get(7),
        wal_receiver_status: row.get(8),
        replay_lag_bytes: row.get(9),
        client_connections: row.get(10),
        max_connections: row.get(11),
    })
}

/// Connect and read facts in one step, bounded by `timeout`.
pub async fn probe(target: &LocalTarget, timeout: Duration) -> Result<PgFacts> {
    let client = connect(target, "postgres", timeout).await?;
    tokio::time::timeout(timeout, facts(&client))
        .await
        .context("reading instance facts timed out")?
}
