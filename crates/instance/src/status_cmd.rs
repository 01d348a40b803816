//! `pgsteward status`: fetch `/pg/status` from a manager's API (http or https) and print a
//! summary (or JSON).

use anyhow::{bail, Context, Result};
use pgsteward_api::InstanceStatus;

use crate::api_client::ApiClient;
use crate::cli::StatusArgs;

/// Run the command; returns the exit code (0 when the instance is running).
pub fn run(args: &StatusArgs) -> i32 {
    crate::cli::block_on("status", crate::cli::CommandRuntime::CurrentThread, async {
        match fetch(&args.url, args.ca_file.as_deref()).await {
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
    ca_file: Option<&std::path::Path>,
) -> Result<(String, InstanceStatus)> {
    let client = ApiClient::new(base, ca_file)?;
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
    text + &crate::replication::summary::lines(s)
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
