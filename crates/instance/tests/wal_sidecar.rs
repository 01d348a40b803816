//! `pgsteward archiver --pgdata DIR` beside a postgres that pgsteward does not supervise
//! (started with pg_ctl, as on a VM with its own service manager): `archive_command =
//! 'pgsteward wal-archive'` calls are answered by the sidecar, every closed segment reaches the
//! store, the sidecar's `/metrics` count them, a second archiver cannot take its socket over,
//! another data directory's request on that socket is refused, `--log-level` filters per target
//! (and a filter that does not parse is refused), and the sidecar exits when its postmaster
//! stops.

// Test code: the shared async test body is not a `#[test]` function clippy exempts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;
use pgsteward::archiver::settings::{ArchiveSettings, FILE};
use pgsteward::config::layers::{load, ConfigSources};
use pgsteward_testkit::free_port;
use pgsteward_testkit::fsutil::ScratchDir;

fn as_postgres(program: &std::path::Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

fn run_ok(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn sidecar_archives_beside_an_unsupervised_postgres(version: PgVersion) {
    let scratch = ScratchDir::new();
    let data = scratch.join("data");
    let store = scratch.mkdir("store", 0o700);
    run_ok(
        as_postgres(&version.bin_dir().join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(Stdio::null()),
    );
    let port = free_port();
    let binary = env!("CARGO_BIN_EXE_pgsteward");
    let conf = format!(
        "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
         archive_mode = on\narchive_command = '{binary} wal-archive --pgdata {data} %p'\n",
        dir = scratch.path().display(),
        data = data.display(),
    );
    let mut postgresql_conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    postgresql_conf.push_str(&conf);
    std::fs::write(data.join("postgresql.conf"), postgresql_conf).unwrap();

    // The archive settings the manager would write, from the same YAML section.
    let yaml = scratch.write(
        "pgsteward.yaml",
        &format!(
            "pgdata: {}\npostgres:\n  port: {port}\n  socket_dir: {}\narchive:\n  destination: file://{}\n  server_name: sidecar\n  wal:\n    gzip_level: 1\n",
            data.display(),
            scratch.path().display(),
            store.display()
        ),
    );
    let config = load(&ConfigSources {
        file: Some(yaml),
        env: Vec::new(),
        overrides: Vec::new(),
    })
    .unwrap();
    let settings = ArchiveSettings::from_config(&config).unwrap();
    ArchiveSettings::write(&data, Some(&settings)).unwrap();
    scratch.chown_postgres(&data.join(FILE));

    let started = as_postgres(&version.bin_dir().join("pg_ctl"))
        .args(["-w", "-t", "60", "-D"])
        .arg(&data)
        .arg("-l")
        .arg(scratch.join("postgres.log"))
        .arg("start")
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "pg_ctl start: {}",
        std::fs::read_to_string(scratch.join("postgres.log")).unwrap_or_default()
    );
    let metrics_port = free_port();
    let mut sidecar = as_postgres(std::path::Path::new(binary))
        .args(["archiver", "--pgdata"])
        .arg(&data)
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        // One target quieter than the rest: the filter is applied per target.
        .args(["--log-level", "info,pgsteward::archiver::sidecar=warn"])
        .stdout(std::fs::File::create(scratch.join("sidecar.log")).unwrap())
        .stderr(std::fs::File::create(scratch.join("sidecar.err")).unwrap())
        .spawn()
        .unwrap();
    let metrics = format!("http://127.0.0.1:{metrics_port}");

    let query = |sql: &'static str| async move {
        pgsteward_testkit::sql(port, "postgres", "", "postgres", sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    query("CREATE TABLE t (i int)").await;
    let mut switched = Vec::new();
    for _ in 0..3 {
        query("INSERT INTO t SELECT generate_series(1, 20000)").await;
        let rows = query("SELECT pg_walfile_name(pg_switch_wal())").await;
        switched.push(rows[0][0].clone().unwrap());
    }
    let ready_dir = data.join("pg_wal/archive_status");
    let logs = || {
        format!(
            "postgres log:\n{}\nsidecar log:\n{}{}",
            std::fs::read_to_string(scratch.join("postgres.log")).unwrap_or_default(),
            std::fs::read_to_string(scratch.join("sidecar.log")).unwrap_or_default(),
            std::fs::read_to_string(scratch.join("sidecar.err")).unwrap_or_default()
        )
    };
    let archived = tokio::time::timeout(
        READY,
        wait_for(
            "the sidecar to archive every switched segment",
            READY * 2,
            || async {
                let ready = std::fs::read_dir(&ready_dir)
                    .ok()?
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                    .count();
                let archived = metric(&metrics, "pgsteward_wal_archived_total").await?;
                (ready == 0 && archived >= 3.0).then_some(archived)
            },
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("the switched segments were not archived; {}", logs()));
    assert!(archived >= 3.0);
    for name in &switched {
        let object = store.join(format!("sidecar/wals/{}/{name}.gz", &name[..16]));
        assert!(object.is_file(), "{} not archived", object.display());
    }
    assert_eq!(
        metric(&metrics, "pgsteward_wal_archive_failures_total").await,
        Some(0.0),
        "{}",
        logs()
    );

    let sidecar_log = std::fs::read_to_string(scratch.join("sidecar.log")).unwrap_or_default();
    assert!(
        sidecar_log.contains("WAL archive socket listening")
            && !sidecar_log.contains("archiver sidecar running"),
        "--log-level not applied per target: {sidecar_log}"
    );
    // A log filter that does not parse is refused before anything starts.
    let bad_filter = as_postgres(std::path::Path::new(binary))
        .args(["archiver", "--pgdata"])
        .arg(&data)
        .args(["--log-level", "pgsteward=loud"])
        .output()
        .unwrap();
    assert_eq!(bad_filter.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad_filter.stderr);
    assert!(
        stderr.contains("--log-level") && stderr.contains("pgsteward=loud"),
        "{stderr}"
    );

    // A second archiver for the same socket refuses to start instead of taking it over.
    let second = as_postgres(std::path::Path::new(binary))
        .args(["archiver", "--pgdata"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("another archiver is listening"),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
    // Another data directory whose settings name the same socket is refused, not served from
    // this cluster's pg_wal.
    let other = scratch.mkdir("other", 0o700);
    let other_wal = scratch.mkdir("other/pg_wal", 0o700);
    std::fs::copy(data.join(FILE), other.join(FILE)).unwrap();
    scratch.chown_postgres(&other.join(FILE));
    let segment = other_wal.join(&switched[0]);
    std::fs::File::create(&segment)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    scratch.chown_postgres(&segment);
    let refused = as_postgres(std::path::Path::new(binary))
        .args(["wal-archive", "--pgdata"])
        .arg(&other)
        .arg(format!("pg_wal/{}", switched[0]))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not ")
            && String::from_utf8_lossy(&refused.stderr).contains("serves data directory"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    run_ok(
        as_postgres(&version.bin_dir().join("pg_ctl"))
            .args(["-w", "-m", "fast", "-D"])
            .arg(&data)
            .arg("stop")
            .stdout(Stdio::null()),
    );
    let status = wait_for("the sidecar to exit after the postmaster", EXIT, || {
        let status = sidecar.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    assert!(
        status.success(),
        "sidecar exited with {status}: {}",
        std::fs::read_to_string(scratch.join("sidecar.log")).unwrap_or_default()
    );
}
for_each_version!(sidecar_archives_beside_an_unsupervised_postgres);
