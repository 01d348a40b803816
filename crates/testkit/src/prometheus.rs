//! A real Prometheus server for the alerting tests (Debian's `prometheus` package): scrapes
//! the given targets and evaluates the given rule files every second, on a free loopback port
//! with its own storage directory, killed when dropped. Queries go through its HTTP API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::fsutil::ScratchDir;
use crate::{free_port, http, wait_for};

/// The Debian package's binaries.
const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn require(binary: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: apt-get install --no-install-recommends prometheus (or run `cargo xtask prereqs`)"
    );
}

/// `promtool check rules FILE`: the output, or a panic with it when the check fails.
pub fn check_rules(file: &Path) -> String {
    require(PROMTOOL);
    let output = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running promtool: {e}"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "promtool check rules failed:\n{text}"
    );
    text
}

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: ScratchDir,
}

impl Prometheus {
    /// Scrape `targets` (`host:port`, path `/metrics`) and evaluate `rule_files`, both every
    /// second; returns once its API answers.
    pub async fn start(targets: &[String], rule_files: &[PathBuf]) -> Self {
        require(PROMETHEUS);
        let dir = ScratchDir::new();
        let port = free_port();
        let quoted = |items: Vec<String>| {
            items
                .into_iter()
                .map(|i| format!("'{i}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{rules}]\n\
             scrape_configs:\n  - job_name: pgsteward\n    static_configs:\n      - targets: [{targets}]\n",
            rules = quoted(rule_files.iter().map(|f| f.display().to_string()).collect()),
            targets = quoted(targets.to_vec()),
        );
        let config_path = dir.write("prometheus.yml", &config);
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {PROMETHEUS}: {e}"));
        let prometheus = Prometheus {
            child,
            port,
            log,
            _dir: dir,
        };
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        wait_for(
            "Prometheus to be ready",
            Duration::from_secs(60),
            || async {
                http::get(&ready)
                    .await
                    .filter(|r| r.status == 200)
                    .map(|_| ())
            },
        )
        .await;
        prometheus
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The samples of an instant query: `(labels, value)` each; None while the API does not
    /// answer or the query fails.
    pub async fn query(&self, expr: &str) -> Option<Vec<(Value, f64)>> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.port,
            percent_encode(expr)
        );
        let answer = http::get(&url).await?.json();
        if answer["status"] != "success" {
            return None;
        }
        let samples = answer["data"]["result"].as_array()?;
        samples
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str()?.parse::<f64>().ok()?;
                Some((s["metric"].clone(), value))
            })
            .collect()
    }

    /// The alerting and recording rules with their health and state (`/api/v1/rules`): the
    /// rules of every group, flattened.
    pub async fn rules(&self) -> Option<Vec<Value>> {
        let url = format!("http://127.0.0.1:{}/api/v1/rules", self.port);
        let answer = http::get(&url).await?.json();
        let groups = answer["data"]["groups"].as_array()?;
        Some(
            groups
                .iter()
                .filter_map(|g| g["rules"].as_array())
                .flatten()
                .cloned()
                .collect(),
        )
    }

    /// `alert`'s state (`inactive`, `pending`, `firing`) once Prometheus evaluated it
    /// healthily; None before its first evaluation. Panics when the rule does not evaluate.
    pub async fn alert_state(&self, alert: &str) -> Option<String> {
        let rules = self.rules().await?;
        let rule = rules.iter().find(|r| r["name"] == alert)?;
        // "unknown" until the first evaluation; "err" when the expression fails.
        match rule["health"].as_str() {
            Some("ok") => {}
            Some("err") => panic!("{alert} does not evaluate: {rule}"),
            _ => return None,
        }
        Some(rule["state"].as_str()?.to_owned())
    }

    /// Wait until `alert` is in `state`, up to `timeout`.
    pub async fn wait_alert(&self, alert: &str, state: &str, timeout: Duration) {
        wait_for(&format!("{alert} to be {state}"), timeout, || async {
            (self.alert_state(alert).await.as_deref() == Some(state)).then_some(())
        })
        .await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encode everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_queries() {
        assert_eq!(percent_encode("a_b > 0.8"), "a_b%20%3E%200.8");
        assert_eq!(percent_encode("x{y=\"z\"}"), "x%7By%3D%22z%22%7D");
    }
}
