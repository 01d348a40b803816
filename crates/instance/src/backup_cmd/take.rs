//! `pgsteward backup [--wait]`: `POST /pg/backup` to the local manager with the bearer token,
//! print the backup id, and with `--wait` follow `backup` in `/pg/status` (progress: bytes
//! read of total, rate) until the backup ends; the exit code says whether it succeeded.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pgsteward_api::BackupAccepted;

use crate::api_client::ApiClient;
use crate::cli::BackupTakeArgs;

/// Run the command; returns the exit code.
pub fn run(args: &BackupTakeArgs) -> i32 {
    super::block_on(async {
        match take(args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("pgsteward backup: ERROR: {e:#}");
                1
            }
        }
    })
}

async fn request_backup(args: &BackupTakeArgs) -> Result<BackupAccepted> {
    let token = match (&args.token_file, args.tls.identity()) {
        (Some(token_file), _) => Some(
            std::fs::read_to_string(token_file)
                .with_context(|| format!("reading {}", token_file.display()))?,
        ),
        (None, Some(_)) => None,
        (None, None) => bail!(
            "--token-file (or PGSTEWARD_TOKEN_FILE) must name the API token file (http.token_file), or --client-cert and --client-key a client certificate the manager accepts (http.tls.client_ca_file)"
        ),
    };
    let body = if args.immediate_checkpoint {
        r#"{"immediate_checkpoint":true}"#
    } else {
        ""
    };
    let client = ApiClient::new(&args.url, &args.tls)?;
    let (code, text) = client
        .post(
            "/pg/backup",
            token.as_deref().map(str::trim),
            body,
            Duration::from_secs(30),
        )
        .await?;
    if code != hyper::StatusCode::ACCEPTED {
        bail!("{} answered {code}: {text}", client.url("/pg/backup"));
    }
    serde_json::from_str(&text).context("unexpected response JSON")
}

/// How often `--wait` asks the manager (a local request): the command ends this soon after
/// the backup does.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Progress lines at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn take(args: &BackupTakeArgs) -> Result<i32> {
    let accepted = request_backup(args).await?;
    println!("backup {} started", accepted.backup_id);
    if !args.wait {
        return Ok(0);
    }
    let mut last_line = String::new();
    let mut last_printed: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let (_, status) = crate::status_cmd::fetch(&args.url, &args.tls).await?;
        let Some(backup) = status.backup else {
            bail!("the manager reports no backup status");
        };
        if let Some(running) = backup.running.filter(|r| r.backup_id == accepted.backup_id) {
            let line = format!(
                "{} {}: {:.0}/{:.0} MiB read ({:.1} MiB/s), {:.0} MiB stored",
                running.backup_id,
                running.phase,
                mib(running.bytes_done),
                mib(running.bytes_total),
                mib(running.rate_bytes_per_second as u64),
                mib(running.bytes_uploaded),
            );
            let due = last_printed.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
            if due && line != last_line {
                println!("{line}");
                last_line = line;
                last_printed = Some(Instant::now());
            }
            continue;
        }
        match backup.last.filter(|l| l.backup_id == accepted.backup_id) {
            Some(last) if last.succeeded => {
                println!(
                    "backup {} done in {:.1} s: {:.0} MiB read, {:.0} MiB stored",
                    last.backup_id,
                    last.duration_seconds,
                    mib(last.bytes_read),
                    mib(last.bytes_stored)
                );
                return Ok(0);
            }
            Some(last) => {
                eprintln!(
                    "backup {} FAILED: {}",
                    last.backup_id,
                    last.error.unwrap_or_default()
                );
                return Ok(1);
            }
            None => bail!(
                "backup {} is neither running nor finished (did the manager restart?)",
                accepted.backup_id
            ),
        }
    }
}
