//! The catalogue of postgres parameters (GUCs) known to a set of binaries, read from
//! `postgres --describe-config`, and the list of parameters the manager owns.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Parameters the manager sets itself; a user setting one of them is rejected.
pub const MANAGER_OWNED: &[&str] = &[
    "allow_alter_system",
    "archive_cleanup_command",
    "archive_command",
    "archive_library",
    "archive_mode",
    "cluster_name",
    "config_file",
    "data_directory",
    "external_pid_file",
    "hba_file",
    "hot_standby",
    "ident_file",
    "listen_addresses",
    "log_destination",
    "log_directory",
    "log_file_mode",
    "log_filename",
    "log_rotation_age",
    "log_rotation_size",
    "log_truncate_on_rotation",
    "logging_collector",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restart_after_crash",
    "restore_command",
    "synchronous_standby_names",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
];

/// When a change of the parameter takes effect (postgres's `pg_settings.context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GucContext {
    /// Only at server start.
    Postmaster,
    /// On reload (sighup, superuser, user, backend, ...).
    Reloadable,
    /// Cannot be set in the configuration file (internal).
    Internal,
}

/// Value type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GucType {
    Bool,
    Integer,
    Real,
    String,
    Enum,
}

/// One parameter as the binaries describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct Guc {
    pub context: GucContext,
    pub vartype: GucType,
}

/// All parameters of one postgres build.
#[derive(Debug, Clone, Default)]
pub struct GucCatalog {
    gucs: BTreeMap<String, Guc>,
}

impl GucCatalog {
    /// Run `<bin_dir>/postgres --describe-config` and parse its output.
    pub fn from_binaries(bin_dir: &Path) -> Result<Self> {
        let postgres = bin_dir.join("postgres");
        let output = Command::new(&postgres)
            .arg("--describe-config")
            .output()
            .with_context(|| format!("running {} --describe-config", postgres.display()))?;
        if !output.status.success() {
            bail!(
                "{} --describe-config failed: {}",
                postgres.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(Self::parse(&String::from_utf8_lossy(&output.stdout)))
    }

    /// Parse `--describe-config` output (tab-separated: name, context, group, type, ...).
    pub fn parse(text: &str) -> Self {
        let mut gucs = BTreeMap::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() < 4 {
                continue;
            }
            let context = match fields[1] {
                "postmaster" => GucContext::Postmaster,
                "internal" => GucContext::Internal,
                _ => GucContext::Reloadable,
            };
            let vartype = match fields[3] {
                "BOOLEAN" => GucType::Bool,
                "INTEGER" => GucType::Integer,
                "REAL" => GucType::Real,
                "ENUM" => GucType::Enum,
                _ => GucType::String,
            };
            gucs.insert(fields[0].to_ascii_lowercase(), Guc { context, vartype });
        }
        GucCatalog { gucs }
    }

    /// The parameter, by case-insensitive name.
    pub fn get(&self, name: &str) -> Option<&Guc> {
        self.gucs.get(&name.to_ascii_lowercase())
    }

    /// Number of known parameters.
    pub fn len(&self) -> usize {
        self.gucs.len()
    }

    /// True when no parameter is known (the binaries printed nothing).
    pub fn is_empty(&self) -> bool {
        self.gucs.is_empty()
    }
}

/// True when the manager owns the parameter.
pub fn is_manager_owned(name: &str) -> bool {
    MANAGER_OWNED.contains(&name.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_describe_config_lines() {
        let text = "shared_buffers\tpostmaster\tResource Usage / Memory\tINTEGER\t1024\t16\t1073741823\tSets\t\n\
                    work_mem\tuser\tResource Usage / Memory\tINTEGER\t4096\t64\t2147483647\tSets\t\n\
                    block_size\tinternal\tPreset Options\tINTEGER\t8192\t8192\t8192\tShows\t\n";
        let catalog = GucCatalog::parse(text);
        assert_eq!(catalog.len(), 3);
        assert_eq!(
            catalog.get("SHARED_BUFFERS").map(|g| g.context),
            Some(GucContext::Postmaster)
        );
        assert_eq!(
            catalog.get("work_mem").map(|g| g.context),
            Some(GucContext::Reloadable)
        );
        assert_eq!(
            catalog.get("block_size").map(|g| g.context),
            Some(GucContext::Internal)
        );
    }

    #[test]
    fn manager_owned_is_case_insensitive() {
        assert!(is_manager_owned("Archive_Command"));
        assert!(!is_manager_owned("work_mem"));
    }
}
