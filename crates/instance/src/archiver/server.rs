//! The manager's end of the local socket: one task per connection, one request each.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use super::protocol::{read_request, same_directory, Request, Response};
use super::Archiver;

/// Bind the socket (replacing a stale one, refusing one another archiver answers on) and
/// serve it until the returned task is aborted.
pub fn spawn(archiver: Arc<Archiver>) -> Result<tokio::task::JoinHandle<()>> {
    let path = archiver.settings.socket.clone();
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        bail!(
            "another archiver is listening on {}: is a manager or `pgsteward archiver` already \
             running for this data directory, or do two clusters share postgres.socket_dir and \
             postgres.port in their settings?",
            path.display()
        );
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", path.display()))
        }
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    tracing::info!(socket = %path.display(), "WAL archive socket listening");
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting on the WAL socket failed");
                    continue;
                }
            };
            let archiver = archiver.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let response = match read_request(&mut reader).await {
                    Ok(request) => handle(&archiver, request).await,
                    Err(e) => Response::failure(format!("{e:#}")),
                };
                let mut line = serde_json::to_string(&response).unwrap_or_else(|_| "{}".into());
                line.push('\n');
                let _ = reader.into_inner().write_all(line.as_bytes()).await;
            });
        }
    }))
}

async fn handle(archiver: &Arc<Archiver>, request: Request) -> Response {
    let (Request::Archive { pgdata, .. } | Request::Restore { pgdata, .. }) = &request;
    if let Some(theirs) = pgdata {
        if !same_directory(theirs, &archiver.pgdata) {
            tracing::error!(caller = %theirs.display(), ours = %archiver.pgdata.display(), socket = %archiver.settings.socket.display(), "refused a WAL request for another data directory: two clusters share this socket");
            return Response::failure(format!(
                "the archiver on {} serves data directory {}, not {}: give each cluster its own \
                 postgres.socket_dir or postgres.port",
                archiver.settings.socket.display(),
                archiver.pgdata.display(),
                theirs.display()
            ));
        }
    }
    match request {
        Request::Archive { name, .. } if archiver.restore_only => {
            tracing::error!(%name, "refused an archive request on a replay's socket");
            Response::failure(format!(
                "{name}: this socket serves WAL restores for a replay from the source archive; \
                 nothing is archived there"
            ))
        }
        Request::Archive { name, .. } => match archiver.archive_now(&name).await {
            Ok(()) => Response::success(format!("{name} archived")),
            Err(e) => Response::failure(e),
        },
        Request::Restore { name, dest, .. } => archiver.restore_now(&name, &dest).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archiver::settings::ArchiveSettings;
    use crate::config::Config;

    /// A replay's archiver refuses to archive: its store is the source of a restore.
    #[tokio::test]
    async fn a_replay_archiver_refuses_archive_requests() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let pgdata = dir.path().join("data");
        std::fs::create_dir_all(pgdata.join("pg_wal/archive_status"))?;
        let segment = "000000010000000000000001";
        std::fs::write(pgdata.join("pg_wal").join(segment), vec![7u8; 1 << 20])?;
        let mut config = Config::default();
        config.archive.destination =
            Some(format!("file://{}", dir.path().join("source").display()));
        let mut settings = ArchiveSettings::from_config(&config).context("archive settings")?;
        settings.socket = pgdata.join(".s.PGSTEWARD.replay");
        let archiver = Archiver::for_replay(settings, &pgdata, 1 << 20).await?;
        let answer = handle(
            &archiver,
            Request::Archive {
                name: segment.into(),
                pgdata: Some(pgdata.clone()),
            },
        )
        .await;
        let text = serde_json::to_string(&answer)?;
        assert!(text.contains("nothing is archived there"), "{text}");
        let stored = archiver.wal().store().list("").await?;
        assert!(stored.is_empty(), "stored in the source: {stored:?}");
        Ok(())
    }
}
