//! A PostgreSQL 15 cluster for the benchmarks, run as the postgres OS user from Debian's
//! binaries: initdb, configuration, start/stop of the postmaster as our direct child (own
//! process group, SIGQUIT if the benchmark dies), psql/pgbench over the Unix socket, and the
//! archive status of `pg_wal`. Every wait has a deadline.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::chown;

use super::procs;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
const SQL_TIMEOUT: Duration = Duration::from_secs(120);

/// A data directory and how to reach its postmaster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub data: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
    /// HOME of every process started for this cluster (owned by postgres).
    pub home: PathBuf,
}

impl Cluster {
    /// `initdb` into `data` (trust auth, no fsync), then the benchmark's settings: archiving on
    /// with `archive_command`, no TCP, generous WAL limits so no checkpoint pressure skews the
    /// backlog, and no autovacuum (it would add WAL while a tool is being timed).
    pub fn init(
        data: &Path,
        socket_dir: &Path,
        home: &Path,
        archive_command: &str,
    ) -> Result<Self> {
        if !Path::new(PG_BIN).join("postgres").is_file() {
            bail!("PostgreSQL 15 not found in {PG_BIN}: apt-get install postgresql-15 (or run `cargo xtask prereqs`)");
        }
        for dir in [socket_dir, home] {
            mkdir_postgres(dir)?;
        }
        if let Some(parent) = data.parent() {
            mkdir_postgres(parent)?;
        }
        let mut initdb = procs::as_postgres(Path::new(PG_BIN).join("initdb"), &[], home)?;
        initdb.arg("-D").arg(data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        procs::run_ok(&mut initdb, Duration::from_secs(120))?;
        let cluster = Cluster {
            data: data.to_path_buf(),
            port: pgsteward_testkit::free_port(),
            socket_dir: socket_dir.to_path_buf(),
            home: home.to_path_buf(),
        };
        cluster.append_conf(&format!(
            "\n# cargo xtask bench\n\
             port = {port}\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{socket}'\n\
             archive_mode = on\n\
             archive_command = '{command}'\n\
             wal_level = replica\n\
             max_wal_size = '8GB'\n\
             checkpoint_timeout = '1h'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             shared_buffers = '256MB'\n\
             autovacuum = off\n\
             logging_collector = off\n",
            port = cluster.port,
            socket = socket_dir.display(),
            command = quote_conf(archive_command),
        ))?;
        Ok(cluster)
    }

    /// A copy of this (stopped) cluster's data directory at `data` (`cp -a`, so owners and
    /// modes are kept), sharing port and socket directory.
    pub fn copy_to(&self, data: &Path) -> Result<Cluster> {
        if let Some(parent) = data.parent() {
            mkdir_postgres(parent)?;
        }
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&self.data).arg(data);
        procs::run_ok(&mut cp, Duration::from_secs(600))?;
        Ok(Cluster {
            data: data.to_path_buf(),
            ..self.clone()
        })
    }

    /// Appends lines to postgresql.conf (later settings win).
    pub fn append_conf(&self, text: &str) -> Result<()> {
        use std::io::Write;
        let path = self.data.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Starts the postmaster with `env` (the environment its archive_command sees) and waits
    /// until it accepts connections. Its output goes to `log`.
    pub fn start(&self, env: &[(String, String)], log: &Path) -> Result<Postmaster> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("cloning the log handle")?;
        let mut command = procs::as_postgres(Path::new(PG_BIN).join("postgres"), env, &self.home)?;
        command
            .arg("-D")
            .arg(&self.data)
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = procs::spawn(&mut command, Some(Signal::SIGQUIT))?;
        let mut postmaster = Postmaster {
            child: Some(child),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = postmaster.try_exit()? {
                bail!(
                    "postgres exited with {status} while starting: {}",
                    postmaster.log_tail()
                );
            }
            let mut ready = Command::new(Path::new(PG_BIN).join("pg_isready"));
            ready
                .arg("-q")
                .arg("-h")
                .arg(&self.socket_dir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if procs::run_ok(&mut ready, Duration::from_secs(10)).is_ok() {
                return Ok(postmaster);
            }
            if Instant::now() >= deadline {
                bail!(
                    "postgres did not accept connections within {START_TIMEOUT:?}: {}",
                    postmaster.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs SQL statements (each its own `-c`, so ALTER SYSTEM works) as the postgres
    /// superuser; returns psql's unaligned output.
    pub fn psql(&self, statements: &[&str]) -> Result<String> {
        let mut command = procs::as_postgres(Path::new(PG_BIN).join("psql"), &[], &self.home)?;
        command
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ]);
        for statement in statements {
            command.arg("-c").arg(statement);
        }
        procs::run_ok(&mut command, SQL_TIMEOUT)
    }

    /// Runs pgbench with `args` against the postgres database.
    pub fn pgbench(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let mut command = procs::as_postgres(Path::new(PG_BIN).join("pgbench"), &[], &self.home)?;
        command
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres");
        procs::run_ok(&mut command, timeout)
    }

    /// `pg_wal/archive_status`.
    pub fn archive_status(&self) -> PathBuf {
        self.data.join("pg_wal").join("archive_status")
    }

    /// The names (segment names) of the `.ready` files, sorted.
    pub fn ready_segments(&self) -> Result<Vec<String>> {
        let dir = self.archive_status();
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let name = entry
                .with_context(|| format!("reading {}", dir.display()))?
                .file_name();
            if let Some(segment) = name.to_str().and_then(|n| n.strip_suffix(".ready")) {
                names.push(segment.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// How many `.ready` files remain (cheap enough to poll every few milliseconds).
    pub fn ready_count(&self) -> usize {
        std::fs::read_dir(self.archive_status())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().as_encoded_bytes().ends_with(b".ready"))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// A running postmaster, our direct child. Dropping it shuts postgres down immediately.
pub struct Postmaster {
    child: Option<Child>,
    log: PathBuf,
}

impl Postmaster {
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    fn try_exit(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait().context("waiting for postgres"),
            None => Ok(None),
        }
    }

    /// The archiver process (a child of the postmaster), waiting up to 10 s for it to appear.
    pub fn archiver_pid(&self) -> Result<i32> {
        let pid = self.pid().context("postgres is not running")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(archiver) = procs::children(pid)
                .into_iter()
                .find(|child| procs::cmdline(*child).contains("archiver"))
            {
                return Ok(archiver);
            }
            if Instant::now() >= deadline {
                bail!("postgres has no archiver process (is archive_mode on?)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the server log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        procs::tail(&text, 3000).to_owned()
    }

    /// Fast shutdown (SIGINT), waiting up to STOP_TIMEOUT; then immediate and kill.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            if matches!(child.try_wait(), Ok(None)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                    Signal::SIGINT,
                );
            }
            match procs::wait_child(&mut child, STOP_TIMEOUT) {
                Ok(status) if status.success() => {}
                Ok(status) => bail!("postgres exited with {status} on fast shutdown"),
                Err(err) => bail!("postgres fast shutdown: {err:#}"),
            }
        }
        Ok(())
    }
}

impl Drop for Postmaster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            procs::stop_child(&mut child, Signal::SIGQUIT, Duration::from_secs(10));
        }
    }
}

/// Creates `dir` (and parents) and gives it to postgres with mode 0755.
pub fn mkdir_postgres(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let user = procs::postgres_user()?;
    chown(dir, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", dir.display()))
}

/// Writes a file owned by postgres with `mode`.
pub fn write_postgres_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    let user = procs::postgres_user()?;
    chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// A string as a single-quoted postgresql.conf / SQL literal body (quotes doubled).
pub fn quote_conf(value: &str) -> String {
    value.replace('\'', "''")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_single_quotes() {
        assert_eq!(quote_conf("a 'b' c"), "a ''b'' c");
    }
}
