//! `cargo xtask demo`: three local instances (a primary and two standbys cloned from it,
//! postgres running as the postgres user), the coordinator with `ANY 1` synchronous
//! replication and a file:// archive, all under scratch directories it prints; then how to
//! connect (a libpq multi-host string with `target_session_attrs=read-write`) and how to
//! trigger a failover or a switchover; runs until Ctrl-C (or SIGTERM) and cleans up.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use pgsteward_testkit::cluster::{Cluster, ClusterOptions};
use pgsteward_testkit::manager::PASSWORD;
use pgsteward_testkit::PgVersion;

use crate::bench::failover::binaries;

pub fn run(root: &Path) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("`cargo xtask demo` must run as root: the managers run postgres as the postgres OS user");
    }
    let (pgsteward, coordinator) = binaries(root)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(demo(&pgsteward, &coordinator))?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(pgsteward: &Path, coordinator: &Path) -> Result<()> {
    eprintln!("demo: starting three PostgreSQL 15 instances and the coordinator (about a minute)");
    let mut options = ClusterOptions::new(pgsteward, coordinator, PgVersion::V15);
    // A demo is watched by a person: a failure threshold they can see happen.
    options.failure_threshold = Duration::from_secs(2);
    let mut cluster = Cluster::start(options).await;
    print!("{}", instructions(&cluster).await);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    eprintln!("\ndemo: stopping the coordinator and the managers, removing the directories");
    cluster.coordinator.stop();
    for member in &mut cluster.members {
        if let Some(manager) = member.manager.as_mut() {
            manager.signal(Signal::SIGTERM).await;
            let _ = tokio::time::timeout(
                Duration::from_secs(40),
                manager.wait_exit(Duration::from_secs(35)),
            )
            .await;
        }
    }
    drop(cluster);
    eprintln!("demo: done");
    Ok(())
}

async fn instructions(cluster: &Cluster) -> String {
    let mut out = String::new();
    let api = cluster.coordinator.url("");
    out.push_str("\n=== pgsteward demo: three instances, one coordinator ===\n\n");
    out.push_str(&format!(
        "archive (file://):   {}\ncoordinator:         {api}  (config, state and log in {})\n\n",
        cluster.archive.display(),
        cluster.dir.path().display()
    ));
    for m in &cluster.members {
        let i = &m.instance;
        let (manager_pid, postmaster) = match &m.manager {
            Some(manager) => (
                manager.pid().await.to_string(),
                manager
                    .postmaster_host_pid()
                    .await
                    .map_or("?".to_owned(), |p| p.to_string()),
            ),
            None => ("-".into(), "-".into()),
        };
        out.push_str(&format!(
            "member {}: postgres 127.0.0.1:{}  manager API {}  manager pid {manager_pid}  postmaster pid {postmaster}\n           directory {}\n",
            m.name,
            i.pg_port,
            i.api(),
            i.dir.path().display()
        ));
    }
    let ports: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.instance.pg_port.to_string())
        .collect();
    let token = cluster.members[0].instance.dir.join("api.token");
    out.push_str(&format!(
        "\nConnect to whichever member is primary (libpq tries the hosts in turn and keeps the \
         read-write one):\n\n  PGPASSWORD={PASSWORD} psql \"host=127.0.0.1,127.0.0.1,127.0.0.1 port={} \
         user=postgres dbname=postgres target_session_attrs=read-write\"\n\n",
        ports.join(",")
    ));
    out.push_str(&format!(
        "Watch the coordinator:  watch -n 0.5 'curl -s {api}/status | jq \"{{term, primary, synchronous_standby_names, last_action}}\"'\n\n\
         Trigger a failover (member a is the primary at first): kill its manager and postgres,\n\
         the coordinator promotes the most advanced standby after its failure threshold (2 s):\n\n\
         \x20 kill -9 <manager pid of a> <postmaster pid of a>     # or kill -STOP both for a hang\n\n\
         Trigger a switchover (planned, zero loss):\n\n\
         \x20 curl -s -X POST -H 'content-type: application/json' -d '{{\"to\":\"b\"}}' {api}/switchover\n\
         \x20 (or: pgsteward-coordinator switchover --to b)\n\n\
         A manager's own view:   curl -s -H \"Authorization: Bearer $(cat {})\" {}/pg/status | jq\n\n\
         Ctrl-C stops everything and removes the directories.\n",
        token.display(),
        cluster.members[0].instance.api()
    ));
    out
}
