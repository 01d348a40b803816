//! The `pgsteward` binary: parses the command line and dispatches to the library.

use clap::Parser;

fn main() {
    tune_allocator();
    let cli = pgsteward::cli::Cli::parse();
    let code = pgsteward::cli::dispatch(cli);
    std::process::exit(code);
}

/// WAL work allocates and frees 16 MiB buffers from several threads. glibc raises its mmap
/// threshold after such a free, so later buffers come from per-thread arenas and are never
/// returned to the system (measured: 308 MB peak RSS for 4 uploads in flight). A fixed
/// threshold keeps large buffers in mmap (released on free), and two arenas bound the rest.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
