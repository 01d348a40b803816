//! The benchmark's WAL backlog: generated on a PostgreSQL 15 cluster whose archive_command
//! fails (step 2 of the parent module's doc), or copied from a kept run's
//! (`PGSTEWARD_BENCH_BACKLOG`), and the segment count asked for (`PGSTEWARD_BENCH_SEGMENTS`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::cluster::{self, mkdir_postgres, Cluster};

const DEFAULT_SEGMENTS: usize = 48;
const MIN_SEGMENTS: usize = 30;
const GENERATE_DEADLINE: Duration = Duration::from_secs(1200);

/// The backlog every tool starts from.
pub(super) struct Backlog {
    pub(super) cluster: Cluster,
    pub(super) segments: Vec<String>,
}

pub(super) fn segments_target() -> Result<usize> {
    match std::env::var("PGSTEWARD_BENCH_SEGMENTS") {
        Err(_) => Ok(DEFAULT_SEGMENTS),
        Ok(value) => {
            let n: usize = value
                .trim()
                .parse()
                .with_context(|| format!("PGSTEWARD_BENCH_SEGMENTS={value:?} is not a number"))?;
            if n < MIN_SEGMENTS {
                bail!("PGSTEWARD_BENCH_SEGMENTS={n}: the benchmark needs at least {MIN_SEGMENTS} segments");
            }
            Ok(n)
        }
    }
}

pub(super) fn segment_size(backlog: &Backlog) -> Result<u64> {
    let first = backlog.segments.first().context("empty backlog")?;
    let path = backlog.cluster.data.join("pg_wal").join(first);
    Ok(std::fs::metadata(&path)
        .with_context(|| format!("stat {}", path.display()))?
        .len())
}

/// The backlog of a kept earlier run (`PGSTEWARD_BENCH_BACKLOG`, its stopped `source/data`),
/// copied into this run's scratch directory with this run's port and socket directory.
pub(super) fn reuse_backlog(scratch: &Path, kept: &Path) -> Result<Backlog> {
    if !kept.join("PG_VERSION").is_file() {
        bail!(
            "PGSTEWARD_BENCH_BACKLOG={}: not a data directory (expected a kept run's source/data)",
            kept.display()
        );
    }
    if kept.join("postmaster.pid").exists() {
        bail!(
            "PGSTEWARD_BENCH_BACKLOG={}: a postmaster.pid is present; stop that postgres first",
            kept.display()
        );
    }
    for dir in [scratch.join("sock"), scratch.join("home")] {
        mkdir_postgres(&dir)?;
    }
    let kept = Cluster {
        data: kept.to_path_buf(),
        port: pgsteward_testkit::free_port(),
        socket_dir: scratch.join("sock"),
        home: scratch.join("home"),
    };
    let cluster = kept.copy_to(&scratch.join("source").join("data"))?;
    cluster.append_conf(&format!(
        "\n# PGSTEWARD_BENCH_BACKLOG\nport = {}\nunix_socket_directories = '{}'\n",
        cluster.port,
        cluster::quote_conf(&cluster.socket_dir.display().to_string())
    ))?;
    let segments = cluster.ready_segments()?;
    if segments.len() < MIN_SEGMENTS {
        bail!(
            "PGSTEWARD_BENCH_BACKLOG={}: only {} segments are .ready",
            kept.data.display(),
            segments.len()
        );
    }
    eprintln!("bench: reusing the backlog in {}", kept.data.display());
    Ok(Backlog { cluster, segments })
}

/// Builds the source cluster and its `.ready` backlog (see the module doc).
pub(super) fn generate_backlog(scratch: &Path, target: usize) -> Result<Backlog> {
    let dir = scratch.join("source");
    mkdir_postgres(&dir)?;
    let cluster = Cluster::init(
        &dir.join("data"),
        &scratch.join("sock"),
        &scratch.join("home"),
        "/bin/false",
    )?;
    let mut postmaster = cluster.start(&[], &dir.join("postgres.log"))?;
    let deadline = Instant::now() + GENERATE_DEADLINE;
    eprintln!(
        "bench: generating WAL (pgbench -i -s 10, random text, pgbench with full-page images)"
    );
    cluster.pgbench(&["-i", "-s", "10", "-q"], GENERATE_DEADLINE)?;
    cluster.psql(&["CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, 1000000) g"])?;
    // The segment pg_switch_wal closes at the end makes the last one. Vacuumed and frozen at
    // the end, so the copies have nothing left to write when they start.
    while cluster.ready_count() + 1 < target {
        if Instant::now() >= deadline {
            bail!(
                "only {} segments ready after {GENERATE_DEADLINE:?} of WAL generation",
                cluster.ready_count()
            );
        }
        cluster.psql(&["CHECKPOINT"])?;
        cluster.pgbench(
            &["-n", "-c", "2", "-j", "2", "-t", "10000"],
            GENERATE_DEADLINE,
        )?;
    }
    cluster.psql(&["VACUUM (FREEZE, ANALYZE)", "CHECKPOINT"])?;
    let before = cluster.ready_count();
    cluster.psql(&["SELECT pg_switch_wal()"])?;
    wait_until(
        Duration::from_secs(30),
        "the switched segment to be .ready",
        || Ok(cluster.ready_count() > before),
    )?;
    postmaster.stop()?;
    let segments = cluster.ready_segments()?;
    if segments.len() < MIN_SEGMENTS {
        bail!("only {} segments in the backlog", segments.len());
    }
    Ok(Backlog { cluster, segments })
}

fn wait_until(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check()? {
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
