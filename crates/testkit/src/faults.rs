//! One fault against a running `cluster::Cluster` under the acknowledged-commit writer, shared
//! by the fault tests and `cargo xtask bench failover`: start the writer, inject the fault
//! (kill -9, SIGSTOP, a network partition, or a switchover) on
//! the primary, wait for the first acknowledged write after it and for the coordinator's
//! primary, resume or restart the old primary, write some more, stop, and measure: RTO,
//! acknowledged commits missing on the primary, the members answering as primary, and what
//! became of the old primary. Errors (not panics) so a benchmark can report and go on.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cluster::{Cluster, NAMES};
use crate::proc::signal_tree;
use crate::writer::Writer;

/// What happens to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of the postmaster alone (its manager restarts it, or the coordinator fails over).
    KillPostmaster,
    /// kill -9 of the manager and of postgres (postmaster and every child) together.
    KillManagerAndPostgres,
    /// SIGSTOP of the manager and of postgres; SIGCONT once another member is primary.
    Hang,
    /// The primary's network namespace cut off the bridge; reconnected once another member
    /// is primary (needs a cluster with `network_namespaces`).
    Isolate,
    /// `POST /switchover` on the coordinator (planned; not a fault).
    Switchover,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::KillPostmaster,
        Fault::KillManagerAndPostgres,
        Fault::Hang,
        Fault::Isolate,
        Fault::Switchover,
    ];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillPostmaster => "kill -9 postmaster",
            Fault::KillManagerAndPostgres => "kill -9 manager+postgres",
            Fault::Hang => "SIGSTOP manager+postgres",
            Fault::Isolate => "network partition (primary's netns cut off)",
            Fault::Switchover => "switchover",
        }
    }
}

/// What one fault did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub fault: Fault,
    pub old_primary: String,
    pub new_primary: String,
    /// Last acknowledged write before the fault → first acknowledged write sent after it.
    pub rto: Duration,
    /// Fault → the coordinator naming another primary (None when it kept the old one).
    pub promoted_after: Option<Duration>,
    pub acknowledged: usize,
    pub errors: usize,
    /// Acknowledged ids absent from the new primary.
    pub missing: Vec<i64>,
    /// Members whose postgres answers `pg_is_in_recovery() = false` at the end.
    pub primaries: Vec<&'static str>,
    /// The old primary's manager `state` and `replication.role` at the end.
    pub old_state: String,
}

/// Deadline of each wait.
pub const RECOVERY: Duration = Duration::from_secs(30);

async fn wait<T, F, Fut>(what: &str, check: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + RECOVERY;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {RECOVERY:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_acks(writer: &Writer, n: usize) -> Result<()> {
    wait(&format!("{n} acknowledged writes"), || async {
        (writer.acked() >= n).then_some(())
    })
    .await
    .with_context(|| {
        let report = writer.report();
        let last: Vec<&String> = report.errors.iter().rev().take(5).map(|(_, e)| e).collect();
        format!("{} acknowledged; last errors: {last:?}", report.acks.len())
    })
}

fn index(name: &str) -> Result<usize> {
    NAMES
        .iter()
        .position(|n| *n == name)
        .ok_or_else(|| anyhow!("no member {name}"))
}

/// Members whose postgres answers `pg_is_in_recovery() = false`.
pub async fn primaries(cluster: &Cluster) -> Vec<&'static str> {
    let mut found = Vec::new();
    for name in NAMES {
        let query = cluster.sql(name, "SELECT pg_is_in_recovery()::text");
        if let Ok(Ok(rows)) = tokio::time::timeout(Duration::from_secs(3), query).await {
            let value = rows.first().and_then(|r| r.first().cloned().flatten());
            if value.as_deref() == Some("false") {
                found.push(name);
            }
        }
    }
    found
}

/// Run `fault` on the cluster's current primary with the writer pausing `pause` between
/// inserts.
pub async fn run(cluster: &mut Cluster, fault: Fault, pause: Duration) -> Result<Outcome> {
    let writer = Writer::start(&cluster.conninfo(), pause).await?;
    wait_acks(&writer, 100).await?;
    let old = cluster
        .primary()
        .await
        .ok_or_else(|| anyhow!("the coordinator names no primary"))?;
    let manager = cluster
        .member(&old)
        .manager
        .as_ref()
        .ok_or_else(|| anyhow!("{old} has no running manager"))?;
    let manager_pid = Pid::from_raw(manager.pid().await);
    let postmaster = manager
        .postmaster_host_pid()
        .await
        .ok_or_else(|| anyhow!("{old}: no postmaster pid"))?;
    let candidate = NAMES.iter().find(|n| **n != old).copied().unwrap_or("b");
    let at = Instant::now();
    match fault {
        Fault::KillPostmaster => kill(Pid::from_raw(postmaster), Signal::SIGKILL)?,
        // "postgres" is the postmaster and all its children: backends and walsenders (each in
        // its own process group) would otherwise go on serving existing connections.
        Fault::KillManagerAndPostgres => {
            kill(manager_pid, Signal::SIGKILL)?;
            signal_tree(postmaster, Signal::SIGKILL);
        }
        Fault::Hang => {
            kill(manager_pid, Signal::SIGSTOP)?;
            signal_tree(postmaster, Signal::SIGSTOP);
        }
        Fault::Isolate => {
            let network = cluster
                .network
                .as_ref()
                .ok_or_else(|| anyhow!("Isolate needs a cluster with network namespaces"))?;
            network.isolate(index(&old)?)?;
        }
        Fault::Switchover => {
            let answer = cluster
                .switchover(candidate)
                .await
                .ok_or_else(|| anyhow!("the coordinator did not answer POST /switchover"))?;
            if answer.status != 200 {
                bail!(
                    "POST /switchover answered {}: {}",
                    answer.status,
                    answer.body
                );
            }
        }
    }
    // A fault takes effect once injected: an insert acknowledged while the signals were being
    // sent was acknowledged by the old primary. A switchover's window starts at the request.
    let at = if fault == Fault::Switchover {
        at
    } else {
        Instant::now()
    };
    let result = after_fault(cluster, &writer, fault, &old, at).await;
    // Whatever happened, never leave a stopped process behind.
    if fault == Fault::Hang {
        signal_tree(postmaster, Signal::SIGCONT);
        let _ = kill(manager_pid, Signal::SIGCONT);
    }
    if fault == Fault::Isolate {
        if let Some(network) = &cluster.network {
            network.heal(index(&old)?)?;
        }
    }
    let (new_primary, promoted_after) = result?;
    wait_acks(&writer, writer.acked() + 20).await?;
    let report = writer.stop().await;
    let rto = if fault == Fault::Switchover {
        report.longest_gap_since(at)
    } else {
        report.rto(at)
    };
    let rto = rto.ok_or_else(|| anyhow!("no acknowledged write on one side of the fault"))?;
    let old_state = if fault == Fault::KillPostmaster && new_primary == old {
        "primary (restarted by its manager)".to_owned()
    } else {
        let s = wait("the old primary fenced or a standby", || async {
            let s = cluster.member_status(&old).await?;
            let fenced = s["state"] == "fenced";
            let standby = s["replication"]["role"] == "replica" && s["postgres_up"] == true;
            (fenced || standby).then_some(s)
        })
        .await?;
        format!("{} ({})", s["state"], s["replication"]["role"])
    };
    let primaries = primaries(cluster).await;
    let missing = cluster.missing_acks(&new_primary, &report).await?;
    Ok(Outcome {
        fault,
        old_primary: old,
        new_primary,
        rto,
        promoted_after,
        acknowledged: report.acks.len(),
        errors: report.errors.len(),
        missing,
        primaries,
        old_state,
    })
}

async fn after_fault(
    cluster: &mut Cluster,
    writer: &Writer,
    fault: Fault,
    old: &str,
    at: Instant,
) -> Result<(String, Option<Duration>)> {
    let promoted = async {
        match fault {
            // The manager restarts a crashed postmaster, and the coordinator may or may not
            // fail over meanwhile: wait for the first write, then take its primary.
            Fault::KillPostmaster => None,
            _ => wait("a new primary", || async {
                let p = cluster.primary().await?;
                (p != old).then(|| (p, at.elapsed()))
            })
            .await
            .ok(),
        }
    };
    let first = wait("a write acknowledged after the fault", || async {
        writer.first_ack_after(at)
    });
    let (promoted, first) = tokio::join!(promoted, first);
    first?;
    let (primary, after) = match (fault, promoted) {
        (Fault::KillPostmaster, _) => {
            let p = wait("a primary", || async { cluster.primary().await }).await?;
            let after = (p != old).then(|| at.elapsed());
            (p, after)
        }
        (_, Some((p, after))) => (p, Some(after)),
        (_, None) => bail!("the coordinator named no new primary within {RECOVERY:?}"),
    };
    if fault == Fault::KillManagerAndPostgres {
        cluster.restart(old);
    }
    Ok((primary, after))
}
