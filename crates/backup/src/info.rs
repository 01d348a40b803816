//! barman's `backup.info`: `key=value` lines, sorted by key, holding **only** keys barman's
//! `BackupInfo` knows (barman 3.x rejects the whole server's catalog on an unknown key), with
//! `None` for unset values. Typed accessors for what pgsteward reads and writes; anything
//! pgsteward needs beyond this lives in a separate object barman ignores.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Timelike, Utc};

use crate::pyliteral::{self, TablespaceTuple};

/// Every field of barman's `BackupInfo` (barman 3.19), sorted as barman writes them.
pub const KNOWN_FIELDS: &[&str] = &[
    "backup_label",
    "backup_name",
    "begin_offset",
    "begin_time",
    "begin_wal",
    "begin_xlog",
    "children_backup_ids",
    "cluster_size",
    "compression",
    "config_file",
    "copy_stats",
    "data_checksums",
    "deduplicated_size",
    "encryption",
    "end_offset",
    "end_time",
    "end_wal",
    "end_xlog",
    "error",
    "hba_file",
    "ident_file",
    "included_files",
    "mode",
    "parent_backup_id",
    "pgdata",
    "server_name",
    "size",
    "snapshots_info",
    "status",
    "summarize_wal",
    "systemid",
    "tablespaces",
    "timeline",
    "version",
    "xlog_segment_size",
];

/// Fields barman leaves out of the file when unset.
const HIDDEN_IF_UNSET: &[&str] = &["backup_name", "snapshots_info"];

/// The default WAL segment size barman assumes when the field is absent.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// A backup's lifecycle status, as barman spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackupStatus {
    Empty,
    Started,
    Failed,
    WaitingForWals,
    Done,
    Syncing,
}

impl BackupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupStatus::Empty => "EMPTY",
            BackupStatus::Started => "STARTED",
            BackupStatus::Failed => "FAILED",
            BackupStatus::WaitingForWals => "WAITING_FOR_WALS",
            BackupStatus::Done => "DONE",
            BackupStatus::Syncing => "SYNCING",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "EMPTY" => BackupStatus::Empty,
            "STARTED" => BackupStatus::Started,
            "FAILED" => BackupStatus::Failed,
            "WAITING_FOR_WALS" => BackupStatus::WaitingForWals,
            "DONE" => BackupStatus::Done,
            "SYNCING" => BackupStatus::Syncing,
            _ => return None,
        })
    }
}

/// Why a `backup.info` could not be read or a value not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    #[error("backup.info line {line}: no '=' in {text:?}")]
    MalformedLine { line: usize, text: String },
    #[error("backup.info key {0:?} is not a field barman knows (barman would reject the catalog)")]
    UnknownKey(String),
    #[error("backup.info field {key}: invalid value {value:?}: {reason}")]
    InvalidValue {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Python's `str(datetime)` for an aware datetime: `2024-05-01 10:20:30.123456+00:00`, the
/// fraction left out when it is zero.
pub fn format_time(time: &DateTime<FixedOffset>) -> String {
    if time.nanosecond() / 1000 == 0 {
        time.format("%Y-%m-%d %H:%M:%S%:z").to_string()
    } else {
        time.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string()
    }
}

/// Parse the timestamps barman writes (space or `T` separator, optional fraction, offset
/// `+HH:MM`, `+HHMM` or none, which is taken as UTC).
pub fn parse_time(text: &str) -> Option<DateTime<FixedOffset>> {
    let text = text.trim();
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(time) = DateTime::parse_from_str(text, format) {
            return Some(time);
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&naive).fixed_offset());
        }
    }
    None
}

/// barman-cloud's backup id for a start time: `YYYYmmddTHHMMSS`.
pub fn backup_id_for(start: &DateTime<Utc>) -> String {
    start.format("%Y%m%dT%H%M%S").to_string()
}

/// One backup's `backup.info`, identified by the backup id (its directory name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    backup_id: String,
    fields: BTreeMap<&'static str, String>,
}

fn known(key: &str) -> Result<&'static str, InfoError> {
    KNOWN_FIELDS
        .iter()
        .find(|k| **k == key)
        .copied()
        .ok_or_else(|| InfoError::UnknownKey(key.to_owned()))
}

impl BackupInfo {
    /// An empty info for `backup_id` with barman's defaults (status EMPTY, 16 MiB segments).
    pub fn new(backup_id: &str) -> Self {
        let mut fields = BTreeMap::new();
        fields.insert("status", BackupStatus::Empty.as_str().to_owned());
        fields.insert("xlog_segment_size", DEFAULT_SEGMENT_SIZE.to_string());
        BackupInfo {
            backup_id: backup_id.to_owned(),
            fields,
        }
    }

    /// Parse the file's text; unknown keys are refused as barman refuses them.
    pub fn parse(backup_id: &str, text: &str) -> Result<Self, InfoError> {
        let mut info = BackupInfo {
            backup_id: backup_id.to_owned(),
            fields: BTreeMap::new(),
        };
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| InfoError::MalformedLine {
                    line: index + 1,
                    text: line.to_owned(),
                })?;
            let key = known(key.trim())?;
            let value = value.trim();
            if value != "None" {
                info.fields.insert(key, value.to_owned());
            }
        }
        Ok(info)
    }

    /// The file's text: every known field in sorted order, `None` for unset ones.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for key in KNOWN_FIELDS {
            match self.fields.get(key) {
                Some(value) => out.push_str(&format!("{key}={value}\n")),
                None if HIDDEN_IF_UNSET.contains(key) => {}
                None => out.push_str(&format!("{key}=None\n")),
            }
        }
        out
    }

    pub fn backup_id(&self) -> &str {
        &self.backup_id
    }

    /// The raw text of a field, `None` when unset.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// Set a field's raw text (the caller formats it as barman would).
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> Result<(), InfoError> {
        let key = known(key)?;
        let value = value.into();
        if value.contains('\n') {
            return Err(InfoError::InvalidValue {
                key,
                value,
                reason: "a raw value must be one line (use a Python literal)".into(),
            });
        }
        self.fields.insert(key, value);
        Ok(())
    }

    /// Unset a field (written as `None`).
    pub fn unset(&mut self, key: &str) -> Result<(), InfoError> {
        let key = known(key)?;
        self.fields.remove(key);
        Ok(())
    }

    fn typed<T: std::str::FromStr>(&self, key: &'static str) -> Result<Option<T>, InfoError> {
        self.get(key)
            .map(|value| {
                value.parse().map_err(|_| InfoError::InvalidValue {
                    key,
                    value: value.to_owned(),
                    reason: "not a number".into(),
                })
            })
            .transpose()
    }

    fn time(&self, key: &'static str) -> Result<Option<DateTime<FixedOffset>>, InfoError> {
        self.get(key)
            .map(|value| {
                parse_time(value).ok_or_else(|| InfoError::InvalidValue {
                    key,
                    value: value.to_owned(),
                    reason: "not a timestamp".into(),
                })
            })
            .transpose()
    }

    /// The status (EMPTY when unset, as in barman).
    pub fn status(&self) -> Result<BackupStatus, InfoError> {
        match self.get("status") {
            None => Ok(BackupStatus::Empty),
            Some(text) => BackupStatus::parse(text).ok_or_else(|| InfoError::InvalidValue {
                key: "status",
                value: text.to_owned(),
                reason: "not a barman backup status".into(),
            }),
        }
    }

    pub fn set_status(&mut self, status: BackupStatus) {
        self.fields.insert("status", status.as_str().to_owned());
    }

    pub fn begin_time(&self) -> Result<Option<DateTime<FixedOffset>>, InfoError> {
        self.time("begin_time")
    }

    pub fn end_time(&self) -> Result<Option<DateTime<FixedOffset>>, InfoError> {
        self.time("end_time")
    }

    /// Set `begin_time` or `end_time` (any time field) in barman's format.
    pub fn set_time(&mut self, key: &str, time: &DateTime<FixedOffset>) -> Result<(), InfoError> {
        self.set(key, format_time(time))
    }

    pub fn timeline(&self) -> Result<Option<u32>, InfoError> {
        self.typed("timeline")
    }

    pub fn version(&self) -> Result<Option<u32>, InfoError> {
        self.typed("version")
    }

    pub fn size(&self) -> Result<Option<u64>, InfoError> {
        self.typed("size")
    }

    pub fn segment_size(&self) -> Result<u64, InfoError> {
        Ok(self
            .typed("xlog_segment_size")?
            .unwrap_or(DEFAULT_SEGMENT_SIZE))
    }

    pub fn begin_wal(&self) -> Option<&str> {
        self.get("begin_wal")
    }

    pub fn end_wal(&self) -> Option<&str> {
        self.get("end_wal")
    }

    pub fn begin_lsn(&self) -> Option<&str> {
        self.get("begin_xlog")
    }

    pub fn end_lsn(&self) -> Option<&str> {
        self.get("end_xlog")
    }

    pub fn systemid(&self) -> Option<&str> {
        self.get("systemid")
    }

    pub fn error(&self) -> Option<&str> {
        self.get("error")
    }

    /// `backup_label` decoded from its Python literal.
    pub fn backup_label(&self) -> Result<Option<String>, InfoError> {
        self.get("backup_label")
            .map(|value| {
                pyliteral::parse_str(value).map_err(|e| InfoError::InvalidValue {
                    key: "backup_label",
                    value: value.to_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    pub fn set_backup_label(&mut self, label: &str) {
        self.fields
            .insert("backup_label", pyliteral::repr_str(label));
    }

    /// Tablespaces (empty when unset).
    pub fn tablespaces(&self) -> Result<Vec<TablespaceTuple>, InfoError> {
        match self.get("tablespaces") {
            None => Ok(Vec::new()),
            Some(value) => {
                pyliteral::parse_tablespaces(value).map_err(|e| InfoError::InvalidValue {
                    key: "tablespaces",
                    value: value.to_owned(),
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Set tablespaces; an empty list is stored as `None`, as barman does.
    pub fn set_tablespaces(&mut self, tablespaces: &[TablespaceTuple]) {
        if tablespaces.is_empty() {
            self.fields.remove("tablespaces");
        } else {
            self.fields
                .insert("tablespaces", pyliteral::repr_tablespaces(tablespaces));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARMAN_WRITTEN: &str = "backup_label='START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\\nCHECKPOINT LOCATION: 0/4000060\\n'
begin_offset=40
begin_time=2026-11-20 10:00:01.123456+00:00
begin_wal=000000010000000000000004
begin_xlog=0/4000028
children_backup_ids=None
cluster_size=None
compression=gzip
config_file=/var/lib/postgresql/data/postgresql.conf
copy_stats=None
data_checksums=on
deduplicated_size=None
encryption=None
end_offset=312
end_time=2026-11-20 10:00:05+00:00
end_wal=000000010000000000000004
end_xlog=0/4000138
error=None
hba_file=/var/lib/postgresql/data/pg_hba.conf
ident_file=/var/lib/postgresql/data/pg_ident.conf
included_files=None
mode=concurrent
parent_backup_id=None
pgdata=/var/lib/postgresql/data
server_name=cloud
size=None
status=DONE
summarize_wal=None
systemid=7440000000000000000
tablespaces=[('tbs', 16400, '/srv/tbs')]
timeline=1
version=150018
xlog_segment_size=16777216
";

    #[test]
    fn reads_and_rewrites_barman_output_byte_for_byte() {
        let info = BackupInfo::parse("20261120T100001", BARMAN_WRITTEN).unwrap();
        assert_eq!(info.status().unwrap(), BackupStatus::Done);
        assert_eq!(info.timeline().unwrap(), Some(1));
        assert_eq!(info.begin_wal(), Some("000000010000000000000004"));
        assert_eq!(
            info.begin_time().unwrap().unwrap().to_rfc3339(),
            "2026-11-20T10:00:01.123456+00:00"
        );
        assert_eq!(
            info.end_time().unwrap().map(|t| format_time(&t)).as_deref(),
            Some("2026-11-20 10:00:05+00:00")
        );
        assert!(info
            .backup_label()
            .unwrap()
            .unwrap()
            .starts_with("START WAL LOCATION: 0/4000028"));
        assert_eq!(info.tablespaces().unwrap()[0].oid, 16400);
        assert_eq!(info.render(), BARMAN_WRITTEN);
    }

    #[test]
    fn unknown_keys_are_refused_both_ways() {
        assert_eq!(
            BackupInfo::parse("x", "status=DONE\nsha256=abc\n"),
            Err(InfoError::UnknownKey("sha256".into()))
        );
        let mut info = BackupInfo::new("x");
        assert!(info.set("pgsteward_manifest", "x").is_err());
        assert!(info.set("error", "two\nlines").is_err());
    }

    #[test]
    fn new_info_renders_all_fields_as_barman_would() {
        let mut info = BackupInfo::new(&backup_id_for(
            &Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        ));
        assert_eq!(info.backup_id(), "20260102T030405");
        info.set_status(BackupStatus::Failed);
        info.set("error", "failure uploading data (connection refused)")
            .unwrap();
        let text = info.render();
        assert!(text.contains("status=FAILED\n"));
        assert!(text.contains("error=failure uploading data (connection refused)\n"));
        assert!(text.contains("xlog_segment_size=16777216\n"));
        assert!(!text.contains("backup_name"));
        assert_eq!(
            text.lines().count(),
            KNOWN_FIELDS.len() - HIDDEN_IF_UNSET.len()
        );
        assert_eq!(BackupInfo::parse("20260102T030405", &text).unwrap(), info);
    }

    #[test]
    fn times_parse_in_barman_spellings() {
        for text in [
            "2026-11-20 10:00:05+00:00",
            "2026-11-20T10:00:05+0000",
            "2026-11-20 10:00:05",
        ] {
            assert_eq!(
                parse_time(text).map(|t| t.timestamp()),
                Some(1_795_168_805),
                "{text}"
            );
        }
        assert_eq!(parse_time("yesterday"), None);
    }
}
