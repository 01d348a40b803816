//! SIGHUP: the coordinator reads its configuration file again. A file that does not load (bad
//! YAML, a failed check) changes nothing and is logged and counted. Otherwise the settings
//! that can change under a running loop apply at once (timings, switchover limits,
//! `api_tls.client_names`); the others (members, synchronous replication, listen address,
//! state file, TLS files, token file) keep their running values until a restart, and are
//! listed in `/status` (`pending_restart`), the log and the `config_pending_restart` gauge.
//!
//! Members and synchronous replication stay restart-only on purpose: they decide which
//! replicas may be promoted, and changing them between two rounds would let a decision mix the
//! old membership with the new.

use std::path::PathBuf;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::shared::{Command, Shared};

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Settings whose new value applies now.
    pub applied: Vec<&'static str>,
    /// Settings whose new value waits for a restart (the running value stays).
    pub pending_restart: Vec<&'static str>,
}

/// The configuration to run with after `file` was read while running with `running`: the
/// live settings from `file`, the rest from `running`.
pub fn merge(running: &Config, file: &Config) -> (Config, ReloadOutcome) {
    let mut merged = running.clone();
    let mut outcome = ReloadOutcome::default();
    macro_rules! live {
        ($($field:ident),*) => {$(
            if running.$field != file.$field {
                merged.$field = file.$field.clone();
                outcome.applied.push(stringify!($field));
            }
        )*};
    }
    macro_rules! restart_only {
        ($($field:ident),*) => {$(
            if running.$field != file.$field {
                outcome.pending_restart.push(stringify!($field));
            }
        )*};
    }
    live!(
        poll_interval,
        request_timeout,
        action_timeout,
        failure_threshold,
        switchover_timeout,
        switchover_max_lag_bytes,
        switchover_confirm_timeout
    );
    restart_only!(
        listen,
        state_file,
        members,
        synchronous,
        api_token_file,
        tls
    );
    match (&running.api_tls, &file.api_tls) {
        (Some(old), Some(new)) => {
            let mut same_files = old.clone();
            same_files.client_names.clone_from(&new.client_names);
            if same_files != *new {
                outcome.pending_restart.push("api_tls");
            } else if old.client_names != new.client_names {
                // The check allows names only with a client CA, so the CA is there.
                merged.api_tls = Some(same_files);
                outcome.applied.push("api_tls.client_names");
            }
        }
        (None, None) => {}
        _ => outcome.pending_restart.push("api_tls"),
    }
    (merged, outcome)
}

/// On every SIGHUP, load `path` and hand it to the loop (`Command::Reload`); a file that does
/// not load is logged and counted, and the running configuration stays.
pub fn spawn_sighup_handler(path: PathBuf, shared: std::sync::Arc<Shared>) -> anyhow::Result<()> {
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("installing the SIGHUP handler: {e}"))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match Config::load(&path) {
                Ok(config) => {
                    for warning in config.warnings() {
                        tracing::warn!(%warning, "configuration");
                    }
                    if shared
                        .commands
                        .send(Command::Reload(Box::new(config)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    shared.metrics.config_reload_failures.inc();
                    tracing::error!(
                        file = %path.display(),
                        error = %format!("{e:#}"),
                        "SIGHUP: the configuration file does not load; the running configuration stays"
                    );
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(yaml: &str) -> Config {
        let base = "state_file: /tmp/s.json\nmembers:\n- name: a\n  url: http://127.0.0.1:1\n";
        let config: Config = serde_yaml::from_str(&format!("{base}{yaml}")).unwrap();
        config
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let running = config("");
        let (merged, outcome) = merge(&running, &running.clone());
        assert_eq!(merged, running);
        assert_eq!(outcome, ReloadOutcome::default());
    }

    #[test]
    fn timings_apply_and_members_wait_for_a_restart() {
        let running = config("");
        let mut file = config("poll_interval: 2s\nswitchover_max_lag_bytes: 1024\n");
        file.members.push(file.members[0].clone());
        file.members[1].name = "b".into();
        let (merged, outcome) = merge(&running, &file);
        assert_eq!(merged.poll_interval, Duration::from_secs(2));
        assert_eq!(merged.switchover_max_lag_bytes, 1024);
        assert_eq!(merged.members, running.members);
        assert_eq!(
            outcome.applied,
            vec!["poll_interval", "switchover_max_lag_bytes"]
        );
        assert_eq!(outcome.pending_restart, vec!["members"]);
    }

    #[test]
    fn client_names_apply_only_with_the_same_files() {
        let tls = "api_tls:\n  cert_file: /c\n  key_file: /k\n  client_ca_file: /ca\n";
        let running = config(&format!("{tls}  client_names: [old]\n"));
        let file = config(&format!("{tls}  client_names: [new]\n"));
        let (merged, outcome) = merge(&running, &file);
        assert_eq!(
            merged.api_tls.map(|t| t.client_names),
            Some(vec!["new".to_owned()])
        );
        assert_eq!(outcome.applied, vec!["api_tls.client_names"]);
        assert!(outcome.pending_restart.is_empty());

        let moved = config(&format!(
            "{}  client_names: [new]\n",
            tls.replace("/ca", "/other-ca")
        ));
        let (merged, outcome) = merge(&running, &moved);
        assert_eq!(
            merged.api_tls.map(|t| t.client_names),
            Some(vec!["old".to_owned()])
        );
        assert!(outcome.applied.is_empty());
        assert_eq!(outcome.pending_restart, vec!["api_tls"]);
    }

    #[test]
    fn adding_api_tls_waits_for_a_restart() {
        let running = config("");
        let file = config("api_tls:\n  cert_file: /c\n  key_file: /k\n");
        let (merged, outcome) = merge(&running, &file);
        assert!(merged.api_tls.is_none());
        assert_eq!(outcome.pending_restart, vec!["api_tls"]);
    }
}
