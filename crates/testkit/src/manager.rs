//! Real `pgsteward run` processes for tests: a scratch directory with a configuration file,
//! passwords and a token, free ports, and a handle that starts the manager (directly, or as
//! PID 1 of a new PID namespace through `unshare`), signals it, waits for it, and kills
//! whatever is left (manager and postmaster group) when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::fsutil::ScratchDir;
use crate::{free_port, http, proc, sysv, wait_for, PgVersion};

/// Superuser password the test instances use.
pub const PASSWORD: &str = "test-superuser-pw";
/// Bearer token of the test instances.
pub const TOKEN: &str = "test-token-0123456789";

/// How to start a manager.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Path of the pgsteward binary (`env!("CARGO_BIN_EXE_pgsteward")`).
    pub binary: PathBuf,
    pub version: PgVersion,
    /// Run as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`).
    pub pid_namespace: bool,
    /// Extra command-line arguments after `run ...` (e.g. `--set restart.max_crashes=2`).
    pub args: Vec<String>,
    /// Extra top-level YAML appended to the configuration file (keys not in the base file).
    pub extra_yaml: String,
    /// Extra `postgres.parameters` entries.
    pub parameters: Vec<(String, String)>,
    /// Address postgres, the API and the metrics listen on (127.0.0.1 unless in a network
    /// namespace).
    pub host: String,
    /// Run the manager inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
}

impl ManagerOptions {
    pub fn new(binary: &str, version: PgVersion) -> Self {
        ManagerOptions {
            binary: PathBuf::from(binary),
            version,
            pid_namespace: false,
            args: Vec::new(),
            extra_yaml: String::new(),
            parameters: Vec::new(),
            host: "127.0.0.1".to_owned(),
            netns: None,
        }
    }
}

/// One instance's files and ports; spawn managers on it.
#[derive(Debug)]
pub struct Instance {
    pub dir: ScratchDir,
    pub pgdata: PathBuf,
    pub config_path: PathBuf,
    pub pg_port: u16,
    pub api_port: u16,
    pub metrics_port: u16,
    pub options: ManagerOptions,
}

impl Instance {
    /// Prepare files for an instance (nothing runs yet).
    pub fn new(options: ManagerOptions) -> Self {
        let dir = ScratchDir::new();
        let pgdata = dir.join("data");
        let pg_port = free_port();
        let api_port = free_port();
        let metrics_port = free_port();
        dir.write("superuser.pw", &format!("{PASSWORD}\n"));
        dir.write("api.token", &format!("{TOKEN}\n"));
        dir.mkdir("sock", 0o755);
        let instance = Instance {
            config_path: dir.join("pgsteward.yaml"),
            dir,
            pgdata,
            pg_port,
            api_port,
            metrics_port,
            options,
        };
        instance.write_config("");
        instance
    }

    /// (Re)write the configuration file with `extra_parameters` as additional YAML lines
    /// under `postgres.parameters` (each line like `    work_mem: 8MB`).
    pub fn write_config(&self, extra_parameters: &str) {
        let bin_dir = self.options.version.bin_dir();
        let mut parameters = String::new();
        for (name, value) in &self.options.parameters {
            parameters.push_str(&format!("    {name}: \"{value}\"\n"));
        }
        parameters.push_str(extra_parameters);
        let text = format!(
            "instance_name: test-{port}\n\
             pgdata: {pgdata}\n\
             bin_dir: {bin}\n\
             postgres:\n  port: {port}\n  listen_addresses: {host}\n  socket_dir: {sock}\n  parameters:\n    shared_buffers: 16MB\n    max_connections: \"30\"\n{parameters}\
             bootstrap:\n  initdb:\n    superuser_password_file: {pw}\n\
             http:\n  listen: {host}:{api}\n  token_file: {token}\n\
             metrics:\n  listen: {host}:{metrics}\n\
             shutdown:\n  smart_shutdown_timeout: 10s\n  stop_delay: 30s\n\
             {extra}",
            port = self.pg_port,
            pgdata = self.pgdata.display(),
            bin = bin_dir.display(),
            sock = self.dir.join("sock").display(),
            pw = self.dir.join("superuser.pw").display(),
            api = self.api_port,
            token = self.dir.join("api.token").display(),
            metrics = self.metrics_port,
            extra = self.options.extra_yaml,
            host = self.options.host,
        );
        let name = self
            .config_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("pgsteward.yaml");
        self.dir.write(name, &text);
    }

    /// Serve the API over HTTPS with `certs`' server certificate and accept client
    /// certificates of its CA (valid for one of `client_names`, when not empty) instead of the
    /// bearer token: the configuration file loses its `token_file` line. Call after `new` (and
    /// after any `write_config`, which writes the token line again).
    pub fn use_client_certificates(
        &self,
        certs: &crate::certs::Certificates,
        client_names: &[&str],
    ) {
        self.dir.chown_postgres(&certs.server_cert);
        self.dir.chown_postgres(&certs.server_key);
        let config = std::fs::read_to_string(&self.config_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.config_path.display()));
        let token_line = format!("  token_file: {}\n", self.dir.join("api.token").display());
        assert!(config.contains(&token_line), "no token line in {config}");
        let names = if client_names.is_empty() {
            String::new()
        } else {
            format!("    client_names: [{}]\n", client_names.join(", "))
        };
        let tls = format!(
            "  tls:\n    cert_file: {}\n    key_file: {}\n    client_ca_file: {}\n{names}",
            certs.server_cert.display(),
            certs.server_key.display(),
            certs.ca_cert.display()
        );
        std::fs::write(&self.config_path, config.replace(&token_line, &tls))
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config_path.display()));
    }

    /// The `spawn_with` arguments that serve the API over HTTPS with `certs`' server
    /// certificate (chowned to the postgres user, which the manager runs as).
    pub fn https_args(&self, certs: &crate::certs::Certificates) -> Vec<String> {
        self.dir.chown_postgres(&certs.server_cert);
        self.dir.chown_postgres(&certs.server_key);
        vec![
            format!("--set=http.tls.cert_file={}", certs.server_cert.display()),
            format!("--set=http.tls.key_file={}", certs.server_key.display()),
        ]
    }

    /// Base URL of the API.
    pub fn api(&self) -> String {
        format!("http://{}:{}", self.options.host, self.api_port)
    }

    /// Base URL of the metrics listener.
    pub fn metrics(&self) -> String {
        format!("http://{}:{}", self.options.host, self.metrics_port)
    }

    /// Start a manager on this instance; its output goes to `<dir>/manager-<n>.log`.
    pub fn spawn(&self) -> Manager {
        self.spawn_with(&[])
    }

    /// Start a manager with these arguments after the instance's own `options.args`.
    pub fn spawn_with(&self, extra_args: &[String]) -> Manager {
        if let Err(e) = sysv::check_capacity() {
            panic!("{e}");
        }
        let log_path = (0..)
            .map(|n| self.dir.join(&format!("manager-{n}.log")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| self.dir.join("manager.log"));
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--user".into(),
            "postgres".into(),
            "--config".into(),
            self.config_path.display().to_string(),
        ];
        args.extend(self.options.args.iter().cloned());
        args.extend(extra_args.iter().cloned());
        let mut command = if let Some(netns) = &self.options.netns {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns]).arg(&self.options.binary);
            c
        } else if self.options.pid_namespace {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc"])
                .arg(&self.options.binary);
            c
        } else {
            Command::new(&self.options.binary)
        };
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .env_remove("PGSTEWARD_CONFIG")
            .env_remove("PGSTEWARD_USER");
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("starting pgsteward ({command:?}): {e} (unshare comes with util-linux)")
        });
        Manager {
            child,
            log_path,
            pgdata: self.pgdata.clone(),
            pid_namespace: self.options.pid_namespace,
            api: self.api(),
            exit_code: None,
        }
    }
}

/// A running (or exited) manager process.
#[derive(Debug)]
pub struct Manager {
    child: Child,
    pub log_path: PathBuf,
    pgdata: PathBuf,
    pid_namespace: bool,
    api: String,
    exit_code: Option<i32>,
}

impl Manager {
    /// Host pid of the pgsteward process (inside a namespace: the child of `unshare`).
    pub async fn pid(&self) -> i32 {
        let launcher = self.child.id() as i32;
        if !self.pid_namespace {
            return launcher;
        }
        wait_for(
            "the namespaced manager's pid",
            Duration::from_secs(10),
            || async move { proc::children(launcher).first().copied() },
        )
        .await
    }

    /// Send `signal` to the pgsteward process.
    pub async fn signal(&self, signal: Signal) {
        let pid = self.pid().await;
        kill(Pid::from_raw(pid), signal).unwrap_or_else(|e| panic!("kill {pid} {signal:?}: {e}"));
    }

    /// Wait for the process to exit; returns its exit code (128+n when killed by signal n).
    pub async fn wait_exit(&mut self, timeout: Duration) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        if let Some(code) = self.exit_code {
            return code;
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let code = status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                    self.exit_code = Some(code);
                    return code;
                }
                Ok(None) => {}
                Err(e) => panic!("waiting for pgsteward: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "pgsteward did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the manager printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let url = format!("{}/readyz", self.api);
        let log_path = self.log_path.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = http::get(&url).await {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "instance not ready within {timeout:?}; log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /pg/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let url = format!("{}/pg/status", self.api);
        http::get(&url)
            .await
            .unwrap_or_else(|| panic!("no answer from {url}"))
            .json()
    }

    /// Host pid of the postmaster (translated from the namespace's pid when needed).
    pub async fn postmaster_host_pid(&self) -> Option<i32> {
        let status = http::get(&format!("{}/pg/status", self.api)).await?.json();
        let pid = status["postmaster_pid"].as_i64()? as i32;
        if self.pid_namespace {
            proc::host_pid_in_namespace_of(self.pid().await, pid)
        } else {
            Some(pid)
        }
    }
}

/// The live postmaster of `pgdata`, from `postmaster.pid`.
pub fn postmaster_pid(pgdata: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    (proc::alive(pid) && proc::cmdline(pid).contains("postgres")).then_some(pid)
}

impl Drop for Manager {
    fn drop(&mut self) {
        // Read before the kill: a killed postmaster leaves its SysV segment behind.
        let segment = sysv::segment_of(&self.pgdata);
        self.kill_everything();
        if let Some(segment) = segment {
            sysv::remove(segment);
        }
        sysv::remove_orphans();
    }
}

impl Manager {
    /// SIGKILL the manager and, outside a PID namespace, the postmaster's process group.
    fn kill_everything(&mut self) {
        if self.exit_code.is_none() {
            let launcher = self.child.id() as i32;
            let children = proc::children(launcher);
            for pid in &children {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            // Let the manager reap them before it dies: an orphan's zombie is never reaped
            // where PID 1 does not reap (this sandbox), and a postmaster's zombie keeps its
            // socket lock file "in use" for the next postmaster on that port. Bounded well
            // below the manager's first restart backoff (500 ms).
            let deadline = Instant::now() + Duration::from_millis(300);
            while children
                .iter()
                .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // In a PID namespace the kernel killed everything with its init; outside, the
        // postmaster survives the manager (by design) and must be killed here.
        if self.pid_namespace {
            return;
        }
        if let Some(pid) = postmaster_pid(&self.pgdata) {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
