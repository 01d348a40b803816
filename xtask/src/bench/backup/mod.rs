//! `cargo xtask bench backup`: base backup and restore of pgsteward, pgBackRest and
//! barman-cloud on the same database, the same S3 server and the same run.
//!
//! 1. s3s-fs on loopback behind the testkit's nginx TLS proxy (every tool uses the proxy).
//! 2. The pgsteward manager (`pgsteward run`, release build) runs a PostgreSQL 15 instance that
//!    archives WAL to `s3://bench/pgsteward`; `pgbench -i -s PGSTEWARD_BENCH_SCALE` (default 50)
//!    fills it; checkpoint, WAL switch, and the archive catches up (no `.ready` left).
//! 3. Backups, in turn, of that one database: `pgsteward backup --wait` (the manager's engine;
//!    CPU and peak RSS of the manager process), `pgbackrest backup --type=full` (gz level 6,
//!    process-max 2), `barman-cloud-backup --gzip` (its fixed level 9; stopped at
//!    `PGSTEWARD_BENCH_BARMAN_TIMEOUT`, default 420 s, and reported as timed out). Each backup
//!    is checked as done by the tool's own listing.
//! 4. Restores of each tool's backup into an empty directory (pgsteward's through the hook in
//!    `tools`), timed with `wait4` rusage, and the restored directory checked.
//!
//! Deadlines bound every wait; scratch files and processes go away on exit
//! (`PGSTEWARD_BENCH_KEEP=1` keeps the scratch directory).

mod report;
mod tools;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pgsteward_testkit::manager::{Instance, ManagerOptions};
use pgsteward_testkit::PgVersion;

use super::cluster::{mkdir_postgres, write_postgres_file, Cluster};
use super::procs::{self, Usage};
use super::s3::{self, S3};
use super::tools::{pgsteward_binary, pgsteward_origin, Ctx, Tool};
use super::{GZIP_LEVEL, SERVER_NAME};
use report::{Measured, Outcome, Report, Row};

const DEFAULT_SCALE: u32 = 50;
const DEFAULT_BARMAN_TIMEOUT: Duration = Duration::from_secs(420);
/// Bound of one pgsteward or pgBackRest backup, and of each restore.
const RUN_DEADLINE: Duration = Duration::from_secs(600);
const READY_DEADLINE: Duration = Duration::from_secs(120);
const LOAD_DEADLINE: Duration = Duration::from_secs(900);
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(600);

pub fn run(root: &Path) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("`cargo xtask bench backup` must run as root: it runs the manager, postgres and the tools as the postgres OS user");
    }
    let scale = env_number("PGSTEWARD_BENCH_SCALE", DEFAULT_SCALE)?;
    let barman_timeout = Duration::from_secs(env_number(
        "PGSTEWARD_BENCH_BARMAN_TIMEOUT",
        DEFAULT_BARMAN_TIMEOUT.as_secs() as u32,
    )? as u64);
    procs::become_subreaper()?;
    let scratch = tempfile::Builder::new()
        .prefix("pgst-bench-")
        .tempdir_in("/tmp")
        .context("creating the scratch directory")?;
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
        .context("chmod the scratch directory")?;
    let result = bench(root, scratch.path(), scale, barman_timeout);
    if std::env::var_os("PGSTEWARD_BENCH_KEEP").is_some_and(|v| !v.is_empty()) {
        let kept = scratch.keep();
        eprintln!("bench: kept the scratch directory {}", kept.display());
    }
    result
}

fn env_number(name: &str, default: u32) -> Result<u32> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => {
            let n: u32 = value
                .trim()
                .parse()
                .with_context(|| format!("{name}={value:?} is not a number"))?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        }
    }
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    format!("load average {}", fields.join(" "))
}

/// The manager running the benchmark's database.
struct Database {
    // Field order is drop order: the manager (and its postmaster) go before the files.
    manager: pgsteward_testkit::Manager,
    instance: Instance,
    manager_pid: i32,
    cluster: Cluster,
    binary: PathBuf,
}

fn bench(root: &Path, scratch: &Path, scale: u32, barman_timeout: Duration) -> Result<ExitCode> {
    let started = Instant::now();
    let load_before = load_average();
    let s3 = S3::start(&scratch.join("s3"), root)?;
    eprintln!("bench: s3s-fs behind nginx TLS at {}", s3.proxy.endpoint());
    let home = scratch.join("home");
    mkdir_postgres(&home)?;
    let ctx = |name: &str, data: &Path| -> Result<Ctx<'_>> {
        let run_dir = scratch.join(name);
        mkdir_postgres(&run_dir)?;
        Ok(Ctx {
            s3: &s3,
            run_dir,
            data: data.to_path_buf(),
            home: home.clone(),
            workspace: root,
        })
    };
    let db = start_database(&ctx("manager", Path::new("/nonexistent"))?, &home, scale)?;
    let data_bytes = tree_bytes(&db.cluster.data, true);
    eprintln!(
        "bench: scale {scale} loaded and archived, {} MiB data directory, in {:.0?}",
        data_bytes >> 20,
        started.elapsed()
    );

    let mut backup = Vec::new();
    let mut ids: Vec<Option<String>> = Vec::new();
    for tool in [Tool::Pgsteward, Tool::PgBackRest, Tool::Barman] {
        eprintln!("bench: backup with {}", tool.name());
        let c = ctx(&format!("backup-{}", tool.prefix()), &db.cluster.data)?;
        let mut described = None;
        let (outcome, id) = match backup_one(tool, &c, &db, barman_timeout, &mut described) {
            Ok(done) => done,
            Err(err) => (Outcome::Failed(format!("{err:#}")), None),
        };
        eprintln!("bench:   {}", outcome.summary(data_bytes));
        backup.push(Row {
            tool,
            level: if tool == Tool::Barman { 9 } else { GZIP_LEVEL },
            outcome,
            described,
        });
        ids.push(id);
    }
    let mut restore = Vec::new();
    for (row, id) in backup.iter().zip(&ids) {
        let tool = row.tool;
        let outcome = match (id, &row.outcome) {
            (Some(id), Outcome::Measured(_)) => {
                eprintln!("bench: restore with {}", tool.name());
                let c = ctx(&format!("restore-{}", tool.prefix()), &db.cluster.data)?;
                restore_one(tool, &c, &db, id, data_bytes)
                    .unwrap_or_else(|err| Outcome::Failed(format!("{err:#}")))
            }
            _ => Outcome::NotAvailable("no backup to restore".into()),
        };
        eprintln!("bench:   {}", outcome.summary(data_bytes));
        restore.push(Row {
            tool,
            level: row.level,
            outcome,
            described: None,
        });
    }
    drop(db);
    let report = Report {
        scale,
        data_bytes,
        backup,
        restore,
        environment: super::report::Environment::collect(),
        load: format!("{load_before} before, {} after", load_average()),
    };
    println!("{}", report.text());
    let failed = report.failures();
    if failed > 0 {
        eprintln!("bench: {failed} run(s) failed; docs/benchmarks.md left unchanged");
        return Ok(ExitCode::FAILURE);
    }
    let docs = root.join("docs/benchmarks.md");
    super::report::write_section(&docs, "backup", &report.markdown())?;
    eprintln!(
        "bench: wrote {} ({:.0?} in all)",
        docs.display(),
        started.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}

/// Starts the manager (PG15, archiving WAL to `s3://bench/pgsteward`), loads pgbench and waits
/// for the WAL archive to catch up.
fn start_database(ctx: &Ctx<'_>, home: &Path, scale: u32) -> Result<Database> {
    let binary = match pgsteward_binary(ctx)? {
        Ok(binary) => binary,
        Err(reason) => bail!("no pgsteward binary to run the database with: {reason}"),
    };
    let key_file = ctx.run_dir.join("s3-access-key-id");
    let secret_file = ctx.run_dir.join("s3-secret-access-key");
    write_postgres_file(&key_file, &format!("{}\n", s3::ACCESS_KEY), 0o600)?;
    write_postgres_file(&secret_file, &format!("{}\n", s3::SECRET_KEY), 0o600)?;
    let mut options = ManagerOptions::new(&binary.display().to_string(), PgVersion::V15);
    options.args = vec![
        format!(
            "--set=archive.destination={}",
            tools::s3_url(Tool::Pgsteward)
        ),
        format!("--set=archive.server_name={SERVER_NAME}"),
        format!("--set=archive.s3.endpoint_url={}", ctx.s3.proxy.endpoint()),
        format!("--set=archive.s3.region={}", s3::REGION),
        "--set=archive.s3.force_path_style=true".into(),
        format!("--set=archive.s3.access_key_id_file={}", key_file.display()),
        format!(
            "--set=archive.s3.secret_access_key_file={}",
            secret_file.display()
        ),
        format!(
            "--set=archive.s3.ca_file={}",
            ctx.s3.proxy.ca_file().display()
        ),
        format!("--set=archive.data.gzip_level={GZIP_LEVEL}"),
        "--set=archive.data.immediate_checkpoint=true".into(),
    ];
    options.parameters = vec![
        ("max_wal_size".into(), "4GB".into()),
        ("checkpoint_timeout".into(), "1h".into()),
        // Nothing changes the database between the tools' backups.
        ("autovacuum".into(), "off".into()),
    ];
    let instance = Instance::new(options);
    let manager = instance.spawn();
    // Found by its command line, which shows once the child has exec'ed.
    let config = instance.config_path.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let manager_pid = loop {
        let found = procs::children(std::process::id() as i32)
            .into_iter()
            .find(|pid| procs::cmdline(*pid).contains(&config));
        match found {
            Some(pid) => break pid,
            None if Instant::now() >= deadline => {
                bail!("no manager process (`pgsteward run --config {config}`) among our children after 10 s")
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    procs::register_pid(manager_pid as u32);
    let cluster = Cluster {
        data: instance.pgdata.clone(),
        port: instance.pg_port,
        socket_dir: instance.dir.join("sock"),
        home: home.to_path_buf(),
    };
    let db = Database {
        manager,
        instance,
        manager_pid,
        cluster,
        binary,
    };
    let deadline = Instant::now() + READY_DEADLINE;
    while db.cluster.psql(&["SELECT 1"]).is_err() {
        if Instant::now() >= deadline || !Path::new(&format!("/proc/{manager_pid}")).exists() {
            bail!(
                "the manager's postgres did not accept connections within {READY_DEADLINE:?}: {}",
                procs::tail(&db.manager.log(), 3000)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("bench: manager {manager_pid} running; pgbench -i -s {scale}");
    db.cluster
        .pgbench(&["-i", "-s", &scale.to_string(), "-q"], LOAD_DEADLINE)?;
    db.cluster.psql(&["CHECKPOINT", "SELECT pg_switch_wal()"])?;
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    while db.cluster.ready_count() > 0 {
        if Instant::now() >= deadline {
            bail!(
                "{} WAL segments still .ready after {CATCH_UP_DEADLINE:?}: {}",
                db.cluster.ready_count(),
                procs::tail(&db.manager.log(), 3000)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(db)
}

/// Bytes of the regular files below `dir` (with `skip_wal`, not those under `pg_wal`).
fn tree_bytes(dir: &Path, skip_wal: bool) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if !(skip_wal && path == dir && entry.file_name() == "pg_wal") {
                    stack.push(entry.path());
                }
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// user+system CPU of one process itself (`/proc/PID/stat` fields 14 and 15).
fn own_cpu(pid: i32) -> Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let (_, tail) = text
        .rsplit_once(')')
        .with_context(|| format!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<u64> = tail
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() != 2 {
        bail!("malformed /proc/{pid}/stat");
    }
    // SAFETY: sysconf only reads a constant.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|hz| *hz > 0)
        .unwrap_or(100);
    Ok(Duration::from_nanos(
        (fields[0] + fields[1]) * 1_000_000_000 / hz,
    ))
}

fn vm_hwm_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

/// Runs `command` with its output in `log`, measured with `wait4`; fails unless it exits 0.
fn run_logged(command: &mut Command, log: &Path, timeout: Duration) -> Result<(Usage, String)> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone().context("cloning the log handle")?;
    command.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    let shown = procs::describe(command);
    let (code, usage) = procs::run_measured(command, timeout)?;
    let output = std::fs::read_to_string(log).unwrap_or_default();
    if code != 0 {
        bail!(
            "`{shown}` exited with {code}: {}",
            procs::tail(&output, 2000)
        );
    }
    Ok((usage, output))
}

/// One tool's backup: the outcome and the backup id (for its restore).
fn backup_one(
    tool: Tool,
    ctx: &Ctx<'_>,
    db: &Database,
    barman_timeout: Duration,
    described: &mut Option<String>,
) -> Result<(Outcome, Option<String>)> {
    let log = ctx.run_dir.join("backup.log");
    match tool {
        Tool::Pgsteward => {
            *described = Some(format!(
                "the manager (`pgsteward run`) takes the backup on `pgsteward backup --wait` \
                 (`POST /pg/backup`, then status polled every 200 ms) with `archive.data: \
                 {{gzip_level: {GZIP_LEVEL}, immediate_checkpoint: true}}` and the other \
                 archive.data settings at their defaults (compressors: one per CPU, readers: 2, \
                 16 MiB parts, 3 in flight), endpoint https://127.0.0.1:PORT, force_path_style, \
                 ca_file <proxy CA>; checked with `barman-cloud-backup-list`; {}",
                pgsteward_origin()
            ));
            let pid = db.manager_pid;
            std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
                .with_context(|| format!("resetting the peak RSS of the manager ({pid})"))?;
            let cpu_before = own_cpu(pid)?;
            let mut command = Command::new(&db.binary);
            command
                .args(["backup", "--wait", "--url"])
                .arg(db.instance.api())
                .arg("--token-file")
                .arg(db.instance.dir.join("api.token"))
                .stdin(Stdio::null());
            let started = Instant::now();
            let (client, output) = run_logged(&mut command, &log, RUN_DEADLINE)?;
            let elapsed = started.elapsed();
            let cpu = own_cpu(pid)?.saturating_sub(cpu_before);
            let usage = Usage {
                cpu: cpu + client.cpu,
                max_rss_kb: vm_hwm_kb(pid),
            };
            let id = output
                .lines()
                .find_map(|l| l.strip_prefix("backup ")?.strip_suffix(" started"))
                .context("`pgsteward backup` printed no backup id")?
                .to_owned();
            let engine = output
                .lines()
                .find_map(|l| {
                    l.split_once(" done in ")?
                        .1
                        .split_once(" s")?
                        .0
                        .parse()
                        .ok()
                })
                .map(|s: f64| format!("backup {id}, engine time {s:.1} s"))
                .unwrap_or_default();
            let listed = tools::barman_done_backups(ctx, &tools::s3_url(Tool::Pgsteward))?;
            if !listed.contains(&id) {
                bail!("barman-cloud-backup-list does not list pgsteward's backup {id} as done (it lists {listed:?})");
            }
            Ok((
                Outcome::Measured(Measured {
                    elapsed,
                    usage,
                    bytes: tree_bytes(&tools::backups_dir(ctx.s3, tool), false),
                    note: engine,
                }),
                Some(id),
            ))
        }
        Tool::PgBackRest => {
            *described = Some(tools::pgbackrest_described());
            let config = tools::pgbackrest_config(ctx, &db.cluster)?;
            let mut stanza = tools::pgbackrest(ctx, &config, &["stanza-create"])?;
            procs::run_ok(&mut stanza, Duration::from_secs(120))
                .context("pgbackrest stanza-create")?;
            let mut command = tools::pgbackrest(ctx, &config, &["--type=full", "backup"])?;
            let started = Instant::now();
            let (usage, _) = run_logged(&mut command, &log, RUN_DEADLINE)?;
            let elapsed = started.elapsed();
            tools::pgbackrest_check(ctx, &config)?;
            Ok((
                Outcome::Measured(Measured {
                    elapsed,
                    usage,
                    bytes: tree_bytes(&tools::backups_dir(ctx.s3, tool), false),
                    note: String::new(),
                }),
                Some("latest".into()),
            ))
        }
        Tool::Barman => {
            *described = Some(tools::barman_described());
            let mut command = tools::barman_backup(ctx, &db.cluster)?;
            let started = Instant::now();
            let result = run_logged(&mut command, &log, barman_timeout);
            let elapsed = started.elapsed();
            let usage = match result {
                Ok((usage, _)) => usage,
                Err(err) if elapsed >= barman_timeout => {
                    eprintln!("bench:   barman-cloud-backup stopped at the bound: {err:#}");
                    // Its upload processes, orphaned by the kill, are ours to stop.
                    procs::terminate_orphans();
                    let _ = procs::reap_orphans(Duration::from_secs(20));
                    return Ok((Outcome::TimedOut(barman_timeout), None));
                }
                Err(err) => return Err(err),
            };
            let listed = tools::barman_done_backups(ctx, &tools::s3_url(Tool::Barman))?;
            let [id] = listed.as_slice() else {
                bail!("barman-cloud-backup-list lists {listed:?} as done, not one backup");
            };
            Ok((
                Outcome::Measured(Measured {
                    elapsed,
                    usage,
                    bytes: tree_bytes(&tools::backups_dir(ctx.s3, tool), false),
                    note: String::new(),
                }),
                Some(id.clone()),
            ))
        }
    }
}

/// One tool's restore of backup `id` into an empty directory, checked.
fn restore_one(
    tool: Tool,
    ctx: &Ctx<'_>,
    db: &Database,
    id: &str,
    data_bytes: u64,
) -> Result<Outcome> {
    let target = ctx.run_dir.join("data");
    mkdir_postgres(&target)?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", target.display()))?;
    let mut command = match tool {
        Tool::Pgsteward => {
            match tools::pgsteward_restore(
                &db.binary,
                &db.instance.config_path,
                &db.instance.options.args,
                id,
                &target,
            ) {
                Ok(command) => command,
                Err(reason) => return Ok(Outcome::NotAvailable(reason)),
            }
        }
        Tool::Barman => tools::barman_restore(ctx, id, &target)?,
        Tool::PgBackRest => {
            let config = ctx
                .run_dir
                .join("../backup-pgbackrest/pgbackrest/pgbackrest.conf");
            let mut command = tools::pgbackrest(ctx, &config, &[])?;
            command
                .arg(format!("--pg1-path={}", target.display()))
                .arg("restore");
            command
        }
    };
    let started = Instant::now();
    let (usage, _) = run_logged(&mut command, &ctx.run_dir.join("restore.log"), RUN_DEADLINE)?;
    let elapsed = started.elapsed();
    for name in ["PG_VERSION", "backup_label", "global/pg_control"] {
        if !target.join(name).is_file() {
            bail!(
                "the directory {} restored by {} has no {name}",
                target.display(),
                tool.name()
            );
        }
    }
    let restored = tree_bytes(&target, true);
    if restored < data_bytes / 10 * 9 {
        bail!(
            "{} restored {} MiB of the {} MiB data directory",
            tool.name(),
            restored >> 20,
            data_bytes >> 20
        );
    }
    if std::env::var_os("PGSTEWARD_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&target);
    }
    Ok(Outcome::Measured(Measured {
        elapsed,
        usage,
        bytes: restored,
        note: String::new(),
    }))
}
