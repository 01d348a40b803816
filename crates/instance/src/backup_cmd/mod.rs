//! `pgsteward backup` (ask the local manager to take a base backup, optionally following it
//! to the end) and `pgsteward backup verify <id>` (check a stored backup against its
//! manifest, straight from the object store).

pub mod take;
pub mod verify;

/// Run `future` on a current-thread runtime; its value is the exit code.
fn block_on<F: std::future::Future<Output = i32>>(future: F) -> i32 {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => {
            eprintln!("pgsteward backup: cannot start the async runtime: {e}");
            1
        }
    }
}
