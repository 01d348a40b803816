//! Command-line interface: `pgsteward run | status | config check | version`, the WAL
//! commands, `backup [verify|list|show|delete|retention]`, `restore` and `drill`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// pgsteward: PostgreSQL instance manager with high availability and continuous backup.
#[derive(Debug, Parser)]
#[command(name = "pgsteward", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the instance manager (the container entrypoint).
    Run(RunArgs),
    /// Show the status of the local instance through its API.
    Status(StatusArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the version.
    Version,
    /// Archive one WAL file (postgres's archive_command: `wal-archive --pgdata DIR %p`).
    WalArchive {
        /// The data directory (holds the archive settings the manager wrote).
        #[arg(long)]
        pgdata: PathBuf,
        /// The file (`%p`, relative to the data directory).
        path: PathBuf,
    },
    /// Restore one WAL file (postgres's restore_command: `wal-restore --pgdata DIR %f %p`).
    WalRestore {
        #[arg(long)]
        pgdata: PathBuf,
        /// An error (anything but a file missing from the archive) stops postgres's recovery
        /// with a failure (exit 199, which postgres treats as fatal) instead of exit 1, which
        /// postgres takes for the end of the archive and, in an archive recovery, ends the
        /// recovery there. For one-off recoveries (`pgsteward restore`, the recovery bootstrap,
        /// drills); not for a standby, which should fall back to streaming and retry.
        #[arg(long)]
        abort_on_error: bool,
        /// WAL file name (`%f`).
        name: String,
        /// Where postgres wants it (`%p`).
        dest: PathBuf,
    },
    /// Run only the WAL archiver beside a postgres supervised by something else (exits with
    /// that postmaster).
    Archiver {
        /// The data directory (holds the archive settings, pgsteward.archive.json).
        #[arg(long)]
        pgdata: PathBuf,
        /// Serve the archiver's Prometheus metrics (`GET /metrics`) on this address.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Log filter, as `log.level` in the manager's configuration (`debug`,
        /// `info,aws_smithy_runtime=debug`, ...).
        #[arg(long, value_name = "FILTER", default_value = "info")]
        log_level: String,
    },
    /// Take a base backup through the local manager (`POST /pg/backup`), or work on the
    /// backup catalog: verify, list, show, delete, retention.
    Backup(BackupArgs),
    /// Inspect the WAL archive.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Restore a base backup into an empty directory and replay archived WAL to a target.
    Restore(Box<crate::restore_cmd::RestoreArgs>),
    /// Restore drill: restore the latest backup into a scratch directory, replay the archive,
    /// check the result, clean up; prints a JSON report (exit 1 when the drill failed).
    Drill(crate::drill::cmd::DrillArgs),
}

/// `pgsteward backup ...` subcommands.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Download a backup and check every file against its manifest.
    Verify {
        /// Backup id (`YYYYmmddTHHMMSS`).
        backup_id: String,
        #[command(flatten)]
        target: WalTarget,
    },
    /// List the server's backups, oldest first, with their retention status.
    List {
        #[command(flatten)]
        target: CatalogTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one backup: its backup.info, keep annotation and retention status.
    Show {
        #[command(flatten)]
        target: CatalogTarget,
        /// Backup id (YYYYmmddTHHMMSS).
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete one backup and the WAL only it needed (barman-cloud-backup-delete --backup-id).
    Delete {
        #[command(flatten)]
        target: CatalogTarget,
        id: String,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Refuse when fewer backups would remain (default: archive.minimum_redundancy).
        #[arg(long)]
        minimum_redundancy: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Apply the retention policy now (barman-cloud-backup-delete --retention-policy).
    Retention {
        #[command(flatten)]
        target: CatalogTarget,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// The policy (default: archive.retention_policy), e.g. `30d` or `REDUNDANCY 3`.
        #[arg(long)]
        policy: Option<String>,
        /// Backups always kept (default: archive.minimum_redundancy).
        #[arg(long)]
        minimum_redundancy: Option<u32>,
        #[arg(long)]
        json: bool,
    },
}

/// The catalog a configuration names (archive.destination and server name).
#[derive(Debug, Args)]
pub struct CatalogTarget {
    /// The manager's configuration file.
    #[arg(long, env = "PGSTEWARD_CONFIG")]
    pub config: PathBuf,
}

/// `pgsteward backup [--wait]` or `pgsteward backup <subcommand>`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    #[command(flatten)]
    pub take: BackupTakeArgs,
}

/// Options of taking a backup through the manager's API.
#[derive(Debug, Args)]
pub struct BackupTakeArgs {
    /// Base URL of the local API (`https://` when the manager serves `http.tls`).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    #[command(flatten)]
    pub tls: ApiTlsArgs,
    /// File holding the API bearer token (the manager's http.token_file); not needed with a
    /// client certificate the manager accepts (http.tls.client_ca_file).
    #[arg(long, env = "PGSTEWARD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Follow the backup until it ends, printing progress; exit 1 when it failed.
    #[arg(long)]
    pub wait: bool,
    /// Start with an immediate checkpoint instead of the configured mode.
    #[arg(long)]
    pub immediate_checkpoint: bool,
}

/// `pgsteward wal ...`.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// List archived WAL files.
    List(WalTarget),
    /// Report gaps in the archived segments of each timeline, and whether each finished
    /// backup restores to the end of the archive (exit 1 when something is missing).
    Check {
        #[command(flatten)]
        target: WalTarget,
        /// WAL segment size in MiB (default: read off the data directory's pg_wal when it is
        /// on this machine, else the newest finished backup's, else 16).
        #[arg(long, value_parser = parse_segment_size_mb)]
        segment_size_mb: Option<u64>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// A WAL segment size in MiB: a power of two from 1 to 1024, as `initdb --wal-segsize` takes.
fn parse_segment_size_mb(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(mb) if mb <= 1024 && pgsteward_archive::walheader::is_segment_size(mb << 20) => Ok(mb),
        _ => Err(format!(
            "{text:?} is not a WAL segment size: a power of two from 1 to 1024 (MiB)"
        )),
    }
}

/// Which archive: the one a data directory's manager uses, or the one a configuration names.
#[derive(Debug, Args)]
pub struct WalTarget {
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Sources of configuration shared by `run` and `config check`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Override a configuration path: `--set postgres.parameters.work_mem=8MB`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Data directory (pgdata).
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
    /// Instance name (instance_name).
    #[arg(long)]
    pub instance_name: Option<String>,
    /// Directory of the postgres binaries (bin_dir).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// API listen address (http.listen).
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Metrics listen address (metrics.listen).
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

impl ConfigArgs {
    /// The flags as `(path, value)` overrides, in precedence order.
    pub fn overrides(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut push = |path: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push((path.to_owned(), value));
            }
        };
        push(
            "pgdata",
            self.pgdata.as_ref().map(|p| p.display().to_string()),
        );
        push("instance_name", self.instance_name.clone());
        push(
            "bin_dir",
            self.bin_dir.as_ref().map(|p| p.display().to_string()),
        );
        push("http.listen", self.http_listen.clone());
        push("metrics.listen", self.metrics_listen.clone());
        for item in &self.set {
            let (path, value) = item
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set expects PATH=VALUE, got {item:?}"))?;
            out.push((path.trim().to_owned(), value.to_owned()));
        }
        Ok(out)
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// YAML configuration file.
    #[arg(long, env = "PGSTEWARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// When started as root: the user to become before anything else (required as root).
    #[arg(long, env = "PGSTEWARD_USER")]
    pub user: Option<String>,
    #[command(flatten)]
    pub sources: ConfigArgs,
}

/// TLS of the requests to a manager's API (`https://` URLs).
#[derive(Debug, Clone, Args)]
pub struct ApiTlsArgs {
    /// CA (PEM) of the API's certificate, for an https:// URL (default: the system's roots).
    #[arg(long, env = "PGSTEWARD_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) to present, for a manager with http.tls.client_ca_file.
    #[arg(long, env = "PGSTEWARD_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "PGSTEWARD_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl ApiTlsArgs {
    /// The client certificate and key, when both are given.
    pub fn identity(&self) -> Option<pgsteward_tls::client::ClientIdentity> {
        pgsteward_tls::client::ClientIdentity::from_files(
            self.client_cert.as_deref(),
            self.client_key.as_deref(),
        )
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Base URL of the instance's API (`https://` when the manager serves `http.tls`).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    #[command(flatten)]
    pub tls: ApiTlsArgs,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (with the environment and flags) without running.
    Check {
        /// The YAML file.
        file: PathBuf,
        #[command(flatten)]
        sources: ConfigArgs,
    },
}

/// Run the command; returns the process exit code.
pub fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(args) => crate::run::run(args),
        Command::Status(args) => crate::status_cmd::run(&args),
        Command::Config(ConfigCommand::Check { file, sources }) => {
            crate::run::config_check(&file, &sources)
        }
        Command::WalArchive { pgdata, path } => crate::wal_cmd::archive(&pgdata, &path),
        Command::WalRestore {
            pgdata,
            abort_on_error,
            name,
            dest,
        } => crate::wal_cmd::restore(&pgdata, &name, &dest, abort_on_error),
        Command::Backup(BackupArgs {
            command: None,
            take,
        }) => crate::backup_cmd::take::run(&take),
        Command::Backup(BackupArgs {
            command: Some(command),
            ..
        }) => crate::backup_cmd::run(command),
        Command::Wal(WalCommand::List(target)) => {
            crate::wal_cmd::list(target.pgdata.as_deref(), target.config.as_deref())
        }
        Command::Wal(WalCommand::Check {
            target,
            segment_size_mb,
            json,
        }) => crate::wal_check_cmd::check(
            target.pgdata.as_deref(),
            target.config.as_deref(),
            segment_size_mb,
            json,
        ),
        Command::Archiver {
            pgdata,
            metrics_listen,
            log_level,
        } => crate::archiver::sidecar::run(&pgdata, metrics_listen, &log_level),
        Command::Restore(args) => crate::restore_cmd::run(*args),
        Command::Drill(args) => crate::drill::cmd::run(args),
        Command::Version => {
            println!("pgsteward {}", env!("CARGO_PKG_VERSION"));
            0
        }
    }
}

/// The async runtime a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandRuntime {
    /// One thread: a client that waits on a socket or an HTTP answer.
    CurrentThread,
    /// Two workers: commands that run transfers or supervise a process.
    TwoWorkers,
}

/// Run a command's future on a fresh runtime; its value is the exit code. A runtime that
/// cannot start is exit 1, reported on stderr as `pgsteward <command>: ...`.
pub fn block_on<F: std::future::Future<Output = i32>>(
    command: &str,
    runtime: CommandRuntime,
    future: F,
) -> i32 {
    let built = match runtime {
        CommandRuntime::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        CommandRuntime::TwoWorkers => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    };
    match built {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => {
            eprintln!("pgsteward {command}: cannot start the async runtime: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes_are_powers_of_two_up_to_a_gibibyte() {
        assert_eq!(parse_segment_size_mb("1"), Ok(1));
        assert_eq!(parse_segment_size_mb("64"), Ok(64));
        assert_eq!(parse_segment_size_mb("1024"), Ok(1024));
        for bad in ["0", "3", "2048", "16MB", "-16", ""] {
            let error = parse_segment_size_mb(bad).err().unwrap_or_default();
            assert!(error.contains("power of two"), "{bad}: {error}");
        }
    }
}
