//! Helpers shared by the integration tests (included with `mod common;`).

#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::time::Duration;

pub use pgsteward_testkit::manager::{Instance, PASSWORD, TOKEN};
pub use pgsteward_testkit::{http, proc, wait_file, wait_for, ManagerOptions, PgVersion};

/// Options for the pgsteward binary built with these tests.
pub fn options(version: PgVersion) -> ManagerOptions {
    ManagerOptions::new(env!("CARGO_BIN_EXE_pgsteward"), version)
}

/// Generous bound for starting an instance (initdb included) on a loaded 2-core machine.
pub const READY: Duration = Duration::from_secs(90);
/// Bound for a manager to exit after a signal.
pub const EXIT: Duration = Duration::from_secs(60);

/// Run this build's `pgsteward` with `args` as the postgres user; its output.
pub fn pgsteward(args: &[&str]) -> std::process::Output {
    std::process::Command::new("runuser")
        .args(["-u", "postgres", "--", env!("CARGO_BIN_EXE_pgsteward")])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("pgsteward {args:?}: {e}"))
}

/// `Database cluster state` from pg_controldata.
pub fn cluster_state(version: PgVersion, pgdata: &Path) -> String {
    let output = std::process::Command::new(version.bin_dir().join("pg_controldata"))
        .arg("-D")
        .arg(pgdata)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("pg_controldata: {e}"));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("Database cluster state:")
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no cluster state in pg_controldata output"))
}

/// The value of one metric line `name value` (exact name with labels).
pub async fn metric(base: &str, name: &str) -> Option<f64> {
    http::metric(base, name).await
}

/// Run `f` for PostgreSQL 15 and 18 as two tests.
#[macro_export]
macro_rules! for_each_version {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg15() {
                super::$name(PgVersion::V15).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg18() {
                super::$name(PgVersion::V18).await
            }
        }
    };
}

/// kill -9 the postmaster of `manager` and wait until the manager runs a new one; returns
/// the (old, new) host pids.
pub async fn kill_postmaster_and_wait_for_new(
    manager: &pgsteward_testkit::Manager,
    instance: &Instance,
) -> (i32, i32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let first = manager
        .postmaster_host_pid()
        .await
        .unwrap_or_else(|| panic!("no postmaster"));
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap_or_else(|e| panic!("{e}"));
    let second = wait_for("a new postmaster", READY, || async {
        let status = http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json();
        if status["state"] != "running" {
            return None;
        }
        manager
            .postmaster_host_pid()
            .await
            .filter(|pid| *pid != first)
    })
    .await;
    (first, second)
}

/// Run SQL as the superuser and return the first value (panics on error).
pub async fn query(instance: &Instance, sql: &str) -> String {
    pgsteward_testkit::sql_value(instance.pg_port, PASSWORD, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The WAL file the current insert position is in. Write WAL first when a switch just
/// happened: at a segment boundary `pg_walfile_name` names the previous segment.
pub async fn current_walfile(instance: &Instance) -> String {
    query(instance, "SELECT pg_walfile_name(pg_current_wal_lsn())").await
}

/// `--set` flags archiving to `s3://<bucket>/<prefix>` as `server` on the test S3 server, with
/// credentials in files the postgres user can read (written into `creds`).
pub fn s3_archive_args(
    s3: &pgsteward_testkit::s3::S3Server,
    creds: &Path,
    prefix: &str,
    server: &str,
) -> Vec<String> {
    let (key_file, secret_file) = pgsteward_testkit::s3::write_credential_files(creds);
    for file in [&key_file, &secret_file] {
        let chowned = std::process::Command::new("chown")
            .arg("postgres:postgres")
            .arg(file)
            .status();
        assert!(
            chowned.is_ok_and(|s| s.success()),
            "chown {}",
            file.display()
        );
    }
    vec![
        format!("--set=archive.destination=s3://{}/{prefix}", s3.bucket()),
        format!("--set=archive.server_name={server}"),
        format!("--set=archive.s3.endpoint_url={}", s3.endpoint()),
        "--set=archive.s3.force_path_style=true".into(),
        format!("--set=archive.s3.access_key_id_file={}", key_file.display()),
        format!(
            "--set=archive.s3.secret_access_key_file={}",
            secret_file.display()
        ),
    ]
}

/// Connection settings of the instance's superuser (TCP on loopback, database `postgres`).
pub fn pg_config(instance: &Instance) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(instance.pg_port)
        .user("postgres")
        .password(PASSWORD)
        .dbname("postgres");
    config
}

/// Run a statement that returns no rows, as the superuser (panics on error).
pub async fn exec(instance: &Instance, statement: &str) {
    pgsteward_testkit::sql(
        instance.pg_port,
        "postgres",
        PASSWORD,
        "postgres",
        statement,
    )
    .await
    .unwrap_or_else(|e| panic!("{statement}: {e:#}"));
}

/// `POST path` on the instance's API with `body` (JSON) and the bearer token when given: the
/// status and the JSON answer (`Null` when it is not JSON).
pub async fn post(
    instance: &Instance,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    let response = http::request("POST", &format!("{}{path}", instance.api()), &headers, body)
        .await
        .unwrap_or_else(|| panic!("no answer from POST {path}"));
    let json = serde_json::from_str(&response.body).unwrap_or(serde_json::Value::Null);
    (response.status, json)
}

/// A Prometheus rules file shipped in `examples/prometheus/`.
pub fn alert_rules(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/prometheus")
        .join(name)
}

/// `--set` flags archiving to the `file://` store `store` as server `cluster`, gzip level 1
/// (the tests' WAL need not be small).
pub fn file_archive_args(store: &Path) -> Vec<String> {
    vec![
        format!("--set=archive.destination=file://{}", store.display()),
        "--set=archive.server_name=cluster".to_owned(),
        "--set=archive.wal.gzip_level=1".to_owned(),
    ]
}
