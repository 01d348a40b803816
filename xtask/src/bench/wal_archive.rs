//! `cargo xtask bench wal-archive`: WAL archiving and restore throughput of pgsteward,
//! barman-cloud and pgBackRest on the same real backlog, the same S3 server and the same run.
//!
//! 1. s3s-fs on loopback behind the testkit's nginx TLS proxy (every tool uses the proxy).
//! 2. A PostgreSQL 15 cluster (postgres OS user, scratch directory) with `archive_mode = on` and
//!    `archive_command = '/bin/false'` gets a backlog of real WAL: `pgbench -i`, a table of
//!    random text, then checkpoints + pgbench runs (full-page images) until at least
//!    `PGSTEWARD_BENCH_SEGMENTS` (default 48, minimum 30) segments are `.ready`, then `VACUUM
//!    (FREEZE, ANALYZE)`; clean shutdown. Autovacuum is off, so no run adds WAL of its own.
//! 3. Archive, per tool: `cp -a` of that data directory (identical backlog), start postgres with
//!    `archive_command = ''` (archiving paused, no retry sleeps), start the clock, start the
//!    tool's sidecar if it has one and wait for its socket, then `ALTER SYSTEM SET
//!    archive_command` + `pg_reload_conf()` and time until no `.ready` file remains. CPU is the
//!    archiver's waited-for children (`cutime + cstime`: every archive_command and what it
//!    waited for) plus detached processes (pgBackRest's async process and its workers), which
//!    this process adopts as subreaper and reaps with `wait4`. Peak RSS is the largest `VmHWM`
//!    of any tool process, sampled every 5 ms, or from `wait4` for detached ones.
//! 4. Restore, per tool: start the clock and the sidecar (waiting for its socket), then call
//!    its restore_command as postgres would (`%f %p`, `%p` = `pg_wal/RECOVERYXLOG`) for every
//!    segment in order, and after each call read the restored segment, check it is
//!    byte-identical to the original and remove it, as postgres reads (replays) a restored
//!    segment and unlinks it before the next call; the clock covers the whole sequence, CPU is
//!    each call's `wait4` rusage plus detached processes.
//! 5. Steps 3 and 4 run `PGSTEWARD_BENCH_ROUNDS` times (default 3; each round archives with
//!    every tool, then restores with every tool); a tool's row is its median round (`rounds`).
//!
//! Deadlines bound every wait; scratch files and processes go away on exit
//! (`PGSTEWARD_BENCH_KEEP=1` keeps the scratch directory for inspection).
//! `PGSTEWARD_BENCH_BACKLOG=DIR` skips step 2 and copies a kept run's `source/data` instead
//! (for profiling: the docs are then left unchanged).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cluster::{self, mkdir_postgres};
use super::procs::{self, Usage};
use super::report::{self, Measured, Outcome, Report, Row};
use super::rounds;
use super::s3::{self, S3};
use super::tools::{self, Availability, Ctx, Tool};

mod backlog;
mod compare;

use backlog::{generate_backlog, reuse_backlog, segment_size, segments_target, Backlog};
use compare::same_content;

/// Archiving or restoring the whole backlog must finish within this.
const RUN_DEADLINE: Duration = Duration::from_secs(900);
/// A run whose backlog does not shrink for this long has failed (postgres waits 60 s after
/// three failed attempts).
const STALL: Duration = Duration::from_secs(75);
/// How long detached processes get to finish after a run.
const ORPHAN_DEADLINE: Duration = Duration::from_secs(60);
/// How long a tool's sidecar may take to start answering.
const SIDECAR_DEADLINE: Duration = Duration::from_secs(10);

/// What the runs of one round share.
#[derive(Clone, Copy)]
struct Round<'a> {
    /// From 1.
    number: usize,
    s3: &'a S3,
    backlog: &'a Backlog,
    scratch: &'a Path,
    /// The workspace.
    root: &'a Path,
}

impl Round<'_> {
    /// A fresh directory for `tool`'s `phase` run in this round (no spool, status or log file
    /// of an earlier round).
    fn run_dir(&self, phase: &str, tool: Tool) -> Result<PathBuf> {
        let dir = self
            .scratch
            .join(format!("{phase}-{}-{}", tool.prefix(), self.number));
        mkdir_postgres(&dir)?;
        Ok(dir)
    }
}

pub fn run(root: &Path) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("`cargo xtask bench wal-archive` must run as root: it runs postgres and the tools as the postgres OS user");
    }
    let target = segments_target()?;
    procs::become_subreaper()?;
    let scratch = tempfile::Builder::new()
        .prefix("pgst-bench-")
        .tempdir_in("/tmp")
        .context("creating the scratch directory")?;
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
        .context("chmod the scratch directory")?;
    let result = bench(root, scratch.path(), target);
    if std::env::var_os("PGSTEWARD_BENCH_KEEP").is_some_and(|v| !v.is_empty()) {
        let kept = scratch.keep();
        eprintln!("bench: kept the scratch directory {}", kept.display());
    }
    result
}

fn bench(root: &Path, scratch: &Path, target: usize) -> Result<ExitCode> {
    let started = Instant::now();
    let s3 = S3::start(&scratch.join("s3"), root)?;
    eprintln!(
        "bench: s3s-fs behind nginx TLS at {} (CA {})",
        s3.proxy.endpoint(),
        s3.proxy.ca_file().display()
    );
    let reused = std::env::var_os("PGSTEWARD_BENCH_BACKLOG").filter(|v| !v.is_empty());
    let backlog = match &reused {
        Some(dir) => reuse_backlog(scratch, Path::new(dir))?,
        None => generate_backlog(scratch, target)?,
    };
    let wal_bytes = backlog.segments.len() as u64 * segment_size(&backlog)?;
    eprintln!(
        "bench: backlog of {} segments ({} MiB) in {:.0?}",
        backlog.segments.len(),
        wal_bytes >> 20,
        started.elapsed()
    );

    let selected = selected_tools()?;
    let rounds = rounds::wanted()?;
    // Per tool, its outcome in every round: archive, then restore from that archive.
    let mut archived: Vec<Vec<Outcome>> = vec![Vec::new(); Tool::ALL.len()];
    let mut restored: Vec<Vec<Outcome>> = vec![Vec::new(); Tool::ALL.len()];
    let mut described: Vec<[Option<String>; 2]> = vec![[None, None]; Tool::ALL.len()];
    for round in 1..=rounds {
        let this_round = Round {
            number: round,
            s3: &s3,
            backlog: &backlog,
            scratch,
            root,
        };
        for (i, tool) in Tool::ALL.into_iter().enumerate() {
            if !selected.contains(&tool) {
                archived[i].push(Outcome::NotAvailable(
                    "not selected by PGSTEWARD_BENCH_TOOLS".into(),
                ));
                continue;
            }
            eprintln!(
                "bench: round {round}/{rounds}: archive with {}",
                tool.name()
            );
            let row = archive_one(tool, &this_round);
            eprintln!("bench:   {}", row.outcome.summary());
            described[i][0] = described[i][0].take().or(row.described);
            archived[i].push(row.outcome);
        }
        for (i, tool) in Tool::ALL.into_iter().enumerate() {
            let outcome = if matches!(archived[i].last(), Some(Outcome::Measured(_))) {
                eprintln!(
                    "bench: round {round}/{rounds}: restore with {}",
                    tool.name()
                );
                let row = restore_one(tool, &this_round);
                described[i][1] = described[i][1].take().or(row.described);
                row.outcome
            } else {
                Outcome::NotAvailable("nothing archived to restore".into())
            };
            eprintln!("bench:   {}", outcome.summary());
            restored[i].push(outcome);
        }
    }
    let rows = |phase: Vec<Vec<Outcome>>, which: usize| -> Vec<Row> {
        Tool::ALL
            .into_iter()
            .zip(phase)
            .zip(&described)
            .map(|((tool, outcomes), described)| Row {
                tool,
                outcome: rounds::combine(outcomes),
                described: described[which].clone(),
            })
            .collect()
    };
    let archive = rows(archived, 0);
    let restore = rows(restored, 1);

    let report = Report {
        segments: backlog.segments.len(),
        rounds,
        wal_bytes,
        archive,
        restore,
        environment: report::Environment::collect(),
    };
    println!("{}", report.text());
    let failed = report.failures();
    if failed > 0 {
        eprintln!("bench: {failed} run(s) failed; docs/benchmarks.md left unchanged");
        return Ok(ExitCode::FAILURE);
    }
    if selected.len() < Tool::ALL.len() {
        eprintln!(
            "bench: PGSTEWARD_BENCH_TOOLS selects a subset; docs/benchmarks.md left unchanged"
        );
        return Ok(ExitCode::SUCCESS);
    }
    if reused.is_some() {
        eprintln!(
            "bench: PGSTEWARD_BENCH_BACKLOG reuses a backlog; docs/benchmarks.md left unchanged"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let docs = root.join("docs/benchmarks.md");
    report::write_docs(&docs, &report.markdown())?;
    eprintln!(
        "bench: wrote {} ({:.0?} in all)",
        docs.display(),
        started.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}

/// The tools `PGSTEWARD_BENCH_TOOLS` names (comma-separated, e.g. `pgsteward,pgbackrest`; all
/// when unset). A subset is for profiling: its results are printed, not written to the docs.
fn selected_tools() -> Result<Vec<Tool>> {
    let Ok(value) = std::env::var("PGSTEWARD_BENCH_TOOLS") else {
        return Ok(Tool::ALL.to_vec());
    };
    let mut selected = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let tool = Tool::ALL
            .into_iter()
            .find(|t| t.prefix().eq_ignore_ascii_case(name) || t.name().eq_ignore_ascii_case(name))
            .with_context(|| {
                let known: Vec<&str> = Tool::ALL.iter().map(|t| t.prefix()).collect();
                format!(
                    "PGSTEWARD_BENCH_TOOLS: unknown tool {name:?} (known: {})",
                    known.join(", ")
                )
            })?;
        selected.push(tool);
    }
    if selected.is_empty() {
        bail!("PGSTEWARD_BENCH_TOOLS={value:?} names no tool");
    }
    Ok(selected)
}

/// One tool's row: the run's outcome (a failure is reported, not fatal) and its description.
fn one_row(tool: Tool, run: impl FnOnce(&mut Option<String>) -> Result<Outcome>) -> Row {
    let mut described = None;
    let outcome = run(&mut described).unwrap_or_else(|err| Outcome::Failed(format!("{err:#}")));
    Row {
        tool,
        outcome,
        described,
    }
}

fn archive_one(tool: Tool, round: &Round<'_>) -> Row {
    one_row(tool, |described| archive_run(tool, round, described))
}

fn archive_run(tool: Tool, round: &Round<'_>, described: &mut Option<String>) -> Result<Outcome> {
    let (s3, backlog) = (round.s3, round.backlog);
    // The tool's prefix emptied: every round archives the whole backlog.
    let run_dir = round.run_dir("archive", tool)?;
    let prefix = s3.prefix_dir(tool.prefix());
    match std::fs::remove_dir_all(&prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("emptying {}", prefix.display())),
    }
    let cluster = backlog.cluster.copy_to(&run_dir.join("data"))?;
    // Archiving paused: with an empty archive_command the archiver just waits for a reload.
    cluster.append_conf("archive_command = ''\n")?;
    let ctx = Ctx {
        s3,
        run_dir: run_dir.clone(),
        data: cluster.data.clone(),
        home: cluster.home.clone(),
        workspace: round.root,
    };
    let setup = match tools::archive_setup(tool, &ctx)? {
        Availability::Ready(setup) => setup,
        Availability::NotAvailable(reason) => return Ok(Outcome::NotAvailable(reason)),
    };
    *described = Some(setup.described.clone());
    let segments = cluster.ready_segments()?;
    if segments != backlog.segments {
        bail!("the copied data directory has a different backlog");
    }
    let mut postmaster = cluster.start(&setup.env, &run_dir.join("postgres.log"))?;
    let archiver = postmaster.archiver_pid()?;
    let cpu_before = procs::waited_children_cpu(archiver)?;
    let sampler = procs::RssSampler::start(vec![archiver]);

    let started = Instant::now();
    if let Some(sidecar) = &setup.sidecar {
        // Started on the clock, and archive_command set once it answers: a deployed manager
        // runs before postgres archives anything (started after, its first call finds no
        // manager and compresses that segment a second time). Detached through a shell that
        // exits at once: the sidecar is adopted by this process (a subreaper) and its CPU and
        // RSS are collected with the other orphans.
        let mut command = procs::as_postgres("/bin/sh", &setup.env, &ctx.home)?;
        command.arg("-c").arg(&sidecar.command);
        procs::run_ok(&mut command, Duration::from_secs(10))?;
        procs::wait_for_path(&sidecar.ready, SIDECAR_DEADLINE)?;
    }
    cluster.psql(&[
        &format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            cluster::quote_conf(&setup.command)
        ),
        "SELECT pg_reload_conf()",
    ])?;
    let mut left = segments.len();
    let mut progress_at = Instant::now();
    while left > 0 {
        std::thread::sleep(Duration::from_millis(5));
        let now = cluster.ready_count();
        if now != left {
            left = now;
            progress_at = Instant::now();
        }
        if progress_at.elapsed() >= STALL || started.elapsed() >= RUN_DEADLINE {
            let _ = sampler.finish();
            bail!(
                "{left} of {} segments still .ready after {:.0?} (no progress for {:.0?}); server log: {}",
                segments.len(),
                started.elapsed(),
                progress_at.elapsed(),
                postmaster.log_tail()
            );
        }
    }
    let elapsed = started.elapsed();
    let cpu_after = procs::waited_children_cpu(archiver)?;
    postmaster.stop()?;
    let (detached, detached_count) = procs::reap_orphans(ORPHAN_DEADLINE)?;
    let sampled_rss = sampler.finish();
    let mut usage = Usage {
        cpu: cpu_after.saturating_sub(cpu_before),
        max_rss_kb: sampled_rss,
    };
    usage.add(detached);

    // Shutdown switches and archives one more (nearly empty) segment after the clock stopped;
    // only the backlog counts.
    let stored = s3::archived_segments(&s3.prefix_dir(&tool.segments_prefix()));
    let missing: Vec<&String> = segments
        .iter()
        .filter(|s| !stored.contains_key(*s))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} left no .ready file, but {} of the {} backlog segments are not in the bucket (first: {})",
            tool.name(),
            missing.len(),
            segments.len(),
            missing[0]
        );
    }
    let stored_bytes = segments.iter().filter_map(|s| stored.get(s)).sum();
    remove_data(&cluster.data);
    Ok(Outcome::Measured(Measured {
        segments: segments.len(),
        elapsed,
        usage,
        stored_bytes,
        detached: detached_count,
        round_seconds: Vec::new(),
    }))
}

fn restore_one(tool: Tool, round: &Round<'_>) -> Row {
    one_row(tool, |described| restore_run(tool, round, described))
}

fn restore_run(tool: Tool, round: &Round<'_>, described: &mut Option<String>) -> Result<Outcome> {
    let (s3, backlog) = (round.s3, round.backlog);
    let run_dir = round.run_dir("restore", tool)?;
    // A data directory like the one a restore starts from: pg_control (pgBackRest reads it),
    // an empty pg_wal.
    let cluster = backlog.cluster.copy_to(&run_dir.join("data"))?;
    empty_pg_wal(&cluster.data)?;
    let restored = run_dir.join("restored");
    mkdir_postgres(&restored)?;
    let ctx = Ctx {
        s3,
        run_dir: run_dir.clone(),
        data: cluster.data.clone(),
        home: cluster.home.clone(),
        workspace: round.root,
    };
    let setup = match tools::restore_setup(tool, &ctx)? {
        Availability::Ready(setup) => setup,
        Availability::NotAvailable(reason) => return Ok(Outcome::NotAvailable(reason)),
    };
    *described = Some(setup.described.clone());
    let target = cluster.data.join("pg_wal").join("RECOVERYXLOG");
    let target_str = target.display().to_string();
    let trace = trace_calls();
    let started = Instant::now();
    if let Some(sidecar) = &setup.sidecar {
        // Like a deployed manager, up before postgres asks for the first file.
        let mut command = procs::as_postgres("/bin/sh", &setup.env, &ctx.home)?;
        command.arg("-c").arg(&sidecar.command);
        procs::run_ok(&mut command, Duration::from_secs(10))?;
        procs::wait_for_path(&sidecar.ready, SIDECAR_DEADLINE)?;
    }
    let mut usage = Usage::default();
    for segment in &backlog.segments {
        let command = setup
            .command
            .replace("%f", segment)
            .replace("%p", &target_str);
        let mut sh = procs::as_postgres("/bin/sh", &setup.env, &cluster.home)?;
        sh.arg("-c")
            .arg(&command)
            .stdout(std::process::Stdio::null());
        let remaining = RUN_DEADLINE.saturating_sub(started.elapsed());
        let call_started = Instant::now();
        let (code, call) = procs::run_measured(&mut sh, remaining.max(Duration::from_secs(1)))?;
        let call_took = call_started.elapsed();
        usage.add(call);
        if code != 0 {
            bail!("restore_command for {segment} exited with {code}: {command}");
        }
        // As postgres does: read the whole segment (replay), then remove it before the next
        // call (RestoreArchivedFile unlinks RECOVERYXLOG before running restore_command).
        let original = backlog.cluster.data.join("pg_wal").join(segment);
        if !same_content(&original, &target)? {
            let kept = restored.join(segment);
            let _ = std::fs::rename(&target, &kept);
            bail!(
                "{segment} restored by {} differs from the original (kept as {})",
                tool.name(),
                kept.display()
            );
        }
        std::fs::remove_file(&target)
            .with_context(|| format!("{segment}: removing {}", target.display()))?;
        if trace {
            eprintln!(
                "bench:     {segment} at {:>7.1} ms: call {:>6.1} ms, read + compare + remove {:>5.1} ms",
                call_started.duration_since(started).as_secs_f64() * 1e3,
                call_took.as_secs_f64() * 1e3,
                (call_started.elapsed() - call_took).as_secs_f64() * 1e3
            );
        }
    }
    let elapsed = started.elapsed();
    if setup.sidecar.is_some() {
        // With no postmaster to follow, the sidecar runs until told to stop.
        procs::terminate_orphans();
    }
    let (detached, detached_count) = procs::reap_orphans(ORPHAN_DEADLINE)?;
    usage.add(detached);

    let _ = std::fs::remove_dir_all(&restored);
    remove_data(&cluster.data);
    Ok(Outcome::Measured(Measured {
        segments: backlog.segments.len(),
        elapsed,
        usage,
        stored_bytes: 0,
        detached: detached_count,
        round_seconds: Vec::new(),
    }))
}

/// Whether `PGSTEWARD_BENCH_TRACE` asks for every restore_command's timing (for profiling).
fn trace_calls() -> bool {
    std::env::var_os("PGSTEWARD_BENCH_TRACE").is_some_and(|v| !v.is_empty())
}

/// Removes the WAL segments (and their archive status) from a copied data directory.
fn empty_pg_wal(data: &Path) -> Result<()> {
    let pg_wal = data.join("pg_wal");
    for dir in [pg_wal.clone(), pg_wal.join("archive_status")] {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

/// Frees the disk of a finished run's data directory (keeping its logs and configs).
fn remove_data(data: &PathBuf) {
    if std::env::var_os("PGSTEWARD_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(data);
    }
}
