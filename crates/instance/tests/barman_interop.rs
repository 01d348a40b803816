//! Interoperability with barman-cloud (PyPI `barman[cloud]`) on the same S3 server:
//! `barman-cloud-wal-restore` restores byte-identical what pgsteward archived, and
//! `pgsteward wal-restore` restores byte-identical what `barman-cloud-wal-archive --gzip`
//! archived.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use pgsteward_testkit::s3::S3Server;

fn barman(tool: &str) -> PathBuf {
    let dir = std::env::var_os("PGSTEWARD_TEST_BARMAN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pgsteward-ci/barman/bin"));
    let path = dir.join(tool);
    assert!(path.is_file(), "{} not found: run `cargo xtask prereqs` (installs barman[cloud] into /opt/pgsteward-ci/barman)", path.display());
    path
}

fn barman_command(tool: &str, s3: &S3Server) -> Command {
    let mut command = Command::new(barman(tool));
    command
        .env("AWS_ACCESS_KEY_ID", s3.access_key())
        .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .args([
            "--cloud-provider",
            "aws-s3",
            "--endpoint-url",
            &s3.endpoint(),
        ]);
    command
}

fn archive_options(s3: &S3Server, creds: &Path) -> ManagerOptions {
    let mut opts = options(PgVersion::V15);
    opts.args = s3_archive_args(s3, creds, "interop", "from-pgsteward");
    opts.parameters = vec![("wal_keep_size".into(), "1GB".into())];
    opts
}

/// Closed segments in pg_wal, sorted.
fn closed_segments(pgdata: &Path, current: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pgdata.join("pg_wal"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| n.len() == 24 && n.as_str() < current);
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barman_cloud_and_pgsteward_restore_each_others_wal() {
    let s3 = S3Server::new().await;
    let creds = pgsteward_testkit::fsutil::ScratchDir::new();
    let instance = Instance::new(archive_options(&s3, creds.path()));
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    for i in 0..3 {
        query(&instance, &format!("CREATE TABLE t{i} AS SELECT generate_series(1, 20000) AS n; SELECT pg_switch_wal()::text")).await;
    }
    query(&instance, "CREATE TABLE tail (i int); SELECT 1").await;
    let current = current_walfile(&instance).await;
    wait_for(
        "pgsteward to archive every closed segment",
        Duration::from_secs(120),
        || async {
            let status = http::get(&format!("{}/pg/status", instance.api()))
                .await?
                .json();
            (status["archive"]["ready_backlog"] == 0
                && status["archive"]["archived_count"].as_u64()? >= 3)
                .then_some(())
        },
    )
    .await;
    let segments = closed_segments(&instance.pgdata, &current);
    assert!(segments.len() >= 3, "{segments:?}");
    let out_dir = creds.mkdir("restored", 0o755);

    // 1. barman-cloud-wal-restore reads what pgsteward archived.
    for name in &segments {
        let dest = out_dir.join(format!("barman-{name}"));
        let status = barman_command("barman-cloud-wal-restore", &s3)
            .arg(format!("s3://{}/interop", s3.bucket()))
            .arg("from-pgsteward")
            .arg(name)
            .arg(&dest)
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "barman-cloud-wal-restore {name} failed");
        assert!(
            std::fs::read(&dest).unwrap_or_default()
                == std::fs::read(instance.pgdata.join("pg_wal").join(name)).unwrap_or_default(),
            "{name}: barman restored different bytes"
        );
    }

    // 2. pgsteward wal-restore reads what barman-cloud-wal-archive --gzip archived.
    for name in &segments {
        let status = barman_command("barman-cloud-wal-archive", &s3)
            .arg("--gzip")
            .arg(format!("s3://{}/interop", s3.bucket()))
            .arg("from-barman")
            .arg(instance.pgdata.join("pg_wal").join(name))
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "barman-cloud-wal-archive {name} failed");
    }
    // A data directory whose archive settings name barman's server (no manager answers there).
    let other = creds.mkdir("other-pgdata", 0o700);
    let mut settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(instance.pgdata.join("pgsteward.archive.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    settings["server_name"] = "from-barman".into();
    settings["socket"] = other.join("no-manager.sock").display().to_string().into();
    creds.write("other-pgdata/pgsteward.archive.json", &settings.to_string());
    for name in &segments {
        let dest = other.join(format!("pgsteward-{name}"));
        let out = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
            .args(["wal-restore", "--pgdata"])
            .arg(&other)
            .arg(name)
            .arg(&dest)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read(&dest).unwrap_or_default()
                == std::fs::read(instance.pgdata.join("pg_wal").join(name)).unwrap_or_default(),
            "{name}: pgsteward restored different bytes"
        );
    }
    // Both layouts are the same: the keys differ only by server name.
    let ours = s3.object_path(&format!(
        "interop/from-pgsteward/wals/{}/{}.gz",
        &segments[0][..16],
        segments[0]
    ));
    let theirs = s3.object_path(&format!(
        "interop/from-barman/wals/{}/{}.gz",
        &segments[0][..16],
        segments[0]
    ));
    assert!(
        ours.is_file() && theirs.is_file(),
        "{} / {}",
        ours.display(),
        theirs.display()
    );
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}
