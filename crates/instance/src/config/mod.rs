//! The manager's configuration: the typed model of the YAML file, its defaults, and the
//! entry points that load (`load`), validate (`validate`) and render (`render`) it.

pub mod backup;
pub mod gucs;
pub mod ha;
pub mod layers;
pub mod optional_number;
pub mod recovery;
pub mod render;
pub mod replication;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use layers::{load, ConfigSources};

/// The whole configuration of one instance manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Instance name: postgres `cluster_name`, status, metrics label. Defaults to the host name.
    pub instance_name: String,
    /// The data directory. Required.
    pub pgdata: Option<PathBuf>,
    /// Directory of the postgres binaries; detected when unset (`pg_config --bindir`, then the
    /// newest `/usr/lib/postgresql/*/bin`).
    pub bin_dir: Option<PathBuf>,
    pub postgres: PostgresConfig,
    pub bootstrap: BootstrapConfig,
    pub http: HttpConfig,
    pub metrics: MetricsConfig,
    pub shutdown: ShutdownConfig,
    pub restart: RestartPolicy,
    pub log: LogConfig,
    pub archive: ArchiveConfig,
    pub replication: replication::ReplicationConfig,
    pub ha: ha::HaConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instance_name: default_instance_name(),
            pgdata: None,
            bin_dir: None,
            postgres: PostgresConfig::default(),
            bootstrap: BootstrapConfig::default(),
            http: HttpConfig::default(),
            metrics: MetricsConfig::default(),
            shutdown: ShutdownConfig::default(),
            restart: RestartPolicy::default(),
            log: LogConfig::default(),
            archive: ArchiveConfig::default(),
            replication: replication::ReplicationConfig::default(),
            ha: ha::HaConfig::default(),
        }
    }
}

/// The host name made valid as an instance name: lower case, first label only, characters
/// outside `a-z0-9-_` replaced by `-`, at most 63 characters.
fn default_instance_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let label = host.split('.').next().unwrap_or("").to_ascii_lowercase();
    let name: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    if name.is_empty() {
        "pgsteward".to_owned()
    } else {
        name
    }
}

/// A postgres parameter value as written in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Integer(i64),
    Real(f64),
    Text(String),
}

impl ParamValue {
    /// The value as postgres would read it, before quoting.
    pub fn as_conf_string(&self) -> String {
        match self {
            ParamValue::Bool(b) => if *b { "on" } else { "off" }.to_owned(),
            ParamValue::Integer(i) => i.to_string(),
            ParamValue::Real(r) => r.to_string(),
            ParamValue::Text(s) => s.clone(),
        }
    }
}

/// How postgres itself is configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// TCP port postgres listens on.
    pub port: u16,
    /// `listen_addresses`.
    pub listen_addresses: String,
    /// Directory of postgres's Unix socket (the manager connects through it).
    pub socket_dir: PathBuf,
    /// Database superuser name (created by initdb; the manager connects as it).
    pub superuser: String,
    /// User parameters (`shared_buffers: 256MB`, ...). Manager-owned names are rejected.
    pub parameters: BTreeMap<String, ParamValue>,
    /// Extra pg_hba.conf lines, placed after the manager's local rules and before the defaults.
    pub hba: Vec<String>,
    /// Append the default `host all all 0.0.0.0/0 scram-sha-256` rules (and ::/0).
    pub hba_default_rules: bool,
    /// Restart postgres automatically when a reload leaves parameters pending a restart.
    pub restart_on_pending: bool,
    /// Keep `ALTER SYSTEM` enabled (PostgreSQL 17+; off by default so the file stays the truth).
    pub allow_alter_system: bool,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            port: 5432,
            listen_addresses: "*".to_owned(),
            socket_dir: PathBuf::from("/tmp"),
            superuser: "postgres".to_owned(),
            parameters: BTreeMap::new(),
            hba: Vec::new(),
            hba_default_rules: true,
            restart_on_pending: false,
            allow_alter_system: false,
        }
    }
}

/// What to do on an empty data directory.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// `initdb` (default), `basebackup` (clone a running primary as its standby) or
    /// `recovery` (from a base backup and the WAL archive).
    pub method: BootstrapMethod,
    pub initdb: InitdbConfig,
    pub basebackup: replication::BasebackupConfig,
    pub recovery: recovery::RecoveryConfig,
}

/// initdb and post-init steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InitdbConfig {
    /// `--locale` (encoding is always UTF8).
    pub locale: String,
    /// `--data-checksums` (on by default; PostgreSQL 18 enables them by default too).
    pub data_checksums: bool,
    /// `--wal-segsize`: the WAL segment size in MiB, a power of two from 1 to 1024 (default:
    /// postgres's, 16). Fixed at initdb; archiving, restores and `wal check` follow the
    /// cluster's own size. WAL transfers hold whole segments in memory (about 2 x segment size
    /// x `archive.wal.max_parallel`).
    #[serde(with = "optional_number")]
    pub wal_segment_size_mb: Option<u32>,
    /// File whose first line is the superuser's password (scram-sha-256).
    pub superuser_password_file: Option<PathBuf>,
    /// Application database to create.
    pub database: Option<String>,
    /// Owner role of the application database (created with LOGIN).
    pub owner: Option<String>,
    /// File whose first line is the owner's password.
    pub owner_password_file: Option<PathBuf>,
    /// SQL files run as the superuser, in order, after the application database exists
    /// (in the application database when there is one, else in `postgres`).
    pub post_init_sql_files: Vec<PathBuf>,
}

impl Default for InitdbConfig {
    fn default() -> Self {
        InitdbConfig {
            locale: "C.UTF-8".to_owned(),
            data_checksums: true,
            wal_segment_size_mb: None,
            superuser_password_file: None,
            database: None,
            owner: None,
            owner_password_file: None,
            post_init_sql_files: Vec::new(),
        }
    }
}

/// The HTTP API listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// File holding the bearer token of mutating routes. Without it those routes answer 403.
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate and key (PEM).
    pub tls: Option<TlsConfig>,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            token_file: None,
            tls: None,
            body_limit_bytes: 64 * 1024,
        }
    }
}

/// TLS certificate chain and private key, both PEM files, and optionally the CA of client
/// certificates that authorize the mutating routes (mutual TLS) instead of the bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// PEM bundle of the CA(s) whose client certificates may use the mutating routes. Clients
    /// without a certificate (probes, status) are still served; a certificate from another CA
    /// fails the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// When not empty, only client certificates valid for one of these names (DNS names or
    /// IP addresses of their subjectAltName) authorize; others fall back to the bearer token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_names: Vec<String>,
}

/// The Prometheus listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
    /// Metric name prefix: `pgsteward` (default) or `cnpg` for CNPG-compatible names.
    pub namespace: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9187)),
            namespace: "pgsteward".to_owned(),
        }
    }
}

/// Shutdown escalation (same meaning as CNPG's smartShutdownTimeout and stopDelay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long a smart shutdown may take before it becomes a fast one.
    #[serde(with = "humantime_serde")]
    pub smart_shutdown_timeout: Duration,
    /// Total time from the shutdown signal after which a fast shutdown becomes immediate.
    #[serde(with = "humantime_serde")]
    pub stop_delay: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            smart_shutdown_timeout: Duration::from_secs(180),
            stop_delay: Duration::from_secs(1800),
        }
    }
}

/// Crash-restart policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartPolicy {
    /// After this many unexpected postmaster exits within `crash_window`, exit non-zero.
    pub max_crashes: u32,
    #[serde(with = "humantime_serde")]
    pub crash_window: Duration,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_crashes: 5,
            crash_window: Duration::from_secs(600),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// The manager's own logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter (`info`, `debug`, `pgsteward=debug,info`, ...).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
        }
    }
}

/// Continuous WAL archiving (and the restore command) to an object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// `s3://bucket/prefix` or `file:///path`; archiving is off when unset.
    pub destination: Option<String>,
    /// barman's server name (the folder below the destination); defaults to instance_name.
    pub server_name: Option<String>,
    /// Allow the first archive of this data directory into a destination that already holds
    /// WAL for the server (default: refuse, as barman-cloud-check-wal-archive does).
    pub allow_existing_wal: bool,
    pub s3: S3Config,
    pub wal: WalArchiveConfig,
    /// Base backups (`POST /pg/backup`, `pgsteward backup`).
    pub data: backup::DataBackupConfig,
    /// Retention of base backups and WAL: `30d`, `4w`, `6m`, `RECOVERY WINDOW OF n
    /// DAYS|WEEKS|MONTHS` or `REDUNDANCY n` (barman-cloud-backup-delete's semantics); the
    /// primary's manager applies it every `retention_interval`. None: nothing is deleted.
    pub retention_policy: Option<String>,
    /// How often the primary's manager applies the retention policy.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Backups never deleted by retention whatever the policy says (barman's
    /// `minimum_redundancy`).
    pub minimum_redundancy: u32,
    /// Periodic restore drills of the latest backup.
    pub drill: recovery::DrillConfig,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            destination: None,
            server_name: None,
            allow_existing_wal: false,
            s3: S3Config::default(),
            wal: WalArchiveConfig::default(),
            data: backup::DataBackupConfig::default(),
            retention_policy: None,
            retention_interval: Duration::from_secs(3600),
            minimum_redundancy: 0,
            drill: recovery::DrillConfig::default(),
        }
    }
}

/// How an empty data directory is filled (`bootstrap.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootstrapMethod {
    /// A new cluster with initdb (the instance becomes a primary of term 1).
    #[default]
    Initdb,
    /// A copy of a running primary with pg_basebackup (the instance becomes its standby).
    Basebackup,
    /// Restore a base backup and replay archived WAL (`bootstrap.recovery`).
    Recovery,
}

/// S3 connection settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint of an S3-compatible server (MinIO, SeaweedFS, ...).
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Path-style addressing (`https://host/bucket/key`), needed by most S3-compatible servers.
    pub force_path_style: bool,
    /// Files holding the credentials; without them the default AWS chain is used.
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
    /// `none`, `aes256` (SSE-S3) or `aws_kms` (SSE-KMS, with kms_key_id).
    pub sse: pgsteward_archive::store::ServerSideEncryption,
    pub kms_key_id: Option<String>,
    /// `when_supported` (default: a checksum with every upload) or `when_required`.
    pub checksums: pgsteward_archive::store::ChecksumMode,
    /// The checksum sent with `when_supported`: `crc32` (default) or `sha256`.
    pub checksum_algorithm: pgsteward_archive::store::ChecksumAlgorithm,
    /// A PEM file of CA certificates to trust for an HTTPS endpoint (besides the system's).
    pub ca_file: Option<PathBuf>,
}

/// How WAL is compressed and shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalArchiveConfig {
    /// `gzip` (default) or `none`.
    pub compression: WalCompression,
    /// gzip level 1-9.
    pub gzip_level: u32,
    /// Segments uploaded at once (memory: about 2 x the segment size each; 32 MiB with 16 MiB
    /// segments).
    pub max_parallel: usize,
    /// Segments downloaded ahead of postgres during recovery.
    pub prefetch: usize,
    /// How long one `wal-archive` or `wal-restore` call may take, retries included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Standbys archive too (`archive_mode = always`). Postgres then keeps every segment a
    /// standby receives until it is archived, so no failover can leave a hole in the archive
    /// (with `archive_mode = on` a standby marks what it receives archived and may remove it);
    /// the price is that a store outage fills the standbys' `pg_wal` as well as the primary's.
    /// A standby uploads a segment only when the archive still lacks it `standby_grace` after
    /// it arrived (the primary has normally stored it by then): one or two HEAD requests per segment.
    pub archive_on_standbys: bool,
    /// See `archive_on_standbys`; at most half of `timeout`.
    #[serde(with = "humantime_serde")]
    pub standby_grace: Duration,
    /// How often the primary checks that a restore from the newest finished backup would
    /// reach the end of the archive (`wal_archive_path_missing_segments`) and that every
    /// timeline in it has its history file (`wal_archive_timelines_without_history`): one
    /// listing of the archive and of the backups each time.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for WalArchiveConfig {
    fn default() -> Self {
        WalArchiveConfig {
            compression: WalCompression::Gzip,
            gzip_level: 6,
            max_parallel: 4,
            prefetch: 8,
            timeout: Duration::from_secs(60),
            archive_on_standbys: false,
            standby_grace: Duration::from_secs(20),
            check_interval: Duration::from_secs(3600),
        }
    }
}

/// Compression of archived WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalCompression {
    #[default]
    Gzip,
    None,
}
