//! Comparing a restored segment with the original without copying either into the
//! benchmark's memory (every restore_command is forked from this process, and a child's peak
//! RSS, what the table reports, starts from this process's own).

use std::path::Path;

use anyhow::{Context, Result};

/// Whether `a` and `b` have the same bytes, compared by mapping both (no copy into this
/// process's memory: every restore_command is forked from this process, and a child's peak
/// RSS, what the table reports, starts from this process's own).
pub(super) fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let open = |path: &Path| {
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))
    };
    let (fa, fb) = (open(a)?, open(b)?);
    let len = fa.metadata()?.len();
    if len != fb.metadata()?.len() {
        return Ok(false);
    }
    let len = usize::try_from(len).context("file too large to map")?;
    if len == 0 {
        return Ok(true);
    }
    let ma = Mapped::new(&fa, len).with_context(|| format!("mapping {}", a.display()))?;
    let mb = Mapped::new(&fb, len).with_context(|| format!("mapping {}", b.display()))?;
    Ok(ma.bytes() == mb.bytes())
}

/// A read-only, populated mapping of a whole file, unmapped on drop.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn new(file: &std::fs::File, len: usize) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh private read-only mapping of an open file; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and lives as long as `self`; nobody
        // truncates these files while the benchmark compares them.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}
