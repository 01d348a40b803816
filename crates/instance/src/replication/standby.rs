//! Standby configuration rendered by the manager before every postgres start (and after a
//! role change): `pgsteward.replication.conf` (included from `pgsteward.conf`) with
//! `primary_conninfo` (application_name = instance name, password through a passfile),
//! `primary_slot_name` and `recovery_target_timeline = latest`; `standby.signal`; and the
//! passfile `pgsteward.pgpass`. On a primary the include file is empty and no signal exists.

use std::path::Path;

use anyhow::{Context, Result};

use super::role::{PersistedRole, RoleState, Upstream};
use crate::config::render::{quote, write_atomically};
use crate::config::Config;

/// Include file with the replication parameters (inside PGDATA).
pub const REPLICATION_FILE: &str = "pgsteward.replication.conf";
/// Passfile for `primary_conninfo` (inside PGDATA, mode 0600).
pub const PASSFILE: &str = "pgsteward.pgpass";
/// Postgres's standby signal file.
pub const STANDBY_SIGNAL: &str = "standby.signal";

/// The replication slot name of an instance (shared with the coordinator).
pub use pgsteward_api::slot_name;

/// The upstream a standby streams from: the role file's, else the bootstrap primary's.
pub fn upstream(config: &Config, state: &RoleState) -> Option<Upstream> {
    state.upstream.clone().or_else(|| {
        let bb = &config.bootstrap.basebackup;
        bb.host.clone().map(|host| Upstream {
            host,
            port: bb.port,
        })
    })
}

/// The `primary_conninfo` of a standby of `upstream` (the passfile only when a password is
/// configured).
pub fn conninfo(config: &Config, upstream: &Upstream, passfile: Option<&Path>) -> String {
    let bb = &config.bootstrap.basebackup;
    let mut parts = vec![
        format!("host={}", conn_quote(&upstream.host)),
        format!("port={}", upstream.port),
        format!("user={}", conn_quote(&bb.user)),
        format!("application_name={}", conn_quote(&config.instance_name)),
        format!("sslmode={}", conn_quote(&bb.sslmode)),
        "connect_timeout=5".to_owned(),
        "keepalives=1".to_owned(),
        "keepalives_idle=5".to_owned(),
        "keepalives_interval=2".to_owned(),
        "keepalives_count=3".to_owned(),
    ];
    if let Some(passfile) = passfile {
        parts.push(format!(
            "passfile={}",
            conn_quote(&passfile.to_string_lossy())
        ));
    }
    parts.join(" ")
}

/// The body of `pgsteward.replication.conf` for `state`.
pub fn render(config: &Config, state: &RoleState, pgdata: &Path) -> String {
    let mut out = String::from(
        "# Managed by pgsteward: do not edit, changes are overwritten.\n# Replication settings of this instance (role file: pgsteward.role.json).\n",
    );
    if state.role == PersistedRole::Primary {
        match super::synchronous::load(pgdata) {
            Some(sync) if !sync.names.is_empty() => out.push_str(&format!(
                "# set by the coordinator in term {} (pgsteward.synchronous.json)\nsynchronous_standby_names = {}\n",
                sync.term,
                quote(&sync.names)
            )),
            _ => out.push_str("# primary: nothing to set\n"),
        }
        return out;
    }
    if state.promoting {
        // Names given with the promotion under way (no effect on a standby; in effect from
        // the promotion on).
        if let Some(sync) =
            super::synchronous::load(pgdata).filter(|s| s.term == state.term && !s.names.is_empty())
        {
            out.push_str(&format!(
                "# given with the promotion to term {} (pgsteward.synchronous.json)\nsynchronous_standby_names = {}\n",
                sync.term,
                quote(&sync.names)
            ));
        }
    }
    out.push_str("recovery_target_timeline = 'latest'\n");
    if let Some(upstream) = upstream(config, state) {
        let passfile = config
            .replication_password_file()
            .map(|_| pgdata.join(PASSFILE));
        out.push_str(&format!(
            "primary_conninfo = {}\n",
            quote(&conninfo(config, &upstream, passfile.as_deref()))
        ));
        out.push_str(&format!(
            "primary_slot_name = {}\n",
            quote(&slot_name(&config.instance_name))
        ));
    } else {
        out.push_str("# no upstream known: recovery from the archive only\n");
    }
    out
}

/// Write the replication files for `state` into `pgdata`; returns true when
/// `pgsteward.replication.conf` changed (postgres must reload). Secrets go only into the
/// passfile.
pub fn write(config: &Config, state: &RoleState, pgdata: &Path) -> Result<bool> {
    let body = render(config, state, pgdata);
    let path = pgdata.join(REPLICATION_FILE);
    let changed = std::fs::read_to_string(&path).ok().as_deref() != Some(body.as_str());
    if changed {
        write_atomically(&path, &body)?;
    }
    let signal = pgdata.join(STANDBY_SIGNAL);
    match state.role {
        PersistedRole::Replica => {
            if let Some(file) = config.replication_password_file() {
                let password = crate::bootstrap::read_secret(file, "replication password")?;
                let line = format!(
                    "*:*:*:{}:{}\n",
                    pgpass_escape(&config.bootstrap.basebackup.user),
                    pgpass_escape(&password)
                );
                let passfile = pgdata.join(PASSFILE);
                if std::fs::read_to_string(&passfile).ok().as_deref() != Some(line.as_str()) {
                    write_atomically(&passfile, &line)?;
                }
            }
            if !signal.exists() {
                std::fs::write(&signal, "")
                    .with_context(|| format!("creating {}", signal.display()))?;
                tracing::info!("standby.signal written: postgres starts as a standby");
            }
        }
        PersistedRole::Primary => {
            if signal.exists() {
                tracing::warn!(
                    "the role file says primary: removing standby.signal left in the data directory"
                );
                std::fs::remove_file(&signal)
                    .with_context(|| format!("removing {}", signal.display()))?;
            }
            let passfile = pgdata.join(PASSFILE);
            if passfile.exists() {
                std::fs::remove_file(&passfile)
                    .with_context(|| format!("removing {}", passfile.display()))?;
            }
        }
    }
    Ok(changed)
}

/// Quote a conninfo value (single quotes, `'` and `\` escaped).
fn conn_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c))
    {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn pgpass_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_settings_are_rendered_and_quoted() {
        let mut config = Config {
            instance_name: "pg-2".into(),
            ..Config::default()
        };
        config.bootstrap.basebackup.password_file = Some("/secrets/pw".into());
        let state = RoleState::replica(
            2,
            Upstream {
                host: "10.0.0.1".into(),
                port: 5433,
            },
        );
        let text = render(&config, &state, Path::new("/data/it's"));
        assert!(
            text.contains("recovery_target_timeline = 'latest'"),
            "{text}"
        );
        assert!(text.contains("primary_slot_name = 'pg_2'"), "{text}");
        assert!(
            text.contains("host=10.0.0.1 port=5433 user=postgres application_name=pg-2"),
            "{text}"
        );
        assert!(
            text.contains(r"passfile=''/data/it\\''s/pgsteward.pgpass''"),
            "{text}"
        );
        let primary = render(&config, &RoleState::primary(3), Path::new("/data"));
        assert!(!primary.contains("primary_conninfo"));
        assert_eq!(pgpass_escape(r"a:b\c"), r"a\:b\\c");
    }
}
