//! barman-cloud's object layout below a destination: `<server>/wals/<first 16 hex>/<name><ext>`
//! for segments, partials and backup history files, `<server>/wals/<TLI>.history<ext>` for
//! timeline history files, and `<server>/base/<backup id>/…` for base backups (issue 4).
//! Compression shows only in the suffix.

use crate::walname::WalFile;

/// Compression of archived WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    /// The suffix barman appends.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
        }
    }

    /// Recognise a stored object's compression from its name's suffix after the WAL name.
    pub fn from_suffix(suffix: &str) -> Option<Self> {
        match suffix {
            "" => Some(Compression::None),
            ".gz" => Some(Compression::Gzip),
            _ => None,
        }
    }
}

/// Keys of one server's objects, relative to the store's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    server: String,
}

impl Layout {
    /// Layout for `server` (barman's server name; CNPG uses the cluster name).
    pub fn new(server: &str) -> Self {
        Layout {
            server: server.trim_matches('/').to_owned(),
        }
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// `<server>/wals/`.
    pub fn wals_prefix(&self) -> String {
        format!("{}/wals/", self.server)
    }

    /// The directory (prefix) holding `file`.
    pub fn wal_dir(&self, file: &WalFile) -> String {
        match file.hash_dir() {
            Some(dir) => format!("{}/wals/{dir}/", self.server),
            None => self.wals_prefix(),
        }
    }

    /// The key of `file` stored with `compression`.
    pub fn wal_key(&self, file: &WalFile, compression: Compression) -> String {
        format!(
            "{}{}{}",
            self.wal_dir(file),
            file.name(),
            compression.suffix()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_barman_cloud() {
        let layout = Layout::new("pg-cluster");
        let seg = WalFile::parse("000000010000000A000000FF").unwrap();
        assert_eq!(
            layout.wal_key(&seg, Compression::Gzip),
            "pg-cluster/wals/000000010000000A/000000010000000A000000FF.gz"
        );
        let history = WalFile::parse("00000002.history").unwrap();
        assert_eq!(
            layout.wal_key(&history, Compression::Gzip),
            "pg-cluster/wals/00000002.history.gz"
        );
        assert_eq!(
            layout.wal_key(&history, Compression::None),
            "pg-cluster/wals/00000002.history"
        );
    }
}
