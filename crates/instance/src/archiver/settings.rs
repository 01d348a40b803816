//! The archive settings the manager resolves from its configuration and writes into PGDATA
//! (`pgsteward.archive.json`, mode 0600) so that `pgsteward wal-archive`/`wal-restore`, run by
//! postgres with only `--pgdata`, know the destination, the store options and the manager's
//! socket. Credentials stay in their own files; only their paths are written here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pgsteward_archive::layout::Compression;
use pgsteward_archive::store::StoreOptions;
use pgsteward_archive::{Layout, WalArchive};
use serde::{Deserialize, Serialize};

use crate::config::{Config, S3Config, WalCompression};

/// File name inside PGDATA.
pub const FILE: &str = "pgsteward.archive.json";

/// Everything `wal-archive` and `wal-restore` need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveSettings {
    pub destination: String,
    pub server_name: String,
    pub allow_existing_wal: bool,
    pub s3: S3Config,
    pub compression: WalCompression,
    pub gzip_level: u32,
    pub max_parallel: usize,
    pub prefetch: usize,
    pub timeout_ms: u64,
    /// On a standby (`archive.wal.archive_on_standbys`): how long a received segment is left
    /// to the primary before the standby uploads it itself.
    #[serde(default)]
    pub standby_grace_ms: u64,
    /// The manager's Unix socket.
    pub socket: PathBuf,
}

impl ArchiveSettings {
    /// Settings for `config`, or None when archiving is off.
    pub fn from_config(config: &Config) -> Option<Self> {
        let destination = config.archive.destination.clone()?;
        let pg = &config.postgres;
        Some(ArchiveSettings {
            destination,
            server_name: config
                .archive
                .server_name
                .clone()
                .unwrap_or_else(|| config.instance_name.clone()),
            allow_existing_wal: config.archive.allow_existing_wal,
            s3: config.archive.s3.clone(),
            compression: config.archive.wal.compression,
            gzip_level: config.archive.wal.gzip_level,
            max_parallel: config.archive.wal.max_parallel.max(1),
            prefetch: config.archive.wal.prefetch,
            timeout_ms: config.archive.wal.timeout.as_millis() as u64,
            standby_grace_ms: config.archive.wal.standby_grace.as_millis() as u64,
            socket: pg.socket_dir.join(format!(".s.PGSTEWARD.{}", pg.port)),
        })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn standby_grace(&self) -> Duration {
        Duration::from_millis(self.standby_grace_ms)
    }

    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            endpoint_url: self.s3.endpoint_url.clone(),
            region: self.s3.region.clone(),
            force_path_style: self.s3.force_path_style,
            access_key_id_file: self.s3.access_key_id_file.clone(),
            secret_access_key_file: self.s3.secret_access_key_file.clone(),
            sse: self.s3.sse,
            kms_key_id: self.s3.kms_key_id.clone(),
            checksums: self.s3.checksums,
            checksum_algorithm: self.s3.checksum_algorithm,
            ca_file: self.s3.ca_file.clone(),
        }
    }

    /// Open the store alone (for the backup catalog and retention).
    pub async fn open_store(&self) -> Result<Arc<dyn pgsteward_archive::store::ObjectStore>> {
        pgsteward_archive::open(&self.destination, &self.store_options())
            .await
            .with_context(|| format!("opening the archive destination {}", self.destination))
    }

    /// Open the store and the WAL archive.
    pub async fn open(&self) -> Result<WalArchive> {
        let store = pgsteward_archive::open(&self.destination, &self.store_options())
            .await
            .with_context(|| format!("opening the archive destination {}", self.destination))?;
        Ok(self.wal_archive_on(store))
    }

    /// The WAL archive of these settings on `store`, a client already opened for them.
    pub fn wal_archive_on(&self, store: Arc<dyn pgsteward_archive::ObjectStore>) -> WalArchive {
        let compression = match self.compression {
            WalCompression::Gzip => Compression::Gzip,
            WalCompression::None => Compression::None,
        };
        // One compressed buffer per upload under way; read buffers are in use only while a
        // segment is compressed (one per CPU), the pool keeps as many as uploads at most.
        WalArchive::new(
            store,
            Layout::new(&self.server_name),
            compression,
            self.gzip_level,
        )
        .with_pooled_buffers(self.max_parallel.max(1))
    }

    /// Open the WAL archive for archiving `pgdata`'s WAL: a segment is stored only when it is
    /// a whole segment of this data directory's system at the position its name says
    /// (`pgsteward_archive::walheader`). When `pg_control` cannot be read, every other part of
    /// the check still applies.
    pub async fn open_for_archiving(&self, pgdata: &Path) -> Result<WalArchive> {
        let system_identifier = match crate::pgdata::system_identifier(pgdata) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(pgdata = %pgdata.display(), error = %e, "the system identifier in global/pg_control cannot be read: segments are archived without checking it");
                None
            }
        };
        Ok(self.open().await?.checking_segments(system_identifier))
    }

    /// Write the settings into `pgdata` (or remove the file when `settings` is None).
    pub fn write(pgdata: &Path, settings: Option<&Self>) -> Result<()> {
        let path = pgdata.join(FILE);
        match settings {
            Some(settings) => {
                let text = serde_json::to_string_pretty(settings)
                    .context("serializing archive settings")?;
                crate::config::render::write_atomically(&path, &text)
            }
            None => match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
            },
        }
    }

    /// Read the settings of `pgdata`.
    pub fn read(pgdata: &Path) -> Result<Self> {
        let path = pgdata.join(FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (written by the manager when archive.destination is set)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsteward_archive::store::{ChecksumAlgorithm, ChecksumMode};

    fn settings_from(s3_yaml: &str) -> Result<ArchiveSettings> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("pgsteward.yaml");
        std::fs::write(
            &file,
            format!("archive:\n  destination: s3://b/p\n  s3:\n{s3_yaml}"),
        )?;
        let config = crate::config::layers::load(&crate::config::layers::ConfigSources {
            file: Some(file),
            env: Vec::new(),
            overrides: Vec::new(),
        })?;
        ArchiveSettings::from_config(&config).context("no archive settings")
    }

    #[test]
    fn upload_checksums_reach_the_store_and_survive_the_settings_file() -> Result<()> {
        let default = settings_from("    region: eu-west-1\n")?.store_options();
        assert_eq!(default.checksums, ChecksumMode::WhenSupported);
        assert_eq!(default.checksum_algorithm, ChecksumAlgorithm::Crc32);

        let sha = settings_from("    checksum_algorithm: sha256\n")?;
        assert_eq!(
            sha.store_options().checksum_algorithm,
            ChecksumAlgorithm::Sha256
        );
        let pgdata = tempfile::tempdir()?;
        ArchiveSettings::write(pgdata.path(), Some(&sha))?;
        assert_eq!(ArchiveSettings::read(pgdata.path())?, sha);

        let unknown = settings_from("    checksum_algorithm: md4\n").unwrap_err();
        assert!(format!("{unknown:#}").contains("md4"), "{unknown:#}");
        Ok(())
    }
}
