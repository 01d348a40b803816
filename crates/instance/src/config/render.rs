//! Rendering of the manager-owned configuration files in PGDATA: `pgsteward.conf` (included
//! last from `postgresql.conf`, stamped with the sha256 of its content), `pg_hba.conf` and
//! `pg_ident.conf`. Files are written atomically and only when their content changes.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::Config;

/// Name of the manager-owned include file inside PGDATA.
pub const INCLUDE_FILE: &str = "pgsteward.conf";
/// Subdirectory of PGDATA where postgres writes its JSON logs.
pub const LOG_DIRECTORY: &str = "log";
/// The ident map the manager's local superuser connection uses.
const IDENT_MAP: &str = "pgsteward";
const INCLUDE_LINE: &str = "include 'pgsteward.conf'";

/// The three rendered files and their combined hash.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedConfig {
    pub include_file: String,
    pub hba: String,
    pub ident: String,
    /// sha256 (hex) of the three bodies; shown in status as `config_hash`.
    pub hash: String,
}

/// What rendering needs besides the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderContext {
    /// Major version of the binaries.
    pub major: u32,
    /// Operating-system user postgres runs as.
    pub os_user: String,
    /// The pgsteward executable (used in archive_command and restore_command).
    pub executable: std::path::PathBuf,
    /// The data directory.
    pub pgdata: std::path::PathBuf,
}

/// Render the files for `config`.
pub fn render(config: &Config, ctx: &RenderContext) -> RenderedConfig {
    let os_user = ctx.os_user.as_str();
    let body = include_body(config, ctx);
    let include_hash = hex::encode(Sha256::digest(body.as_bytes()));
    let include_file = format!(
        "# Managed by pgsteward: do not edit, changes are overwritten.\n# sha256: {include_hash}\n{body}"
    );
    let hba = hba_body(config);
    let ident = format!(
        "# Managed by pgsteward: do not edit, changes are overwritten.\n{IDENT_MAP} {os_user} {}\n",
        config.postgres.superuser
    );
    let mut hasher = Sha256::new();
    for part in [&include_file, &hba, &ident] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    RenderedConfig {
        include_file,
        hba,
        ident,
        hash: hex::encode(hasher.finalize()),
    }
}

/// `archive_timeout` when archiving and the user sets none: the archive's bound on lost
/// commits (RPO) on a quiet primary.
pub const DEFAULT_ARCHIVE_TIMEOUT: &str = "5min";

fn include_body(config: &Config, ctx: &RenderContext) -> String {
    let major = ctx.major;
    // Defaults that differ from postgres's; a user parameter below overrides them (the
    // last setting in the file wins). A standby whose primary restarted after a crash
    // reconnects within 1 s instead of 5 s (commits wait for it under synchronous
    // replication).
    let mut out = String::from(
        "\n# Defaults (postgres.parameters overrides them)\nwal_retrieve_retry_interval = '1s'\n",
    );
    // With an archive, a quiet primary's last commits would wait in an unfilled segment for
    // as long as it stays quiet: switch segments at least every 5 minutes when anything was
    // written, so the archive alone loses at most 5 minutes (postgres does not switch an idle
    // segment, so an idle cluster archives nothing more).
    if config.archive.destination.is_some() {
        out.push_str(&format!(
            "archive_timeout = {}\n",
            quote(DEFAULT_ARCHIVE_TIMEOUT)
        ));
    }
    out.push_str("\n# User parameters\n");
    for (name, value) in &config.postgres.parameters {
        out.push_str(&format!("{name} = {}\n", quote(&value.as_conf_string())));
    }
    out.push_str("\n# Manager-owned parameters\n");
    let pg = &config.postgres;
    let mut owned: Vec<(&str, String)> = vec![
        ("cluster_name", quote(&config.instance_name)),
        ("listen_addresses", quote(&pg.listen_addresses)),
        ("port", pg.port.to_string()),
        (
            "unix_socket_directories",
            quote(&pg.socket_dir.to_string_lossy()),
        ),
        ("restart_after_crash", "off".to_owned()),
        ("logging_collector", "on".to_owned()),
        ("log_destination", quote("jsonlog")),
        ("log_directory", quote(LOG_DIRECTORY)),
        ("log_filename", quote("postgresql-%Y%m%d-%H%M%S.log")),
        ("log_file_mode", "0600".to_owned()),
        ("log_rotation_age", "0".to_owned()),
        ("log_rotation_size", quote("100MB")),
        ("log_truncate_on_rotation", "off".to_owned()),
    ];
    if major >= 17 {
        owned.push((
            "allow_alter_system",
            if pg.allow_alter_system { "on" } else { "off" }.to_owned(),
        ));
    }
    let archiving = config.archive.destination.is_some();
    let archive_mode = match (archiving, config.archive.wal.archive_on_standbys) {
        (false, _) => "off",
        (true, false) => "on",
        // The same as `on` on a primary; a standby archives what it receives too.
        (true, true) => "always",
    };
    owned.push(("archive_mode", archive_mode.to_owned()));
    if archiving {
        let exe = shell_quote(&ctx.executable.to_string_lossy());
        let pgdata = shell_quote(&ctx.pgdata.to_string_lossy());
        owned.push((
            "archive_command",
            quote(&format!("{exe} wal-archive --pgdata {pgdata} %p")),
        ));
        owned.push((
            "restore_command",
            quote(&format!("{exe} wal-restore --pgdata {pgdata} %f %p")),
        ));
    }
    for (name, value) in owned {
        out.push_str(&format!("{name} = {value}\n"));
    }
    // Standby settings (primary_conninfo, primary_slot_name, ...) follow the persisted role.
    out.push_str("include_if_exists 'pgsteward.replication.conf'\n");
    out
}

/// Quote for /bin/sh (single quotes) and escape `%` for postgres's command placeholders.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''")).replace('%', "%%")
}

fn hba_body(config: &Config) -> String {
    let superuser = &config.postgres.superuser;
    let mut out = String::from(
        "# Managed by pgsteward: do not edit, changes are overwritten.\n\
         # TYPE  DATABASE  USER  ADDRESS  METHOD\n",
    );
    out.push_str(&format!("local all {superuser} peer map={IDENT_MAP}\n"));
    out.push_str("local all all scram-sha-256\n");
    if !config.postgres.hba.is_empty() {
        out.push_str("# From the configuration (postgres.hba)\n");
        for line in &config.postgres.hba {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    if config.postgres.hba_default_rules {
        out.push_str("# Defaults (postgres.hba_default_rules)\n");
        out.push_str("host all all 0.0.0.0/0 scram-sha-256\n");
        out.push_str("host all all ::/0 scram-sha-256\n");
        out.push_str("host replication all 0.0.0.0/0 scram-sha-256\n");
        out.push_str("host replication all ::/0 scram-sha-256\n");
    }
    out
}

/// Quote a value for postgresql.conf (single quotes, with `'` and `\` escaped).
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Write the rendered files into `pgdata` and make sure `postgresql.conf` includes the
/// manager's file last. Returns true when any file changed.
pub fn write(pgdata: &Path, rendered: &RenderedConfig) -> Result<bool> {
    let mut changed = false;
    changed |= write_if_changed(&pgdata.join(INCLUDE_FILE), &rendered.include_file)?;
    changed |= write_if_changed(&pgdata.join("pg_hba.conf"), &rendered.hba)?;
    changed |= write_if_changed(&pgdata.join("pg_ident.conf"), &rendered.ident)?;
    changed |= ensure_include_line(&pgdata.join("postgresql.conf"))?;
    Ok(changed)
}

fn ensure_include_line(path: &Path) -> Result<bool> {
    let current = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let last_directive = current
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'));
    if last_directive == Some(INCLUDE_LINE) {
        return Ok(false);
    }
    let mut text: String = current
        .lines()
        .filter(|l| l.trim() != INCLUDE_LINE)
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str("\n# pgsteward: manager-owned settings, keep this line last\n");
    text.push_str(INCLUDE_LINE);
    text.push('\n');
    write_atomically(path, &text)?;
    Ok(true)
}

fn write_if_changed(path: &Path, content: &str) -> Result<bool> {
    if fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(false);
    }
    write_atomically(path, content)?;
    Ok(true)
}

/// Write through a temporary file in the same directory (mode 0600), fsync, rename, fsync the
/// directory (`pgsteward_archive::atomic_file`): concurrent writers each rename a whole file
/// and the last one wins.
pub fn write_atomically(path: &Path, content: &str) -> Result<()> {
    let options = pgsteward_archive::atomic_file::WriteOptions {
        durable: true,
        mode: Some(0o600),
    };
    pgsteward_archive::atomic_file::write(path, content.as_bytes(), options)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ParamValue;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote(r"it's a \path"), r"'it''s a \\path'");
    }

    #[test]
    fn stamp_hash_matches_body_and_changes_with_parameters() {
        let mut config = Config {
            instance_name: "pg-1".into(),
            ..Config::default()
        };
        let ctx = |major| RenderContext {
            major,
            os_user: "postgres".into(),
            executable: "/usr/bin/pgsteward".into(),
            pgdata: "/data".into(),
        };
        let a = render(&config, &ctx(15));
        let (header, body) = a.include_file.split_once('\n').unwrap_or_default();
        assert!(header.starts_with("# Managed by pgsteward"));
        let (stamp, body) = body.split_once('\n').unwrap_or_default();
        assert_eq!(
            stamp,
            format!("# sha256: {}", hex::encode(Sha256::digest(body.as_bytes())))
        );
        assert!(!a.include_file.contains("allow_alter_system"));
        config
            .postgres
            .parameters
            .insert("work_mem".into(), ParamValue::Text("8MB".into()));
        let b = render(&config, &ctx(18));
        assert_ne!(a.hash, b.hash);
        assert!(b.include_file.contains("work_mem = '8MB'"));
        assert!(b.include_file.contains("allow_alter_system = off"));
    }

    #[test]
    fn archive_commands_are_quoted_for_shell_and_conf() {
        let mut config = Config::default();
        config.archive.destination = Some("file:///backups".into());
        let ctx = RenderContext {
            major: 15,
            os_user: "postgres".into(),
            executable: "/opt/pg steward/bin/pgsteward".into(),
            pgdata: "/data/it's 100%".into(),
        };
        let text = render(&config, &ctx).include_file;
        assert!(text.contains("archive_mode = on"), "{text}");
        assert!(text.contains("archive_timeout = '5min'"), "{text}");
        config.archive.wal.archive_on_standbys = true;
        let always = render(&config, &ctx).include_file;
        assert!(always.contains("archive_mode = always"), "{always}");
        let expected = concat!(
            "archive_command = '",
            "''/opt/pg steward/bin/pgsteward'' wal-archive --pgdata ",
            "''/data/it''\\\\''''s 100%%'' %p'"
        );
        assert!(text.contains(expected), "{text}");
        assert!(
            text.contains("restore_command = '''/opt/pg steward/bin/pgsteward'' wal-restore"),
            "{text}"
        );
    }

    #[test]
    fn archive_timeout_defaults_to_five_minutes_only_when_archiving() {
        let ctx = RenderContext {
            major: 15,
            os_user: "postgres".into(),
            executable: "/usr/bin/pgsteward".into(),
            pgdata: "/data".into(),
        };
        let mut config = Config::default();
        let text = render(&config, &ctx).include_file;
        assert!(!text.contains("archive_timeout"), "{text}");

        config.archive.destination = Some("file:///backups".into());
        config
            .postgres
            .parameters
            .insert("archive_timeout".into(), ParamValue::Text("60s".into()));
        let text = render(&config, &ctx).include_file;
        // postgres takes the last setting in the file: the user's comes after the default.
        let default = text.find("archive_timeout = '5min'");
        let user = text.find("archive_timeout = '60s'");
        assert!(
            default.is_some() && user.is_some() && default < user,
            "{text}"
        );
    }

    #[test]
    fn include_line_is_appended_once_and_kept_last() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let conf = dir.path().join("postgresql.conf");
        fs::write(&conf, "max_connections = 100\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(ensure_include_line(&conf).unwrap_or(false));
        assert!(!ensure_include_line(&conf).unwrap_or(true));
        fs::write(&conf, format!("{INCLUDE_LINE}\nwork_mem = 1MB\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ensure_include_line(&conf).unwrap_or(false));
        let text = fs::read_to_string(&conf).unwrap_or_default();
        assert_eq!(text.matches(INCLUDE_LINE).count(), 1);
        assert!(text.trim_end().ends_with(INCLUDE_LINE));
    }
}
