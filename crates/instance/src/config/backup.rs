//! `archive.data`: how base backups are taken (compression level, parallelism, checkpoint
//! mode, multipart upload sizes) and its validation.

use serde::{Deserialize, Serialize};

/// Base backups of the data directory to `archive.destination`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataBackupConfig {
    /// gzip level 1-9 of `data.tar.gz` (6, as pgBackRest's default).
    pub gzip_level: u32,
    /// Compression threads; 0 means one per CPU.
    pub compressors: usize,
    /// Threads reading the data directory ahead of the tar writer.
    pub readers: usize,
    /// Start with an immediate checkpoint (`pg_backup_start(fast => true)`) instead of a spread
    /// one.
    pub immediate_checkpoint: bool,
    /// Size of one multipart upload part in MiB (5-512).
    pub part_size_mib: usize,
    /// Parts uploaded at once (memory: about part_size x (parts_in_flight + 1)).
    pub parts_in_flight: usize,
}

impl Default for DataBackupConfig {
    fn default() -> Self {
        DataBackupConfig {
            gzip_level: 6,
            compressors: 0,
            readers: 2,
            immediate_checkpoint: false,
            part_size_mib: 16,
            parts_in_flight: 3,
        }
    }
}

impl DataBackupConfig {
    /// Problems with the settings, one message each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=9).contains(&self.gzip_level) {
            problems.push(format!(
                "archive.data.gzip_level: {} must be 1-9",
                self.gzip_level
            ));
        }
        if self.compressors > 256 {
            problems.push(format!(
                "archive.data.compressors: {} must be 0 (one per CPU) to 256",
                self.compressors
            ));
        }
        if !(1..=64).contains(&self.readers) {
            problems.push(format!(
                "archive.data.readers: {} must be 1-64",
                self.readers
            ));
        }
        if !(5..=512).contains(&self.part_size_mib) {
            problems.push(format!(
                "archive.data.part_size_mib: {} must be 5-512",
                self.part_size_mib
            ));
        }
        if !(1..=32).contains(&self.parts_in_flight) {
            problems.push(format!(
                "archive.data.parts_in_flight: {} must be 1-32",
                self.parts_in_flight
            ));
        }
        problems
    }

    /// Compression threads to use.
    pub fn compressor_threads(&self) -> usize {
        if self.compressors == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            self.compressors
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(DataBackupConfig::default().problems().is_empty());
        let bad = DataBackupConfig {
            gzip_level: 0,
            part_size_mib: 4,
            ..Default::default()
        };
        let problems = bad.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("gzip_level"));
    }
}
