//! State shared between the supervisor loop and the HTTP API: the state machine, metrics,
//! the current configuration, runtime facts, and the command channel into the loop.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, RwLock};

use pgsteward_api::{FenceResponse, ReloadResponse, RestartMode, RestartResponse};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigSources};
use crate::metrics::Metrics;
use crate::pgbin::PgBinaries;
use crate::pgconn::LocalTarget;
use crate::state::StateMachine;

/// How to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Smart, escalating to fast after `smart_shutdown_timeout` and to immediate at `stop_delay`.
    Smart,
    /// Fast, escalating to immediate at `stop_delay`.
    Fast,
    /// Immediate (SIGQUIT): postgres will run crash recovery at the next start.
    Immediate,
}

/// Why a command was refused or failed.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum CommandError {
    #[error("{0}")]
    InvalidConfiguration(String),
    #[error("{0}")]
    WrongState(String),
    #[error("{0}")]
    Failed(String),
}

/// Requests to the supervisor loop.
#[derive(Debug)]
pub enum SupervisorCommand {
    Restart {
        mode: RestartMode,
        reply: oneshot::Sender<Result<RestartResponse, CommandError>>,
    },
    Reload {
        reply: Option<oneshot::Sender<Result<ReloadResponse, CommandError>>>,
    },
    Shutdown(ShutdownMode),
    /// Stop postgres and keep it stopped (persisted) until `Unfence`.
    Fence {
        reply: oneshot::Sender<Result<FenceResponse, CommandError>>,
    },
    /// Remove the fence and start postgres.
    Unfence {
        reply: oneshot::Sender<Result<FenceResponse, CommandError>>,
    },
    /// Stop postgres (fast), run the work on the stopped data directory, then start postgres
    /// again or fence, as the work says (demote, follow).
    RoleChange(RoleChangeWork),
    /// From the HA monitor (`crate::ha`).
    Ha(HaCommand),
}

/// What the HA monitor tells the supervisor loop (each checked again against the state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaCommand {
    /// Isolated primary: stop postgres and wait for the coordinator's confirmation.
    AwaitRole { reason: String },
    /// The coordinator names this instance the primary of `term`: start postgres.
    Confirmed { term: u64 },
    /// Another instance is the primary of a newer term: stop postgres and stay fenced (the
    /// coordinator re-admits this instance as a standby).
    Superseded { reason: String },
}

/// What the supervisor does after a role change's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterRoleChange {
    /// Remove any fence and start postgres.
    Start,
    /// Keep postgres stopped, fenced, for this reason.
    Fence(String),
}

/// The future a role change's work returns.
pub type RoleChangeFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = AfterRoleChange> + Send>>;

/// Work run by the supervisor loop while postgres is stopped; it answers its caller itself.
pub struct RoleChangeWork(
    pub Box<dyn FnOnce(crate::supervisor::reaper::Reaper) -> RoleChangeFuture + Send>,
);

impl std::fmt::Debug for RoleChangeWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoleChangeWork")
    }
}

/// Facts the loop records for status.
#[derive(Debug, Clone, Default)]
pub struct RuntimeInfo {
    pub postmaster_pid: Option<i32>,
    pub config_hash: String,
    pub pending_restart: Vec<String>,
    /// Manager settings the last reload kept at their running values.
    pub pending_manager_restart: Vec<String>,
    pub crash_restarts: u64,
    pub last_error: Option<String>,
}

/// Everything the loop and the API share.
#[derive(Debug)]
pub struct Shared {
    pub state: StateMachine,
    pub metrics: Metrics,
    pub bins: PgBinaries,
    pub pgdata: PathBuf,
    pub os_user: String,
    pub sources: ConfigSources,
    pub config: RwLock<Config>,
    pub runtime: Mutex<RuntimeInfo>,
    pub commands: mpsc::Sender<SupervisorCommand>,
    /// Bearer token of mutating routes (None: those routes are disabled).
    pub token: RwLock<Option<Vec<u8>>>,
    /// True once postgres accepted connections after the manager started.
    pub started_once: AtomicBool,
    /// Where the running postmaster listens (set when it starts; a reloaded port or socket
    /// directory only applies after a restart).
    pub active_target: RwLock<Option<LocalTarget>>,
    /// The pgsteward executable (for archive_command and restore_command).
    pub executable: PathBuf,
    /// The WAL archiver, when archiving is configured.
    pub archiver: std::sync::OnceLock<std::sync::Arc<crate::archiver::Archiver>>,
    /// Base backups (one at a time).
    pub backups: crate::backups::Backups,
    /// Restore drills run by this manager (None until one is scheduled or run).
    pub drill: Mutex<Option<pgsteward_api::DrillStatus>>,
    /// The HA monitor's latest findings (None while `ha.coordinator_url` is unset).
    pub ha: Mutex<Option<pgsteward_api::HaStatus>>,
    /// The API listener's TLS, rebuilt at every reload (set once HTTPS is served).
    pub api_tls: std::sync::OnceLock<pgsteward_tls::server::ReloadableAcceptor>,
    /// The kept connections for status, probes and metrics reads.
    pub reads: crate::kept_connection::ReadConnections,
}

impl Shared {
    /// A copy of the current configuration.
    pub fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where the manager connects to postgres.
    pub fn target(&self) -> LocalTarget {
        if let Some(active) = self
            .active_target
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return active;
        }
        self.configured_target()
    }

    /// The address the configuration asks for (used when starting postgres).
    pub fn configured_target(&self) -> LocalTarget {
        let config = self.config.read().unwrap_or_else(|p| p.into_inner());
        LocalTarget::new(
            &config.postgres.socket_dir,
            config.postgres.port,
            &config.postgres.superuser,
        )
    }

    /// Record the address of the postmaster that was just started.
    pub fn set_active_target(&self, target: LocalTarget) {
        *self
            .active_target
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(target);
    }

    /// What rendering the managed files needs.
    pub fn render_context(&self) -> crate::config::render::RenderContext {
        crate::config::render::RenderContext {
            major: self.bins.major,
            os_user: self.os_user.clone(),
            executable: self.executable.clone(),
            pgdata: self.pgdata.clone(),
        }
    }

    /// Update runtime facts.
    pub fn with_runtime<T>(&self, f: impl FnOnce(&mut RuntimeInfo) -> T) -> T {
        let mut guard = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// A copy of the runtime facts.
    pub fn runtime(&self) -> RuntimeInfo {
        self.with_runtime(|r| r.clone())
    }

    /// Re-read the bearer token file (None when unset or unreadable; an error is logged).
    pub fn reload_token(&self, config: &Config) {
        let token = match &config.http.token_file {
            None => None,
            Some(path) => match crate::bootstrap::read_secret(path, "API token") {
                Ok(token) => Some(token.into_bytes()),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "API token unavailable: mutating routes refuse every request");
                    Some(Vec::new())
                }
            },
        };
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }
}
