//! The manager's kept connections to postgres for the reads it repeats: the facts behind the
//! probes, `/pg/status` and the load-balancer checks, the replication block, and the database
//! sizes of a `/metrics` scrape.
//!
//! The coordinator polls `/pg/status` twice a second and a scrape reads three things, so a new
//! connection per read meant several backend starts a second per instance (each a fork, an
//! authentication and, with `log_connections`, two log lines). Now each kind of read keeps one
//! session while postgres runs:
//!
//! - A connection is kept only while the instance is `Running` and `postmaster.pid` does not
//!   say `stopping`. Leaving `Running` (a shutdown, a restart, a fence) drops it at once, and a
//!   shutdown asked outside the manager (`pg_ctl stop -m smart`) within a second
//!   (`close_when_not_running`), so a smart shutdown never waits on the manager's own
//!   sessions; a read at such a time uses a connection of its own, as before.
//! - A read that fails on a kept connection (postgres restarted, an administrator terminated
//!   the session, `idle_session_timeout`) is tried once more on a new connection.
//! - A read that outlives its deadline cancels its query on the server and drops the
//!   connection, so the next read does not queue behind it.
//! - The database sizes have their own connection: `pg_database_size` reads every file of
//!   every database and can take seconds, and the probes must not wait behind it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls};

use pgsteward_api::InstanceState;

use crate::pgconn::{self, LocalTarget};
use crate::supervisor::shared::Shared;

/// A server-side bound on each statement of a kept session, beyond the callers' own
/// deadlines (which cancel their query when they pass).
const STATEMENT_TIMEOUT_MS: u64 = 30_000;

/// The kept connections, one per kind of read.
#[derive(Debug, Default)]
pub struct ReadConnections {
    /// Facts, the replication block: small queries over shared memory.
    pub status: KeptConnection,
    /// `pg_database_size` of every database (slow on many files).
    pub sizes: KeptConnection,
}

impl ReadConnections {
    /// Drop both kept connections (their sessions end once no read uses them).
    pub async fn close(&self) {
        self.status.close().await;
        self.sizes.close().await;
    }
}

/// One session kept for reads, made on first use.
#[derive(Default)]
pub struct KeptConnection {
    slot: Mutex<Option<Kept>>,
}

impl std::fmt::Debug for KeptConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.slot.try_lock().map(|slot| slot.is_some()).ok();
        f.debug_struct("KeptConnection")
            .field("kept", &kept)
            .finish()
    }
}

struct Kept {
    target: LocalTarget,
    client: Arc<Client>,
}

/// Where and how to connect, and whether a new connection may be kept.
pub struct ReadTarget<'a> {
    pub target: &'a LocalTarget,
    /// The server's major version (session options depend on it).
    pub major: u32,
    /// Asked under the slot's lock before reusing a kept connection and after making a new
    /// one: may a connection be kept now?
    pub keep: &'a (dyn Fn() -> bool + Sync),
}

impl KeptConnection {
    /// Run `read` on the kept connection (made when there is none), within `timeout` in all.
    /// A failure on a connection kept from before is retried once on a new connection.
    pub async fn run<T, F, Fut>(&self, to: &ReadTarget<'_>, timeout: Duration, read: F) -> Result<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + timeout;
        let (client, reused) = self.client(to, deadline).await?;
        match self.read_once(&client, deadline, &read).await {
            // Past the deadline there is no time for a second try: report the first error.
            Err(e) if reused && Instant::now() < deadline => {
                tracing::debug!(error = %format!("{e:#}"), "a read on the kept postgres connection failed; trying a new connection");
                self.forget(&client).await;
                let (fresh, _) = self.client(to, deadline).await?;
                self.read_once(&fresh, deadline, &read).await
            }
            result => result,
        }
    }

    async fn read_once<T, F, Fut>(
        &self,
        client: &Arc<Client>,
        deadline: Instant,
        read: &F,
    ) -> Result<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match tokio::time::timeout_at(deadline, read(client.clone())).await {
            Ok(result) => result,
            Err(_) => {
                // The query goes on in its backend: cancel it there, and stop using this
                // session so the next read does not wait behind it.
                let cancel = client.cancel_token();
                tokio::spawn(async move {
                    if let Err(e) = cancel.cancel_query(NoTls).await {
                        tracing::debug!(error = %e, "cancelling a timed-out read");
                    }
                });
                self.forget(client).await;
                Err(anyhow!("postgres did not answer in time"))
            }
        }
    }

    /// The kept client for `to.target` (true) or a new one (false), kept when `to.keep()`.
    async fn client(&self, to: &ReadTarget<'_>, deadline: Instant) -> Result<(Arc<Client>, bool)> {
        let mut slot = tokio::time::timeout_at(deadline, self.slot.lock())
            .await
            .map_err(|_| anyhow!("connecting to postgres timed out"))?;
        if let Some(kept) = slot.as_ref() {
            if kept.target == *to.target && !kept.client.is_closed() && (to.keep)() {
                return Ok((kept.client.clone(), true));
            }
            *slot = None;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(anyhow!("connecting to postgres timed out"));
        }
        let options = session_options(to.major);
        let client = Arc::new(
            pgconn::connect_with_options(to.target, "postgres", remaining, &options).await?,
        );
        if (to.keep)() {
            *slot = Some(Kept {
                target: to.target.clone(),
                client: client.clone(),
            });
        }
        Ok((client, false))
    }

    /// Stop keeping `client` (when it is still the kept one).
    async fn forget(&self, client: &Arc<Client>) {
        let mut slot = self.slot.lock().await;
        if slot
            .as_ref()
            .is_some_and(|kept| Arc::ptr_eq(&kept.client, client))
        {
            *slot = None;
        }
    }

    /// Stop keeping the connection.
    pub async fn close(&self) {
        self.slot.lock().await.take();
    }
}

/// Session settings of a read connection: a server-side bound on each statement, and no
/// idle-session timeout from the server's configuration (PostgreSQL 14 and later have one).
fn session_options(major: u32) -> String {
    let mut options = format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}");
    if major >= 14 {
        options.push_str(" -c idle_session_timeout=0");
    }
    options
}

/// Which kept connection a read uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    Status,
    Sizes,
}

/// Run `read` on the instance's kept connection of `kind` (see the module doc), within
/// `timeout`.
pub async fn read<T, F, Fut>(
    shared: &Shared,
    kind: ReadKind,
    timeout: Duration,
    read: F,
) -> Result<T>
where
    F: Fn(Arc<Client>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let target = shared.target();
    let keep = || running(shared);
    let to = ReadTarget {
        target: &target,
        major: shared.bins.major,
        keep: &keep,
    };
    let connection = match kind {
        ReadKind::Status => &shared.reads.status,
        ReadKind::Sizes => &shared.reads.sizes,
    };
    connection
        .run(&to, timeout, read)
        .await
        .context("reading from postgres")
}

/// How often a kept connection is checked against `postmaster.pid` (a shutdown requested
/// outside the manager, such as `pg_ctl stop -m smart`, waits for every session).
const STOPPING_CHECK: Duration = Duration::from_secs(1);

/// True while a read may keep its connection: the instance is `Running`. (A stop asked outside
/// the manager is the watcher's, which reads `postmaster.pid`; a read cannot open a new
/// session while postgres is stopping anyway.)
fn running(shared: &Shared) -> bool {
    shared.state.current() == InstanceState::Running
}

/// Drop the kept connections whenever the instance leaves `Running`, and when
/// `postmaster.pid` says postgres is stopping, for as long as the manager runs.
pub fn close_when_not_running(shared: Arc<Shared>) {
    let mut states = shared.state.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STOPPING_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            states.borrow_and_update();
            if !running(&shared) || crate::pgdata::postmaster_stopping(&shared.pgdata) {
                shared.reads.close().await;
            }
            tokio::select! {
                changed = states.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_session_timeout_only_where_postgres_has_it() {
        assert_eq!(session_options(13), "-c statement_timeout=30000");
        assert_eq!(
            session_options(15),
            "-c statement_timeout=30000 -c idle_session_timeout=0"
        );
    }
}
