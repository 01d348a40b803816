//! pgsteward's per-backup manifest: every archive's compressed size and SHA-256 and every
//! file's size and SHA-256 (of its content as stored in the tar), as JSON in
//! `<server>/base/<id>/pgsteward-manifest.json`. barman-cloud ignores objects it does not know
//! in a backup's directory, so the catalog stays barman's; `verify` and restore read it.

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;

/// Object name of the manifest inside a backup's directory.
pub const MANIFEST_NAME: &str = "pgsteward-manifest.json";
/// Format version written.
pub const MANIFEST_FORMAT: u32 = 1;

/// One file inside an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path inside the tar.
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// One uploaded archive (`data.tar.gz`, `<oid>.tar.gz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestArchive {
    /// Object name inside the backup's directory.
    pub name: String,
    /// Tablespace oid, None for the data directory.
    pub tablespace_oid: Option<u64>,
    pub compressed_size: u64,
    /// Hex SHA-256 of the stored object.
    pub compressed_sha256: String,
    pub uncompressed_size: u64,
    pub files: Vec<ManifestFile>,
}

/// The manifest of one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub backup_id: String,
    pub archives: Vec<ManifestArchive>,
}

impl Manifest {
    /// The manifest's key for `backup_id` in `catalog`.
    pub fn key(catalog: &Catalog, backup_id: &str) -> String {
        format!("{}{MANIFEST_NAME}", catalog.backup_prefix(backup_id))
    }

    /// Total bytes of files, uncompressed, and of stored archives.
    pub fn totals(&self) -> (u64, u64) {
        self.archives.iter().fold((0, 0), |(u, c), a| {
            (u + a.uncompressed_size, c + a.compressed_size)
        })
    }
}
