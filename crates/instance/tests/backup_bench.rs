//! The base backup benchmark (ignored by default, run explicitly): pgsteward's manager in
//! release mode against pgBackRest on the same pgbench database, with time, CPU and peak RSS.

// The benchmark body is test code too (clippy only exempts `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup_support;
mod common;

use std::process::Command;
use std::time::Duration;

use backup_support::*;
use common::*;
use nix::sys::signal::Signal;
use pgsteward_testkit::fsutil::ScratchDir;
use pgsteward_testkit::s3::S3Server;

/// CPU seconds (user + system) of a process and its waited-for children.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime, stime, cutime, cstime are fields 14-17 (1-based; index 11-14 after the name).
    let ticks: f64 = fields
        .get(11..15)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

fn peak_rss_mib(pid: i32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn children_rusage() -> (f64, f64) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(usage.ru_utime) + secs(usage.ru_stime),
        usage.ru_maxrss as f64 / 1024.0,
    )
}

/// A measurement, run explicitly (it takes minutes): a pgbench database (scale
/// `PGSTEWARD_BENCH_SCALE`, default 50) backed up by the manager built in release mode
/// (`PGSTEWARD_BENCH_BINARY`, e.g. target/release/pgsteward) into s3s-fs at gzip level
/// `PGSTEWARD_BENCH_LEVEL` (default 6), then by pgBackRest (`--type=full`, gz, same level,
/// process-max 2, posix repository on the same disk). Prints time, CPU and peak RSS of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: PGSTEWARD_BENCH_BINARY=target/release/pgsteward cargo test -p pgsteward --test backup_bench -- --ignored --nocapture"]
async fn bench_backup_against_pgbackrest() {
    let binary = std::env::var("PGSTEWARD_BENCH_BINARY")
        .expect("set PGSTEWARD_BENCH_BINARY to a release build of pgsteward");
    let scale: u32 = std::env::var("PGSTEWARD_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let level: u32 = std::env::var("PGSTEWARD_BENCH_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let s3 = S3Server::new().await;
    let creds = ScratchDir::new();
    let mut opts = ManagerOptions::new(&binary, PgVersion::V15);
    opts.args = s3_archive_args(&s3, creds.path(), PREFIX, SERVER);
    opts.args
        .push("--set=archive.data.immediate_checkpoint=true".into());
    opts.args
        .push(format!("--set=archive.data.gzip_level={level}"));
    let instance = Instance::new(opts);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    pgbench_init(&instance, scale);
    query(&instance, "CHECKPOINT; SELECT 1").await;
    let pid = manager.pid().await;
    let cpu_before = cpu_seconds(pid);
    let started = std::time::Instant::now();
    let url = format!("{}/pg/backup", instance.api());
    let auth = format!("Bearer {TOKEN}");
    let accepted = http::request("POST", &url, &[("authorization", auth.as_str())], "")
        .await
        .unwrap();
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let id = accepted.json()["backup_id"].as_str().unwrap().to_owned();
    let last = wait_for("the backup", Duration::from_secs(1800), || async {
        let status = http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json();
        let last = status["backup"]["last"].clone();
        (last["backup_id"] == id.as_str()).then_some(last)
    })
    .await;
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(last["succeeded"], true, "{last}");
    let cpu = cpu_seconds(pid) - cpu_before;
    let rss = peak_rss_mib(pid);
    let read = last["bytes_read"].as_f64().unwrap_or(0.0) / 1048576.0;
    let stored = last["bytes_stored"].as_f64().unwrap_or(0.0) / 1048576.0;
    eprintln!(
        "pgsteward: {wall:.2} s wall ({:.2} s in the engine), {cpu:.2} s CPU, manager peak RSS {rss:.0} MiB, {read:.0} MiB read -> {stored:.1} MiB stored (level {level})",
        last["duration_seconds"].as_f64().unwrap_or(0.0)
    );

    // pgBackRest, same data, same level, process-max 2.
    let repo = creds.mkdir("pgbackrest-repo", 0o750);
    let conf = creds.write(
        "pgbackrest.conf",
        &format!(
            "[global]\nrepo1-path={}\nrepo1-retention-full=1\ncompress-type=gz\ncompress-level={level}\nprocess-max=2\nstart-fast=y\narchive-check=n\nlog-level-console=warn\nlog-path={}\nlock-path={}\n\n[bench]\npg1-path={}\npg1-port={}\npg1-socket-path={}\npg1-user=postgres\n",
            repo.display(),
            creds.path().display(),
            creds.path().display(),
            instance.pgdata.display(),
            instance.pg_port,
            instance.dir.join("sock").display(),
        ),
    );
    let pgbackrest = |args: &[&str]| {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", "pgbackrest"])
            .arg(format!("--config={}", conf.display()))
            .arg("--stanza=bench")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pgbackrest {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    pgbackrest(&["stanza-create"]);
    let (cpu_before, _) = children_rusage();
    let started = std::time::Instant::now();
    pgbackrest(&["--type=full", "backup"]);
    let wall_pgbackrest = started.elapsed().as_secs_f64();
    let (cpu_after, rss_children) = children_rusage();
    let repo_size = Command::new("du")
        .args(["-sm"])
        .arg(&repo)
        .output()
        .unwrap();
    eprintln!(
        "pgBackRest: {wall_pgbackrest:.2} s wall, {:.2} s CPU, peak RSS of any child so far {rss_children:.0} MiB, repository {}",
        cpu_after - cpu_before,
        String::from_utf8_lossy(&repo_size.stdout).trim()
    );
    eprintln!(
        "ratio: pgsteward is {:.2}x pgBackRest's speed at level {level}",
        wall_pgbackrest / wall
    );
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}
