//! Bad input never touches data: each case exits with code 1, prints an error naming the
//! problem, and leaves the data directory byte-for-byte as it was.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use pgsteward_testkit::fsutil::snapshot;

/// Run the manager to completion; returns (exit code, output).
async fn run_to_exit(instance: &Instance, args: &[String]) -> (i32, String) {
    let mut manager = instance.spawn_with(args);
    let code = manager.wait_exit(Duration::from_secs(60)).await;
    (code, manager.log())
}

fn initdb(version: PgVersion, pgdata: &Path) {
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(version.bin_dir().join("initdb"))
        .arg("-D")
        .arg(pgdata)
        .arg("--auth=trust")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("initdb: {e}"));
    assert!(status.success());
}

async fn assert_refused(instance: &Instance, args: &[String], expected: &[&str]) {
    let before = (snapshot(&instance.pgdata), snapshot(&instance.config_path));
    let (code, log) = run_to_exit(instance, args).await;
    assert_eq!(code, 1, "expected exit code 1; output:\n{log}");
    for text in expected {
        assert!(log.contains(text), "expected {text:?} in:\n{log}");
    }
    let after = (snapshot(&instance.pgdata), snapshot(&instance.config_path));
    let changed: Vec<_> = before
        .0
        .iter()
        .filter(|(path, entry)| after.0.get(*path) != Some(entry))
        .map(|(path, _)| path.clone())
        .chain(
            after
                .0
                .keys()
                .filter(|p| !before.0.contains_key(*p))
                .cloned(),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "the data directory changed: {changed:?}"
    );
    assert_eq!(before.1, after.1, "the configuration file changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_postgres_directory_is_refused() {
    let instance = Instance::new(options(PgVersion::V15));
    instance.dir.mkdir("data", 0o700);
    instance.dir.write("data/notes.txt", "precious");
    assert_refused(
        &instance,
        &[],
        &[
            "is not empty and is not a postgres data directory",
            "notes.txt",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_point_is_refused() {
    let instance = Instance::new(options(PgVersion::V15));
    instance.dir.mkdir("data/lost+found", 0o700);
    assert_refused(&instance, &[], &["mount point"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_major_version_is_refused() {
    let instance = Instance::new(options(PgVersion::V18));
    initdb(PgVersion::V15, &instance.pgdata);
    assert_refused(
        &instance,
        &[],
        &["created by PostgreSQL 15 but the binaries are PostgreSQL 18"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_bootstrap_is_refused() {
    let instance = Instance::new(options(PgVersion::V15));
    initdb(PgVersion::V15, &instance.pgdata);
    instance
        .dir
        .write("data/pgsteward.bootstrap-incomplete", "bootstrap started\n");
    assert_refused(&instance, &[], &["unfinished bootstrap"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_owned_unknown_and_mistyped_parameters_are_refused() {
    let instance = Instance::new(options(PgVersion::V15));
    initdb(PgVersion::V15, &instance.pgdata);
    instance.write_config(
        "    archive_command: /bin/true\n    port: 6000\n    work_mme: 4MB\n    jit: maybe\n",
    );
    let before_config = std::fs::read_to_string(&instance.config_path).unwrap_or_default();
    assert_refused(
        &instance,
        &[],
        &[
            "managed by pgsteward, remove: archive_command, port",
            "unknown to these postgres binaries: work_mme",
            "jit: expected a boolean",
        ],
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(&instance.config_path).unwrap_or_default(),
        before_config
    );
    // `config check` reports the same without running anything.
    let output = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["config", "check"])
        .arg(&instance.config_path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("managed by pgsteward, remove: archive_command, port"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_configuration_keys_and_values_are_refused() {
    let instance = Instance::new(options(PgVersion::V15));
    initdb(PgVersion::V15, &instance.pgdata);
    assert_refused(
        &instance,
        &["--set=postgres.bogus_key=1".into()],
        &["bogus_key"],
    )
    .await;
    assert_refused(
        &instance,
        &["--set=postgres.port=many".into()],
        &["expected a number"],
    )
    .await;
    assert_refused(
        &instance,
        &["--set=instance_name=Not Valid".into()],
        &["instance_name"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_password_file_leaves_an_empty_directory_empty() {
    let instance = Instance::new(options(PgVersion::V15));
    instance.dir.mkdir("data", 0o700);
    let missing = instance.dir.join("no-such.pw");
    assert_refused(
        &instance,
        &[format!(
            "--set=bootstrap.initdb.superuser_password_file={}",
            missing.display()
        )],
        &["superuser password", "no-such.pw"],
    )
    .await;
    assert_eq!(
        std::fs::read_dir(&instance.pgdata)
            .map(|d| d.count())
            .unwrap_or(99),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_without_user_is_refused() {
    let instance = Instance::new(options(PgVersion::V15));
    let output = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["run", "--config"])
        .arg(&instance.config_path)
        .env_remove("PGSTEWARD_USER")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("running as root requires --user NAME"),
        "{stderr}"
    );
    assert!(!instance.pgdata.exists());
    let output = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["run", "--user", "root", "--config"])
        .arg(&instance.config_path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unprivileged user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_accepts_a_good_file() {
    let instance = Instance::new(options(PgVersion::V15));
    let output = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["config", "check"])
        .arg(&instance.config_path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1 - 1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("configuration OK") && stdout.contains("PostgreSQL) 15"),
        "{stdout}"
    );
    assert!(
        !instance.pgdata.exists(),
        "config check created the data directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_system_overrides_of_manager_owned_parameters_are_refused() {
    let instance = Instance::new(options(PgVersion::V15));
    initdb(PgVersion::V15, &instance.pgdata);
    let auto_conf = instance.pgdata.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto_conf).unwrap_or_default();
    text.push_str("port = '6543'\n");
    std::fs::write(&auto_conf, text).unwrap_or_else(|e| panic!("{e}"));
    assert_refused(
        &instance,
        &[],
        &["postgresql.auto.conf (ALTER SYSTEM) sets parameters pgsteward manages: port"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_token_file_is_refused() {
    let instance = Instance::new(options(PgVersion::V15));
    initdb(PgVersion::V15, &instance.pgdata);
    let missing = instance.dir.join("missing.token");
    assert_refused(
        &instance,
        &[format!("--set=http.token_file={}", missing.display())],
        &["API token (http.token_file)", "missing.token"],
    )
    .await;
}
