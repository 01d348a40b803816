//! The WAL source of a private replay (`pgsteward restore`, a recovery bootstrap, a drill):
//! the replay's `restore_command` asks this process over the socket in the replay settings,
//! and a restore-only archiver ([`Archiver::for_replay`]) answers from its prefetch spool,
//! with one store client, instead of each call opening its own client and fetching one
//! segment at a time. It stops when dropped, and removes its socket and its spool (the
//! segments prefetched beyond the recovery target). When it cannot start (a socket path too long,
//! the store not answering), the calls fetch directly, as they did before.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use pgsteward_backup::info::BackupInfo;

use crate::archiver::settings::ArchiveSettings;
use crate::archiver::Archiver;

/// The running server; dropping it stops the server and removes its socket.
#[derive(Debug)]
pub struct ReplayServer {
    task: tokio::task::JoinHandle<()>,
    socket: PathBuf,
    archiver: Arc<Archiver>,
}

impl ReplayServer {
    /// Serve the replay settings written in `pgdata` (by `restore_files`). The segment size
    /// is the backup's. None (logged) when the server cannot start.
    pub async fn start(pgdata: &Path, backup: &BackupInfo) -> Option<ReplayServer> {
        match Self::try_start(pgdata, backup).await {
            Ok(server) => Some(server),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the replay's WAL prefetch did not start: each restore_command fetches its file directly");
                None
            }
        }
    }

    async fn try_start(pgdata: &Path, backup: &BackupInfo) -> Result<ReplayServer> {
        let settings = ArchiveSettings::read(pgdata)?;
        let segment_bytes = backup.segment_size().unwrap_or(16 << 20);
        let socket = settings.socket.clone();
        let archiver = Archiver::for_replay(settings, pgdata, segment_bytes).await?;
        let task = archiver.serve_restores()?;
        tracing::info!(socket = %socket.display(), segment_bytes, "serving the replay's WAL with prefetch");
        Ok(ReplayServer {
            task,
            socket,
            archiver,
        })
    }

    /// Stop `server` (once postgres no longer replays) and say, in the log and in the
    /// returned phrase, how the replay's WAL came.
    pub fn finish(server: Option<ReplayServer>) -> String {
        let phrase = match server {
            Some(server) => format!(
                "{} WAL files through the prefetch",
                server.archiver.restored_count()
            ),
            None => "WAL files fetched one by one (no prefetch)".to_owned(),
        };
        tracing::info!(replay = %phrase, "the replay's WAL server stopped");
        phrase
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
        self.archiver.discard_prefetch_spool();
    }
}
