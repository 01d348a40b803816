//! Validation of a loaded configuration against the postgres binaries it will run: required
//! fields, names (instance, database, roles), and every user parameter (unknown names,
//! manager-owned names, values of the wrong type). All problems are reported at once.

use std::fmt;

use super::gucs::{is_manager_owned, GucCatalog, GucContext, GucType};
use super::{Config, ParamValue};

/// Everything wrong with a configuration, each problem naming its key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigProblems {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

/// Check `config` against `catalog` (the GUCs of the binaries that will run it).
pub fn validate(config: &Config, catalog: &GucCatalog) -> Result<(), ConfigProblems> {
    let mut problems = Vec::new();
    if config.pgdata.is_none() {
        problems.push("pgdata: required (the data directory path)".to_owned());
    }
    if let Some(pgdata) = &config.pgdata {
        if !pgdata.is_absolute() {
            problems.push(format!(
                "pgdata: must be an absolute path, got {}",
                pgdata.display()
            ));
        }
    }
    if !is_valid_instance_name(&config.instance_name) {
        problems.push(format!(
            "instance_name: {:?} must be 1-63 characters of a-z, 0-9, '-' and '_'",
            config.instance_name
        ));
    }
    check_identifier(
        &mut problems,
        "postgres.superuser",
        Some(&config.postgres.superuser),
    );
    let init = &config.bootstrap.initdb;
    check_identifier(
        &mut problems,
        "bootstrap.initdb.database",
        init.database.as_deref(),
    );
    check_identifier(
        &mut problems,
        "bootstrap.initdb.owner",
        init.owner.as_deref(),
    );
    if init.database.is_some() != init.owner.is_some() {
        problems.push("bootstrap.initdb: database and owner must be set together".to_owned());
    }
    if init.owner_password_file.is_some() && init.owner.is_none() {
        problems.push("bootstrap.initdb.owner_password_file: set without an owner".to_owned());
    }
    if let Some(mb) = init.wal_segment_size_mb {
        if !pgsteward_archive::walheader::is_segment_size(u64::from(mb) << 20) {
            problems.push(format!(
                "bootstrap.initdb.wal_segment_size_mb: {mb} is not a power of two from 1 to 1024"
            ));
        }
    }
    if init.locale.is_empty() || init.locale.contains(char::is_whitespace) {
        problems.push(format!(
            "bootstrap.initdb.locale: invalid locale {:?}",
            init.locale
        ));
    }
    if config.bootstrap.method == super::recovery::BootstrapMethod::Recovery {
        problems.extend(config.bootstrap.recovery.problems(config));
    }
    problems.extend(config.archive.drill.problems(config));
    if config.metrics.namespace.is_empty()
        || !config
            .metrics
            .namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        problems.push(format!(
            "metrics.namespace: {:?} must be letters, digits and '_'",
            config.metrics.namespace
        ));
    }
    if config.shutdown.smart_shutdown_timeout > config.shutdown.stop_delay {
        problems.push("shutdown.smart_shutdown_timeout: must not exceed stop_delay".to_owned());
    }
    if config.restart.max_crashes == 0 {
        problems.push("restart.max_crashes: must be at least 1".to_owned());
    }
    for line in &config.postgres.hba {
        if line.contains('\n') || line.trim().is_empty() {
            problems.push(format!("postgres.hba: invalid line {line:?}"));
        }
    }
    check_archive(&mut problems, config);
    check_client_certificates(&mut problems, config);
    super::replication::check(&mut problems, config);
    super::ha::check(&mut problems, &config.ha);
    check_parameters(&mut problems, config, catalog);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigProblems { problems })
    }
}

fn check_parameters(problems: &mut Vec<String>, config: &Config, catalog: &GucCatalog) {
    let mut owned = Vec::new();
    let mut unknown = Vec::new();
    for (name, value) in &config.postgres.parameters {
        if is_manager_owned(name) {
            owned.push(name.clone());
            continue;
        }
        if name.contains('.') {
            // Extension parameters (`pg_stat_statements.max`): postgres accepts placeholders.
            if !name.split('.').all(is_simple_name) {
                problems.push(format!(
                    "postgres.parameters.{name}: invalid parameter name"
                ));
            }
            continue;
        }
        let Some(guc) = catalog.get(name) else {
            unknown.push(name.clone());
            continue;
        };
        if guc.context == GucContext::Internal {
            problems.push(format!(
                "postgres.parameters.{name}: read-only parameter, cannot be set"
            ));
            continue;
        }
        if let Err(why) = check_value(guc.vartype, value) {
            problems.push(format!("postgres.parameters.{name}: {why}"));
        }
    }
    if !owned.is_empty() {
        problems.push(format!(
            "postgres.parameters: managed by pgsteward, remove: {}",
            owned.join(", ")
        ));
    }
    if !unknown.is_empty() {
        problems.push(format!(
            "postgres.parameters: unknown to these postgres binaries: {}",
            unknown.join(", ")
        ));
    }
}

fn check_archive(problems: &mut Vec<String>, config: &Config) {
    let archive = &config.archive;
    if let Some(destination) = &archive.destination {
        match url::Url::parse(destination) {
            Ok(url) if url.scheme() == "s3" && url.host_str().is_some_and(|h| !h.is_empty()) => {}
            Ok(url) if url.scheme() == "file" && url.host_str().is_none_or(str::is_empty) && url.path().len() > 1 => {}
            _ => problems.push(format!(
                "archive.destination: {destination:?} must be s3://bucket[/prefix] or file:///absolute/path"
            )),
        }
    }
    if let Some(server) = &archive.server_name {
        if server.is_empty() || server.contains('/') || server.contains("..") {
            problems.push(format!(
                "archive.server_name: {server:?} must be a non-empty name without '/'"
            ));
        }
    }
    problems.extend(archive.data.problems());
    if !(1..=9).contains(&archive.wal.gzip_level) {
        problems.push(format!(
            "archive.wal.gzip_level: {} must be 1-9",
            archive.wal.gzip_level
        ));
    }
    if !(1..=64).contains(&archive.wal.max_parallel) {
        problems.push(format!(
            "archive.wal.max_parallel: {} must be 1-64",
            archive.wal.max_parallel
        ));
    }
    if archive.wal.timeout < std::time::Duration::from_secs(1) {
        problems.push("archive.wal.timeout: must be at least 1s".to_owned());
    }
    if archive.wal.check_interval < std::time::Duration::from_secs(1) {
        problems.push("archive.wal.check_interval: must be at least 1s".to_owned());
    }
    if archive.wal.archive_on_standbys && archive.wal.standby_grace * 2 > archive.wal.timeout {
        problems.push(format!(
            "archive.wal.standby_grace: {} must be at most half of archive.wal.timeout ({}): a standby's archive_command waits through it",
            humantime::format_duration(archive.wal.standby_grace),
            humantime::format_duration(archive.wal.timeout)
        ));
    }
    if archive.s3.kms_key_id.is_some()
        && archive.s3.sse != pgsteward_archive::store::ServerSideEncryption::AwsKms
    {
        problems.push("archive.s3.kms_key_id: only used with sse: aws_kms".to_owned());
    }
    if let Some(policy) = &archive.retention_policy {
        if let Err(e) = pgsteward_backup::retention::RetentionPolicy::parse(policy) {
            problems.push(format!("archive.retention_policy: {e}"));
        }
        if archive.destination.is_none() {
            problems.push(
                "archive.retention_policy: needs archive.destination (nothing to apply it to)"
                    .to_owned(),
            );
        }
    }
    if archive.retention_interval < std::time::Duration::from_secs(1) {
        problems.push("archive.retention_interval: must be at least 1s".to_owned());
    }
    if archive.wal.prefetch > 64 {
        problems.push(format!(
            "archive.wal.prefetch: {} must be 0-64",
            archive.wal.prefetch
        ));
    }
    if archive.s3.access_key_id_file.is_some() != archive.s3.secret_access_key_file.is_some() {
        problems.push(
            "archive.s3: access_key_id_file and secret_access_key_file must be set together"
                .to_owned(),
        );
    }
    if archive.s3.sse == pgsteward_archive::store::ServerSideEncryption::AwsKms
        && archive.s3.kms_key_id.is_none()
    {
        problems.push("archive.s3.kms_key_id: required with sse: aws_kms".to_owned());
    }
}

/// `http.tls.client_names` need the client CA they are matched under, and must be names.
fn check_client_certificates(problems: &mut Vec<String>, config: &Config) {
    let Some(tls) = &config.http.tls else {
        return;
    };
    if !tls.client_names.is_empty() && tls.client_ca_file.is_none() {
        problems.push(
            "http.tls.client_names: set without client_ca_file (no client certificate is asked for)"
                .to_owned(),
        );
    }
    if let Err(e) = pgsteward_tls::peer::validate_allowed_names(&tls.client_names) {
        problems.push(format!("http.tls.client_names: {e}"));
    }
}

fn check_value(vartype: GucType, value: &ParamValue) -> Result<(), String> {
    let text = value.as_conf_string();
    match vartype {
        GucType::Bool => {
            let ok = matches!(value, ParamValue::Bool(_))
                || matches!(
                    text.to_ascii_lowercase().as_str(),
                    "on" | "off" | "true" | "false" | "yes" | "no" | "1" | "0"
                );
            if ok {
                Ok(())
            } else {
                Err(format!("expected a boolean, got {text:?}"))
            }
        }
        GucType::Integer | GucType::Real => {
            let trimmed = text.trim();
            let numeric: String = trimmed
                .chars()
                .take_while(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
                .collect();
            let unit = trimmed[numeric.len()..].trim();
            let number_ok = if vartype == GucType::Integer {
                numeric.parse::<i64>().is_ok() || numeric.parse::<f64>().is_ok()
            } else {
                numeric.parse::<f64>().is_ok()
            };
            const UNITS: &[&str] = &[
                "", "B", "kB", "MB", "GB", "TB", "us", "ms", "s", "min", "h", "d",
            ];
            if number_ok && UNITS.contains(&unit) {
                Ok(())
            } else {
                Err(format!(
                    "expected a number with an optional unit, got {text:?}"
                ))
            }
        }
        GucType::String | GucType::Enum => {
            if text.contains('\n') || text.contains('\0') {
                Err("value contains a newline or NUL".to_owned())
            } else {
                Ok(())
            }
        }
    }
}

fn check_identifier(problems: &mut Vec<String>, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        if !is_simple_name(value) {
            problems.push(format!(
                "{key}: {value:?} must be 1-63 characters of a-z, 0-9 and '_', not starting with a digit"
            ));
        }
    }
}

fn is_simple_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

fn is_valid_instance_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn catalog() -> GucCatalog {
        GucCatalog::parse(
            "shared_buffers\tpostmaster\tx\tINTEGER\t\t\t\t\t\n\
             work_mem\tuser\tx\tINTEGER\t\t\t\t\t\n\
             jit\tuser\tx\tBOOLEAN\t\t\t\t\t\n\
             port\tpostmaster\tx\tINTEGER\t\t\t\t\t\n\
             block_size\tinternal\tx\tINTEGER\t\t\t\t\t\n",
        )
    }

    fn config_with(params: &[(&str, ParamValue)]) -> Config {
        let mut config = Config {
            pgdata: Some(PathBuf::from("/data")),
            instance_name: "pg-1".into(),
            ..Config::default()
        };
        for (k, v) in params {
            config.postgres.parameters.insert((*k).into(), v.clone());
        }
        config
    }

    #[test]
    fn lists_every_offending_key() {
        let config = config_with(&[
            ("port", ParamValue::Integer(1)),
            ("archive_command", ParamValue::Text("x".into())),
            ("work_mme", ParamValue::Text("4MB".into())),
            ("shared_buffer", ParamValue::Text("4MB".into())),
            ("jit", ParamValue::Text("maybe".into())),
            ("block_size", ParamValue::Integer(1)),
        ]);
        let problems = validate(&config, &catalog()).unwrap_err().to_string();
        assert!(
            problems.contains("managed by pgsteward, remove: archive_command, port"),
            "{problems}"
        );
        assert!(
            problems.contains("unknown to these postgres binaries: shared_buffer, work_mme"),
            "{problems}"
        );
        assert!(problems.contains("jit: expected a boolean"), "{problems}");
        assert!(problems.contains("block_size: read-only"), "{problems}");
    }

    #[test]
    fn standby_grace_fits_in_the_call_timeout() {
        let mut config = config_with(&[]);
        config.archive.wal.archive_on_standbys = true;
        config.archive.wal.standby_grace = std::time::Duration::from_secs(31);
        let problems = validate(&config, &catalog()).unwrap_err().to_string();
        assert!(
            problems.contains("archive.wal.standby_grace: 31s must be at most half"),
            "{problems}"
        );
        config.archive.wal.standby_grace = std::time::Duration::from_secs(30);
        assert_eq!(validate(&config, &catalog()), Ok(()));
    }

    #[test]
    fn wal_segment_sizes_are_powers_of_two_up_to_a_gibibyte() {
        let mut config = config_with(&[]);
        for good in [1, 16, 64, 1024] {
            config.bootstrap.initdb.wal_segment_size_mb = Some(good);
            assert_eq!(validate(&config, &catalog()), Ok(()), "{good}");
        }
        for bad in [0, 3, 2048] {
            config.bootstrap.initdb.wal_segment_size_mb = Some(bad);
            let problems = validate(&config, &catalog()).unwrap_err().to_string();
            assert!(
                problems.contains(&format!(
                    "bootstrap.initdb.wal_segment_size_mb: {bad} is not a power of two"
                )),
                "{problems}"
            );
        }
    }

    #[test]
    fn accepts_good_values() {
        let config = config_with(&[
            ("shared_buffers", ParamValue::Text("256MB".into())),
            ("work_mem", ParamValue::Integer(4096)),
            ("jit", ParamValue::Bool(false)),
            ("pg_stat_statements.max", ParamValue::Integer(1000)),
        ]);
        assert_eq!(validate(&config, &catalog()), Ok(()));
    }

    #[test]
    fn client_names_need_a_client_ca_and_must_be_names() {
        let mut config = config_with(&[]);
        config.http.tls = Some(crate::config::TlsConfig {
            cert_file: "/c.pem".into(),
            key_file: "/k.pem".into(),
            client_ca_file: None,
            client_names: vec!["coordinator".into(), "two words".into()],
        });
        let problems = validate(&config, &catalog()).unwrap_err().problems;
        assert!(
            problems
                .iter()
                .any(|p| p.contains("without client_ca_file")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("\"two words\" is not a DNS name")),
            "{problems:?}"
        );
        if let Some(tls) = config.http.tls.as_mut() {
            tls.client_ca_file = Some("/ca.pem".into());
            tls.client_names = vec!["coordinator".into(), "10.0.0.7".into()];
        }
        assert!(validate(&config, &catalog()).is_ok());
    }

    #[test]
    fn requires_pgdata_and_pairs() {
        let mut config = Config {
            instance_name: "Bad Name".into(),
            ..Config::default()
        };
        config.bootstrap.initdb.database = Some("app".into());
        let problems = validate(&config, &catalog()).unwrap_err().to_string();
        assert!(problems.contains("pgdata: required"));
        assert!(problems.contains("instance_name"));
        assert!(problems.contains("database and owner must be set together"));
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[test]
    fn retention_policy_is_checked_at_load() {
        let mut config = Config {
            pgdata: Some("/data".into()),
            ..Config::default()
        };
        config.archive.retention_policy = Some("30 days".into());
        config.archive.retention_interval = std::time::Duration::from_millis(10);
        let mut problems = Vec::new();
        check_archive(&mut problems, &config);
        let text = problems.join("\n");
        assert!(
            text.contains("archive.retention_policy: invalid retention policy \"30 days\""),
            "{text}"
        );
        assert!(text.contains("needs archive.destination"), "{text}");
        assert!(
            text.contains("archive.retention_interval: must be at least 1s"),
            "{text}"
        );
        config.archive.destination = Some("file:///backups".into());
        config.archive.retention_policy = Some("RECOVERY WINDOW OF 4 WEEKS".into());
        config.archive.retention_interval = std::time::Duration::from_secs(3600);
        let mut problems = Vec::new();
        check_archive(&mut problems, &config);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            Config::default().archive.retention_interval,
            std::time::Duration::from_secs(3600)
        );
    }
}
