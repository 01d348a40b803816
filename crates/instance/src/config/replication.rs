//! Configuration of replica bootstrap: `bootstrap.method` (initdb or a clone of a running
//! primary with pg_basebackup) and `bootstrap.basebackup` (where the primary is, who to
//! connect as, how to copy), with its validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Config;

pub use super::BootstrapMethod;

/// `bootstrap.basebackup`: the primary to clone and stream from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasebackupConfig {
    /// Host name or address of the primary. Required with `method: basebackup`.
    pub host: Option<String>,
    /// Port of the primary's postgres.
    pub port: u16,
    /// Role with the REPLICATION attribute (or a superuser) on the primary.
    pub user: String,
    /// File whose first line is that role's password (also used by the standby's
    /// `primary_conninfo`, through a passfile the manager writes).
    pub password_file: Option<PathBuf>,
    /// `--checkpoint`: `fast` (default: the copy starts at once) or `spread`.
    pub checkpoint: CheckpointMode,
    /// `--max-rate` (e.g. `100M`); unlimited when unset.
    pub max_rate: Option<String>,
    /// Create this instance's replication slot on the primary while cloning
    /// (`--create-slot`; an existing slot of that name is reused).
    pub create_slot: bool,
    /// How long the whole copy may take before it is abandoned (and the directory emptied).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `sslmode` of the connections to the primary.
    pub sslmode: String,
}

impl Default for BasebackupConfig {
    fn default() -> Self {
        BasebackupConfig {
            host: None,
            port: 5432,
            user: "postgres".to_owned(),
            password_file: None,
            checkpoint: CheckpointMode::Fast,
            max_rate: None,
            create_slot: true,
            timeout: Duration::from_secs(24 * 3600),
            sslmode: "prefer".to_owned(),
        }
    }
}

/// pg_basebackup's `--checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointMode {
    #[default]
    Fast,
    Spread,
}

impl CheckpointMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointMode::Fast => "fast",
            CheckpointMode::Spread => "spread",
        }
    }
}

impl Config {
    /// The replication password file: `bootstrap.basebackup.password_file`, or, when the
    /// replication user is the superuser, the superuser's password file, so that a primary
    /// initialised with initdb can be demoted or repointed with the credentials it has.
    pub fn replication_password_file(&self) -> Option<&std::path::Path> {
        let bb = &self.bootstrap.basebackup;
        bb.password_file.as_deref().or_else(|| {
            (bb.user == self.postgres.superuser)
                .then_some(self.bootstrap.initdb.superuser_password_file.as_deref())
                .flatten()
        })
    }
}

/// Problems of the replication-related configuration (appended to the validator's list).
pub fn check(problems: &mut Vec<String>, config: &Config) {
    let bootstrap = &config.bootstrap;
    let bb = &bootstrap.basebackup;
    if bootstrap.method == BootstrapMethod::Basebackup {
        match bb.host.as_deref() {
            None | Some("") => problems.push(
                "bootstrap.basebackup.host: required with bootstrap.method: basebackup".to_owned(),
            ),
            Some(host) if !is_conninfo_safe(host) => problems.push(format!(
                "bootstrap.basebackup.host: {host:?} must not contain spaces, quotes or backslashes"
            )),
            Some(_) => {}
        }
        if bb.port == 0 {
            problems.push("bootstrap.basebackup.port: must not be 0".to_owned());
        }
    }
    if bb.user.is_empty() || !is_conninfo_safe(&bb.user) {
        problems.push(format!(
            "bootstrap.basebackup.user: {:?} must be a non-empty name without spaces, quotes or backslashes",
            bb.user
        ));
    }
    if !matches!(
        bb.sslmode.as_str(),
        "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full"
    ) {
        problems.push(format!(
            "bootstrap.basebackup.sslmode: {:?} is not a libpq sslmode",
            bb.sslmode
        ));
    }
    if let Some(rate) = &bb.max_rate {
        let digits = rate.trim_end_matches(['k', 'K', 'M']);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            problems.push(format!(
                "bootstrap.basebackup.max_rate: {rate:?} must be a number of kB/s, optionally with k or M"
            ));
        }
    }
    if bb.timeout < Duration::from_secs(1) {
        problems.push("bootstrap.basebackup.timeout: must be at least 1s".to_owned());
    }
}

/// True when `value` can go into a conninfo string unquoted.
fn is_conninfo_safe(value: &str) -> bool {
    !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '"' || c == '\\' || c == '=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basebackup_needs_a_host_and_sane_values() {
        let mut config = Config::default();
        config.bootstrap.method = BootstrapMethod::Basebackup;
        let mut problems = Vec::new();
        check(&mut problems, &config);
        assert!(
            problems.iter().any(|p| p.contains("host: required")),
            "{problems:?}"
        );
        config.bootstrap.basebackup.host = Some("10.0.0.1".into());
        config.bootstrap.basebackup.max_rate = Some("fast".into());
        config.bootstrap.basebackup.sslmode = "maybe".into();
        let mut problems = Vec::new();
        check(&mut problems, &config);
        assert_eq!(problems.len(), 2, "{problems:?}");
        config.bootstrap.basebackup.max_rate = Some("100M".into());
        config.bootstrap.basebackup.sslmode = "require".into();
        let mut problems = Vec::new();
        check(&mut problems, &config);
        assert!(problems.is_empty(), "{problems:?}");
    }
}

/// `replication`: role-change behaviour.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// What `POST /pg/follow` does when pg_rewind fails: `fence` (default: postgres stays
    /// stopped, the instance is fenced and says why) or `reclone` (empty the data directory
    /// and clone the new primary with pg_basebackup).
    pub rewind_failure: RewindFailure,
}

/// `replication.rewind_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewindFailure {
    #[default]
    Fence,
    Reclone,
}
