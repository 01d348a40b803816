//! Helpers of the base backup tests (included with `#[path]` by backup_take.rs
//! and backup_api.rs): barman-cloud commands, a manager archiving to a fresh
//! s3s-fs, pgbench, and starting a restored data directory under postgres.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use pgsteward_archive::store::MultipartOptions;
use pgsteward_archive::{open, ObjectStore, StoreOptions};
use pgsteward_backup::take::TakeOptions;
use pgsteward_testkit::fsutil::ScratchDir;
use pgsteward_testkit::s3::S3Server;
use pgsteward_testkit::Manager;

use super::common::*;

pub const SERVER: &str = "srv";
pub const PREFIX: &str = "backups";

pub fn barman(tool: &str) -> PathBuf {
    let dir = std::env::var_os("PGSTEWARD_TEST_BARMAN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pgsteward-ci/barman/bin"));
    let path = dir.join(tool);
    assert!(
        path.is_file(),
        "{} not found: run `cargo xtask prereqs`",
        path.display()
    );
    path
}

pub fn barman_args(tool: &str, s3: &S3Server) -> String {
    format!(
        "{} --cloud-provider aws-s3 --endpoint-url {}",
        barman(tool).display(),
        s3.endpoint()
    )
}

pub fn barman_env(command: &mut Command, s3: &S3Server) {
    command
        .env("AWS_ACCESS_KEY_ID", s3.access_key())
        .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
        .env("AWS_DEFAULT_REGION", "us-east-1");
}

pub fn barman_run(tool: &str, s3: &S3Server, args: &[&str]) -> String {
    let mut command = Command::new(barman(tool));
    barman_env(&mut command, s3);
    let out = command
        .args([
            "--cloud-provider",
            "aws-s3",
            "--endpoint-url",
            &s3.endpoint(),
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Setup {
    pub s3: S3Server,
    pub creds: ScratchDir,
    pub instance: Instance,
    pub manager: Manager,
    pub store: Arc<dyn ObjectStore>,
}

pub async fn setup(version: PgVersion) -> Setup {
    let s3 = S3Server::new().await;
    let creds = ScratchDir::new();
    let mut opts = options(version);
    opts.args = s3_archive_args(&s3, creds.path(), PREFIX, SERVER);
    let instance = Instance::new(opts);
    let manager = instance.spawn();
    manager.wait_ready(READY).await;
    let store = open(
        &format!("s3://{}/{PREFIX}", s3.bucket()),
        &StoreOptions {
            endpoint_url: Some(s3.endpoint()),
            region: Some("us-east-1".into()),
            force_path_style: true,
            access_key_id_file: Some(creds.join("s3-access-key-id")),
            secret_access_key_file: Some(creds.join("s3-secret-access-key")),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    Setup {
        s3,
        creds,
        instance,
        manager,
        store,
    }
}

pub fn pgbench(instance: &Instance) -> Command {
    let mut command = Command::new(instance.options.version.bin_dir().join("pgbench"));
    command
        .env("PGPASSWORD", PASSWORD)
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(instance.pg_port.to_string());
    command
}

pub fn pgbench_init(instance: &Instance, scale: u32) {
    let out = pgbench(instance)
        .args(["-i", "-q", "-s", &scale.to_string(), "postgres"])
        .output()
        .unwrap_or_else(|e| panic!("pgbench: {e}"));
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pgbench load until killed.
pub fn pgbench_load(instance: &Instance) -> Child {
    pgbench(instance)
        .args(["-c", "2", "-T", "900", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("pgbench: {e}"))
}

pub fn take_options(instance: &Instance) -> TakeOptions {
    let mut options = TakeOptions::new(SERVER, &instance.pgdata);
    options.compressors = 2;
    options.fast_checkpoint = true;
    options.multipart = MultipartOptions {
        part_size: 5 * 1024 * 1024,
        parts_in_flight: 2,
    };
    options.record_failure_for = Duration::from_secs(120);
    options
}

pub const CHECKSUM: &str = "SELECT (SELECT sum(abalance) || '/' || count(*) FROM pgbench_accounts) || ' ' || \
     (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT md5(string_agg(v, ',' ORDER BY v)) FROM after_backup)";

/// Wait until the segment `name` is in the archive.
pub async fn wait_archived(store: &Arc<dyn ObjectStore>, name: &str) {
    let key = format!("{SERVER}/wals/{}/{name}.gz", &name[..16]);
    wait_for(
        &format!("{key} archived"),
        Duration::from_secs(120),
        || async { store.head(&key).await.ok().flatten().map(|_| ()) },
    )
    .await;
}

/// Start postgres as the postgres user on `pgdata` in archive recovery from the archive
/// through barman-cloud-wal-restore (as a standby that stays in recovery with `standby`);
/// returns the port.
pub fn start_restored(
    s3: &S3Server,
    version: PgVersion,
    scratch: &ScratchDir,
    pgdata: &Path,
    standby: bool,
) -> u16 {
    let hba = scratch.write(
        "restored_hba.conf",
        "local all all trust\nhost all all 127.0.0.1/32 trust\n",
    );
    let port = pgsteward_testkit::free_port();
    let restore_command = format!(
        "{} s3://{}/{PREFIX} {SERVER} %f %p",
        barman_args("barman-cloud-wal-restore", s3),
        s3.bucket()
    );
    let signal = if standby {
        "standby.signal"
    } else {
        "recovery.signal"
    };
    std::fs::write(pgdata.join(signal), "").unwrap_or_else(|e| panic!("{e}"));
    let log = scratch.join(&format!(
        "{}.log",
        pgdata.display().to_string().replace('/', "_")
    ));
    let chown = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(pgdata)
        .status();
    assert!(chown.is_ok_and(|s| s.success()));
    let chmod = Command::new("chmod").arg("700").arg(pgdata).status();
    assert!(chmod.is_ok_and(|s| s.success()));
    let options = [
        format!("-p {port}"),
        "-c listen_addresses=127.0.0.1".into(),
        format!("-c unix_socket_directories={}", scratch.path().display()),
        format!("-c hba_file={}", hba.display()),
        "-c archive_mode=off".into(),
        format!("-c restore_command='{restore_command}'"),
    ]
    .join(" ");
    let mut command = Command::new("runuser");
    barman_env(&mut command, s3);
    let out = command
        .args(["-u", "postgres", "--"])
        .arg(version.bin_dir().join("pg_ctl"))
        .arg("-D")
        .arg(pgdata)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "300", "-o", &options, "start"])
        .output()
        .unwrap_or_else(|e| panic!("pg_ctl: {e}"));
    assert!(
        out.status.success(),
        "pg_ctl start failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    port
}

pub fn stop_restored(version: PgVersion, pgdata: &Path) {
    let _ = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(version.bin_dir().join("pg_ctl"))
        .arg("-D")
        .arg(pgdata)
        .args(["-m", "immediate", "stop"])
        .output();
}
