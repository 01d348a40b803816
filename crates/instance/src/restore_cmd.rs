//! `pgsteward restore`: restore a base backup into an empty directory and replay archived WAL
//! to a target on a private postgres, leaving a data directory `pgsteward run` starts as it
//! is (promoted, or a standby with `--target-action standby`). The instance's configuration
//! file gives the source (`archive` or `bootstrap.recovery.source`), the binaries and the
//! superuser; flags choose the backup and the target.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use pgsteward_backup::restore::choose::BackupChoice;
use pgsteward_backup::restore::target::{Lsn, RecoveryTarget, Target};
use pgsteward_backup::restore::RestoreOptions;

use crate::config::{self, ConfigSources};
use crate::pgbin::PgBinaries;
use crate::recovery::replay_server::ReplayServer;
use crate::recovery::{self, PrivatePostgres};
use crate::supervisor::reaper::Reaper;

/// `pgsteward restore` flags.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The instance's YAML configuration (source archive, S3 settings, binaries, superuser).
    #[arg(long, env = "PGSTEWARD_CONFIG")]
    pub config: PathBuf,
    /// `--pgdata` (where to restore: absent or empty), `--set`, ... as for `run`.
    #[command(flatten)]
    pub sources: crate::cli::ConfigArgs,
    /// When started as root: the user to become first (postgres refuses root).
    #[arg(long, env = "PGSTEWARD_USER")]
    pub user: Option<String>,
    /// Source destination (default: bootstrap.recovery.source.destination, then
    /// archive.destination).
    #[arg(long)]
    pub source: Option<String>,
    /// Source server name (default: bootstrap.recovery.source.server_name, then the archive's).
    #[arg(long)]
    pub server_name: Option<String>,
    /// `latest` (the newest DONE backup that can reach the target) or a backup id.
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Stop at this time (`YYYY-mm-dd HH:MM:SS[.ffffff][+HH:MM]`, UTC without offset).
    #[arg(long, group = "target")]
    pub target_time: Option<String>,
    /// Stop at this LSN (`X/Y`).
    #[arg(long, group = "target")]
    pub target_lsn: Option<String>,
    /// Stop at this transaction id.
    #[arg(long, group = "target")]
    pub target_xid: Option<u64>,
    /// Stop at this restore point (`pg_create_restore_point`).
    #[arg(long, group = "target")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent.
    #[arg(long, group = "target")]
    pub target_immediate: bool,
    /// Stop just before the target instead of just after it.
    #[arg(long)]
    pub exclusive: bool,
    /// `latest`, `current` or a timeline number.
    #[arg(long, default_value = "latest")]
    pub target_timeline: String,
    /// `promote` (default) or `standby`.
    #[arg(long, default_value = "promote")]
    pub target_action: String,
    /// Restore tablespace NAME at PATH instead of its original location (repeatable).
    #[arg(long = "tablespace", value_name = "NAME:PATH")]
    pub tablespaces: Vec<String>,
    /// Backup files downloaded and extracted at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Longest WAL replay allowed.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Only restore the backup's files (and backup_label), as barman-cloud-restore does: no
    /// WAL replay, no recovery configuration; the directory needs a recovery you set up.
    #[arg(long, conflicts_with = "target")]
    pub files_only: bool,
}

impl RestoreArgs {
    /// The recovery target the flags name.
    pub fn target(&self) -> Result<RecoveryTarget, String> {
        let target = if let Some(time) = &self.target_time {
            Target::time(time)?
        } else if let Some(lsn) = &self.target_lsn {
            Target::Lsn(lsn.parse::<Lsn>()?)
        } else if let Some(xid) = self.target_xid {
            Target::Xid(xid)
        } else if let Some(name) = &self.target_name {
            Target::Name(name.clone())
        } else if self.target_immediate {
            Target::Immediate
        } else {
            Target::EndOfArchive
        };
        Ok(RecoveryTarget {
            target,
            inclusive: !self.exclusive,
            timeline: self.target_timeline.parse()?,
            action: self.target_action.parse()?,
        })
    }
}

/// Run `pgsteward restore`; returns the exit code.
pub fn run(args: RestoreArgs) -> i32 {
    let prepared = (|| -> Result<_> {
        if nix::unistd::geteuid().is_root() {
            let Some(name) = &args.user else {
                bail!("running as root requires --user NAME (the restored files belong to that user and postgres refuses root)");
            };
            crate::privileges::drop_to(&crate::privileges::lookup(name)?)?;
        }
        let sources =
            ConfigSources::from_process(Some(args.config.clone()), args.sources.overrides()?);
        let mut config = config::load(&sources)?;
        if let Some(source) = &args.source {
            config.bootstrap.recovery.source.destination = Some(source.clone());
        }
        if let Some(server) = &args.server_name {
            config.bootstrap.recovery.source.server_name = Some(server.clone());
        }
        crate::logs::init(&config.log.level)?;
        Ok(config)
    })();
    let config = match prepared {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pgsteward restore: error: {e:#}");
            return 1;
        }
    };
    crate::cli::block_on("restore", crate::cli::CommandRuntime::TwoWorkers, async {
        match restore(&args, &config).await {
            Ok(summary) => {
                println!("{summary}");
                0
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "restore failed");
                eprintln!("pgsteward restore: error: {e:#}");
                1
            }
        }
    })
}

async fn restore(args: &RestoreArgs, config: &config::Config) -> Result<String> {
    let target = args.target().map_err(|e| anyhow::anyhow!("{e}"))?;
    let choice: BackupChoice = args.backup.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let pgdata = config
        .pgdata
        .clone()
        .context("give --pgdata DIR or set pgdata in the configuration")?;
    let bins = PgBinaries::locate(config.bin_dir.as_deref())?;
    let reaper = Reaper::start()?;
    let executable = std::env::current_exe().context("locating the pgsteward executable")?;
    let source = recovery::bootstrap::source_settings(config)?;
    let mut options = RestoreOptions {
        parallel: args.parallel.max(1),
        tablespace_locations: config.bootstrap.recovery.tablespaces.clone(),
        ..RestoreOptions::default()
    };
    for rule in &args.tablespaces {
        let (name, path) = rule
            .split_once(':')
            .filter(|(n, p)| !n.is_empty() && p.starts_with('/'))
            .with_context(|| format!("--tablespace {rule:?}: expected NAME:/absolute/path"))?;
        options
            .tablespace_locations
            .insert(name.to_owned(), PathBuf::from(path));
    }
    let restored = recovery::restore_files(
        &source,
        &choice,
        &target,
        &pgdata,
        &options,
        !args.files_only,
    )
    .await?;
    if args.files_only {
        return Ok(format!(
            "restored backup {} into {} ({} files, {} bytes in {:.1} s); files only: no WAL replayed",
            restored.backup.backup_id(),
            pgdata.display(),
            restored.report.files,
            restored.report.bytes_written,
            restored.report.elapsed.as_secs_f64(),
        ));
    }
    let settings = recovery::replay_settings(&executable, &pgdata, &target, true);
    let replay_server = ReplayServer::start(&pgdata, &restored.backup).await;
    let mut pg = PrivatePostgres::spawn(
        &reaper,
        &bins,
        &pgdata,
        "restore",
        config.postgres.port,
        &config.postgres.superuser,
        &settings,
    )?;
    let recovered = recovery::wait_recovered(&mut pg, &target, args.timeout).await;
    let stopped = pg.stop(Duration::from_secs(120)).await;
    let served = ReplayServer::finish(replay_server);
    let recovered = recovered.with_context(|| {
        format!(
            "replaying archived WAL into {} (the directory is left as it is: empty it before restoring again)",
            pgdata.display()
        )
    })?;
    stopped.context("stopping the recovery postgres")?;
    recovery::finish(&pgdata)?;
    Ok(format!(
        "restored backup {} into {} ({} files, {} bytes in {:.1} s); WAL replayed in {:.1} s ({served}) to {} on timeline {}; {}",
        restored.backup.backup_id(),
        pgdata.display(),
        restored.report.files,
        restored.report.bytes_written,
        restored.report.elapsed.as_secs_f64(),
        recovered.elapsed.as_secs_f64(),
        recovered.lsn,
        recovered.timeline.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
        if recovered.promoted { "promoted" } else { "left as a standby" }
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(flags: &[&str]) -> Result<RestoreArgs, clap::Error> {
        let mut argv = vec!["pgsteward", "restore", "--config", "/c.yaml"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::Restore(args) => Ok(*args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn flags_become_targets() {
        let target = args(&["--target-lsn", "0/5000028", "--exclusive"])
            .unwrap_or_else(|e| panic!("{e}"))
            .target()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(target.target, Target::Lsn(Lsn(0x500_0028)));
        assert!(!target.inclusive);
        let target = args(&["--target-action", "standby", "--target-timeline", "3"])
            .unwrap_or_else(|e| panic!("{e}"))
            .target()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(target.target, Target::EndOfArchive);
        assert_eq!(target.signal_file(), "standby.signal");
        // Two targets at once are refused by the parser.
        assert!(args(&["--target-xid", "5", "--target-immediate"]).is_err());
        assert!(args(&["--target-time", "yesterday"])
            .unwrap_or_else(|e| panic!("{e}"))
            .target()
            .is_err());
    }
}
