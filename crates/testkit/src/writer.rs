//! The acknowledged-commit writer of the fault tests and the failover benchmark: one task
//! inserting rows `(id, timeline)` through a libpq multi-host connection string
//! (`target_session_attrs=read-write`, hosts tried in random order so a hung host is not
//! always first), recording every acknowledged id with when it was sent and acknowledged,
//! reconnecting on any error or timeout, until stopped. The report gives the acknowledged
//! ids, the errors, the RTO around a fault and the ids missing from a server.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::config::LoadBalanceHosts;
use tokio_postgres::{Client, Config, NoTls};

/// The table the writer fills.
pub const TABLE: &str = "acked_writes";

/// One acknowledged insert.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub id: i64,
    pub timeline: i64,
    pub sent: Instant,
    pub at: Instant,
}

/// What the writer saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub acks: Vec<Ack>,
    pub errors: Vec<(Instant, String)>,
}

impl Report {
    /// Write unavailability around `fault`: from the last acknowledgement at or before it to
    /// the first acknowledgement of an insert sent after it (None when there is none).
    pub fn rto(&self, fault: Instant) -> Option<Duration> {
        let before = self.acks.iter().rev().find(|a| a.at <= fault)?.at;
        let after = self.acks.iter().find(|a| a.sent >= fault)?.at;
        Some(after.saturating_duration_since(before))
    }

    /// The longest wait between two consecutive acknowledgements from `since` on (counting
    /// the last one before `since`): the write pause of a planned change such as a
    /// switchover, during which the old primary keeps acknowledging for a while.
    pub fn longest_gap_since(&self, since: Instant) -> Option<Duration> {
        let first = self.acks.iter().rposition(|a| a.at <= since).unwrap_or(0);
        self.acks[first..]
            .windows(2)
            .map(|w| w[1].at.saturating_duration_since(w[0].at))
            .max()
    }

    /// Errors after `since`.
    pub fn errors_since(&self, since: Instant) -> usize {
        self.errors.iter().filter(|(t, _)| *t >= since).count()
    }

    /// Acknowledged ids not in `present`.
    pub fn missing(&self, present: &BTreeSet<i64>) -> Vec<i64> {
        self.acks
            .iter()
            .map(|a| a.id)
            .filter(|id| !present.contains(id))
            .collect()
    }
}

#[derive(Debug, Default)]
struct Shared {
    report: Mutex<Report>,
}

/// A running writer; `stop` returns its report.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// How long one insert (or one connection attempt) may take before the writer gives up on
/// the connection and reconnects.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(1);

/// Upper bound of one host's connection attempt (libpq's `connect_timeout` takes whole
/// seconds, at least 2): a hung host costs this much per reconnect.
pub const HOST_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

impl Writer {
    /// Create the table (through `conninfo`) and start inserting ids from 1, pausing `pause`
    /// between inserts.
    pub async fn start(conninfo: &str, pause: Duration) -> anyhow::Result<Writer> {
        let mut config: Config = conninfo.parse()?;
        config.load_balance_hosts(LoadBalanceHosts::Random);
        let client = connect(&config).await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, timeline bigint NOT NULL, \
                 at timestamptz NOT NULL DEFAULT now())"
            ))
            .await?;
        let next: i64 = client
            .query_one(
                &format!("SELECT coalesce(max(id), 0) + 1 FROM {TABLE}"),
                &[],
            )
            .await?
            .get(0);
        drop(client);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(run(config, next, pause, stop.clone(), shared.clone()));
        Ok(Writer { stop, shared, task })
    }

    /// A copy of what it saw so far.
    pub fn report(&self) -> Report {
        self.shared
            .report
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Number of acknowledged inserts so far.
    pub fn acked(&self) -> usize {
        self.shared.report.lock().map(|r| r.acks.len()).unwrap_or(0)
    }

    /// The first acknowledgement of an insert sent after `since`, if any yet.
    pub fn first_ack_after(&self, since: Instant) -> Option<Ack> {
        let report = self.shared.report.lock().ok()?;
        report.acks.iter().find(|a| a.sent >= since).copied()
    }

    /// Stop and return everything it saw.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.shared
            .report
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

/// Connect like libpq does with a multi-host string: hosts in the configured order (random
/// here), each attempt (TCP, startup, authentication, the read-write check) bounded by
/// `connect_timeout` — tokio-postgres bounds only the TCP connect, so a hung server that
/// still accepts connections would stall every attempt without this.
async fn connect(config: &Config) -> anyhow::Result<Client> {
    let per_host = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(OPERATION_TIMEOUT)
        .min(HOST_ATTEMPT_TIMEOUT);
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    let mut order: Vec<usize> = (0..hosts.len()).collect();
    if config.get_load_balance_hosts() == LoadBalanceHosts::Random {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as usize)
            .unwrap_or(0);
        let n = order.len().max(1);
        order.rotate_left(seed % n);
    }
    let mut errors = Vec::new();
    for i in order {
        let one = match &hosts[i] {
            tokio_postgres::config::Host::Tcp(h) => {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                let mut c = Config::new();
                copy_settings(config, &mut c);
                c.host(h).port(port);
                c
            }
            tokio_postgres::config::Host::Unix(p) => {
                let mut c = Config::new();
                copy_settings(config, &mut c);
                c.host_path(p);
                c
            }
        };
        match tokio::time::timeout(per_host, one.connect(NoTls)).await {
            Ok(Ok((client, connection))) => {
                tokio::spawn(connection);
                return Ok(client);
            }
            Ok(Err(e)) => errors.push(format!("host {i}: {e}")),
            Err(_) => errors.push(format!("host {i}: timed out after {per_host:?}")),
        }
    }
    anyhow::bail!("no host accepted: {}", errors.join("; "))
}

/// The settings of `from` a single-host attempt needs.
fn copy_settings(from: &Config, to: &mut Config) {
    if let Some(user) = from.get_user() {
        to.user(user);
    }
    if let Some(password) = from.get_password() {
        to.password(password);
    }
    if let Some(dbname) = from.get_dbname() {
        to.dbname(dbname);
    }
    to.target_session_attrs(from.get_target_session_attrs());
}

async fn session(config: &Config) -> anyhow::Result<(Client, i64, tokio_postgres::Statement)> {
    let client = connect(config).await?;
    let timeline = tokio::time::timeout(
        OPERATION_TIMEOUT,
        client.query_one(
            "SELECT timeline_id::bigint FROM pg_control_checkpoint()",
            &[],
        ),
    )
    .await
    .map_err(|_| anyhow::anyhow!("reading the timeline timed out"))??
    .get(0);
    let insert = client
        .prepare(&format!(
            "INSERT INTO {TABLE} (id, timeline) VALUES ($1, $2)"
        ))
        .await?;
    Ok((client, timeline, insert))
}

async fn run(
    config: Config,
    mut id: i64,
    pause: Duration,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let record_error = |e: String| {
        if let Ok(mut r) = shared.report.lock() {
            r.errors.push((Instant::now(), e));
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let (client, timeline, insert) = match session(&config).await {
            Ok(s) => s,
            Err(e) => {
                record_error(format!("connect: {e:#}"));
                // Let the loop come back without spinning on an instantly refused host.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            let sent = Instant::now();
            let result = tokio::time::timeout(
                OPERATION_TIMEOUT,
                client.execute(&insert, &[&id, &timeline]),
            )
            .await;
            match result {
                Ok(Ok(_)) => {
                    if let Ok(mut r) = shared.report.lock() {
                        r.acks.push(Ack {
                            id,
                            timeline,
                            sent,
                            at: Instant::now(),
                        });
                    }
                    id += 1;
                }
                Ok(Err(e)) => {
                    record_error(format!("insert {id}: {e}"));
                    // Never reuse an id whose outcome is unknown.
                    id += 1;
                    break;
                }
                Err(_) => {
                    record_error(format!(
                        "insert {id}: timed out after {OPERATION_TIMEOUT:?}"
                    ));
                    id += 1;
                    break;
                }
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Every id in the writer's table on the server at `port` (through one plain connection).
pub async fn ids_on(host: &str, port: u16, password: &str) -> anyhow::Result<BTreeSet<i64>> {
    let rows = crate::sql_at(
        host,
        port,
        "postgres",
        password,
        "postgres",
        &format!("SELECT id FROM {TABLE}"),
    )
    .await?;
    rows.iter()
        .map(|r| {
            r.first()
                .cloned()
                .flatten()
                .ok_or_else(|| anyhow::anyhow!("null id"))?
                .parse::<i64>()
                .map_err(Into::into)
        })
        .collect()
}
