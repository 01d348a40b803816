//! A real `pgsteward-coordinator` process for tests, the failover benchmark and the demo:
//! writes its YAML (listen address prepended), starts it with its output in a log file,
//! reads its `/status` and `/metrics`, and kills it on drop; runs its `switchover` command.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{free_port, http};

/// Run `binary switchover --to TO --timeout 10s --url URL ARGS...` (credentials, CA): its exit
/// code and its stderr, where a refusal's answer and every error go.
pub fn switchover_command(
    binary: &Path,
    url: &str,
    to: &str,
    args: &[&std::ffi::OsStr],
) -> (Option<i32>, String) {
    let output = Command::new(binary)
        .args(["switchover", "--to", to, "--timeout", "10s", "--url", url])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running coordinator process, killed on drop.
#[derive(Debug)]
pub struct Coordinator {
    child: Child,
    pub host: String,
    pub port: u16,
    pub log: PathBuf,
    /// The YAML file it was started with.
    pub config: PathBuf,
}

impl Coordinator {
    /// Start `binary` with `<dir>/<name>.yaml` = `listen: ...` followed by `yaml`.
    pub fn start(binary: &Path, dir: &Path, name: &str, yaml: &str) -> Self {
        Self::start_at(binary, dir, name, yaml, "127.0.0.1", free_port())
    }

    /// Start it listening on `host:port` (a bridge address, so that members in network
    /// namespaces reach it; the same port again after a stop).
    pub fn start_at(
        binary: &Path,
        dir: &Path,
        name: &str,
        yaml: &str,
        host: &str,
        port: u16,
    ) -> Self {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, format!("listen: {host}:{port}\n{yaml}"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        Coordinator {
            child,
            host: host.to_owned(),
            port,
            log,
            config,
        }
    }

    /// URL of `path` on the coordinator's API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    /// `GET /status`, None when it does not answer.
    pub async fn status(&self) -> Option<Value> {
        Some(http::get(&self.url("/status")).await?.json())
    }

    /// One sample of the Prometheus text (`name` including labels).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        http::metric(&self.url(""), name).await
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Replace its YAML file by `listen: ...` (unchanged) followed by `yaml`, renamed into
    /// place; the coordinator reads it at its next SIGHUP.
    pub fn rewrite_config(&self, yaml: &str) {
        let temporary = self.config.with_extension("yaml.new");
        std::fs::write(
            &temporary,
            format!("listen: {}:{}\n{yaml}", self.host, self.port),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", temporary.display()));
        std::fs::rename(&temporary, &self.config)
            .unwrap_or_else(|e| panic!("replacing {}: {e}", self.config.display()));
    }

    /// Send `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal)
            .unwrap_or_else(|e| panic!("signalling the coordinator: {e}"));
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
