//! Bootstrap of an empty data directory: initdb (UTF8, data checksums, configurable locale,
//! superuser password from a file), then, on a postgres started privately (no TCP, a private
//! socket directory), the application owner and database and the post-init SQL files.
//! A marker file records an unfinished bootstrap so a half-initialised directory is refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::config::{Config, InitdbConfig};
use crate::pgbin::PgBinaries;
use crate::pgconn::{self, LocalTarget};
use crate::supervisor::postmaster::{Ended, Postmaster};
use crate::supervisor::reaper::Reaper;

/// Present while a bootstrap is unfinished.
pub const MARKER: &str = "pgsteward.bootstrap-incomplete";

/// Read the first line of a secret file (trailing newline removed); never logs the content.
pub fn read_secret(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} from {}", path.display()))?;
    let first = text.lines().next().unwrap_or("").to_owned();
    if first.is_empty() {
        bail!("{what} file {} is empty", path.display());
    }
    Ok(first)
}

/// Check that every file the bootstrap needs is readable, before anything is created.
pub fn preflight(init: &InitdbConfig) -> Result<()> {
    if let Some(path) = &init.superuser_password_file {
        read_secret(path, "superuser password")?;
    }
    if let Some(path) = &init.owner_password_file {
        read_secret(path, "owner password")?;
    }
    for file in &init.post_init_sql_files {
        std::fs::metadata(file)
            .with_context(|| format!("post-init SQL file {} is not readable", file.display()))?;
    }
    Ok(())
}

/// Run initdb and the post-init steps on the empty (or missing) `pgdata`.
pub async fn run(
    reaper: &Reaper,
    bins: &PgBinaries,
    config: &Config,
    pgdata: &Path,
    ctx: &crate::config::render::RenderContext,
) -> Result<()> {
    let init = &config.bootstrap.initdb;
    preflight(init)?;
    let started = Instant::now();
    tracing::info!(pgdata = %pgdata.display(), locale = %init.locale, major = bins.major, "bootstrapping a new data directory with initdb");
    let mut command = Command::new(bins.bin("initdb"));
    command
        .arg("-D")
        .arg(pgdata)
        .arg("--encoding=UTF8")
        .arg(format!("--locale={}", init.locale))
        .arg(format!("--username={}", config.postgres.superuser))
        .arg("--auth-local=peer")
        .arg("--auth-host=scram-sha-256");
    if init.data_checksums {
        command.arg("--data-checksums");
    } else if bins.major >= 18 {
        command.arg("--no-data-checksums");
    }
    if let Some(mb) = init.wal_segment_size_mb {
        command.arg(format!("--wal-segsize={mb}"));
    }
    if let Some(path) = &init.superuser_password_file {
        command.arg(format!("--pwfile={}", path.display()));
    }
    let (exit, stdout, stderr) = reaper
        .output(&mut command)
        .await
        .context("running initdb")?;
    if !exit.success() {
        bail!(
            "initdb failed ({exit}): {}",
            last_lines(&format!("{stdout}\n{stderr}"), 10)
        );
    }
    std::fs::write(pgdata.join(MARKER), "bootstrap started\n")
        .context("writing the bootstrap marker")?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "initdb done"
    );
    post_init(reaper, bins, config, pgdata, ctx).await?;
    std::fs::remove_file(pgdata.join(MARKER)).context("removing the bootstrap marker")?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "bootstrap complete"
    );
    Ok(())
}

async fn post_init(
    reaper: &Reaper,
    bins: &PgBinaries,
    config: &Config,
    pgdata: &Path,
    ctx: &crate::config::render::RenderContext,
) -> Result<()> {
    let init = &config.bootstrap.initdb;
    if init.database.is_none() && init.post_init_sql_files.is_empty() {
        return Ok(());
    }
    // The manager's hba and ident files must be in place for its peer connection.
    let rendered = crate::config::render::render(config, ctx);
    crate::config::render::write(pgdata, &rendered)?;
    let socket_dir = private_socket_dir(pgdata)?;
    let settings = [
        ("listen_addresses", String::new()),
        ("unix_socket_directories", socket_dir.display().to_string()),
        ("logging_collector", "off".to_owned()),
        ("log_statement", "none".to_owned()),
        ("log_destination", "stderr".to_owned()),
        // Archiving paused: the WAL commands' settings are written when the manager's archiver
        // starts, after the bootstrap. Postgres keeps the segments `.ready` (an empty
        // archive_command with archive_mode on), and the running instance archives them.
        ("archive_command", String::new()),
    ];
    let mut postmaster = Postmaster::spawn(reaper, bins, pgdata, &settings)?;
    let target = LocalTarget::new(
        &socket_dir,
        config.postgres.port,
        &config.postgres.superuser,
    );
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let client = loop {
            match pgconn::connect(&target, "postgres", Duration::from_secs(2)).await {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "waiting for the bootstrap postgres");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context("the bootstrap postgres did not accept connections within 120 s"),
            }
        };
        if let (Some(database), Some(owner)) = (&init.database, &init.owner) {
            let mut create_role = format!("CREATE ROLE \"{owner}\" LOGIN");
            if let Some(path) = &init.owner_password_file {
                let password = read_secret(path, "owner password")?;
                let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
                create_role.push_str(&format!(" PASSWORD '{}'", verifier.replace('\'', "''")));
            }
            client.batch_execute(&create_role).await.with_context(|| format!("creating role {owner}"))?;
            client
                .batch_execute(&format!("CREATE DATABASE \"{database}\" OWNER \"{owner}\""))
                .await
                .with_context(|| format!("creating database {database}"))?;
            tracing::info!(database, owner, "application database created");
        }
        let dbname = init.database.as_deref().unwrap_or("postgres");
        if !init.post_init_sql_files.is_empty() {
            let client = pgconn::connect(&target, dbname, Duration::from_secs(5)).await?;
            for file in &init.post_init_sql_files {
                let sql = std::fs::read_to_string(file)
                    .with_context(|| format!("reading post-init SQL file {}", file.display()))?;
                client
                    .batch_execute(&sql)
                    .await
                    .with_context(|| format!("running post-init SQL file {}", file.display()))?;
                tracing::info!(file = %file.display(), database = dbname, "post-init SQL file applied");
            }
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    postmaster.signal(Signal::SIGINT);
    match tokio::time::timeout(Duration::from_secs(120), postmaster.wait()).await {
        Ok(Ended::Exited(kind)) if kind.success() => {}
        Ok(other) => tracing::warn!(status = %other, "bootstrap postgres stopped uncleanly"),
        Err(_) => {
            postmaster.kill_group();
            bail!("the bootstrap postgres did not stop within 120 s");
        }
    }
    let _ = std::fs::remove_dir(&socket_dir);
    result
}

fn private_socket_dir(pgdata: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("pgsteward-bootstrap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| {
            format!(
                "creating private socket directory {} for {}",
                dir.display(),
                pgdata.display()
            )
        })?;
    Ok(dir)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
