//! How the backup benchmark runs each tool: the commands of pgBackRest (`backup --type=full`,
//! `restore`, repo1-type=s3 over the TLS proxy, gz level 6, process-max=2), barman-cloud
//! (`barman-cloud-backup --gzip`, `barman-cloud-restore`, `barman-cloud-backup-list` as the
//! check), and the hook for `pgsteward restore` (not merged yet: "not available" until then).
//! pgsteward's backup itself goes through its manager and is driven from `super`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::super::cluster::{mkdir_postgres, write_postgres_file, Cluster};
use super::super::procs;
use super::super::s3::{self, S3};
use super::super::tools::{aws_env, barman_bin, pgsteward_has, Ctx, Tool};
use super::super::{GZIP_LEVEL, SERVER_NAME};

/// pgBackRest's process-max (the setting).
pub const PGBACKREST_PROCESSES: u32 = 2;
/// barman-cloud-backup's upload jobs (its default, said explicitly).
pub const BARMAN_JOBS: u32 = 2;

/// `s3://bench/<prefix>` of a tool.
pub fn s3_url(tool: Tool) -> String {
    format!("s3://{}/{}", s3::BUCKET, tool.prefix())
}

/// Where a tool's base backups live on s3s-fs's disk (for the stored size).
pub fn backups_dir(s3: &S3, tool: Tool) -> PathBuf {
    match tool {
        Tool::Pgsteward | Tool::Barman => {
            s3.prefix_dir(&format!("{}/{SERVER_NAME}/base", tool.prefix()))
        }
        Tool::PgBackRest => s3.prefix_dir(&format!("{}/backup", tool.prefix())),
    }
}

/// barman-cloud's common flags: provider, endpoint (the proxy) and path-style addressing.
fn barman_command(ctx: &Ctx<'_>, tool: &str) -> Result<Command> {
    let mut command = procs::as_postgres(barman_bin(tool)?, &aws_env(ctx), &ctx.home)?;
    command
        .args(["--cloud-provider", "aws-s3", "--endpoint-url"])
        .arg(ctx.s3.proxy.endpoint())
        .args(["--addressing-style", "path"]);
    Ok(command)
}

/// `barman-cloud-backup --gzip` of the cluster into `s3://bench/barman` (as postgres, over
/// the Unix socket).
pub fn barman_backup(ctx: &Ctx<'_>, cluster: &Cluster) -> Result<Command> {
    let mut command = barman_command(ctx, "barman-cloud-backup")?;
    command
        .args(["--gzip", "--immediate-checkpoint", "-J"])
        .arg(BARMAN_JOBS.to_string())
        .arg("-h")
        .arg(&cluster.socket_dir)
        .args(["-p", &cluster.port.to_string(), "-U", "postgres"])
        .arg(s3_url(Tool::Barman))
        .arg(SERVER_NAME);
    Ok(command)
}

pub fn barman_described() -> String {
    format!(
        "`barman-cloud-backup --cloud-provider aws-s3 --endpoint-url https://127.0.0.1:PORT \
         --addressing-style path --gzip --immediate-checkpoint -J {BARMAN_JOBS} -h SOCKET -p PORT \
         -U postgres s3://bench/barman {SERVER_NAME}` (gzip level fixed by barman-cloud: \
         Python's tarfile `w|gz` writes level 9; no option changes it); restore: \
         `barman-cloud-restore ... s3://bench/barman {SERVER_NAME} ID DIR`; checked with \
         `barman-cloud-backup-list`"
    )
}

/// The backup ids `barman-cloud-backup-list` shows as done (DONE, or kept) at `url`.
pub fn barman_done_backups(ctx: &Ctx<'_>, url: &str) -> Result<Vec<String>> {
    let mut command = barman_command(ctx, "barman-cloud-backup-list")?;
    command.arg(url).arg(SERVER_NAME);
    let listed = procs::run_ok(&mut command, Duration::from_secs(120))
        .context("barman-cloud-backup-list")?;
    Ok(done_ids(&listed))
}

/// Rows of barman-cloud-backup-list's console output whose status column is empty or KEEP
/// (a DONE backup); the status column starts at character 75.
fn done_ids(listed: &str) -> Vec<String> {
    listed
        .lines()
        .filter(|line| {
            let id = line.split_whitespace().next().unwrap_or_default();
            id.len() == 15 && id.as_bytes()[8] == b'T'
        })
        .filter(|line| {
            let status = line.get(75..).unwrap_or_default().trim();
            status.is_empty() || status.starts_with("KEEP")
        })
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

pub fn barman_restore(ctx: &Ctx<'_>, backup_id: &str, target: &Path) -> Result<Command> {
    let mut command = barman_command(ctx, "barman-cloud-restore")?;
    command
        .arg(s3_url(Tool::Barman))
        .arg(SERVER_NAME)
        .arg(backup_id)
        .arg(target);
    Ok(command)
}

/// pgBackRest's configuration for backup and restore (written into the run directory).
pub fn pgbackrest_config(ctx: &Ctx<'_>, cluster: &Cluster) -> Result<PathBuf> {
    let dir = ctx.run_dir.join("pgbackrest");
    for sub in ["", "lock", "log"] {
        mkdir_postgres(&dir.join(sub))?;
    }
    let settings: Vec<(&str, String)> = vec![
        ("repo1-type", "s3".into()),
        ("repo1-path", format!("/{}", Tool::PgBackRest.prefix())),
        ("repo1-s3-bucket", s3::BUCKET.into()),
        // A DNS name: pgBackRest does not match IP addresses of the certificate.
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
        ("repo1-retention-full", "1".into()),
        ("compress-type", "gz".into()),
        ("compress-level", GZIP_LEVEL.to_string()),
        ("process-max", PGBACKREST_PROCESSES.to_string()),
        ("start-fast", "y".into()),
        // WAL goes to pgsteward's archive (the manager archives); pgBackRest's own archive
        // check would wait for WAL in its repository.
        ("archive-check", "n".into()),
        ("lock-path", dir.join("lock").display().to_string()),
        ("log-path", dir.join("log").display().to_string()),
        ("log-level-console", "warn".into()),
        ("log-level-file", "info".into()),
    ];
    let mut text = String::from("# cargo xtask bench backup\n[global]\n");
    for (key, value) in settings {
        text.push_str(&format!("{key}={value}\n"));
    }
    text.push_str(&format!(
        "\n[{SERVER_NAME}]\npg1-path={}\npg1-port={}\npg1-socket-path={}\npg1-user=postgres\n",
        cluster.data.display(),
        cluster.port,
        cluster.socket_dir.display()
    ));
    let path = dir.join("pgbackrest.conf");
    write_postgres_file(&path, &text, 0o600)?;
    Ok(path)
}

pub fn pgbackrest(ctx: &Ctx<'_>, config: &Path, args: &[&str]) -> Result<Command> {
    let mut command = procs::as_postgres("pgbackrest", &[], &ctx.home)?;
    command
        .arg(format!("--config={}", config.display()))
        .arg(format!("--stanza={SERVER_NAME}"))
        .args(args);
    Ok(command)
}

pub fn pgbackrest_described() -> String {
    format!(
        "`pgbackrest --stanza={SERVER_NAME} --type=full backup` with `repo1-type=s3 \
         repo1-s3-endpoint=localhost repo1-storage-port=PORT repo1-s3-uri-style=path \
         repo1-storage-ca-file=<proxy CA> compress-type=gz compress-level={GZIP_LEVEL} \
         process-max={PGBACKREST_PROCESSES} start-fast=y archive-check=n` (stanza created online \
         before the clock starts); restore: `pgbackrest --stanza={SERVER_NAME} \
         --pg1-path=DIR restore` (latest backup, same settings); checked with `pgbackrest info`"
    )
}

/// `pgbackrest info`: fails unless it shows a full backup and status ok.
pub fn pgbackrest_check(ctx: &Ctx<'_>, config: &Path) -> Result<()> {
    let mut info = pgbackrest(ctx, config, &["info"])?;
    let shown = procs::run_ok(&mut info, Duration::from_secs(120)).context("pgbackrest info")?;
    if !shown.contains("status: ok") || !shown.contains("full backup:") {
        bail!("pgbackrest info shows no good full backup: {shown}");
    }
    Ok(())
}

// =================================================================================================
// HOOK: `pgsteward restore` plugs in here (it is built in another branch, not merged yet).
//
// LEAD: once it lands, make this return the command that restores backup `backup_id` of
// `s3://bench/pgsteward` (server `bench`) into the empty directory `target` (owned by postgres,
// mode 0700), as a user would run it, with the manager's configuration file `config` (archive
// settings: endpoint, CA, credentials files); it runs as root like the manager (the command
// itself must chown to postgres) or as postgres. Everything else (timing, CPU/RSS through wait4,
// the checks of the restored directory, the report) is shared with the peer tools. A build
// without the subcommand reports "not available".
// =================================================================================================

/// The `pgsteward restore` command, or why there is none.
pub fn pgsteward_restore(
    binary: &Path,
    config: &Path,
    config_args: &[String],
    backup_id: &str,
    target: &Path,
) -> std::result::Result<Command, String> {
    pgsteward_has(binary, "restore")?;
    // Files only, as the peers restore (barman-cloud-restore, pgbackrest restore): no replay.
    let mut command = Command::new(binary);
    command
        .arg("restore")
        .arg("--config")
        .arg(config)
        .args(config_args)
        .args(["--user", "postgres", "--files-only", "--backup", backup_id])
        .arg("--pgdata")
        .arg(target)
        .stdin(std::process::Stdio::null());
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_ids_skips_headers_and_unfinished_backups() {
        let columns = |id: &str, end: &str, wal: &str, status: &str| {
            format!("{id:<20}{end:<25}{wal:<30}{status:<17}{:<20}", "")
        };
        let listed = [
            columns("Backup ID", "End Time", "Begin Wal", "Archival Status"),
            columns(
                "20261122T080000",
                "2026-11-22 08:00:05",
                "000000010000000000000005",
                "",
            ),
            columns("20261122T080100", "", "", "FAILED"),
            columns(
                "20261122T080200",
                "2026-11-22 08:02:05",
                "000000010000000000000007",
                "KEEP:FULL",
            ),
        ]
        .join("\n");
        assert_eq!(
            done_ids(&listed),
            vec!["20261122T080000".to_owned(), "20261122T080200".to_owned()]
        );
    }
}
