//! One server's backups in the store, barman-cloud's layout:
//! `<server>/base/<backup id>/backup.info`, `data.tar[.gz]` and `<tablespace oid>.tar[.gz]`.
//! Listing reads every `backup.info`; a backup whose info cannot be read is listed with the
//! reason instead of being dropped, so an operator sees it.

use std::sync::Arc;

use pgsteward_archive::layout::Compression;
use pgsteward_archive::store::{ObjectStore, StoreError};

use crate::info::{BackupInfo, InfoError};

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("backup {id}: {source}")]
    Info {
        id: String,
        #[source]
        source: InfoError,
    },
    #[error("backup {id}: backup.info is not UTF-8")]
    NotUtf8 { id: String },
    #[error("backup id {0:?} is not barman's YYYYmmddTHHMMSS form")]
    BadId(String),
}

/// One listed backup: its info, or why it could not be read.
#[derive(Debug)]
pub struct CatalogEntry {
    pub backup_id: String,
    pub info: Result<BackupInfo, CatalogError>,
}

/// Check a backup id is `YYYYmmddTHHMMSS` (so it cannot name anything outside `base/`).
pub fn check_backup_id(id: &str) -> Result<(), CatalogError> {
    let bytes = id.as_bytes();
    let ok = bytes.len() == 15
        && bytes[8] == b'T'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 8 || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(CatalogError::BadId(id.to_owned()))
    }
}

/// A server's backup catalog in a store.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    server: String,
}

impl Catalog {
    pub fn new(store: Arc<dyn ObjectStore>, server: &str) -> Self {
        Catalog {
            store,
            server: server.trim_matches('/').to_owned(),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// `<server>/base/`.
    pub fn base_prefix(&self) -> String {
        format!("{}/base/", self.server)
    }

    /// `<server>/base/<id>/`.
    pub fn backup_prefix(&self, id: &str) -> String {
        format!("{}{id}/", self.base_prefix())
    }

    /// `<server>/base/<id>/backup.info`.
    pub fn info_key(&self, id: &str) -> String {
        format!("{}backup.info", self.backup_prefix(id))
    }

    /// `<server>/base/<id>/data.tar<suffix>`.
    pub fn data_key(&self, id: &str, compression: Compression) -> String {
        format!("{}data.tar{}", self.backup_prefix(id), compression.suffix())
    }

    /// `<server>/base/<id>/<oid>.tar<suffix>`.
    pub fn tablespace_key(&self, id: &str, oid: u64, compression: Compression) -> String {
        format!(
            "{}{oid}.tar{}",
            self.backup_prefix(id),
            compression.suffix()
        )
    }

    /// Read one backup's info; `Ok(None)` when it has none.
    pub async fn read(&self, id: &str) -> Result<Option<BackupInfo>, CatalogError> {
        check_backup_id(id)?;
        let Some(bytes) = self.store.get(&self.info_key(id)).await? else {
            return Ok(None);
        };
        let text =
            std::str::from_utf8(&bytes).map_err(|_| CatalogError::NotUtf8 { id: id.to_owned() })?;
        BackupInfo::parse(id, text)
            .map(Some)
            .map_err(|source| CatalogError::Info {
                id: id.to_owned(),
                source,
            })
    }

    /// Store a backup's info (replacing the previous version of it).
    pub async fn write(&self, info: &BackupInfo) -> Result<(), CatalogError> {
        check_backup_id(info.backup_id())?;
        self.store
            .put(
                &self.info_key(info.backup_id()),
                info.render().into_bytes().into(),
            )
            .await?;
        Ok(())
    }

    /// The ids of every backup directory holding a `backup.info`, oldest first.
    pub async fn backup_ids(&self) -> Result<Vec<String>, CatalogError> {
        let prefix = self.base_prefix();
        let mut ids: Vec<String> = self
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|meta| {
                let rest = meta.key.strip_prefix(&prefix)?;
                let (id, file) = rest.split_once('/')?;
                (file == "backup.info" && check_backup_id(id).is_ok()).then(|| id.to_owned())
            })
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Every backup, oldest first, each with its info or the reason it is unreadable.
    pub async fn list(&self) -> Result<Vec<CatalogEntry>, CatalogError> {
        let mut entries = Vec::new();
        for id in self.backup_ids().await? {
            let info = match self.read(&id).await {
                Ok(Some(info)) => Ok(info),
                Ok(None) => continue,
                Err(CatalogError::Store(e)) => return Err(CatalogError::Store(e)),
                Err(e) => Err(e),
            };
            entries.push(CatalogEntry {
                backup_id: id,
                info,
            });
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::BackupStatus;
    use pgsteward_archive::store::file::FileStore;

    #[test]
    fn backup_ids_are_checked() {
        assert!(check_backup_id("20261120T100001").is_ok());
        for bad in ["20261120100001", "../../wals/x", "2026112OT100001", ""] {
            assert!(check_backup_id(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn write_list_and_read_back() {
        let dir = std::env::temp_dir().join(format!("pgsteward-catalog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn ObjectStore> = Arc::new(FileStore::new(dir.clone()).unwrap());
        let catalog = Catalog::new(store.clone(), "main");
        let mut first = BackupInfo::new("20261120T100001");
        first.set_status(BackupStatus::Done);
        catalog.write(&first).await.unwrap();
        let mut second = BackupInfo::new("20261121T100001");
        second.set_status(BackupStatus::Failed);
        catalog.write(&second).await.unwrap();
        store
            .put(
                "main/base/20261122T100001/backup.info",
                b"status=DONE\nfoo=1\n".to_vec().into(),
            )
            .await
            .unwrap();
        store
            .put(
                "main/base/20261123T100001/data.tar.gz",
                b"x".to_vec().into(),
            )
            .await
            .unwrap();

        let listed = catalog.list().await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|e| e.backup_id.as_str()).collect();
        assert_eq!(
            ids,
            ["20261120T100001", "20261121T100001", "20261122T100001"]
        );
        assert_eq!(listed[0].info.as_ref().unwrap(), &first);
        assert_eq!(
            listed[1].info.as_ref().unwrap().status().unwrap(),
            BackupStatus::Failed
        );
        assert!(matches!(listed[2].info, Err(CatalogError::Info { .. })));
        assert_eq!(
            catalog.data_key("20261120T100001", Compression::Gzip),
            "main/base/20261120T100001/data.tar.gz"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
