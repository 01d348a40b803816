//! Tar extraction into a restore destination, refusing anything that could land outside it:
//! entry paths must be relative with only normal components (no `..`, no absolute paths),
//! hard links and device files are refused, and symbolic links are not created while files are
//! written (they are returned and created by the caller once every tar is extracted, so no
//! entry can be written through a link). Understands PAX and GNU long names (the `tar` crate).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A symbolic link found in a tar, created after extraction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredLink {
    /// Relative to the destination.
    pub path: PathBuf,
    pub target: PathBuf,
}

/// What one tar held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub files: u64,
    pub directories: u64,
    pub bytes: u64,
    pub links: Vec<DeferredLink>,
}

/// Why extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("tar entry {path:?} would be written outside the destination")]
    Escapes { path: String },
    #[error("tar entry {path:?} is a {kind}, which a base backup never holds")]
    Unsupported { path: String, kind: String },
    #[error("{what}: {error}")]
    Io { what: String, error: io::Error },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ExtractError {
    let what = what.into();
    move |error| ExtractError::Io { what, error }
}

/// The entry's path made safe: relative, normal components only (`./` dropped). None for the
/// archive's root itself (`./`).
pub fn safe_relative(path: &Path) -> Result<Option<PathBuf>, ExtractError> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ExtractError::Escapes {
                    path: path.display().to_string(),
                })
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Create `dir` and its parents below `root`, refusing to pass through anything that is not a
/// real directory (a symlink planted by an earlier entry, for instance).
fn make_dirs(root: &Path, relative: &Path) -> Result<(), ExtractError> {
    let mut current = root.to_path_buf();
    for part in relative.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ExtractError::Escapes {
                    path: relative.display().to_string(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fs::DirBuilder::new().mode(0o700).create(&current) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err(format!("creating {}", current.display()))(e)),
                }
            }
            Err(e) => return Err(io_err(format!("inspecting {}", current.display()))(e)),
        }
    }
    Ok(())
}

use std::os::unix::fs::DirBuilderExt;

/// Extract the tar read from `reader` into `dest` (which exists). `written` counts the bytes
/// of file content as they are written (for progress).
pub fn extract(
    reader: impl Read,
    dest: &Path,
    written: &Arc<AtomicU64>,
) -> Result<Extracted, ExtractError> {
    let mut archive = tar::Archive::new(reader);
    let mut out = Extracted::default();
    let mut buf = vec![0u8; 256 * 1024];
    for entry in archive.entries().map_err(io_err("reading the tar"))? {
        let mut entry = entry.map_err(io_err("reading a tar entry"))?;
        let raw_path = entry
            .path()
            .map_err(io_err("reading a tar entry's path"))?
            .into_owned();
        let Some(relative) = safe_relative(&raw_path)? else {
            continue;
        };
        let header_mode = entry.header().mode().unwrap_or(0o600);
        let kind = entry.header().entry_type();
        let target = dest.join(&relative);
        if kind.is_dir() {
            make_dirs(dest, &relative)?;
            let mode = (header_mode & 0o7777) | 0o700;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("setting the mode of {}", target.display())))?;
            out.directories += 1;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            if let Some(parent) = relative.parent() {
                make_dirs(dest, parent)?;
            }
            if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_file()) {
                return Err(ExtractError::Escapes {
                    path: raw_path.display().to_string(),
                });
            }
            let mode = (header_mode & 0o777) | 0o600;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&target)
                .map_err(io_err(format!("creating {}", target.display())))?;
            loop {
                let n = entry.read(&mut buf).map_err(io_err(format!(
                    "reading {} from the tar",
                    raw_path.display()
                )))?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n])
                    .map_err(io_err(format!("writing {}", target.display())))?;
                written.fetch_add(n as u64, Ordering::Relaxed);
                out.bytes += n as u64;
            }
            out.files += 1;
        } else if kind.is_symlink() {
            let link_target = entry
                .link_name()
                .map_err(io_err("reading a symlink's target"))?
                .ok_or_else(|| ExtractError::Unsupported {
                    path: raw_path.display().to_string(),
                    kind: "symlink without a target".to_owned(),
                })?
                .into_owned();
            out.links.push(DeferredLink {
                path: relative,
                target: link_target,
            });
        } else if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            // Consumed by the tar crate; nothing to write.
        } else {
            return Err(ExtractError::Unsupported {
                path: raw_path.display().to_string(),
                kind: format!("{kind:?}"),
            });
        }
    }
    Ok(out)
}

/// Create the deferred links (after every tar of the destination is extracted). A link must
/// not replace anything that was extracted.
pub fn create_links(dest: &Path, links: &[DeferredLink]) -> Result<(), ExtractError> {
    for link in links {
        if let Some(parent) = link.path.parent() {
            make_dirs(dest, parent)?;
        }
        let path = dest.join(&link.path);
        std::os::unix::fs::symlink(&link.target, &path)
            .map_err(io_err(format!("creating the symlink {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o600);
            header.set_size(data.len() as u64);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            // set_path refuses `..`; write the raw name to build hostile archives.
            let name = path.as_bytes();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn extracts_files_dirs_and_defers_links() {
        let dir = tempfile::tempdir().unwrap();
        let data = tar_with(&[
            ("./", tar::EntryType::Directory, b"", None),
            ("base/", tar::EntryType::Directory, b"", None),
            ("base/1/2", tar::EntryType::Regular, b"hello", None),
            ("global/pg_control", tar::EntryType::Regular, b"ctl", None),
            (
                "pg_wal",
                tar::EntryType::Symlink,
                b"",
                Some("/elsewhere/wal"),
            ),
        ]);
        let written = Arc::new(AtomicU64::new(0));
        let out = extract(&data[..], dir.path(), &written).unwrap();
        assert_eq!(out.files, 2);
        assert_eq!(out.bytes, 8);
        assert_eq!(written.load(Ordering::Relaxed), 8);
        assert_eq!(fs::read(dir.path().join("base/1/2")).unwrap(), b"hello");
        assert!(!dir.path().join("pg_wal").exists());
        assert_eq!(out.links.len(), 1);
        create_links(dir.path(), &out.links).unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("pg_wal")).unwrap(),
            PathBuf::from("/elsewhere/wal")
        );
    }

    #[test]
    fn refuses_escaping_paths_and_hard_links() {
        for hostile in ["../evil", "a/../../evil", "/etc/evil"] {
            let dir = tempfile::tempdir().unwrap();
            let data = tar_with(&[(hostile, tar::EntryType::Regular, b"x", None)]);
            let err = extract(&data[..], &dir.path().join("x"), &Arc::default());
            assert!(
                matches!(err, Err(ExtractError::Escapes { .. })),
                "{hostile}: {err:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let data = tar_with(&[("a", tar::EntryType::Link, b"", Some("/etc/passwd"))]);
        assert!(matches!(
            extract(&data[..], dir.path(), &Arc::default()),
            Err(ExtractError::Unsupported { .. })
        ));
    }

    #[test]
    fn refuses_writing_through_an_existing_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let data = tar_with(&[("link/file", tar::EntryType::Regular, b"x", None)]);
        assert!(matches!(
            extract(&data[..], dir.path(), &Arc::default()),
            Err(ExtractError::Escapes { .. })
        ));
        assert!(!outside.path().join("file").exists());
    }
}
