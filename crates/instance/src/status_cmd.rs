//! `pgsteward status`: fetch `/pg/status` from a manager's API (http or https) and print a
//! summary (with the `ha` checks when configured) or the JSON.

use anyhow::{bail, Context, Result};
use pgsteward_api::InstanceStatus;

use crate::api_client::ApiClient;
use crate::cli::StatusArgs;

/// Run the command; returns the exit code (0 when the instance is running).
pub fn run(args: &StatusArgs) -> i32 {
    crate::cli::block_on("status", crate::cli::CommandRuntime::CurrentThread, async {
        match fetch(&args.url, &args.tls).await {
            Ok((raw, status)) => {
                if args.json {
                    println!("{raw}");
                } else {
                    print!("{}", summary(&status));
                }
                i32::from(status.state != pgsteward_api::InstanceState::Running)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    })
}

pub(crate) async fn fetch(
    base: &str,
    tls: &crate::cli::ApiTlsArgs,
) -> Result<(String, InstanceStatus)> {
    let client = ApiClient::new(base, tls)?;
    let (code, raw) = client
        .get("/pg/status", std::time::Duration::from_secs(10))
        .await?;
    if !code.is_success() {
        bail!("{} answered {code}: {raw}", client.url("/pg/status"));
    }
    let status: InstanceStatus = serde_json::from_str(&raw).context("unexpected status JSON")?;
    Ok((raw, status))
}

/// Human-readable summary.
pub fn summary(s: &InstanceStatus) -> String {
    let role = serde_json::to_value(s.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let dash = || "-".to_owned();
    let pending = if s.pending_restart_parameters.is_empty() {
        "none".to_owned()
    } else {
        s.pending_restart_parameters.join(", ")
    };
    let pending = if s.pending_manager_restart.is_empty() {
        pending
    } else {
        format!(
            "{pending}; manager restart: {}",
            s.pending_manager_restart.join(", ")
        )
    };
    let text = format!(
        "instance      {} ({role}, {})\n\
         postgres      {} {}, pid {}, started {}\n\
         system id     {}\n\
         timeline/lsn  {} / {}\n\
         config        {} (pending restart: {pending})\n\
         crash restarts {}\n\
         archive       {}\n\
         manager       {}\n\
         last error    {}\n",
        s.instance_name,
        s.state,
        s.postgres_version
            .clone()
            .unwrap_or_else(|| s.postgres_major.to_string()),
        if s.postgres_up { "up" } else { "DOWN" },
        s.postmaster_pid.map(|p| p.to_string()).unwrap_or_else(dash),
        s.postmaster_start_time.clone().unwrap_or_else(dash),
        s.system_identifier.clone().unwrap_or_else(dash),
        s.timeline.map(|t| t.to_string()).unwrap_or_else(dash),
        s.current_lsn.clone().unwrap_or_else(dash),
        s.config_hash.get(..12).unwrap_or(&s.config_hash),
        s.crash_restarts,
        archive_line(s),
        s.manager_version,
        s.last_error.clone().unwrap_or_else(dash),
    );
    let ha = s.ha.as_ref().map(ha_line).unwrap_or_default();
    text + &crate::replication::summary::lines(s) + &ha
}

/// The `ha` line: the coordinator, the peers (with the first reason one did not answer), the
/// isolation timeout, self-fences, and what an `awaiting_role` instance waits for.
fn ha_line(ha: &pgsteward_api::HaStatus) -> String {
    let coordinator = match (&ha.coordinator_reachable, &ha.coordinator_error) {
        (true, _) => "reachable".to_owned(),
        (false, Some(e)) => format!("UNREACHABLE ({e})"),
        (false, None) => "UNREACHABLE".to_owned(),
    };
    let peer_error = ha
        .peer_error
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    let waiting = ha
        .waiting_for
        .as_deref()
        .map(|w| format!(", waiting for: {w}"))
        .unwrap_or_default();
    format!(
        "ha            coordinator {coordinator}, peers {}/{} reachable{peer_error}, isolation timeout {} s, self-fences {}{waiting}\n",
        ha.reachable_peers, ha.peers, ha.isolation_timeout_seconds, ha.self_fences
    )
}

fn archive_line(s: &InstanceStatus) -> String {
    match &s.archive {
        None => "off".to_owned(),
        Some(a) => format!(
            "{} (last {} at {}, backlog {}, lag {:.0} s, failures {}{})",
            a.destination,
            a.last_archived_wal.as_deref().unwrap_or("-"),
            a.last_archived_time.as_deref().unwrap_or("-"),
            a.ready_backlog,
            a.lag_seconds,
            a.failed_count,
            a.last_failure
                .as_deref()
                .map(|f| format!(", last failure: {f}"))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ha_line_says_what_is_unreachable_and_why() {
        let mut ha = pgsteward_api::HaStatus {
            coordinator_url: "https://c:8100".into(),
            peers: 2,
            coordinator_reachable: true,
            coordinator_error: None,
            reachable_peers: 2,
            peer_error: None,
            seconds_since_contact: Some(0.0),
            isolation_timeout_seconds: 3.0,
            self_fences: 0,
            waiting_for: None,
        };
        assert_eq!(
            ha_line(&ha),
            "ha            coordinator reachable, peers 2/2 reachable, isolation timeout 3 s, self-fences 0\n"
        );
        ha.coordinator_reachable = false;
        ha.coordinator_error = Some("invalid peer certificate: UnknownIssuer".into());
        ha.reachable_peers = 1;
        ha.peer_error = Some("https://p:8000/healthz: connection refused".into());
        ha.waiting_for = Some("the coordinator".into());
        let line = ha_line(&ha);
        assert!(
            line.contains("coordinator UNREACHABLE (invalid peer certificate: UnknownIssuer)")
                && line
                    .contains("peers 1/2 reachable (https://p:8000/healthz: connection refused)")
                && line.ends_with(", waiting for: the coordinator\n"),
            "{line}"
        );
    }
}
