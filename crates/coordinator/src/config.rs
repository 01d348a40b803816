//! The coordinator's YAML configuration: its listen address and state file, the members
//! (name, manager API URL, token file), poll interval, timeouts, failure threshold,
//! switchover limits, synchronous replication settings, the CA of the managers' HTTPS and the
//! certificate of its own API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::decide::{Policy, SyncConfig};

/// One instance manager.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Name used in the coordinator's status, logs and decisions.
    pub name: String,
    /// Base URL of the manager's API (`http://host:port`).
    pub url: String,
    /// File whose first line is the manager's bearer token (needed to promote and fence).
    pub token_file: Option<PathBuf>,
    /// Postgres address of this member as the others reach it (`host:port`), used to
    /// repoint replicas with `/pg/follow` after a failover; optional.
    #[serde(default)]
    pub postgres: Option<String>,
}

/// TLS of the requests to the managers (`https://` member URLs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// PEM bundle of the CA(s) that signed the managers' certificates (absent: the system's
    /// roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to the managers: with their
    /// `http.tls.client_ca_file` it authorizes promote, fence and demote instead of a
    /// member's `token_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl TlsClientConfig {
    /// The client certificate, when both files are set.
    pub fn identity(&self) -> Option<pgsteward_tls::client::ClientIdentity> {
        pgsteward_tls::client::ClientIdentity::from_files(
            self.client_cert_file.as_deref(),
            self.client_key_file.as_deref(),
        )
    }
}

/// HTTPS of the coordinator's own API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM bundle of the CA(s) whose client certificates may use the mutating routes
    /// (`POST /switchover`) instead of the API token.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// When not empty, only client certificates valid for one of these names (DNS names or
    /// IP addresses of their subjectAltName) authorize.
    #[serde(default)]
    pub client_names: Vec<String>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the coordinator's own API (default 127.0.0.1:8100).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the current term is persisted (a restarted coordinator never reuses a term).
    pub state_file: PathBuf,
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Bound of one status request; a member not answering in time is unhealthy (hung).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Bound of a promote or fence request.
    #[serde(default = "default_action_timeout", with = "humantime_serde")]
    pub action_timeout: Duration,
    /// The primary is failed over after being unhealthy this long.
    #[serde(default = "default_threshold", with = "humantime_serde")]
    pub failure_threshold: Duration,
    /// Synchronous replication (absent: asynchronous).
    #[serde(default)]
    pub synchronous: Option<SyncConfig>,
    /// File whose first line is the bearer token of the coordinator's mutating routes
    /// (`POST /switchover`); without it they answer 403.
    #[serde(default)]
    pub api_token_file: Option<PathBuf>,
    /// How long a switchover waits for the candidate to receive the old primary's shutdown
    /// checkpoint before it gives the primary role back.
    #[serde(default = "default_switchover_timeout", with = "humantime_serde")]
    pub switchover_timeout: Duration,
    /// A switchover is refused while the candidate has received this many bytes less than
    /// the primary has written: writes stop from the demotion until it has caught up.
    #[serde(default = "default_switchover_max_lag_bytes")]
    pub switchover_max_lag_bytes: u64,
    /// Before shutting down, the primary waits this long for the candidate to confirm the WAL
    /// written up to its CHECKPOINT, and the switchover is refused (nothing demoted) when it
    /// does not: a stalled candidate would otherwise hold writes for `wal_sender_timeout` and
    /// `switchover_timeout`. 0 skips the check.
    #[serde(
        default = "default_switchover_confirm_timeout",
        with = "humantime_serde"
    )]
    pub switchover_confirm_timeout: Duration,
    /// CA of the managers' HTTPS certificates (optional).
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// Serve the coordinator's own API over HTTPS with this certificate (optional).
    #[serde(default)]
    pub api_tls: Option<ApiTlsConfig>,
    pub members: Vec<MemberConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8100))
}
fn default_poll() -> Duration {
    Duration::from_millis(500)
}
fn default_request_timeout() -> Duration {
    Duration::from_millis(1000)
}
fn default_action_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_switchover_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_switchover_confirm_timeout() -> Duration {
    Duration::from_secs(5)
}
/// One WAL segment.
fn default_switchover_max_lag_bytes() -> u64 {
    16 << 20
}
fn default_threshold() -> Duration {
    Duration::from_secs(3)
}

impl Config {
    /// The names a client certificate of the coordinator's API must be valid for (empty:
    /// any); None without `api_tls.client_ca_file`.
    pub fn api_client_names(&self) -> Option<Vec<String>> {
        self.api_tls
            .as_ref()
            .filter(|t| t.client_ca_file.is_some())
            .map(|t| t.client_names.clone())
    }

    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Config =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if self.members.is_empty() {
            bail!("no members configured");
        }
        for (i, m) in self.members.iter().enumerate() {
            if self.members[..i].iter().any(|o| o.name == m.name) {
                bail!("member name {:?} appears twice", m.name);
            }
            let parsed = url::Url::parse(&m.url).ok();
            if !parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
                bail!(
                    "member {}: url must start with https:// or http:// and name a host (got {:?})",
                    m.name,
                    m.url
                );
            }
        }
        if let Some(tls) = &self.tls {
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                bail!("tls: client_cert_file and client_key_file must be set together");
            }
        }
        if let Some(api_tls) = &self.api_tls {
            if !api_tls.client_names.is_empty() && api_tls.client_ca_file.is_none() {
                bail!("api_tls.client_names: set without client_ca_file");
            }
            pgsteward_tls::peer::validate_allowed_names(&api_tls.client_names)
                .map_err(|e| anyhow::anyhow!("api_tls.client_names: {e}"))?;
        }
        if self.poll_interval.is_zero() || self.request_timeout.is_zero() {
            bail!("poll_interval and request_timeout must be positive");
        }
        Ok(())
    }

    /// Settings that work but put the cluster at risk, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.api_token_file.is_some()
            && self.api_tls.is_none()
            && !self.listen.ip().is_loopback()
        {
            warnings.push(format!(
                "the API token (POST /switchover, /backup) crosses the network in clear text on {}; set api_tls",
                self.listen
            ));
        }
        let members = self.members
            .iter()
            .filter(|m| m.token_file.is_some() && m.url.starts_with("http://"))
            .filter(|m| !is_loopback_url(&m.url))
            .map(|m| {
                format!(
                    "member {}: its bearer token (promote, fence, demote) crosses the network in clear text over {}; serve the manager's API with http.tls and use an https:// url",
                    m.name, m.url
                )
            });
        warnings.extend(members);
        let client_cert = self.tls.as_ref().and_then(TlsClientConfig::identity);
        if client_cert.is_none() {
            let unauthenticated = self.members.iter().filter(|m| m.token_file.is_none()).map(|m| {
                format!(
                    "member {}: no token_file and no tls.client_cert_file, so its manager refuses promote, fence and demote",
                    m.name
                )
            });
            warnings.extend(unauthenticated);
        }
        warnings
    }

    /// What the decision reads.
    pub fn policy(&self) -> Policy {
        Policy {
            failure_threshold: self.failure_threshold,
            synchronous: self.synchronous,
        }
    }
}

/// True for a URL whose host is `localhost` or a loopback address.
fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The first line of a token file.
pub fn read_token_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

impl MemberConfig {
    /// `postgres` as (host, port).
    pub fn postgres_address(&self) -> Option<(String, u16)> {
        let (host, port) = self.postgres.as_deref()?.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    }
}

/// The token of a member (first line of its token file), if configured.
pub fn read_token(member: &MemberConfig) -> Result<Option<String>> {
    let Some(path) = &member.token_file else {
        return Ok(None);
    };
    read_token_file(path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let config: Config = serde_yaml::from_str(
            "state_file: /tmp/s.json\nmembers:\n- name: a\n  url: http://127.0.0.1:1\n\
             synchronous:\n  method: any\n  number: 1\n  data_durability: required\n",
        )
        .unwrap();
        assert_eq!(config.poll_interval, Duration::from_millis(500));
        assert_eq!(config.failure_threshold, Duration::from_secs(3));
        assert_eq!(config.switchover_max_lag_bytes, 16 << 20);
        assert_eq!(config.switchover_confirm_timeout, Duration::from_secs(5));
        assert!(config.check().is_ok());
        let twice: Config = serde_yaml::from_str(
            "state_file: s\nmembers:\n- {name: a, url: 'http://x'}\n- {name: a, url: 'http://y'}\n",
        )
        .unwrap();
        assert!(twice.check().is_err());
        assert!(serde_yaml::from_str::<Config>("state_file: s\nmembers: []\nbogus: 1\n").is_err());
        let schemes: Config = serde_yaml::from_str(
            "state_file: s\ntls: {ca_file: /ca.pem}\nmembers:\n- {name: a, url: 'https://x:8008'}\n- {name: b, url: 'ftp://y'}\n",
        )
        .unwrap();
        let refused = schemes.check().unwrap_err().to_string();
        assert!(
            refused.contains("member b: url must start with https://"),
            "{refused}"
        );
    }

    #[test]
    fn a_token_sent_in_clear_text_off_the_host_is_warned_about() {
        let config: Config = serde_yaml::from_str(
            "state_file: s\nmembers:\n\
             - {name: a, url: 'http://10.0.0.1:8008', token_file: /t}\n\
             - {name: b, url: 'https://10.0.0.2:8008', token_file: /t}\n\
             - {name: c, url: 'http://127.0.0.1:8008', token_file: /t}\n\
             - {name: d, url: 'http://[::1]:8008', token_file: /t}\n\
             - {name: e, url: 'http://localhost:8008/', token_file: /t}\n\
             - {name: f, url: 'http://10.0.0.3:8008'}\n",
        )
        .unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("member a: its bearer token"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with("member f: no token_file and no tls.client_cert_file"),
            "{warnings:?}"
        );
        let api =
            "state_file: s\napi_token_file: /t\nmembers:\n- {name: a, url: 'http://127.0.0.1:1', token_file: /t}\n";
        let open: Config = serde_yaml::from_str(&format!("listen: 0.0.0.0:8100\n{api}")).unwrap();
        assert!(
            open.warnings()[0].contains("set api_tls"),
            "{:?}",
            open.warnings()
        );
        let served: Config = serde_yaml::from_str(&format!(
            "listen: 0.0.0.0:8100\napi_tls: {{cert_file: /c, key_file: /k}}\n{api}"
        ))
        .unwrap();
        assert!(served.warnings().is_empty(), "{:?}", served.warnings());
        let local: Config = serde_yaml::from_str(api).unwrap();
        assert!(local.warnings().is_empty(), "{:?}", local.warnings());
    }

    #[test]
    fn client_certificates_are_checked() {
        let parse = |extra: &str| -> Config {
            serde_yaml::from_str(&format!(
                "state_file: s\n{extra}members:\n- {{name: a, url: 'https://10.0.0.1:8008'}}\n"
            ))
            .unwrap()
        };
        let half = parse("tls: {ca_file: /ca, client_cert_file: /c}\n");
        let refused = half.check().unwrap_err().to_string();
        assert!(refused.contains("must be set together"), "{refused}");
        let whole = parse("tls: {client_cert_file: /c, client_key_file: /k}\n");
        assert!(whole.check().is_ok());
        assert!(whole.warnings().is_empty(), "{:?}", whole.warnings());
        let names = parse("api_tls: {cert_file: /c, key_file: /k, client_names: [op]}\n");
        let refused = names.check().unwrap_err().to_string();
        assert!(refused.contains("without client_ca_file"), "{refused}");
        let bad = parse(
            "api_tls: {cert_file: /c, key_file: /k, client_ca_file: /ca, client_names: ['a b']}\n",
        );
        let refused = bad.check().unwrap_err().to_string();
        assert!(refused.contains("not a DNS name"), "{refused}");
    }
}
