//! Which files a base backup copies, in tar order: PGDATA walked depth-first by name, without
//! what postgres documents as excluded from base backups (the contents of pg_wal, pg_replslot,
//! pg_dynshmem, pg_notify, pg_serial, pg_snapshots, pg_stat_tmp and pg_subtrans, whose empty
//! directories are kept; pgsql_tmp*; postmaster.pid/.opts; postgresql.auto.conf.tmp,
//! current_logfiles.tmp; pg_internal.init; stale backup_label/tablespace_map; temporary
//! relations; the non-init forks of unlogged relations), plus what barman-cloud also leaves
//! out (log directory contents, standby.signal, recovery.signal/.conf), and with
//! global/pg_control last. Tablespace symlinks in pg_tblspc are not entries: each tablespace is
//! its own archive holding its `PG_<major>_*` directory. Files that vanish while walking are
//! skipped (WAL replay recreates what matters).

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::tar::{Entry, EntryKind};

/// One entry to archive: its tar header and where to read a file's content.
#[derive(Debug, Clone)]
pub struct Item {
    pub entry: Entry,
    pub source: PathBuf,
}

impl Item {
    /// Bytes of content (0 for directories and links).
    pub fn size(&self) -> u64 {
        match self.entry.kind {
            EntryKind::File { size } => size,
            _ => 0,
        }
    }
}

/// A tablespace found in pg_tblspc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    pub oid: u64,
    /// Where the symlink points.
    pub location: PathBuf,
}

/// Top-level directories whose contents are not copied.
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_xlog",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "log",
    "pg_log",
];

/// File names excluded wherever they are.
const EXCLUDED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "pg_internal.init",
    "postmaster.pid",
    "postmaster.opts",
];

/// File names excluded at the top of PGDATA only.
const EXCLUDED_TOP_FILES: &[&str] = &[
    "backup_label",
    "tablespace_map",
    "standby.signal",
    "recovery.signal",
    "recovery.conf",
];

fn entry_for(path: String, kind: EntryKind, meta: &std::fs::Metadata) -> Entry {
    Entry {
        path,
        kind,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        uid: u64::from(meta.uid()),
        gid: u64::from(meta.gid()),
        uname: String::new(),
        gname: String::new(),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == "." || parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// A temporary relation file: `t<digits>_<digits>` with an optional fork or segment suffix.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, rel)) = rest.split_once('_') else {
        return false;
    };
    let rel_digits = rel.split(['_', '.']).next().unwrap_or("");
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && !rel_digits.is_empty()
        && rel_digits.bytes().all(|b| b.is_ascii_digit())
}

/// The relfilenode of a relation file name (`123`, `123.4`, `123_fsm`, `123_init.1`).
fn relfilenode(name: &str) -> Option<&str> {
    let digits = name.split(['_', '.']).next()?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

fn is_init_fork(name: &str) -> bool {
    name.split('.')
        .next()
        .is_some_and(|base| base.ends_with("_init"))
}

/// Entries of `dir` sorted by name; a directory that vanished reads as empty.
fn read_sorted(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("listing {}: {e}", dir.display()),
            ))
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("listing {}: {e}", dir.display()),
                ))
            }
        };
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(name) => {
                tracing::warn!(dir = %dir.display(), name = ?name, "skipping a file whose name is not UTF-8");
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Walk below `dir` (tar path `rel`), appending entries; `top` says `dir` is PGDATA's root.
fn walk(
    dir: &Path,
    rel: &str,
    top: bool,
    out: &mut Vec<Item>,
    tablespaces: &mut Vec<Tablespace>,
) -> io::Result<()> {
    let names = read_sorted(dir)?;
    // Unlogged relations: their init fork marks every other fork as not copied.
    let unlogged: HashSet<&str> = names
        .iter()
        .filter(|n| is_init_fork(n))
        .filter_map(|n| relfilenode(n))
        .collect();
    for name in &names {
        if name.starts_with("pgsql_tmp") || EXCLUDED_FILES.contains(&name.as_str()) {
            continue;
        }
        if top && EXCLUDED_TOP_FILES.contains(&name.as_str()) {
            continue;
        }
        if is_temp_relation(name) {
            continue;
        }
        if let Some(node) = relfilenode(name) {
            if unlogged.contains(node) && !is_init_fork(name) {
                continue;
            }
        }
        let path = dir.join(name);
        let tar_path = join(rel, name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("inspecting {}: {e}", path.display()),
                ))
            }
        };
        let file_type = meta.file_type();
        if rel == "pg_tblspc" && file_type.is_symlink() {
            if let (Ok(oid), Ok(target)) = (name.parse::<u64>(), std::fs::read_link(&path)) {
                tablespaces.push(Tablespace {
                    oid,
                    location: if target.is_absolute() {
                        target
                    } else {
                        dir.join(target)
                    },
                });
                continue;
            }
        }
        if top && EMPTY_DIRS.contains(&name.as_str()) {
            // Kept as an empty directory even when it is a symlink (pg_wal elsewhere).
            let meta = std::fs::metadata(&path).unwrap_or(meta);
            if meta.is_dir() {
                out.push(Item {
                    entry: entry_for(tar_path.clone(), EntryKind::Directory, &meta),
                    source: path.clone(),
                });
                if name == "pg_wal" {
                    out.push(Item {
                        entry: entry_for(
                            format!("{tar_path}/archive_status"),
                            EntryKind::Directory,
                            &meta,
                        ),
                        source: path.join("archive_status"),
                    });
                }
            }
            continue;
        }
        if file_type.is_dir() {
            out.push(Item {
                entry: entry_for(tar_path.clone(), EntryKind::Directory, &meta),
                source: path.clone(),
            });
            walk(&path, &tar_path, false, out, tablespaces)?;
        } else if file_type.is_file() {
            if tar_path == "global/pg_control" {
                continue;
            }
            out.push(Item {
                entry: entry_for(tar_path, EntryKind::File { size: meta.len() }, &meta),
                source: path,
            });
        } else if file_type.is_symlink() {
            let target = match std::fs::read_link(&path) {
                Ok(target) => target,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("reading link {}: {e}", path.display()),
                    ))
                }
            };
            out.push(Item {
                entry: entry_for(
                    tar_path,
                    EntryKind::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    },
                    &meta,
                ),
                source: path,
            });
        }
        // Sockets, FIFOs and devices are not part of a cluster.
    }
    Ok(())
}

/// The data directory's entries (root `.` first, global/pg_control last) and its tablespaces.
pub fn scan_pgdata(pgdata: &Path) -> io::Result<(Vec<Item>, Vec<Tablespace>)> {
    let root = std::fs::metadata(pgdata)
        .map_err(|e| io::Error::new(e.kind(), format!("inspecting {}: {e}", pgdata.display())))?;
    let mut items = vec![Item {
        entry: entry_for(".".into(), EntryKind::Directory, &root),
        source: pgdata.to_path_buf(),
    }];
    let mut tablespaces = Vec::new();
    walk(pgdata, ".", true, &mut items, &mut tablespaces)?;
    let control = pgdata.join("global/pg_control");
    let meta = std::fs::metadata(&control)
        .map_err(|e| io::Error::new(e.kind(), format!("inspecting {}: {e}", control.display())))?;
    items.push(Item {
        entry: entry_for(
            "global/pg_control".into(),
            EntryKind::File { size: meta.len() },
            &meta,
        ),
        source: control,
    });
    Ok((items, tablespaces))
}

/// A tablespace's entries: root `.` and its `PG_<major>_*` directory.
pub fn scan_tablespace(location: &Path, major: u32) -> io::Result<Vec<Item>> {
    let root = std::fs::metadata(location).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("inspecting tablespace {}: {e}", location.display()),
        )
    })?;
    let mut items = vec![Item {
        entry: entry_for(".".into(), EntryKind::Directory, &root),
        source: location.to_path_buf(),
    }];
    let prefix = format!("PG_{major}_");
    let mut ignored = Vec::new();
    for name in read_sorted(location)? {
        if !name.starts_with(&prefix) {
            continue;
        }
        let path = location.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            items.push(Item {
                entry: entry_for(name.clone(), EntryKind::Directory, &meta),
                source: path.clone(),
            });
            walk(&path, &name, false, &mut items, &mut ignored)?;
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        assert!(is_temp_relation("t3_16384"));
        assert!(is_temp_relation("t12_16384_fsm"));
        assert!(is_temp_relation("t3_16384.1"));
        assert!(!is_temp_relation("16384"));
        assert!(!is_temp_relation("tablespace_map"));
        assert_eq!(relfilenode("16384_init"), Some("16384"));
        assert_eq!(relfilenode("16384.2"), Some("16384"));
        assert_eq!(relfilenode("PG_VERSION"), None);
        assert!(is_init_fork("16384_init"));
        assert!(!is_init_fork("16384_fsm"));
    }

    #[test]
    fn exclusions_follow_the_documented_list() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "base/1",
            "base/5/pgsql_tmp",
            "global",
            "pg_wal/archive_status",
            "pg_replslot/slot",
            "pg_stat_tmp",
            "pg_tblspc",
            "pg_subtrans",
            "log",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "PG_VERSION",
            "postmaster.pid",
            "postmaster.opts",
            "backup_label",
            "standby.signal",
            "postgresql.auto.conf.tmp",
            "postgresql.conf",
            "global/pg_control",
            "global/1262",
            "global/pg_internal.init",
            "pg_wal/000000010000000000000001",
            "pg_replslot/slot/state",
            "pg_stat_tmp/x",
            "pg_subtrans/0000",
            "log/postgresql.log",
            "base/1/100",
            "base/1/100_fsm",
            "base/1/200",
            "base/1/200.1",
            "base/1/200_fsm",
            "base/1/200_init",
            "base/1/t3_300",
            "base/5/pgsql_tmp/x",
        ] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let tbs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tbs.path().join("PG_15_202209061/16384")).unwrap();
        std::fs::create_dir_all(tbs.path().join("PG_14_1")).unwrap();
        std::fs::write(tbs.path().join("PG_15_202209061/16384/500"), "y").unwrap();
        std::os::unix::fs::symlink(tbs.path(), root.join("pg_tblspc/16400")).unwrap();
        let (items, tablespaces) = scan_pgdata(root).unwrap();
        let paths: Vec<&str> = items.iter().map(|i| i.entry.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".",
                "PG_VERSION",
                "base",
                "base/1",
                "base/1/100",
                "base/1/100_fsm",
                "base/1/200_init",
                "base/5",
                "global",
                "global/1262",
                "log",
                "pg_replslot",
                "pg_stat_tmp",
                "pg_subtrans",
                "pg_tblspc",
                "pg_wal",
                "pg_wal/archive_status",
                "postgresql.conf",
                "global/pg_control",
            ]
        );
        assert_eq!(
            tablespaces,
            vec![Tablespace {
                oid: 16400,
                location: tbs.path().to_path_buf()
            }]
        );
        let ts: Vec<String> = scan_tablespace(tbs.path(), 15)
            .unwrap()
            .into_iter()
            .map(|i| i.entry.path)
            .collect();
        assert_eq!(
            ts,
            [
                ".",
                "PG_15_202209061",
                "PG_15_202209061/16384",
                "PG_15_202209061/16384/500"
            ]
        );
    }
}
