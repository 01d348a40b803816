//! `wal-restore` served by the manager: a request is answered from the prefetch spool
//! (`pg_wal/pgsteward-prefetch/`, same file system as pg_wal so a rename is atomic) or fetched
//! directly; after each served segment the next `prefetch` segments are downloaded in
//! parallel. A request for a segment whose prefetch is under way waits for that download
//! instead of starting a second one. "Not found" is answered after one listing, without
//! waiting for anything else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pgsteward_archive::wal::Durability;
use pgsteward_archive::{RestoreOutcome, WalError, WalFile, WalKind};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::protocol::Response;
use super::Archiver;

/// Spool state.
#[derive(Debug)]
pub struct Prefetcher {
    dir: PathBuf,
    depth: usize,
    segment_bytes: u64,
    /// Segments being prefetched, each with the signal its download ended.
    inflight: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Prefetcher {
    /// A prefetcher; a spool left by an earlier run is discarded (its files may be stale).
    pub fn new(pgdata: &Path, depth: usize, segment_bytes: u64) -> Self {
        let dir = pgdata.join("pg_wal/pgsteward-prefetch");
        let _ = std::fs::remove_dir_all(&dir);
        Prefetcher {
            dir,
            depth,
            segment_bytes,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    fn spooled(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Wait (until `deadline`) for a prefetch of `name` that is under way to end.
    async fn wait_inflight(&self, name: &str, deadline: Instant) {
        let done = {
            let inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            let Some(notify) = inflight.get(name) else {
                return;
            };
            notify.clone()
        };
        // Registered first, then checked again: an end signalled in between is not missed.
        let notified = done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
        {
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Move a spooled `name` to `dest`; false when it is not (or no longer) in the spool.
    fn take(&self, name: &str, dest: &Path) -> bool {
        let spooled = self.spooled(name);
        spooled.is_file() && std::fs::rename(&spooled, dest).is_ok()
    }

    /// Remove spooled segments that sort before `name` on its timeline (already replayed).
    fn trim_before(&self, name: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let other = entry.file_name().to_string_lossy().into_owned();
            if other.len() == name.len() && other[..8] == name[..8] && other.as_str() < name {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Archiver {
    /// Remove the prefetch spool and what it holds (a replay's archiver, once postgres no
    /// longer needs it; a download still under way then fails to write and is dropped).
    pub fn discard_prefetch_spool(&self) {
        match std::fs::remove_dir_all(&self.prefetch.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.prefetch.dir.display(), "cannot remove the prefetch spool")
            }
        }
    }

    /// Serve one `wal-restore` request.
    pub async fn restore_now(self: &Arc<Self>, name: &str, dest: &Path) -> Response {
        let file = match WalFile::parse(name) {
            Ok(file) => file,
            Err(e) => return Response::failure(e.to_string()),
        };
        let dest = match super::paths::restore_destination(&self.pgdata, dest) {
            Ok(dest) => dest,
            Err(e) => return Response::failure(format!("{e:#}")),
        };
        let dest = dest.as_path();
        let deadline = Instant::now() + self.settings.timeout();
        self.prefetch.wait_inflight(name, deadline).await;
        if self.prefetch.take(name, dest) {
            self.metrics.wal_restore_prefetch_hits.inc();
            self.metrics.wal_restored.inc();
            self.schedule_prefetch(&file);
            return Response::success(format!("{name} restored from the prefetch spool"));
        }
        // Not spooled: fetch it here, and once it is known to exist start prefetching the files
        // after it (a file that is not there starts nothing: a standby asks again and again).
        let fetched = self
            .wal
            .fetch_to_then(&file, dest, Durability::Handoff, false, deadline, || {
                self.schedule_prefetch(&file)
            })
            .await;
        match fetched {
            Ok(RestoreOutcome::Restored {
                key, from_partial, ..
            }) => {
                self.metrics.wal_restored.inc();
                let partial = if from_partial {
                    " (from its .partial)"
                } else {
                    ""
                };
                Response::success(format!("{name} restored from {key}{partial}"))
            }
            Ok(RestoreOutcome::NotFound) => {
                Response::not_found(format!("{name} is not in the archive"))
            }
            Err(e) => {
                tracing::error!(wal = name, error = %e, "restoring WAL failed");
                Response::failure(e.to_string())
            }
        }
    }

    /// Download the segments after `file` into the spool, in parallel.
    fn schedule_prefetch(self: &Arc<Self>, file: &WalFile) {
        if file.kind() != WalKind::Segment || self.prefetch.depth == 0 {
            return;
        }
        self.prefetch.trim_before(file.name());
        if let Err(e) = std::fs::create_dir_all(&self.prefetch.dir) {
            tracing::warn!(error = %e, "cannot create the prefetch spool; serving restores directly");
            return;
        }
        let mut next = file.clone();
        for _ in 0..self.prefetch.depth {
            let Some(following) = next.next_segment(self.prefetch.segment_bytes) else {
                break;
            };
            next = following.clone();
            let name = following.name().to_owned();
            if self.prefetch.spooled(&name).exists() {
                continue;
            }
            {
                let mut inflight = self
                    .prefetch
                    .inflight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if inflight.contains_key(&name) {
                    continue;
                }
                inflight.insert(name.clone(), Arc::new(Notify::new()));
            }
            let this = self.clone();
            tokio::spawn(async move {
                let permit = this.uploads.clone().acquire_owned().await;
                let deadline = Instant::now() + this.settings.timeout();
                // Full segments only (a `.partial` is served by a direct fetch); the spool is
                // discarded at startup, so it needs no fsync.
                let spooled = this.prefetch.spooled(&name);
                // The transfer slot is free once the object is downloaded: the next download
                // starts while this one is decompressed and written (how many of those run is
                // bounded by the prefetch depth).
                let downloaded = move || drop(permit);
                match this
                    .wal
                    .fetch_to_then(
                        &following,
                        &spooled,
                        Durability::Cache,
                        true,
                        deadline,
                        downloaded,
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e @ WalError::Write { .. }) => {
                        tracing::warn!(wal = %name, error = %e, "prefetch spool write failed (disk full?); restores fall back to direct fetches");
                    }
                    Err(e) => tracing::debug!(wal = %name, error = %e, "prefetch failed"),
                }
                let done = this
                    .prefetch
                    .inflight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name);
                if let Some(done) = done {
                    done.notify_waiters();
                }
            });
        }
    }
}
