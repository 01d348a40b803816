//! Configuration reload: re-read every layer, validate, re-render the manager-owned files,
//! ask postgres to reload, and report which parameters now wait for a restart. An invalid
//! configuration is refused as a whole and nothing is written.

use std::time::Duration;

use pgsteward_api::ReloadResponse;
use tokio::time::Instant;

use super::shared::{CommandError, Shared};
use crate::config::{self, gucs::GucCatalog, Config};
use crate::pgconn;

/// Load and validate the configuration from its sources.
pub fn load_valid(shared: &Shared, catalog: &GucCatalog) -> Result<Config, CommandError> {
    let loaded = config::load(&shared.sources)
        .map_err(|e| CommandError::InvalidConfiguration(format!("{e:#}")))?;
    config::validate::validate(&loaded, catalog)
        .map_err(|e| CommandError::InvalidConfiguration(e.to_string().trim_end().to_owned()))?;
    Ok(loaded)
}

/// Settings that take effect only when the manager itself restarts.
fn keep_manager_settings(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    if new.pgdata != old.pgdata {
        new.pgdata.clone_from(&old.pgdata);
        kept.push("pgdata");
    }
    if new.bin_dir != old.bin_dir {
        new.bin_dir.clone_from(&old.bin_dir);
        kept.push("bin_dir");
    }
    // Switching between HTTP and HTTPS needs a new listener; another certificate, key or
    // client CA is applied by the reload (`rebuild_api_tls`).
    if new.http.listen != old.http.listen || new.http.tls.is_some() != old.http.tls.is_some() {
        new.http.listen = old.http.listen;
        new.http.tls.clone_from(&old.http.tls);
        kept.push("http.listen/http.tls");
    }
    if new.metrics != old.metrics {
        new.metrics = old.metrics.clone();
        kept.push("metrics");
    }
    if new.postgres.superuser != old.postgres.superuser {
        new.postgres.superuser.clone_from(&old.postgres.superuser);
        kept.push("postgres.superuser");
    }
    if new.http.body_limit_bytes != old.http.body_limit_bytes {
        new.http.body_limit_bytes = old.http.body_limit_bytes;
        kept.push("http.body_limit_bytes");
    }
    if new.archive != old.archive {
        new.archive = old.archive.clone();
        kept.push("archive");
    }
    if new.log != old.log {
        new.log = old.log.clone();
        kept.push("log");
    }
    kept
}

/// Apply the configuration now on disk. `postgres_up` says whether to ask postgres to reload.
pub async fn apply(
    shared: &Shared,
    catalog: &GucCatalog,
    postgres_up: bool,
) -> Result<ReloadResponse, CommandError> {
    let result = apply_inner(shared, catalog, postgres_up).await;
    match &result {
        Ok(response) => {
            shared.metrics.config_reloads.inc();
            tracing::info!(changed = response.changed, config_hash = %response.config_hash, pending_restart = ?response.pending_restart_parameters, "configuration applied");
        }
        Err(e) => {
            shared.metrics.config_reload_failures.inc();
            shared.with_runtime(|r| r.last_error = Some(format!("reload refused: {e}")));
            tracing::error!(error = %e, "configuration reload refused; the previous configuration stays in effect");
        }
    }
    result
}

async fn apply_inner(
    shared: &Shared,
    catalog: &GucCatalog,
    postgres_up: bool,
) -> Result<ReloadResponse, CommandError> {
    let mut new_config = load_valid(shared, catalog)?;
    let old_config = shared.config();
    let kept = keep_manager_settings(&old_config, &mut new_config);
    if !kept.is_empty() {
        tracing::warn!(settings = ?kept, "these settings change only when the manager restarts; keeping the running values");
    }
    let api_tls = rebuild_api_tls(shared, &new_config)?;
    let rendered = config::render::render(&new_config, &shared.render_context());
    let mut changed = config::render::write(&shared.pgdata, &rendered)
        .map_err(|e| CommandError::Failed(format!("writing configuration files: {e:#}")))?;
    changed |= crate::replication::refresh(&shared.pgdata, &new_config)
        .map_err(|e| CommandError::Failed(format!("writing the standby settings: {e:#}")))?;
    shared.reload_token(&new_config);
    if let Some((reloadable, acceptor)) = api_tls {
        reloadable.replace(acceptor);
        crate::http::server::record_certificate_expiry(shared, &reloadable);
        tracing::info!("API TLS certificate, key and client CA re-read");
    }
    *shared.config.write().unwrap_or_else(|p| p.into_inner()) = new_config;
    let kept: Vec<String> = kept.into_iter().map(str::to_owned).collect();
    shared.with_runtime(|r| {
        r.config_hash.clone_from(&rendered.hash);
        r.last_error = None;
        r.pending_manager_restart.clone_from(&kept);
    });
    shared
        .metrics
        .pending_manager_restart
        .set(i64::from(!kept.is_empty()));
    let mut pending = shared.runtime().pending_restart;
    if postgres_up && changed {
        pending = reload_postgres(shared).await?;
    }
    shared.with_runtime(|r| r.pending_restart.clone_from(&pending));
    shared
        .metrics
        .pending_restart
        .set(i64::from(!pending.is_empty()));
    Ok(ReloadResponse {
        changed,
        config_hash: rendered.hash,
        pending_restart_parameters: pending,
        pending_manager_restart: kept,
        restarted: false,
    })
}

/// The API's TLS acceptor built again from the files of `config` (a rotated certificate, a new
/// client CA), to be swapped in once nothing else can fail; an unreadable or mismatched file
/// refuses the whole reload and the running certificate stays.
fn rebuild_api_tls(
    shared: &Shared,
    config: &Config,
) -> Result<
    Option<(
        pgsteward_tls::server::ReloadableAcceptor,
        pgsteward_tls::server::ServerTls,
    )>,
    CommandError,
> {
    let (Some(reloadable), Some(tls)) = (shared.api_tls.get(), &config.http.tls) else {
        return Ok(None);
    };
    let acceptor = pgsteward_tls::server::acceptor(
        &tls.cert_file,
        &tls.key_file,
        tls.client_ca_file.as_deref(),
    )
    .map_err(|e| CommandError::InvalidConfiguration(format!("http.tls: {e:#}")))?;
    Ok(Some((reloadable.clone(), acceptor)))
}

/// `pg_reload_conf()`, wait until postgres processed it, and return the pending parameters.
async fn reload_postgres(shared: &Shared) -> Result<Vec<String>, CommandError> {
    let target = shared.target();
    let timeout = Duration::from_secs(5);
    let failed =
        |what: &str, e: &dyn std::fmt::Display| CommandError::Failed(format!("{what}: {e}"));
    let client = pgconn::connect(&target, "postgres", timeout)
        .await
        .map_err(|e| failed("connecting", &format!("{e:#}")))?;
    let before: String = client
        .query_one("SELECT pg_conf_load_time()::text", &[])
        .await
        .map_err(|e| failed("reading pg_conf_load_time", &e))?
        .get(0);
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .map_err(|e| failed("pg_reload_conf", &e))?;
    // A new backend inherits the postmaster's configuration: wait until it shows the reload.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = pgconn::connect(&target, "postgres", timeout)
            .await
            .map_err(|e| failed("connecting", &format!("{e:#}")))?;
        let now: String = probe
            .query_one("SELECT pg_conf_load_time()::text", &[])
            .await
            .map_err(|e| failed("reading pg_conf_load_time", &e))?
            .get(0);
        if now != before {
            let pending: Vec<String> = probe
                .query_one("SELECT ARRAY(SELECT name FROM pg_settings WHERE pending_restart ORDER BY name)", &[])
                .await
                .map_err(|e| failed("reading pending_restart", &e))?
                .get(0);
            let errors = probe
                .query("SELECT coalesce(name, sourcefile), error FROM pg_file_settings WHERE error IS NOT NULL", &[])
                .await
                .map_err(|e| failed("reading pg_file_settings", &e))?;
            if !errors.is_empty() {
                let list: Vec<String> = errors
                    .iter()
                    .map(|row| format!("{}: {}", row.get::<_, String>(0), row.get::<_, String>(1)))
                    .collect();
                tracing::error!(errors = ?list, "postgres rejected part of the configuration");
                shared.with_runtime(|r| {
                    r.last_error = Some(format!("postgres rejected: {}", list.join("; ")))
                });
            }
            return Ok(pending);
        }
        if Instant::now() >= deadline {
            return Err(CommandError::Failed(
                "postgres did not process the reload within 10 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Watch the configuration file, the token file and the TLS files (the API's certificate, key
/// and client CA, `ha.ca_file`) and ask the loop to reload on change.
/// Polling catches Kubernetes' symlink-swapped ConfigMap and Secret volumes too.
pub fn spawn_file_watcher(shared: std::sync::Arc<Shared>) {
    tokio::spawn(async move {
        let fingerprint = |shared: &Shared| {
            let config = shared.config();
            let mut files = Vec::new();
            files.extend(shared.sources.file.clone());
            files.extend(config.http.token_file.clone());
            if let Some(tls) = &config.http.tls {
                files.extend([tls.cert_file.clone(), tls.key_file.clone()]);
                files.extend(tls.client_ca_file.clone());
            }
            files.extend(config.ha.ca_file.clone());
            files
                .into_iter()
                .map(|f| std::fs::read(f).ok())
                .collect::<Vec<_>>()
        };
        let mut last = fingerprint(&shared);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = fingerprint(&shared);
            if now != last {
                last = now;
                tracing::info!("configuration file changed: reloading");
                let _ = shared
                    .commands
                    .send(super::shared::SupervisorCommand::Reload { reply: None })
                    .await;
            }
        }
    });
}
