//! `pgsteward run` and `pgsteward config check`: privilege drop, configuration, data
//! directory checks, bootstrap, listeners, signals, then the supervisor loop.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{bail, Context, Result};
use pgsteward_api::InstanceState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::cli::{ConfigArgs, RunArgs};
use crate::config::gucs::{GucCatalog, GucContext};
use crate::config::BootstrapMethod;
use crate::config::{self, Config, ConfigSources};
use crate::metrics::Metrics;
use crate::pgbin::PgBinaries;
use crate::pgdata::{self, DataDirKind};
use crate::privileges;
use crate::state::StateMachine;
use crate::supervisor::exit_code;
use crate::supervisor::reaper::Reaper;
use crate::supervisor::shared::{RuntimeInfo, Shared, ShutdownMode, SupervisorCommand};
use crate::supervisor::Supervisor;

/// `pgsteward run`; returns the exit code.
pub fn run(args: RunArgs) -> i32 {
    match prepare(&args) {
        Ok((config, sources, os_user)) => {
            if let Err(e) = crate::logs::init(&config.log.level) {
                eprintln!("error: {e:#}");
                return exit_code::STARTUP_ERROR;
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "starting the async runtime failed");
                    return exit_code::STARTUP_ERROR;
                }
            };
            match runtime.block_on(manage(config, sources, os_user)) {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "pgsteward cannot run");
                    exit_code::STARTUP_ERROR
                }
            }
        }
        Err(e) => {
            eprintln!("pgsteward: error: {e:#}");
            exit_code::STARTUP_ERROR
        }
    }
}

/// Drop privileges first, then load the configuration as the target user.
fn prepare(args: &RunArgs) -> Result<(Config, ConfigSources, String)> {
    let os_user = if nix::unistd::geteuid().is_root() {
        let Some(name) = &args.user else {
            bail!("running as root requires --user NAME (postgres refuses to run as root); pgsteward drops to that user before doing anything else");
        };
        let user = privileges::lookup(name)?;
        privileges::drop_to(&user)?.name
    } else {
        let me = privileges::current_user()?;
        if let Some(name) = &args.user {
            let wanted = privileges::lookup(name)?;
            if wanted.uid.as_raw() != me.uid {
                bail!(
                    "--user {name}: only root can switch users (running as {})",
                    me.name
                );
            }
        }
        me.name
    };
    let sources = ConfigSources::from_process(args.config.clone(), args.sources.overrides()?);
    let config = config::load(&sources)?;
    Ok((config, sources, os_user))
}

/// Binaries, parameter catalogue and a fully validated configuration, including the files it
/// names (token, TLS certificate and key).
fn validated(config: &Config) -> Result<(PgBinaries, GucCatalog)> {
    let bins = PgBinaries::locate(config.bin_dir.as_deref())?;
    let catalog = GucCatalog::from_binaries(&bins.bin_dir)?;
    config::validate::validate(config, &catalog)
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    if let Some(path) = &config.http.token_file {
        crate::bootstrap::read_secret(path, "API token (http.token_file)")?;
    }
    if let Some(tls) = &config.http.tls {
        pgsteward_tls::server::acceptor(
            &tls.cert_file,
            &tls.key_file,
            tls.client_ca_file.as_deref(),
        )?;
    }
    Ok((bins, catalog))
}

async fn manage(config: Config, sources: ConfigSources, os_user: String) -> Result<i32> {
    // std::process waits on its own children: run it before the reaper owns all waiting.
    let (bins, catalog) = validated(&config)?;
    let reaper = Reaper::start()?;
    if std::process::id() != 1 {
        // Orphans of postgres re-parent to the manager even outside a PID namespace.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become a child subreaper");
        }
    }
    let pgdata = config.pgdata.clone().context("pgdata is required")?;
    crate::replication::basebackup::discard_interrupted_clone(&config, &pgdata)?;
    let kind = pgdata::inspect(&pgdata)?;
    if let DataDirKind::Postgres { major } = kind {
        pgdata::check_major(&pgdata, major, bins.major)?;
        let overrides = pgdata::auto_conf_overrides(&pgdata);
        if !overrides.is_empty() {
            bail!(
                "postgresql.auto.conf (ALTER SYSTEM) sets parameters pgsteward manages: {}; they would override the manager's values. Remove them (ALTER SYSTEM RESET name, or edit {}/postgresql.auto.conf while postgres is stopped)",
                overrides.join(", "),
                pgdata.display()
            );
        }
        if pgdata.join(crate::bootstrap::MARKER).exists() {
            bail!(
                "data directory {} holds an unfinished bootstrap ({} exists): the earlier bootstrap (initdb or restore) did not finish; inspect it, then empty the directory to bootstrap again",
                pgdata.display(),
                crate::bootstrap::MARKER
            );
        }
    } else if config.bootstrap.method == BootstrapMethod::Basebackup {
        crate::replication::basebackup::preflight(&config)?;
    } else {
        crate::bootstrap::preflight(&config.bootstrap.initdb)?;
    }
    // One manager per data directory: lock before binding listeners or touching anything.
    if kind == DataDirKind::Missing {
        create_pgdata(&pgdata)?;
    }
    let _lock = pgdata::lock(&pgdata)?;
    tracing::info!(
        instance = %config.instance_name,
        pgdata = %pgdata.display(),
        binaries = %bins.version_line,
        user = %os_user,
        pid = std::process::id(),
        "pgsteward starting"
    );
    let executable = std::env::current_exe().context("locating the pgsteward executable")?;
    let metrics = Metrics::new(&config.metrics.namespace).context("creating metrics")?;
    let state = StateMachine::new(metrics.clone());
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let shared = Arc::new(Shared {
        state: state.clone(),
        metrics,
        bins: bins.clone(),
        pgdata: pgdata.clone(),
        os_user: os_user.clone(),
        sources,
        config: RwLock::new(config.clone()),
        runtime: Mutex::new(RuntimeInfo::default()),
        commands: commands_tx,
        token: RwLock::new(None),
        started_once: AtomicBool::new(false),
        active_target: RwLock::new(None),
        executable: executable.clone(),
        archiver: std::sync::OnceLock::new(),
        api_tls: std::sync::OnceLock::new(),
        backups: crate::backups::Backups::default(),
        drill: Mutex::new(None),
        ha: Mutex::new(None),
        reads: crate::kept_connection::ReadConnections::default(),
    });
    shared.reload_token(&config);
    crate::kept_connection::close_when_not_running(shared.clone());
    spawn_signal_forwarder(shared.clone())?;
    crate::http::server::serve_api(shared.clone()).await?;
    crate::http::metrics_server::serve(shared.clone()).await?;
    let initialised_now = matches!(kind, DataDirKind::Missing | DataDirKind::Empty)
        && config.bootstrap.method == BootstrapMethod::Initdb;
    if matches!(kind, DataDirKind::Missing | DataDirKind::Empty) {
        state.transition(InstanceState::Bootstrapping, "empty data directory");
        let result = match config.bootstrap.method {
            BootstrapMethod::Initdb => {
                crate::bootstrap::run(&reaper, &bins, &config, &pgdata, &shared.render_context())
                    .await
            }
            BootstrapMethod::Basebackup => {
                crate::replication::basebackup::run(&reaper, &bins, &config, &pgdata).await
            }
            BootstrapMethod::Recovery => {
                crate::recovery::bootstrap::run(&reaper, &bins, &config, &pgdata, &executable).await
            }
        };
        if let Err(e) = result {
            state.transition(InstanceState::Failed, "bootstrap failed");
            return Err(e.context("bootstrap failed"));
        }
    }
    start_archiver(&shared, &reaper, &config).await?;
    crate::retention_task::spawn(shared.clone());
    crate::wal_check_task::spawn(shared.clone());
    crate::logs::pg_tail::spawn(pgdata.clone());
    crate::supervisor::reload::spawn_file_watcher(shared.clone());
    crate::drill::schedule::spawn(shared.clone(), reaper.clone());
    crate::ha::spawn(shared.clone());
    let code = Supervisor::new(shared, reaper, catalog, commands_rx)
        .initialised_now(initialised_now)
        .run()
        .await;
    tracing::info!(exit_code = code, "pgsteward exiting");
    Ok(code)
}

/// Write the archive settings for the WAL commands and start the archiver (before postgres
/// starts, so that its first archive_command call finds the manager).
async fn start_archiver(shared: &Arc<Shared>, reaper: &Reaper, config: &Config) -> Result<()> {
    let settings = crate::archiver::settings::ArchiveSettings::from_config(config);
    crate::archiver::settings::ArchiveSettings::write(&shared.pgdata, settings.as_ref())?;
    let Some(settings) = settings else {
        return Ok(());
    };
    let segment_bytes = segment_size(reaper, &shared.bins, &shared.pgdata).await;
    if let Some(mb) = config.bootstrap.initdb.wal_segment_size_mb {
        if u64::from(mb) << 20 != segment_bytes {
            tracing::warn!(
                configured_mb = mb,
                cluster_segment_bytes = segment_bytes,
                "bootstrap.initdb.wal_segment_size_mb differs from this cluster's WAL segment size: it applies only when initdb creates a cluster; the cluster's own size is used"
            );
        }
    }
    let archiver = crate::archiver::Archiver::new(
        settings,
        &shared.pgdata,
        shared.metrics.clone(),
        segment_bytes,
    )
    .await?;
    archiver.spawn()?;
    tracing::info!(destination = %archiver.wal().store().describe(), server = %archiver.settings().server_name, segment_bytes, "WAL archiving enabled");
    let _ = shared.archiver.set(archiver);
    Ok(())
}

/// WAL segment size from pg_controldata; else read off the segment files in pg_wal; else
/// 16 MiB (logged).
async fn segment_size(reaper: &Reaper, bins: &PgBinaries, pgdata: &Path) -> u64 {
    let mut command = std::process::Command::new(bins.bin("pg_controldata"));
    command.arg("-D").arg(pgdata).env("LC_ALL", "C");
    let parsed = reaper
        .output(&mut command)
        .await
        .ok()
        .and_then(|(_, stdout, _)| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("Bytes per WAL segment:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
    parsed
        .or_else(|| {
            tracing::warn!(pgdata = %pgdata.display(), "pg_controldata did not give the WAL segment size; reading it off pg_wal");
            crate::pgdata::wal_segment_size(pgdata)
        })
        .unwrap_or_else(|| {
            tracing::warn!(pgdata = %pgdata.display(), "the WAL segment size is unknown; assuming 16 MiB");
            16 << 20
        })
}

fn create_pgdata(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating data directory {}", path.display()))
}

fn spawn_signal_forwarder(shared: Arc<Shared>) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let command = tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received: smart shutdown"); SupervisorCommand::Shutdown(ShutdownMode::Smart) }
                _ = int.recv() => { tracing::info!("SIGINT received: smart shutdown"); SupervisorCommand::Shutdown(ShutdownMode::Smart) }
                _ = quit.recv() => { tracing::info!("SIGQUIT received: immediate shutdown"); SupervisorCommand::Shutdown(ShutdownMode::Immediate) }
                _ = hup.recv() => { tracing::info!("SIGHUP received: reloading the configuration"); SupervisorCommand::Reload { reply: None } }
            };
            if shared.commands.send(command).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// `pgsteward config check FILE`; returns the exit code.
pub fn config_check(file: &Path, args: &ConfigArgs) -> i32 {
    let result = (|| -> Result<String> {
        let sources = ConfigSources::from_process(Some(file.to_path_buf()), args.overrides()?);
        let config = config::load(&sources)?;
        let (bins, catalog) = validated(&config)?;
        if config.bootstrap.method == BootstrapMethod::Basebackup {
            crate::replication::basebackup::preflight(&config)?;
        } else {
            crate::bootstrap::preflight(&config.bootstrap.initdb)?;
        }
        let restart_only = config
            .postgres
            .parameters
            .keys()
            .filter(|k| {
                catalog
                    .get(k)
                    .is_some_and(|g| g.context == GucContext::Postmaster)
            })
            .count();
        Ok(format!(
            "configuration OK: {}\n  instance_name: {}\n  pgdata: {}\n  binaries: {} ({})\n  user parameters: {} ({} take effect only after a restart)\n  API: {}  metrics: {} (namespace {})\n",
            file.display(),
            config.instance_name,
            config.pgdata.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            bins.bin_dir.display(),
            bins.version_line,
            config.postgres.parameters.len(),
            restart_only,
            config.http.listen,
            config.metrics.listen,
            config.metrics.namespace,
        ))
    })();
    match result {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("{e:#}");
            1
        }
    }
}
