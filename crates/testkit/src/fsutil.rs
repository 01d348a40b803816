//! Scratch directories owned by the postgres user, snapshots of a directory tree (paths,
//! modes, sizes, content hashes) to prove that bad input left data byte-for-byte untouched, and
//! incompressible test data.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chown, User};

/// A temporary directory owned by `postgres`, removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
}

impl ScratchDir {
    /// Create one under /tmp (short paths keep Unix socket names under their length limit).
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pgst-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("creating a scratch directory: {e}"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod scratch dir: {e}"));
        let scratch = ScratchDir { dir };
        scratch.chown_postgres(scratch.path());
        scratch
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Path of a child.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write a file owned by postgres (mode 0600).
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        std::fs::write(&path, content)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        self.chown_postgres(&path);
        path
    }

    /// Create a directory (and parents) owned by postgres with `mode`.
    pub fn mkdir(&self, name: &str, mode: u32) -> PathBuf {
        let path = self.join(name);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        self.chown_postgres(&path);
        path
    }

    /// Replace `to` with a copy of `from`, owned by the postgres user, written beside it and
    /// renamed over it (how Kubernetes updates a Secret volume: readers see the old file or
    /// the new one, never half of it).
    pub fn replace_file(&self, from: &Path, to: &Path) {
        let staged = to.with_extension("staged");
        std::fs::copy(from, &staged)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), staged.display()));
        self.chown_postgres(&staged);
        std::fs::rename(&staged, to)
            .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", staged.display(), to.display()));
    }

    /// chown `path` to the postgres user.
    pub fn chown_postgres(&self, path: &Path) {
        let user = postgres_user();
        chown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
    }
}

impl Default for ScratchDir {
    fn default() -> Self {
        Self::new()
    }
}

/// The `postgres` OS user (tests run as root and hand postgres its files).
pub fn postgres_user() -> User {
    User::from_name("postgres")
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!("the postgres OS user does not exist: apt-get install postgresql-15")
        })
}

/// One entry of a tree snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub len: u64,
    pub mtime_ns: i128,
    pub content_hash: u64,
}

/// Every path below `root` with its metadata and a hash of its content.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let content_hash = if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            hasher.finish()
        } else {
            0
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        }
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        out.insert(
            path.strip_prefix(root).unwrap_or(&path).to_path_buf(),
            Entry {
                mode: meta.mode(),
                uid: meta.uid(),
                len: meta.len(),
                mtime_ns,
                content_hash,
            },
        );
    }
    out
}

/// `len` deterministic bytes that do not compress (xorshift from `seed`): test data whose
/// gzip is about as large as itself.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
