//! A postgres started privately on a restored data directory, for WAL replay (restore
//! bootstrap, `pgsteward restore`) and restore drills: no TCP (`listen_addresses = ''`), its
//! socket in a fresh 0700 directory only this user can enter (so `trust` in the private
//! pg_hba.conf admits only this user), archiving off unless the caller turns it on without a
//! command (a restored copy must never write into an archive on its own), and its output in a
//! log file that is searched when it exits. Settings given later override earlier ones.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio_postgres::Client;

use crate::pgbin::PgBinaries;
use crate::pgconn::{self, LocalTarget};
use crate::supervisor::reaper::{ExitKind, Reaper};

/// A private postgres and its private directory (socket, hba, log).
#[derive(Debug)]
pub struct PrivatePostgres {
    pid: i32,
    exit: oneshot::Receiver<ExitKind>,
    exited: Option<ExitKind>,
    dir: PathBuf,
    target: LocalTarget,
}

/// A fresh private directory (mode 0700) below the system temporary directory.
fn private_dir(label: &str) -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "pgsteward-{label}-{}-{attempt}",
            std::process::id()
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating the private directory {}", dir.display()))
            }
        }
    }
    anyhow::bail!("no free private directory name below {}", base.display())
}

impl PrivatePostgres {
    /// Start `postgres -D pgdata` privately with `settings` added (recovery parameters,
    /// restore_command). `port` only names the socket file.
    pub fn spawn(
        reaper: &Reaper,
        bins: &PgBinaries,
        pgdata: &Path,
        label: &str,
        port: u16,
        superuser: &str,
        settings: &[(&str, String)],
    ) -> Result<Self> {
        let dir = private_dir(label)?;
        let hba = dir.join("pg_hba.conf");
        fs::write(&hba, "local all all trust\n")
            .with_context(|| format!("writing {}", hba.display()))?;
        let ident = dir.join("pg_ident.conf");
        fs::write(&ident, "").with_context(|| format!("writing {}", ident.display()))?;
        let log_path = dir.join("postgres.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let mut all: Vec<(&str, String)> = vec![
            ("listen_addresses", String::new()),
            ("port", port.to_string()),
            ("unix_socket_directories", dir.display().to_string()),
            ("hba_file", hba.display().to_string()),
            ("ident_file", ident.display().to_string()),
            ("archive_mode", "off".to_owned()),
            ("logging_collector", "off".to_owned()),
            ("log_destination", "stderr".to_owned()),
            ("hot_standby", "on".to_owned()),
        ];
        all.extend(settings.iter().cloned());
        let mut command = Command::new(bins.bin("postgres"));
        command.arg("-D").arg(pgdata);
        for (name, value) in &all {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        let spawned = match reaper.spawn(&mut command) {
            Ok(spawned) => spawned,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e.context("starting the private postgres"));
            }
        };
        tracing::info!(pid = spawned.pid, pgdata = %pgdata.display(), socket_dir = %dir.display(), "private postgres started");
        Ok(PrivatePostgres {
            pid: spawned.pid,
            exit: spawned.exit,
            exited: None,
            target: LocalTarget::new(&dir, port, superuser),
            dir,
        })
    }

    /// How to connect (Unix socket in the private directory).
    pub fn target(&self) -> &LocalTarget {
        &self.target
    }

    /// Connect to `dbname`.
    pub async fn connect(&self, dbname: &str, timeout: Duration) -> Result<Client> {
        pgconn::connect(&self.target, dbname, timeout).await
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitKind> {
        if self.exited.is_none() {
            if let Ok(kind) = self.exit.try_recv() {
                self.exited = Some(kind);
            }
        }
        self.exited
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The last `n` non-empty lines of its log, joined by ` | `.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }

    /// Stop it (fast shutdown, then immediate, then SIGKILL of its group) and remove the
    /// private directory. Ok when it stopped cleanly.
    pub async fn stop(mut self, timeout: Duration) -> Result<()> {
        let result = self.stop_inner(timeout).await;
        let _ = fs::remove_dir_all(&self.dir);
        result
    }

    async fn stop_inner(&mut self, timeout: Duration) -> Result<()> {
        if let Some(kind) = self.exited() {
            return if kind.success() {
                Ok(())
            } else {
                Err(anyhow::anyhow!("the private postgres had exited ({kind})"))
            };
        }
        for (signal, wait) in [
            (Signal::SIGINT, timeout),
            (Signal::SIGQUIT, Duration::from_secs(10)),
        ] {
            let _ = kill(Pid::from_raw(self.pid), signal);
            if let Ok(Ok(kind)) = tokio::time::timeout(wait, &mut self.exit).await {
                self.exited = Some(kind);
                return if kind.success() || signal == Signal::SIGQUIT {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("the private postgres stopped with {kind}"))
                };
            }
            tracing::warn!(
                pid = self.pid,
                ?signal,
                "the private postgres did not stop in time"
            );
        }
        let _ = kill(Pid::from_raw(-self.pid), Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.exit).await;
        anyhow::bail!("the private postgres had to be killed")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Dropped without stop() (an error path): never leave a postgres behind.
        if self.exited.is_none() && self.exit.try_recv().is_err() {
            let _ = kill(Pid::from_raw(-self.pid), Signal::SIGKILL);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
