//! The tools the WAL benchmarks compare, and how each is configured: barman-cloud
//! (`barman-cloud-wal-archive --gzip`, `barman-cloud-wal-restore --parallel`), pgBackRest
//! (`archive-push`/`archive-get` with `archive-async=y process-max=2`, repo1-type=s3 over the TLS
//! proxy) and pgsteward, whose setup is the clearly marked hook at the bottom of this file: until
//! the pgsteward side exists it reports "not available" and the benchmark goes on without it.
//!
//! Every tool gets the same S3 server (through the same nginx TLS proxy, trusting the same CA),
//! the same gzip level and, where it has one, the same parallelism.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};

use super::cluster::{mkdir_postgres, write_postgres_file};
use super::s3::{self, S3};
use super::{procs, GZIP_LEVEL, PARALLEL, SERVER_NAME};

/// Where barman-cloud lives (a venv made by `.ci/prereqs`).
pub const BARMAN_BIN: &str = "/opt/pgsteward-ci/barman/bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Pgsteward,
    Barman,
    PgBackRest,
}

impl Tool {
    pub const ALL: [Tool; 3] = [Tool::Pgsteward, Tool::Barman, Tool::PgBackRest];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Pgsteward => "pgsteward",
            Tool::Barman => "barman-cloud",
            Tool::PgBackRest => "pgBackRest",
        }
    }

    /// The object prefix in the bucket where this tool's archive lives.
    pub fn prefix(self) -> &'static str {
        match self {
            Tool::Pgsteward => "pgsteward",
            Tool::Barman => "barman",
            Tool::PgBackRest => "pgbackrest",
        }
    }

    /// Where the archived segments end up below the bucket (for the sanity count).
    pub fn segments_prefix(self) -> String {
        match self {
            Tool::Pgsteward | Tool::Barman => format!("{}/{SERVER_NAME}/wals", self.prefix()),
            Tool::PgBackRest => format!("{}/archive/{SERVER_NAME}", self.prefix()),
        }
    }
}

/// What one run of a tool gets to work with.
pub struct Ctx<'a> {
    pub s3: &'a S3,
    /// This run's own directory (owned by postgres): config files, spool, logs.
    pub run_dir: PathBuf,
    /// The data directory of this run.
    pub data: PathBuf,
    /// HOME of the tool's processes.
    pub home: PathBuf,
    pub workspace: &'a Path,
}

/// How to run a tool: the command postgres runs (`%p`, and `%f` for restore) and the
/// environment of postgres (which its archive/restore commands inherit).
#[derive(Debug, Clone)]
pub struct Setup {
    pub command: String,
    pub env: Vec<(String, String)>,
    /// For the report: the configuration in words (flags, config file settings).
    pub described: String,
    /// A tool's own background process, started right when the clock starts.
    pub sidecar: Option<Sidecar>,
}

/// A background process a tool runs beside postgres (pgsteward's archiver).
#[derive(Debug, Clone)]
pub struct Sidecar {
    /// A shell command started detached, as postgres; it must exit when the postmaster does
    /// (or on SIGTERM when there is no postmaster).
    pub command: String,
    /// A path that exists once the sidecar answers (its socket): the benchmark waits for it, on
    /// the clock, before postgres's first call, as a deployed manager is up before postgres
    /// archives or restores anything.
    pub ready: PathBuf,
}

pub enum Availability {
    Ready(Setup),
    NotAvailable(String),
}

fn s3_url(tool: Tool) -> String {
    format!("s3://{}/{}", s3::BUCKET, tool.prefix())
}

/// boto3's settings for barman-cloud: credentials, region and the proxy's CA.
pub(crate) fn aws_env(ctx: &Ctx<'_>) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), s3::ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), s3::SECRET_KEY.into()),
        ("AWS_DEFAULT_REGION".into(), s3::REGION.into()),
        (
            "AWS_CA_BUNDLE".into(),
            ctx.s3.proxy.ca_file().display().to_string(),
        ),
    ]
}

pub(crate) fn barman_bin(name: &str) -> Result<PathBuf> {
    let path = Path::new(BARMAN_BIN).join(name);
    if !path.is_file() {
        anyhow::bail!("{} not found: run `cargo xtask prereqs`", path.display());
    }
    Ok(path)
}

pub fn archive_setup(tool: Tool, ctx: &Ctx<'_>) -> Result<Availability> {
    match tool {
        Tool::Pgsteward => pgsteward_archive_setup(ctx),
        Tool::Barman => {
            let command = format!(
                "{} --gzip --compression-level {GZIP_LEVEL} --endpoint-url {} \
                 --addressing-style path {} {SERVER_NAME} %p",
                barman_bin("barman-cloud-wal-archive")?.display(),
                ctx.s3.proxy.endpoint(),
                s3_url(tool),
            );
            Ok(Availability::Ready(Setup {
                sidecar: None,
                described: format!(
                    "`archive_command = 'barman-cloud-wal-archive --gzip --compression-level {GZIP_LEVEL} \
                     --endpoint-url https://127.0.0.1:PORT --addressing-style path s3://bench/barman \
                     {SERVER_NAME} %p'`, environment AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
                     AWS_DEFAULT_REGION=us-east-1, AWS_CA_BUNDLE=<proxy CA>"
                ),
                command,
                env: aws_env(ctx),
            }))
        }
        Tool::PgBackRest => {
            let config = pgbackrest_config(ctx)?;
            // Offline: pgBackRest reads pg_control for the system id and version.
            let mut stanza = procs::as_postgres("pgbackrest", &[], &ctx.home)?;
            stanza
                .arg(format!("--config={}", config.display()))
                .arg(format!("--stanza={SERVER_NAME}"))
                .args(["--no-online", "--log-level-console=warn", "stanza-create"]);
            procs::run_ok(&mut stanza, Duration::from_secs(120))
                .context("pgbackrest stanza-create")?;
            Ok(Availability::Ready(Setup {
                sidecar: None,
                command: format!(
                    "pgbackrest --config={} --stanza={SERVER_NAME} archive-push %p",
                    config.display()
                ),
                env: Vec::new(),
                described: pgbackrest_described("archive-push %p", true),
            }))
        }
    }
}

pub fn restore_setup(tool: Tool, ctx: &Ctx<'_>) -> Result<Availability> {
    match tool {
        Tool::Pgsteward => pgsteward_restore_setup(ctx),
        Tool::Barman => {
            let spool = ctx.run_dir.join("barman-spool");
            mkdir_postgres(&spool)?;
            let command = format!(
                "{} --endpoint-url {} --addressing-style path --parallel {PARALLEL} \
                 --spool-dir {} {} {SERVER_NAME} %f %p",
                barman_bin("barman-cloud-wal-restore")?.display(),
                ctx.s3.proxy.endpoint(),
                spool.display(),
                s3_url(tool),
            );
            Ok(Availability::Ready(Setup {
                sidecar: None,
                described: format!(
                    "`restore_command = 'barman-cloud-wal-restore --endpoint-url https://127.0.0.1:PORT \
                     --addressing-style path --parallel {PARALLEL} --spool-dir DIR s3://bench/barman \
                     {SERVER_NAME} %f %p'`, same environment as for archiving"
                ),
                command,
                env: aws_env(ctx),
            }))
        }
        Tool::PgBackRest => {
            let config = pgbackrest_config(ctx)?;
            Ok(Availability::Ready(Setup {
                sidecar: None,
                command: format!(
                    "pgbackrest --config={} --stanza={SERVER_NAME} archive-get %f \"%p\"",
                    config.display()
                ),
                env: Vec::new(),
                described: pgbackrest_described("archive-get %f \"%p\"", false),
            }))
        }
    }
}

/// pgBackRest's settings, shared by archive-push and archive-get. The endpoint is `localhost`:
/// pgBackRest matches only DNS names of the certificate (an IP endpoint fails with "unable to
/// find hostname '127.0.0.1' in certificate").
fn pgbackrest_settings(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    vec![
        ("repo1-type", "s3".into()),
        ("repo1-path", format!("/{}", Tool::PgBackRest.prefix())),
        ("repo1-s3-bucket", s3::BUCKET.into()),
        ("repo1-s3-endpoint", "localhost".into()),
        ("repo1-storage-port", ctx.s3.proxy.port().to_string()),
        ("repo1-s3-region", s3::REGION.into()),
        ("repo1-s3-key", s3::ACCESS_KEY.into()),
        ("repo1-s3-key-secret", s3::SECRET_KEY.into()),
        ("repo1-s3-uri-style", "path".into()),
        (
            "repo1-storage-ca-file",
            ctx.s3.proxy.ca_file().display().to_string(),
        ),
        ("compress-type", "gz".into()),
        ("compress-level", GZIP_LEVEL.to_string()),
        ("archive-async", "y".into()),
        ("process-max", "2".into()),
        (
            "spool-path",
            ctx.run_dir.join("pgbackrest/spool").display().to_string(),
        ),
        (
            "lock-path",
            ctx.run_dir.join("pgbackrest/lock").display().to_string(),
        ),
        (
            "log-path",
            ctx.run_dir.join("pgbackrest/log").display().to_string(),
        ),
        ("log-level-console", "warn".into()),
        ("log-level-file", "info".into()),
    ]
}

fn pgbackrest_config(ctx: &Ctx<'_>) -> Result<PathBuf> {
    for sub in [
        "pgbackrest",
        "pgbackrest/spool",
        "pgbackrest/lock",
        "pgbackrest/log",
    ] {
        mkdir_postgres(&ctx.run_dir.join(sub))?;
    }
    let mut text = String::from("# cargo xtask bench wal-archive\n[global]\n");
    for (key, value) in pgbackrest_settings(ctx) {
        text.push_str(&format!("{key}={value}\n"));
    }
    text.push_str(&format!(
        "\n[{SERVER_NAME}]\npg1-path={}\n",
        ctx.data.display()
    ));
    let path = ctx.run_dir.join("pgbackrest/pgbackrest.conf");
    write_postgres_file(&path, &text, 0o600)?;
    Ok(path)
}

fn pgbackrest_described(command: &str, archive: bool) -> String {
    let stanza = if archive {
        " (stanza created offline with `stanza-create --no-online`)"
    } else {
        " (archive-get-queue-max at its default, 128 MiB)"
    };
    format!(
        "`pgbackrest --config=FILE --stanza={SERVER_NAME} {command}` with `repo1-type=s3 \
         repo1-s3-endpoint=localhost repo1-storage-port=PORT repo1-s3-uri-style=path \
         repo1-storage-ca-file=<proxy CA> repo1-s3-region=us-east-1 compress-type=gz \
         compress-level={GZIP_LEVEL} archive-async=y process-max=2`{stanza}"
    )
}

// =================================================================================================
// HOOK: pgsteward plugs in here.
//
// Today this measures the standalone path: postgres runs `pgsteward wal-archive --pgdata PGDATA
// %p` / `wal-restore --pgdata PGDATA %f %p` with the settings rendered into
// PGDATA/pgsteward.archive.json by pgsteward's own config loader, and no manager (its socket does
// not exist, so every call does its own upload/download). LEAD: to benchmark the manager's own
// archiver (uploads ahead of postgres, prefetch spool), start the manager here instead and return
// the same archive_command; CPU and RSS of processes it leaves behind are still accounted (they
// are adopted and reaped as detached children), and everything else (timing, the report) is
// shared with the peer tools. A build without the subcommands reports "not available".
// =================================================================================================

/// The pgsteward binary for the benchmark: `PGSTEWARD_BENCH_BIN`, else a release build of the
/// workspace's `pgsteward` (built once per benchmark run). Copied into the scratch directory so
/// the postgres user can run it wherever the workspace lives.
pub(crate) fn pgsteward_binary(ctx: &Ctx<'_>) -> Result<std::result::Result<PathBuf, String>> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        if let Some(path) = std::env::var_os("PGSTEWARD_BENCH_BIN") {
            return Ok(PathBuf::from(path));
        }
        eprintln!("bench: building pgsteward (cargo build --release -p pgsteward --bin pgsteward)");
        procs::cargo_build_release(ctx.workspace, &["-p", "pgsteward", "--bin", "pgsteward"])
            .map(|()| ctx.workspace.join("target/release/pgsteward"))
    });
    let source = match built {
        Ok(path) => path.clone(),
        Err(reason) => return Ok(Err(reason.clone())),
    };
    if !source.is_file() {
        return Ok(Err(format!("{} does not exist", source.display())));
    }
    let bin_dir = ctx.run_dir.join("bin");
    mkdir_postgres(&bin_dir)?;
    let target = bin_dir.join("pgsteward");
    std::fs::copy(&source, &target)
        .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
    Ok(Ok(target))
}

/// Which pgsteward binary was measured, for the report.
pub(crate) fn pgsteward_origin() -> String {
    match std::env::var_os("PGSTEWARD_BENCH_BIN") {
        Some(path) => format!("binary PGSTEWARD_BENCH_BIN={}", Path::new(&path).display()),
        None => "binary: release build of this workspace".to_owned(),
    }
}

/// `Ok(())` when `pgsteward <subcommand> --help` succeeds, else why not.
pub(crate) fn pgsteward_has(binary: &Path, subcommand: &str) -> std::result::Result<(), String> {
    let output = std::process::Command::new(binary)
        .args([subcommand, "--help"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", binary.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`pgsteward {subcommand}` does not exist in this build yet"
        ))
    }
}

/// The settings `pgsteward wal-archive`/`wal-restore` read: the manager's YAML (`archive:`
/// section, credentials in files) is loaded with pgsteward's own loader and rendered into
/// `PGDATA/pgsteward.archive.json`, exactly as the manager does. Returns the socket the
/// archiver sidecar serves (in this run's directory), which `wal-archive`/`wal-restore` ask.
fn pgsteward_config(ctx: &Ctx<'_>) -> Result<PathBuf> {
    use pgsteward::archiver::settings::{ArchiveSettings, FILE};
    use pgsteward::config::layers::{load, ConfigSources};

    let dir = ctx.run_dir.join("pgsteward");
    mkdir_postgres(&dir)?;
    let key_file = dir.join("s3-access-key-id");
    let secret_file = dir.join("s3-secret-access-key");
    write_postgres_file(&key_file, &format!("{}\n", s3::ACCESS_KEY), 0o600)?;
    write_postgres_file(&secret_file, &format!("{}\n", s3::SECRET_KEY), 0o600)?;
    let yaml = format!(
        "# cargo xtask bench wal-archive
instance_name: {SERVER_NAME}
pgdata: {data}
postgres:
  socket_dir: {dir}
archive:
  destination: s3://{bucket}/{prefix}
  server_name: {SERVER_NAME}
  s3:
    endpoint_url: {endpoint}
    region: {region}
    force_path_style: true
    access_key_id_file: {key}
    secret_access_key_file: {secret}
    checksums: when_supported
    ca_file: {ca}
  wal:
    compression: gzip
    gzip_level: {GZIP_LEVEL}
    max_parallel: {PARALLEL}
    prefetch: {PARALLEL}
",
        data = ctx.data.display(),
        dir = dir.display(),
        bucket = s3::BUCKET,
        prefix = Tool::Pgsteward.prefix(),
        endpoint = ctx.s3.proxy.endpoint(),
        region = s3::REGION,
        key = key_file.display(),
        secret = secret_file.display(),
        ca = ctx.s3.proxy.ca_file().display(),
    );
    let config_file = dir.join("pgsteward.yaml");
    write_postgres_file(&config_file, &yaml, 0o600)?;
    let config = load(&ConfigSources {
        file: Some(config_file.clone()),
        env: Vec::new(),
        overrides: Vec::new(),
    })
    .with_context(|| format!("loading {}", config_file.display()))?;
    let settings = ArchiveSettings::from_config(&config)
        .context("the benchmark configuration has no archive destination")?;
    ArchiveSettings::write(&ctx.data, Some(&settings))?;
    let written = ctx.data.join(FILE);
    let user = procs::postgres_user()?;
    nix::unistd::chown(&written, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {}", written.display()))?;
    Ok(settings.socket)
}

/// `pgsteward archiver` beside postgres, logging into the run's directory; ready once its
/// socket exists.
fn archiver_sidecar(binary: &Path, ctx: &Ctx<'_>, socket: PathBuf) -> Sidecar {
    Sidecar {
        command: format!(
            "{} archiver --pgdata {} >> {}/archiver.log 2>&1 &",
            binary.display(),
            ctx.data.display(),
            ctx.run_dir.display()
        ),
        ready: socket,
    }
}

fn pgsteward_archive_setup(ctx: &Ctx<'_>) -> Result<Availability> {
    let binary = match pgsteward_binary(ctx)? {
        Ok(binary) => binary,
        Err(reason) => return Ok(Availability::NotAvailable(reason)),
    };
    if let Err(reason) = pgsteward_has(&binary, "wal-archive") {
        return Ok(Availability::NotAvailable(reason));
    }
    let socket = pgsteward_config(ctx)?;
    Ok(Availability::Ready(Setup {
        sidecar: Some(archiver_sidecar(&binary, ctx, socket)),
        command: format!(
            "{} wal-archive --pgdata {} %p",
            binary.display(),
            ctx.data.display()
        ),
        env: Vec::new(),
        described: format!(
            "`archive_command = 'pgsteward wal-archive --pgdata PGDATA %p'` with the manager's \
             archiver running beside postgres (`pgsteward archiver --pgdata PGDATA`, started when \
             the clock starts; archive_command is set once its socket is up; it uploads `.ready` segments ahead, {PARALLEL} at a time, and \
             answers each call once its segment is stored), settings rendered from the YAML `archive:` \
             section (gzip, gzip_level {GZIP_LEVEL}, max_parallel {PARALLEL}, endpoint \
             https://127.0.0.1:PORT, force_path_style, upload checksum CRC-32, the default) into \
             PGDATA/pgsteward.archive.json, \
             ca_file <proxy CA>; {}",
            pgsteward_origin()
        ),
    }))
}

fn pgsteward_restore_setup(ctx: &Ctx<'_>) -> Result<Availability> {
    let binary = match pgsteward_binary(ctx)? {
        Ok(binary) => binary,
        Err(reason) => return Ok(Availability::NotAvailable(reason)),
    };
    if let Err(reason) = pgsteward_has(&binary, "wal-restore") {
        return Ok(Availability::NotAvailable(reason));
    }
    let socket = pgsteward_config(ctx)?;
    Ok(Availability::Ready(Setup {
        sidecar: Some(archiver_sidecar(&binary, ctx, socket)),
        command: format!(
            "{} wal-restore --pgdata {} %f %p",
            binary.display(),
            ctx.data.display()
        ),
        env: Vec::new(),
        described: format!(
            "`restore_command = 'pgsteward wal-restore --pgdata PGDATA %f %p'` with `pgsteward \
             archiver --pgdata PGDATA` running (started when the clock starts, the first call made \
             once its socket is up, stopped and counted when it stops): each call is answered from \
             its prefetch spool, which fetches the next {PARALLEL} segments in parallel after every \
             request (the first request, before the spool warms, is fetched directly), same settings"
        ),
    }))
}
