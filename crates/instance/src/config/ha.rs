//! `ha`: how the manager takes part in high availability: the coordinator it asks for its
//! role, the peers whose reachability proves it is not isolated, the isolation timeout after
//! which a primary stops itself, and whether a former primary waits to be confirmed before
//! it starts (invariant 2). Read live: a reload applies at the next check.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `ha` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Base URL of the coordinator's API (`http://host:port` or `https://`). Unset: no HA
    /// checks (a single instance, or a cluster whose coordinator does not run with this
    /// manager).
    pub coordinator_url: Option<String>,
    /// Base URLs of the other members' manager APIs (`https://host:port` when they serve
    /// `http.tls`, else `http://`).
    pub peers: Vec<String>,
    /// PEM bundle of the CA(s) that signed the peers' and the coordinator's certificates, for
    /// `https://` URLs (unset: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// A primary that reaches neither the coordinator nor any peer this long stops postgres
    /// and waits for the coordinator to confirm it again; `0s` turns self-fencing off.
    #[serde(with = "humantime_serde")]
    pub isolation_timeout: Duration,
    /// How often the coordinator and the peers are checked.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Bound of one check request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// At start on a primary's data directory, keep postgres stopped until the coordinator
    /// names this instance the primary of its term (a directory initialised by this run's
    /// initdb starts at once).
    pub wait_for_role: bool,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            coordinator_url: None,
            peers: Vec::new(),
            ca_file: None,
            isolation_timeout: Duration::from_secs(3),
            check_interval: Duration::from_secs(1),
            request_timeout: Duration::from_millis(500),
            wait_for_role: true,
        }
    }
}

/// Problems of the `ha` section (appended to the validator's list).
pub fn check(problems: &mut Vec<String>, ha: &HaConfig) {
    if let Some(url) = &ha.coordinator_url {
        check_url(problems, "ha.coordinator_url", url);
    }
    for (i, peer) in ha.peers.iter().enumerate() {
        check_url(problems, &format!("ha.peers[{i}]"), peer);
    }
    if ha.coordinator_url.is_none() && !ha.peers.is_empty() {
        problems.push(
            "ha.peers: needs ha.coordinator_url (only the coordinator can confirm a primary that stopped itself)"
                .to_owned(),
        );
    }
    if let Some(path) = &ha.ca_file {
        if let Err(e) = pgsteward_tls::pem::roots_from_pem(path) {
            problems.push(format!("ha.ca_file: {e:#}"));
        }
    }
    if ha.check_interval.is_zero() {
        problems.push("ha.check_interval: must be greater than 0".to_owned());
    }
    if ha.request_timeout.is_zero() {
        problems.push("ha.request_timeout: must be greater than 0".to_owned());
    }
    if !ha.isolation_timeout.is_zero() && ha.isolation_timeout < ha.check_interval {
        problems.push(format!(
            "ha.isolation_timeout: {} is shorter than ha.check_interval ({}); use at least one interval, or 0s to turn self-fencing off",
            humantime::format_duration(ha.isolation_timeout),
            humantime::format_duration(ha.check_interval)
        ));
    }
}

fn check_url(problems: &mut Vec<String>, key: &str, url: &str) {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {}
        Ok(_) => problems.push(format!(
            "{key}: {url:?} must be https://host:port or http://host:port"
        )),
        Err(e) => problems.push(format!("{key}: {url:?} is not a URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(ha: &HaConfig) -> Vec<String> {
        let mut p = Vec::new();
        check(&mut p, ha);
        p
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let ha = HaConfig::default();
        assert!(problems(&ha).is_empty());
        assert!(ha.coordinator_url.is_none());
    }

    #[test]
    fn bad_values_are_named() {
        let ha = HaConfig {
            coordinator_url: Some("ftp://x".into()),
            peers: vec!["https://peer:8000".into(), "not a url".into()],
            ca_file: Some("/nonexistent/ca.pem".into()),
            isolation_timeout: Duration::from_millis(100),
            check_interval: Duration::from_secs(1),
            request_timeout: Duration::ZERO,
            wait_for_role: true,
        };
        let p = problems(&ha).join("\n");
        assert!(!p.contains("ha.peers[0]"), "https is accepted: {p}");
        for needle in [
            "ha.coordinator_url: \"ftp://x\" must be https://host:port or http://host:port",
            "ha.ca_file: reading the CA file /nonexistent/ca.pem",
            "ha.peers[1]",
            "ha.request_timeout",
            "ha.isolation_timeout",
        ] {
            assert!(p.contains(needle), "{needle} missing in:\n{p}");
        }
        let peers_alone = HaConfig {
            peers: vec!["http://peer:8000".into()],
            ..HaConfig::default()
        };
        assert!(problems(&peers_alone)
            .join("")
            .contains("needs ha.coordinator_url"));
    }
}
