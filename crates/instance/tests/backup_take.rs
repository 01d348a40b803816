//! Taking base backups (pgsteward-backup's engine) of a real manager-run postgres (15 and 18)
//! into a real S3 server, checked with real barman-cloud: a backup taken under pgbench load is
//! listed by `barman-cloud-backup-list`, restored by `barman-cloud-restore`, and postgres
//! recovering it with `barman-cloud-wal-restore` has exactly the data of the source; `verify`
//! passes, then reports a byte flipped on the S3 server's disk; `barman-cloud-backup-delete`
//! tolerates the manifest. S3 stopped mid-backup leaves the backup FAILED, never DONE. Through
//! the manager: `POST /pg/backup` (202, then 409 while it runs), status, metrics, and the
//! `pgsteward backup --wait` / `backup verify` commands. A backup of a standby restores too.

// The per-version test bodies are test code too (clippy only exempts `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use pgsteward_archive::store::MultipartOptions;
use pgsteward_archive::{open, ObjectStore, StoreOptions};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::BackupStatus;
use pgsteward_backup::take::{take_backup, Phase, Progress, TakeOptions};
use pgsteward_backup::verify::verify_backup;
use pgsteward_testkit::fsutil::ScratchDir;
use pgsteward_testkit::s3::S3Server;
use pgsteward_testkit::Manager;

const SERVER: &str = "srv";
const PREFIX: &str = "backups";

fn barman(tool: &str) -> PathBuf {
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

fn barman_args(tool: &str, s3: &S3Server) -> String {
    format!(
        "{} --cloud-provider aws-s3 --endpoint-url {}",
        barman(tool).display(),
        s3.endpoint()
    )
}

fn barman_env(command: &mut Command, s3: &S3Server) {
    command
        .env("AWS_ACCESS_KEY_ID", s3.access_key())
        .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
        .env("AWS_DEFAULT_REGION", "us-east-1");
}

fn barman_run(tool: &str, s3: &S3Server, args: &[&str]) -> String {
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

struct Setup {
    s3: S3Server,
    creds: ScratchDir,
    instance: Instance,
    manager: Manager,
    store: Arc<dyn ObjectStore>,
}

async fn setup(version: PgVersion) -> Setup {
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

fn pg_config(instance: &Instance) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(instance.pg_port)
        .user("postgres")
        .password(PASSWORD)
        .dbname("postgres");
    config
}

fn pgbench(instance: &Instance) -> Command {
    let mut command = Command::new(instance.options.version.bin_dir().join("pgbench"));
    command
        .env("PGPASSWORD", PASSWORD)
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(instance.pg_port.to_string());
    command
}

fn pgbench_init(instance: &Instance, scale: u32) {
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
fn pgbench_load(instance: &Instance) -> Child {
    pgbench(instance)
        .args(["-c", "2", "-T", "900", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("pgbench: {e}"))
}

fn take_options(instance: &Instance) -> TakeOptions {
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

const CHECKSUM: &str = "SELECT (SELECT sum(abalance) || '/' || count(*) FROM pgbench_accounts) || ' ' || \
     (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT md5(string_agg(v, ',' ORDER BY v)) FROM after_backup)";

/// Wait until the segment `name` is in the archive.
async fn wait_archived(store: &Arc<dyn ObjectStore>, name: &str) {
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
fn start_restored(
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

fn stop_restored(version: PgVersion, pgdata: &Path) {
    let _ = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(version.bin_dir().join("pg_ctl"))
        .arg("-D")
        .arg(pgdata)
        .args(["-m", "immediate", "stop"])
        .output();
}

async fn backup_under_load_restores_with_barman(version: PgVersion) {
    let mut setup = setup(version).await;
    let instance = &setup.instance;
    pgbench_init(instance, 3);
    // Unlogged and temporary relations are left out; the unlogged table comes back empty.
    query(
        instance,
        "CREATE UNLOGGED TABLE scratch AS SELECT generate_series(1, 10000) AS n; SELECT 1",
    )
    .await;
    let mut load = pgbench_load(instance);
    let progress = Arc::new(Progress::default());
    let outcome = take_backup(
        Arc::clone(&setup.store),
        &pg_config(instance),
        &take_options(instance),
        Arc::clone(&progress),
    )
    .await
    .unwrap_or_else(|e| panic!("backup failed: {e}"));
    let _ = load.kill();
    let _ = load.wait();
    let snapshot = progress.snapshot();
    eprintln!(
        "backup {} took {:?}: {snapshot:?}",
        outcome.backup_id, outcome.duration
    );
    assert_eq!(snapshot.phase, Phase::Done);
    assert_eq!(snapshot.bytes_done, snapshot.bytes_total);
    let id = outcome.backup_id.clone();

    // The catalog entry is barman's.
    let catalog = Catalog::new(Arc::clone(&setup.store), SERVER);
    let info = catalog.read(&id).await.unwrap().unwrap();
    assert_eq!(info.status().unwrap(), BackupStatus::Done);
    assert!(info
        .backup_label()
        .unwrap()
        .unwrap()
        .contains("START WAL LOCATION"));
    assert_eq!(
        info.version().unwrap().map(|v| v / 10000),
        Some(version.major())
    );
    let listed = barman_run(
        "barman-cloud-backup-list",
        &setup.s3,
        &[&format!("s3://{}/{PREFIX}", setup.s3.bucket()), SERVER],
    );
    assert!(listed.contains(&id), "{listed}");
    let data_object = setup
        .s3
        .object_path(&format!("{PREFIX}/{SERVER}/base/{id}/data.tar.gz"));
    let gzip_test = Command::new("gzip").arg("-t").arg(&data_object).status();
    assert!(gzip_test.is_ok_and(|s| s.success()));

    // Changes after the backup reach the restore through the WAL archive.
    query(
        instance,
        "CREATE TABLE after_backup AS SELECT md5(i::text) AS v FROM generate_series(1, 500) i; SELECT 1",
    )
    .await;
    let expected = query(instance, CHECKSUM).await;
    let last = query(instance, "SELECT pg_walfile_name(pg_switch_wal())").await;
    wait_archived(&setup.store, &last).await;

    // barman-cloud-restore + barman-cloud-wal-restore bring it back.
    let restored = setup.creds.mkdir("restored", 0o700);
    barman_run(
        "barman-cloud-restore",
        &setup.s3,
        &[
            &format!("s3://{}/{PREFIX}", setup.s3.bucket()),
            SERVER,
            &id,
            restored.to_str().unwrap(),
        ],
    );
    assert!(restored.join("backup_label").is_file());
    assert!(!restored.join("postmaster.pid").exists());
    assert!(restored.join("pg_wal").is_dir());
    let port = start_restored(&setup.s3, version, &setup.creds, &restored, false);
    wait_for(
        "the restored server to promote",
        Duration::from_secs(180),
        || async {
            let value = pgsteward_testkit::sql_value(port, "", "SELECT pg_is_in_recovery()::text")
                .await
                .ok()?;
            (value == "false").then_some(())
        },
    )
    .await;
    let got = pgsteward_testkit::sql_value(port, "", CHECKSUM)
        .await
        .unwrap();
    let unlogged = pgsteward_testkit::sql_value(port, "", "SELECT count(*)::text FROM scratch")
        .await
        .unwrap();
    stop_restored(version, &restored);
    assert_eq!(got, expected, "restored data differs");
    assert_eq!(unlogged, "0");

    // verify passes, then finds a flipped byte.
    let report = verify_backup(&catalog, &id).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert!(report.files_checked > 500, "{report:?}");
    let mut bytes = std::fs::read(&data_object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&data_object, &bytes).unwrap();
    let report = verify_backup(&catalog, &id).await.unwrap();
    assert!(!report.ok(), "a corrupted archive passed verification");
    eprintln!("verify after corruption: {:?}", report.problems);

    // barman-cloud-backup-delete deletes the backup despite the manifest beside it.
    barman_run(
        "barman-cloud-backup-delete",
        &setup.s3,
        &[
            &format!("s3://{}/{PREFIX}", setup.s3.bucket()),
            SERVER,
            "-b",
            &id,
        ],
    );
    assert!(catalog.read(&id).await.unwrap().is_none());
    setup.manager.signal(Signal::SIGTERM).await;
    assert_eq!(setup.manager.wait_exit(EXIT).await, 0);
}
for_each_version!(backup_under_load_restores_with_barman);

async fn s3_down_mid_backup_is_failed(version: PgVersion) {
    let mut setup = setup(version).await;
    pgbench_init(&setup.instance, 8);
    let progress = Arc::new(Progress::default());
    let store = Arc::clone(&setup.store);
    let config = pg_config(&setup.instance);
    let options = take_options(&setup.instance);
    let task_progress = Arc::clone(&progress);
    let backup =
        tokio::spawn(async move { take_backup(store, &config, &options, task_progress).await });
    wait_for("the backup to copy", Duration::from_secs(60), || async {
        (progress.snapshot().phase == Phase::Copying).then_some(())
    })
    .await;
    setup.s3.stop();
    wait_for("the backup to fail", Duration::from_secs(120), || async {
        (progress.snapshot().phase == Phase::Failed).then_some(())
    })
    .await;
    setup.s3.start().await;
    let result = backup.await.unwrap();
    let error = result.expect_err("the backup succeeded with S3 down");
    eprintln!("backup error: {error}");
    let id = progress.snapshot().backup_id.unwrap();
    let catalog = Catalog::new(Arc::clone(&setup.store), SERVER);
    let info = catalog.read(&id).await.unwrap().unwrap();
    assert_eq!(info.status().unwrap(), BackupStatus::Failed);
    assert!(info.error().is_some_and(|e| !e.is_empty()));
    assert!(setup
        .store
        .head(&format!("{SERVER}/base/{id}/pgsteward-manifest.json"))
        .await
        .unwrap()
        .is_none());
    // barman sees it as FAILED too, and the server left backup mode (a new backup works).
    let listed = barman_run(
        "barman-cloud-backup-list",
        &setup.s3,
        &[&format!("s3://{}/{PREFIX}", setup.s3.bucket()), SERVER],
    );
    assert!(
        !listed.contains(&format!("{id} ")) || listed.contains("FAILED"),
        "{listed}"
    );
    wait_for("a second id", Duration::from_secs(5), || async {
        (pgsteward_backup::info::backup_id_for(&chrono::Utc::now()) != id).then_some(())
    })
    .await;
    let second = take_backup(
        Arc::clone(&setup.store),
        &pg_config(&setup.instance),
        &take_options(&setup.instance),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("the next backup failed: {e}"));
    assert_eq!(second.info.status().unwrap(), BackupStatus::Done);
    setup.manager.signal(Signal::SIGTERM).await;
    assert_eq!(setup.manager.wait_exit(EXIT).await, 0);
}
for_each_version!(s3_down_mid_backup_is_failed);

async fn api_cli_status_and_metrics(version: PgVersion) {
    let mut setup = setup(version).await;
    let instance = &setup.instance;
    pgbench_init(instance, 2);
    let url = format!("{}/pg/backup", instance.api());
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    // Unauthenticated requests are refused like every mutating route.
    let refused = http::request("POST", &url, &[], "").await.unwrap();
    assert_eq!(refused.status, 401);
    let first = http::request("POST", &url, &headers, r#"{"immediate_checkpoint": true}"#)
        .await
        .unwrap();
    assert_eq!(first.status, 202, "{}", first.body);
    let id = first.json()["backup_id"].as_str().unwrap().to_owned();
    let second = http::request("POST", &url, &headers, "").await.unwrap();
    assert_eq!(second.status, 409, "{}", second.body);
    assert!(second.body.contains(&id), "{}", second.body);
    let last = wait_for("the backup to finish", Duration::from_secs(180), || async {
        let status = http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json();
        let last = status["backup"]["last"].clone();
        (last["backup_id"] == id.as_str()).then_some(status["backup"].clone())
    })
    .await;
    assert_eq!(last["last"]["succeeded"], true, "{last}");
    assert!(last["running"].is_null());
    assert!(last["first_recoverability_point"].is_string(), "{last}");
    let metrics = instance.metrics();
    for name in [
        "pgsteward_backup_last_success_timestamp",
        "pgsteward_backup_first_recoverability_point",
    ] {
        let value = metric(&metrics, name).await.unwrap_or(0.0);
        assert!(value > 1.7e9, "{name} = {value}");
    }
    assert_eq!(
        metric(&metrics, "pgsteward_backup_running").await,
        Some(0.0)
    );

    // The CLI: take a backup and wait for it, then verify it from the store.
    let token_file = instance.dir.join("api.token");
    wait_for("a new backup id", Duration::from_secs(5), || async {
        (pgsteward_backup::info::backup_id_for(&chrono::Utc::now()) != id).then_some(())
    })
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["backup", "--wait", "--url", &instance.api(), "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" done in "), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["backup", "verify", &id, "--pgdata"])
        .arg(&instance.pgdata)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("is intact"), "{stdout}");
    let listed = barman_run(
        "barman-cloud-backup-list",
        &setup.s3,
        &[&format!("s3://{}/{PREFIX}", setup.s3.bucket()), SERVER],
    );
    assert_eq!(listed.matches(" 0000000").count(), 2, "{listed}");
    setup.manager.signal(Signal::SIGTERM).await;
    assert_eq!(setup.manager.wait_exit(EXIT).await, 0);
}
for_each_version!(api_cli_status_and_metrics);

/// A backup taken from a standby (here a server in archive recovery, restored from a primary
/// backup) restores like one from the primary.
async fn backup_of_a_standby_restores(version: PgVersion) {
    let mut setup = setup(version).await;
    let instance = &setup.instance;
    pgbench_init(instance, 2);
    let primary_backup = take_backup(
        Arc::clone(&setup.store),
        &pg_config(instance),
        &take_options(instance),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("primary backup failed: {e}"));
    let bucket = format!("s3://{}/{PREFIX}", setup.s3.bucket());
    let standby = setup.creds.mkdir("standby", 0o700);
    barman_run(
        "barman-cloud-restore",
        &setup.s3,
        &[
            &bucket,
            SERVER,
            &primary_backup.backup_id,
            standby.to_str().unwrap(),
        ],
    );
    query(
        instance,
        "CREATE TABLE after_backup AS SELECT md5(i::text) AS v FROM generate_series(1, 100) i; SELECT 1",
    )
    .await;
    let last = query(instance, "SELECT pg_walfile_name(pg_switch_wal())").await;
    wait_archived(&setup.store, &last).await;
    let standby_port = start_restored(&setup.s3, version, &setup.creds, &standby, true);
    wait_for(
        "the standby to replay after_backup",
        Duration::from_secs(180),
        || async {
            pgsteward_testkit::sql_value(
                standby_port,
                "",
                "SELECT count(*)::text FROM after_backup",
            )
            .await
            .ok()
            .filter(|n| n == "100")
        },
    )
    .await;
    assert_eq!(
        pgsteward_testkit::sql_value(standby_port, "", "SELECT pg_is_in_recovery()::text")
            .await
            .unwrap(),
        "true"
    );
    wait_for("a new backup id", Duration::from_secs(5), || async {
        (pgsteward_backup::info::backup_id_for(&chrono::Utc::now()) != primary_backup.backup_id)
            .then_some(())
    })
    .await;
    let mut standby_config = tokio_postgres::Config::new();
    standby_config
        .host("127.0.0.1")
        .port(standby_port)
        .user("postgres")
        .dbname("postgres");
    let mut options = take_options(instance);
    options.pgdata = standby.clone();
    let outcome = take_backup(
        Arc::clone(&setup.store),
        &standby_config,
        &options,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("standby backup failed: {e}"));
    stop_restored(version, &standby);
    let label = outcome.info.backup_label().unwrap().unwrap();
    assert!(label.contains("BACKUP FROM: standby"), "{label}");

    query(
        instance,
        "INSERT INTO after_backup SELECT md5(i::text) FROM generate_series(101, 200) i; SELECT 1",
    )
    .await;
    let expected = query(instance, CHECKSUM).await;
    let last = query(instance, "SELECT pg_walfile_name(pg_switch_wal())").await;
    wait_archived(&setup.store, &last).await;
    let restored = setup.creds.mkdir("restored", 0o700);
    barman_run(
        "barman-cloud-restore",
        &setup.s3,
        &[
            &bucket,
            SERVER,
            &outcome.backup_id,
            restored.to_str().unwrap(),
        ],
    );
    assert!(!restored.join("standby.signal").exists());
    let port = start_restored(&setup.s3, version, &setup.creds, &restored, false);
    wait_for(
        "the restored server to promote",
        Duration::from_secs(180),
        || async {
            let value = pgsteward_testkit::sql_value(port, "", "SELECT pg_is_in_recovery()::text")
                .await
                .ok()?;
            (value == "false").then_some(())
        },
    )
    .await;
    let got = pgsteward_testkit::sql_value(port, "", CHECKSUM)
        .await
        .unwrap();
    stop_restored(version, &restored);
    assert_eq!(
        got, expected,
        "data restored from the standby backup differs"
    );
    setup.manager.signal(Signal::SIGTERM).await;
    assert_eq!(setup.manager.wait_exit(EXIT).await, 0);
}
for_each_version!(backup_of_a_standby_restores);
