//! Layered loading of the configuration: defaults, then the YAML file, then `PGSTEWARD_*`
//! environment variables, then command-line overrides, in increasing precedence.
//!
//! An override names a path in the YAML tree: `PGSTEWARD_HTTP__LISTEN` (double underscore
//! between levels) and `--set http.listen=...` both set `http.listen`. Values are coerced to
//! the type of the default at that path (number, bool, list), so `PGSTEWARD_INSTANCE_NAME=123`
//! stays a string. Unknown paths are errors, like unknown keys in the file.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::{Mapping, Value};

use super::Config;

/// Environment variables with the `PGSTEWARD_` prefix that are not configuration paths.
const RESERVED_ENV: &[&str] = &["CONFIG", "USER"];
/// Prefixes of environment variables reserved for tooling (tests, benchmarks).
const RESERVED_ENV_PREFIXES: &[&str] = &["TEST_", "BENCH_"];

/// Where configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// The YAML file, if any.
    pub file: Option<PathBuf>,
    /// `(KEY, value)` pairs from the environment (all of them; filtered here).
    pub env: Vec<(String, String)>,
    /// `(dotted.path, value)` overrides from flags.
    pub overrides: Vec<(String, String)>,
}

impl ConfigSources {
    /// Sources for a file plus the process environment.
    pub fn from_process(file: Option<PathBuf>, overrides: Vec<(String, String)>) -> Self {
        ConfigSources {
            file,
            env: std::env::vars().collect(),
            overrides,
        }
    }
}

/// Load the configuration from its layers. Does not validate postgres parameters (see
/// `validate`), but does reject unknown keys and wrongly typed values.
pub fn load(sources: &ConfigSources) -> Result<Config> {
    let defaults = serde_yaml::to_value(Config::default()).context("serializing defaults")?;
    let mut tree = defaults.clone();
    if let Some(path) = &sources.file {
        let file_tree = read_yaml(path)?;
        merge(&mut tree, file_tree);
    }
    let mut env_overrides: Vec<(String, String)> = Vec::new();
    for (key, value) in &sources.env {
        let Some(rest) = key.strip_prefix("PGSTEWARD_") else {
            continue;
        };
        if RESERVED_ENV.contains(&rest) || RESERVED_ENV_PREFIXES.iter().any(|p| rest.starts_with(p))
        {
            continue;
        }
        // `__` separates levels; under postgres.parameters it stands for the dot of an
        // extension parameter (PGSTEWARD_POSTGRES__PARAMETERS__PG_STAT_STATEMENTS__MAX).
        let path = rest.to_ascii_lowercase().replace("__", ".");
        env_overrides.push((path, value.clone()));
    }
    env_overrides.sort();
    for (path, value) in env_overrides.iter().chain(sources.overrides.iter()) {
        set_path(&mut tree, &defaults, path, value)
            .with_context(|| format!("applying override {path}={}", redact(path, value)))?;
    }
    let config: Config = serde_yaml::from_value(tree).map_err(|e| anyhow!("{e}"))?;
    Ok(config)
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        format!(
            "reading configuration file {} as user {user:?} (pgsteward reads it after dropping privileges: it must be readable by that user)",
            path.display()
        )
    })?;
    if text.trim().is_empty() {
        return Ok(Value::Mapping(Mapping::new()));
    }
    let value: Value = serde_yaml::from_str(&text)
        .with_context(|| format!("parsing configuration file {}", path.display()))?;
    match value {
        Value::Mapping(_) => Ok(value),
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        _ => bail!(
            "configuration file {} must be a YAML mapping at the top level",
            path.display()
        ),
    }
}

/// Deep-merge `overlay` into `base` (mappings merge key by key; anything else replaces).
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base_map), Value::Mapping(overlay_map)) => {
            for (key, value) in overlay_map {
                match base_map.get_mut(&key) {
                    Some(existing) if existing.is_mapping() && value.is_mapping() => {
                        merge(existing, value)
                    }
                    _ => {
                        base_map.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// Set `dotted.path` in `tree` to `raw`, coerced to the type of the default at that path.
fn set_path(tree: &mut Value, defaults: &Value, path: &str, raw: &str) -> Result<()> {
    let mut parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("invalid configuration path {path:?}");
    }
    // `postgres.parameters.pg_stat_statements.max`: the parameter name keeps its dots.
    let joined;
    if parts.len() > 3 && parts[0] == "postgres" && parts[1] == "parameters" {
        joined = parts[2..].join(".");
        parts.truncate(2);
        parts.push(&joined);
    }
    let default_here = parts
        .iter()
        .try_fold(defaults, |node, part| node.get(*part));
    let value = coerce(raw, default_here)?;
    let mut node = tree;
    for (index, part) in parts.iter().enumerate() {
        let last = index + 1 == parts.len();
        let map = match node {
            Value::Mapping(map) => map,
            Value::Null => {
                *node = Value::Mapping(Mapping::new());
                match node {
                    Value::Mapping(map) => map,
                    _ => unreachable!("just set to a mapping"),
                }
            }
            _ => bail!("{path}: {part:?} is inside a value that is not a mapping"),
        };
        let key = Value::String((*part).to_owned());
        if last {
            map.insert(key, value);
            return Ok(());
        }
        node = map.entry(key).or_insert(Value::Null);
    }
    Ok(())
}

fn coerce(raw: &str, default: Option<&Value>) -> Result<Value> {
    Ok(match default {
        Some(Value::Number(_)) => serde_yaml::from_str::<Value>(raw)
            .ok()
            .filter(Value::is_number)
            .ok_or_else(|| anyhow!("expected a number, got {raw:?}"))?,
        Some(Value::Bool(_)) => match raw.to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Value::Bool(true),
            "false" | "off" | "no" | "0" => Value::Bool(false),
            _ => bail!("expected true or false, got {raw:?}"),
        },
        Some(Value::Sequence(_)) => {
            let parsed: Value =
                serde_yaml::from_str(raw).context("expected a YAML list such as [a, b]")?;
            if !parsed.is_sequence() {
                bail!("expected a YAML list such as [a, b], got {raw:?}");
            }
            parsed
        }
        // Strings, optional values and map entries (postgres parameters) stay strings.
        _ => Value::String(raw.to_owned()),
    })
}

/// Never echo values of keys that look secret.
fn redact<'a>(path: &str, value: &'a str) -> &'a str {
    let lower = path.to_ascii_lowercase();
    if lower.contains("password") || lower.contains("token") || lower.contains("secret") {
        "<redacted>"
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sources(yaml: &str, env: &[(&str, &str)], overrides: &[(&str, &str)]) -> ConfigSources {
        let mut file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        file.write_all(yaml.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, path) = file.keep().unwrap_or_else(|e| panic!("{e}"));
        ConfigSources {
            file: Some(path),
            env: env
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            overrides: overrides
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn precedence_file_then_env_then_flags() {
        let s = sources(
            "instance_name: from-file\npostgres:\n  port: 6000\n  parameters:\n    work_mem: 4MB\n",
            &[
                ("PGSTEWARD_POSTGRES__PORT", "6001"),
                ("PGSTEWARD_INSTANCE_NAME", "123"),
                ("PGSTEWARD_TEST_PG18_BIN", "/ignored"),
                ("UNRELATED", "x"),
            ],
            &[("postgres.port", "6002")],
        );
        let config = load(&s).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.instance_name, "123");
        assert_eq!(config.postgres.port, 6002);
        assert_eq!(
            config.postgres.parameters.get("work_mem"),
            Some(&super::super::ParamValue::Text("4MB".into()))
        );
    }

    #[test]
    fn extension_parameters_keep_their_dots() {
        let s = sources(
            "",
            &[(
                "PGSTEWARD_POSTGRES__PARAMETERS__AUTO_EXPLAIN__LOG_MIN_DURATION",
                "5s",
            )],
            &[("postgres.parameters.pg_stat_statements.max", "1000")],
        );
        let config = load(&s).unwrap_or_else(|e| panic!("{e:#}"));
        let keys: Vec<&String> = config.postgres.parameters.keys().collect();
        assert_eq!(
            keys,
            ["auto_explain.log_min_duration", "pg_stat_statements.max"]
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let s = sources("postgress:\n  port: 1\n", &[], &[]);
        let err = load(&s).map(|_| ()).unwrap_err();
        assert!(format!("{err:#}").contains("postgress"), "{err:#}");
        let s = sources("", &[("PGSTEWARD_HTTP__LISTN", "1")], &[]);
        let err = load(&s).map(|_| ()).unwrap_err();
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
    }

    #[test]
    fn wrong_types_are_errors() {
        let s = sources("", &[], &[("postgres.port", "many")]);
        let err = load(&s).map(|_| ()).unwrap_err();
        assert!(format!("{err:#}").contains("expected a number"), "{err:#}");
        let s = sources("shutdown:\n  stop_delay: soon\n", &[], &[]);
        assert!(load(&s).is_err());
    }

    #[test]
    fn lists_and_durations_from_env() {
        let s = sources(
            "",
            &[
                (
                    "PGSTEWARD_POSTGRES__HBA",
                    "[\"host all all 10.0.0.0/8 scram-sha-256\"]",
                ),
                ("PGSTEWARD_SHUTDOWN__STOP_DELAY", "45s"),
            ],
            &[],
        );
        let config = load(&s).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.postgres.hba.len(), 1);
        assert_eq!(
            config.shutdown.stop_delay,
            std::time::Duration::from_secs(45)
        );
    }

    #[test]
    fn optional_numbers_from_flags_and_env() {
        let s = sources(
            "",
            &[("PGSTEWARD_BOOTSTRAP__RECOVERY__TARGET__XID", "1234")],
            &[("bootstrap.initdb.wal_segment_size_mb", "64")],
        );
        let config = load(&s).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.bootstrap.initdb.wal_segment_size_mb, Some(64));
        assert_eq!(config.bootstrap.recovery.target.xid, Some(1234));
        let s = sources("", &[], &[("bootstrap.initdb.wal_segment_size_mb", "big")]);
        let err = load(&s).map(|_| ()).unwrap_err();
        assert!(
            format!("{err:#}").contains("\"big\" is not a number"),
            "{err:#}"
        );
    }
}
