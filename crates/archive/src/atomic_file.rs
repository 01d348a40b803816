//! Whole-file writes that no reader sees half done: the content goes to a temporary file in the
//! destination's directory, named for this process and call (so concurrent writers of one
//! destination, in this process or another, never share it), which is then renamed over the
//! destination (`write`) or hard-linked to it where nothing is there yet (`write_new`, which
//! never replaces a file). A durable write fsyncs the file before it takes the destination's
//! name and the directory after.
//! Used by the `file://` store (whole objects, and streamed uploads through `temporary_path` and
//! `commit`), restored WAL files and the manager's rendered configuration.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// fsync the file before the rename and its directory after it.
    pub durable: bool,
    /// Permission bits of a new file (before the umask); `None` for 0o666.
    pub mode: Option<u32>,
}

impl WriteOptions {
    /// fsynced, default permissions.
    pub const DURABLE: WriteOptions = WriteOptions {
        durable: true,
        mode: None,
    };
}

/// A failed step of an atomic write; the temporary file is removed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct AtomicWriteError {
    /// What failed: "creating", "writing", "syncing", "renaming into", "linking into",
    /// "syncing directory".
    pub action: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The temporary file a write of `dest` goes through: hidden, in `dest`'s directory, named for
/// this process and call.
pub fn temporary_path(dest: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    directory_of(dest).join(format!(
        ".{name}.pgsteward-tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn directory_of(dest: &Path) -> &Path {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn failed(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AtomicWriteError {
    let path = path.to_path_buf();
    move |source| AtomicWriteError {
        action,
        path,
        source,
    }
}

/// Write `data` to `dest` atomically (see the module doc). The directory must exist.
pub fn write(dest: &Path, data: &[u8], options: WriteOptions) -> Result<(), AtomicWriteError> {
    write_placed(dest, data, options, Placement::Replace).map(|_| ())
}

/// Write `data` to `dest` atomically unless `dest` exists: the temporary file is hard-linked
/// to `dest`, which fails when a file is already there, so concurrent writers (in this
/// process or another) store one whole content and never replace it. `Ok(false)`: `dest`
/// already existed and is untouched. Where hard links are not supported, `dest` is looked
/// up, then renamed over (a race with another writer may then replace a file stored in
/// between).
pub fn write_new(
    dest: &Path,
    data: &[u8],
    options: WriteOptions,
) -> Result<bool, AtomicWriteError> {
    write_placed(dest, data, options, Placement::CreateNew)
}

/// How the temporary file takes `dest`'s place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Replace,
    CreateNew,
}

fn write_placed(
    dest: &Path,
    data: &[u8],
    options: WriteOptions,
    placement: Placement,
) -> Result<bool, AtomicWriteError> {
    let tmp = temporary_path(dest);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            // A leftover of a crashed run with the same pid (PID 1 in a container) is replaced.
            .truncate(true)
            .mode(options.mode.unwrap_or(0o666))
            .open(&tmp)
            .map_err(failed("creating", &tmp))?;
        file.write_all(data).map_err(failed("writing", &tmp))?;
        if options.durable {
            file.sync_all().map_err(failed("syncing", &tmp))?;
        }
        drop(file);
        let placed = match placement {
            Placement::Replace => {
                std::fs::rename(&tmp, dest).map_err(failed("renaming into", dest))?;
                true
            }
            Placement::CreateNew => link_new(&tmp, dest)?,
        };
        if placed && options.durable {
            sync_directory(dest)?;
        }
        Ok(placed)
    })();
    // A rename leaves nothing at `tmp`; a link (or a refusal) or a failure leaves it behind.
    if written.is_err() || placement == Placement::CreateNew {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Give `tmp`'s content the name `dest` unless `dest` exists (see `write_new`).
fn link_new(tmp: &Path, dest: &Path) -> Result<bool, AtomicWriteError> {
    match std::fs::hard_link(tmp, dest) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e)
            if e.kind() == std::io::ErrorKind::Unsupported
                || e.raw_os_error() == Some(libc::EPERM) =>
        {
            // No hard links on this filesystem: look, then rename.
            if dest.symlink_metadata().is_ok() {
                return Ok(false);
            }
            std::fs::rename(tmp, dest).map_err(failed("renaming into", dest))?;
            Ok(true)
        }
        Err(e) => Err(failed("linking into", dest)(e)),
    }
}

fn sync_directory(dest: &Path) -> Result<(), AtomicWriteError> {
    let dir = directory_of(dest);
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed("syncing directory", dir))
}

/// Make a fully written temporary `file` (at `tmp`, from [`temporary_path`]) the durable
/// content of `dest`: fsync it, rename it over `dest`, fsync the directory. On an error the
/// caller removes `tmp`.
pub fn commit(file: std::fs::File, tmp: &Path, dest: &Path) -> Result<(), AtomicWriteError> {
    file.sync_all().map_err(failed("syncing", tmp))?;
    drop(file);
    std::fs::rename(tmp, dest).map_err(failed("renaming into", dest))?;
    sync_directory(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains("pgsteward-tmp"))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn replaces_the_destination_whole_with_the_asked_mode() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dest = dir.path().join("settings.json");
        std::fs::write(&dest, "old content, longer than the new one")
            .unwrap_or_else(|e| panic!("{e}"));
        let options = WriteOptions {
            durable: true,
            mode: Some(0o600),
        };
        write(&dest, b"new", options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&dest).unwrap_or_default(), b"new");
        let mode = std::fs::metadata(&dest).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn concurrent_writers_of_one_destination_each_rename_a_whole_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dest = dir.path().join("segment");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 256 << 10]).collect();
        std::thread::scope(|scope| {
            for content in &contents {
                let dest = &dest;
                scope.spawn(move || {
                    for _ in 0..5 {
                        let options = WriteOptions {
                            durable: false,
                            mode: None,
                        };
                        write(dest, content, options).unwrap_or_else(|e| panic!("{e}"));
                    }
                });
            }
        });
        let last = std::fs::read(&dest).unwrap_or_default();
        assert!(contents.contains(&last), "a torn or mixed file");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn write_new_stores_one_writer_whole_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dest = dir.path().join("segment");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 256 << 10]).collect();
        let stored: Vec<bool> = std::thread::scope(|scope| {
            let writers: Vec<_> = contents
                .iter()
                .map(|content| {
                    let dest = &dest;
                    scope.spawn(move || {
                        write_new(dest, content, WriteOptions::DURABLE)
                            .unwrap_or_else(|e| panic!("{e}"))
                    })
                })
                .collect();
            writers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| panic!("writer panicked")))
                .collect()
        });
        let winners: Vec<usize> = (0..stored.len()).filter(|&i| stored[i]).collect();
        assert_eq!(winners.len(), 1, "{stored:?}");
        assert_eq!(
            std::fs::read(&dest).unwrap_or_default(),
            contents[winners[0]],
            "not the winner's whole content"
        );
        // A later writer finds it there and leaves it.
        assert!(
            !write_new(&dest, b"other", WriteOptions::DURABLE).unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(
            std::fs::read(&dest).unwrap_or_default(),
            contents[winners[0]]
        );
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_write_names_its_step_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // A directory in the way: the rename of a file over it fails.
        let dest = dir.path().join("occupied");
        std::fs::create_dir(&dest).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dest.join("inside"), "x").unwrap_or_else(|e| panic!("{e}"));
        let err = write(&dest, b"data", WriteOptions::DURABLE).err();
        let err = err.unwrap_or_else(|| panic!("renamed over a directory"));
        assert_eq!(err.action, "renaming into");
        assert_eq!(err.path, dest);
        assert!(leftovers(dir.path()).is_empty());
        let missing = dir.path().join("no-such-dir/file");
        let err = write(&missing, b"data", WriteOptions::DURABLE).err();
        assert_eq!(err.map(|e| e.action), Some("creating"));
    }
}
