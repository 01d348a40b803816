//! The supervisor loop: keeps one postmaster running on the data directory, restarts it with
//! backoff after unexpected exits (and gives up after too many in a window), serves restart
//! and reload commands, and performs the shutdown escalation when asked.

pub mod ha;
pub mod postmaster;
pub mod reaper;
pub mod reload;
pub mod shared;
pub mod shutdown;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pgsteward_api::{InstanceState, RestartMode, RestartResponse};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::gucs::GucCatalog;
use crate::pgconn;
use postmaster::{Ended, Postmaster};
use reaper::Reaper;
use shared::{AfterRoleChange, CommandError, Shared, ShutdownMode, SupervisorCommand};

/// Process exit codes of `pgsteward run`.
pub mod exit_code {
    /// Postgres stopped cleanly (smart or fast shutdown).
    pub const CLEAN: i32 = 0;
    /// The manager could not start (configuration, data directory, binaries).
    pub const STARTUP_ERROR: i32 = 1;
    /// Postgres was stopped by an immediate shutdown or did not stop cleanly.
    pub const UNCLEAN_STOP: i32 = 2;
    /// Postgres crashed too often within the crash window.
    pub const CRASH_LOOP: i32 = 3;
}

/// What woke the loop.
enum Event {
    Exited(Ended),
    StartDue,
    ReadyTick,
    Command(Option<SupervisorCommand>),
}

type RestartReply = oneshot::Sender<Result<RestartResponse, CommandError>>;

/// The loop's own state.
pub struct Supervisor {
    shared: Arc<Shared>,
    reaper: Reaper,
    catalog: GucCatalog,
    commands: mpsc::Receiver<SupervisorCommand>,
    crashes: VecDeque<Instant>,
    restart_reply: Option<(Option<i32>, RestartReply)>,
    /// The data directory was initialised (initdb) by this run: a new cluster's first
    /// primary starts without waiting for the coordinator.
    initialised_now: bool,
}

impl Supervisor {
    pub fn new(
        shared: Arc<Shared>,
        reaper: Reaper,
        catalog: GucCatalog,
        commands: mpsc::Receiver<SupervisorCommand>,
    ) -> Self {
        Supervisor {
            shared,
            reaper,
            catalog,
            commands,
            crashes: VecDeque::new(),
            restart_reply: None,
            initialised_now: false,
        }
    }

    /// Record that this run initialised the data directory.
    pub fn initialised_now(mut self, yes: bool) -> Self {
        self.initialised_now = yes;
        self
    }

    /// Run until shutdown or give-up; returns the process exit code.
    pub async fn run(mut self) -> i32 {
        let mut postmaster: Option<Postmaster> = Postmaster::attach(&self.shared.pgdata);
        if let Some(pm) = &postmaster {
            self.shared
                .with_runtime(|r| r.postmaster_pid = Some(pm.pid()));
            self.shared.state.transition(
                InstanceState::Starting,
                "re-attached to a running postmaster",
            );
            // The files may have changed while the manager was away.
            let _ = reload::apply(&self.shared, &self.catalog, true).await;
        }
        let mut next_start: Option<Instant> = postmaster.is_none().then(Instant::now);
        if crate::replication::fence::is_fenced(&self.shared.pgdata) {
            tracing::warn!(
                "the data directory is fenced: postgres stays stopped until POST /pg/unfence"
            );
            if let Some(mut pm) = postmaster.take() {
                self.stop_for_fence(&mut pm).await;
            }
            next_start = None;
            let reason = crate::replication::fence::reason(&self.shared.pgdata);
            self.shared.with_runtime(|r| r.last_error = reason);
            self.shared
                .state
                .transition(InstanceState::Fenced, "fenced (pgsteward.fenced)");
        }
        if next_start.is_some() {
            let config = self.shared.config();
            if let Some(reason) =
                ha::must_wait_for_role(&config, &self.shared.pgdata, self.initialised_now)
            {
                tracing::warn!(reason = %reason, "postgres is not started yet");
                next_start = None;
                self.shared.with_runtime(|r| r.last_error = Some(reason));
                self.shared
                    .state
                    .transition(InstanceState::AwaitingRole, "waiting for the role");
            }
        }
        let mut ready_tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            if postmaster.is_none() && next_start.is_some_and(|at| at <= Instant::now()) {
                next_start = None;
                match self.start_postgres() {
                    Ok(pm) => postmaster = Some(pm),
                    Err(e) => {
                        let message = format!("{e:#}");
                        tracing::error!(error = %message, "starting postgres failed");
                        self.fail_restart_reply(format!("postgres did not start again: {message}"));
                        self.shared.with_runtime(|r| r.last_error = Some(message));
                        match self.after_crash() {
                            Ok(delay) => next_start = Some(Instant::now() + delay),
                            Err(code) => return code,
                        }
                    }
                }
            }
            let state = self.shared.state.current();
            let has_postmaster = postmaster.is_some();
            let event = {
                let wait_exit = async {
                    match postmaster.as_mut() {
                        Some(pm) => pm.wait().await,
                        None => std::future::pending().await,
                    }
                };
                let wait_start = async {
                    match next_start {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ended = wait_exit => Event::Exited(ended),
                    _ = wait_start => Event::StartDue,
                    _ = ready_tick.tick(), if state == InstanceState::Starting && has_postmaster => Event::ReadyTick,
                    command = self.commands.recv() => Event::Command(command),
                }
            };
            match event {
                Event::Exited(ended) => {
                    postmaster = None;
                    self.shared.with_runtime(|r| r.postmaster_pid = None);
                    self.shared.metrics.postgres_up.set(0);
                    tracing::error!(status = %ended, "postmaster exited unexpectedly");
                    self.shared.with_runtime(|r| {
                        r.last_error = Some(format!("postmaster exited unexpectedly: {ended}"))
                    });
                    self.fail_restart_reply(format!("postgres exited during the restart: {ended}"));
                    match self.after_crash() {
                        Ok(delay) => next_start = Some(Instant::now() + delay),
                        Err(code) => return code,
                    }
                }
                Event::StartDue => {}
                Event::ReadyTick => self.check_ready().await,
                Event::Command(None) => return self.shutdown(postmaster, ShutdownMode::Fast).await,
                Event::Command(Some(SupervisorCommand::Shutdown(mode))) => {
                    return self.shutdown(postmaster, mode).await
                }
                Event::Command(Some(SupervisorCommand::Reload { reply })) => {
                    let result = self
                        .reload(has_postmaster && state == InstanceState::Running)
                        .await;
                    let restart = matches!(&result, Ok(r) if r.restarted);
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                    if restart {
                        if let Some(mut pm) = postmaster.take() {
                            self.stop_for_restart(&mut pm, RestartMode::Fast).await;
                            next_start = Some(Instant::now());
                        }
                    }
                }
                Event::Command(Some(SupervisorCommand::Fence { reply })) => {
                    if let Err(e) = crate::replication::fence::set(&self.shared.pgdata, true) {
                        let _ = reply.send(Err(CommandError::Failed(format!("{e:#}"))));
                        continue;
                    }
                    let changed = state != InstanceState::Fenced;
                    next_start = None;
                    if let Some(mut pm) = postmaster.take() {
                        self.stop_for_fence(&mut pm).await;
                    }
                    self.fail_restart_reply("the instance was fenced".into());
                    self.shared
                        .state
                        .transition(InstanceState::Fenced, "fenced through the API");
                    tracing::warn!("fenced: postgres is stopped until POST /pg/unfence");
                    let _ = reply.send(Ok(pgsteward_api::FenceResponse {
                        fenced: true,
                        changed,
                    }));
                }
                Event::Command(Some(SupervisorCommand::Unfence { reply }))
                    if state == InstanceState::AwaitingRole =>
                {
                    tracing::warn!("POST /pg/unfence while awaiting the role: starting postgres as the operator asked, without the coordinator's confirmation");
                    self.shared.with_runtime(|r| r.last_error = None);
                    next_start = Some(Instant::now());
                    let _ = reply.send(Ok(pgsteward_api::FenceResponse {
                        fenced: false,
                        changed: true,
                    }));
                }
                Event::Command(Some(SupervisorCommand::Ha(command))) => {
                    self.ha_command(command, state, &mut postmaster, &mut next_start)
                        .await;
                }
                Event::Command(Some(SupervisorCommand::Unfence { reply })) => {
                    if state != InstanceState::Fenced {
                        let _ = reply.send(Ok(pgsteward_api::FenceResponse {
                            fenced: false,
                            changed: false,
                        }));
                        continue;
                    }
                    if let Err(e) = crate::replication::fence::set(&self.shared.pgdata, false) {
                        let _ = reply.send(Err(CommandError::Failed(format!("{e:#}"))));
                        continue;
                    }
                    tracing::info!("unfenced: starting postgres");
                    next_start = Some(Instant::now());
                    let _ = reply.send(Ok(pgsteward_api::FenceResponse {
                        fenced: false,
                        changed: true,
                    }));
                }
                Event::Command(Some(SupervisorCommand::RoleChange(work))) => {
                    next_start = None;
                    if let Some(mut pm) = postmaster.take() {
                        self.shared
                            .state
                            .transition(InstanceState::Restarting, "role change");
                        self.stop_for_fence(&mut pm).await;
                    }
                    self.fail_restart_reply("the role of the instance changed".into());
                    match (work.0)(self.reaper.clone()).await {
                        AfterRoleChange::Start => {
                            if let Err(e) =
                                crate::replication::fence::set(&self.shared.pgdata, false)
                            {
                                tracing::error!(error = %format!("{e:#}"), "removing the fence after a role change failed");
                            }
                            next_start = Some(Instant::now());
                        }
                        AfterRoleChange::Fence(reason) => {
                            if let Err(e) = crate::replication::fence::set_with_reason(
                                &self.shared.pgdata,
                                Some(&reason),
                            ) {
                                tracing::error!(error = %format!("{e:#}"), "writing the fence marker failed");
                            }
                            tracing::error!(reason = %reason, "fenced after a failed role change: postgres stays stopped until POST /pg/unfence or a new POST /pg/follow");
                            self.shared.with_runtime(|r| r.last_error = Some(reason));
                            self.shared
                                .state
                                .transition(InstanceState::Fenced, "role change failed");
                        }
                    }
                }
                Event::Command(Some(SupervisorCommand::Restart { mode, reply })) => {
                    if state != InstanceState::Running || !has_postmaster {
                        let _ = reply.send(Err(CommandError::WrongState(format!(
                            "cannot restart while the instance is {state}"
                        ))));
                        continue;
                    }
                    if let Some(mut pm) = postmaster.take() {
                        let previous = Some(pm.pid());
                        self.stop_for_restart(&mut pm, mode).await;
                        self.restart_reply = Some((previous, reply));
                        next_start = Some(Instant::now());
                    }
                }
            }
        }
    }

    fn start_postgres(&mut self) -> anyhow::Result<Postmaster> {
        self.shared
            .state
            .transition(InstanceState::Starting, "starting postgres");
        let config = self.shared.config();
        let rendered = crate::config::render::render(&config, &self.shared.render_context());
        crate::config::render::write(&self.shared.pgdata, &rendered)?;
        crate::replication::prepare_start(&self.shared)?;
        self.shared.with_runtime(|r| {
            r.config_hash.clone_from(&rendered.hash);
            r.pending_restart.clear();
        });
        self.shared.metrics.pending_restart.set(0);
        let pm = Postmaster::spawn(&self.reaper, &self.shared.bins, &self.shared.pgdata, &[])?;
        self.shared
            .set_active_target(self.shared.configured_target());
        self.shared
            .with_runtime(|r| r.postmaster_pid = Some(pm.pid()));
        Ok(pm)
    }

    async fn check_ready(&mut self) {
        let target = self.shared.target();
        match pgconn::probe(&target, Duration::from_secs(1)).await {
            Ok(facts) => {
                self.shared.metrics.postgres_up.set(1);
                self.shared
                    .metrics
                    .postmaster_start_time
                    .set(facts.postmaster_start_epoch);
                self.shared.started_once.store(true, Ordering::SeqCst);
                self.shared
                    .with_runtime(|r| r.pending_restart.clone_from(&facts.pending_restart));
                self.shared
                    .state
                    .transition(InstanceState::Running, "postgres accepts connections");
                if !facts.in_recovery && self.shared.config().archive.destination.is_some() {
                    wake_checkpointer(self.shared.clone());
                }
                if let Some((previous, reply)) = self.restart_reply.take() {
                    let current = self.shared.runtime().postmaster_pid;
                    let _ = reply.send(Ok(RestartResponse {
                        previous_postmaster_pid: previous,
                        postmaster_pid: current,
                    }));
                }
            }
            Err(e) => tracing::trace!(error = %format!("{e:#}"), "postgres not ready yet"),
        }
    }

    /// Count a crash; Ok(backoff) to retry, Err(exit code) to give up.
    fn after_crash(&mut self) -> Result<Duration, i32> {
        let policy = self.shared.config().restart;
        let now = Instant::now();
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.crash_window)
        {
            self.crashes.pop_front();
        }
        let count = self.crashes.len() as u32;
        if count >= policy.max_crashes {
            tracing::error!(crashes = count, window = ?policy.crash_window, "postgres keeps failing: giving up so the platform can act");
            self.shared
                .state
                .transition(InstanceState::Failed, "crash loop");
            return Err(exit_code::CRASH_LOOP);
        }
        self.shared.metrics.crash_restarts.inc();
        self.shared.with_runtime(|r| r.crash_restarts += 1);
        let factor = 2u32.saturating_pow(count.saturating_sub(1));
        let delay = policy
            .initial_backoff
            .saturating_mul(factor)
            .min(policy.max_backoff);
        self.shared
            .state
            .transition(InstanceState::CrashBackoff, "postmaster exited");
        tracing::warn!(
            crashes = count,
            max_crashes = policy.max_crashes,
            delay_ms = delay.as_millis() as u64,
            "restarting postgres after a backoff"
        );
        Ok(delay)
    }

    fn fail_restart_reply(&mut self, message: String) {
        if let Some((_, reply)) = self.restart_reply.take() {
            let _ = reply.send(Err(CommandError::Failed(message)));
        }
    }

    async fn reload(
        &mut self,
        postgres_up: bool,
    ) -> Result<pgsteward_api::ReloadResponse, CommandError> {
        let mut response = reload::apply(&self.shared, &self.catalog, postgres_up).await?;
        let config = self.shared.config();
        if config.postgres.restart_on_pending
            && !response.pending_restart_parameters.is_empty()
            && postgres_up
        {
            tracing::info!(parameters = ?response.pending_restart_parameters, "restart_on_pending: restarting postgres");
            response.restarted = true;
        }
        Ok(response)
    }

    async fn stop_for_restart(&mut self, pm: &mut Postmaster, mode: RestartMode) {
        self.shared
            .state
            .transition(InstanceState::Restarting, "restart requested");
        self.shared.metrics.postgres_up.set(0);
        let limits = self.shared.config().shutdown;
        let mode = match mode {
            RestartMode::Smart => ShutdownMode::Smart,
            RestartMode::Fast => ShutdownMode::Fast,
        };
        let outcome = shutdown::stop(pm, mode, &limits, None).await;
        self.shared.with_runtime(|r| r.postmaster_pid = None);
        tracing::info!(status = %outcome.ended, "postgres stopped for a restart");
    }

    /// Fast shutdown of postgres for a fence (escalating per the shutdown limits).
    async fn stop_for_fence(&mut self, pm: &mut Postmaster) {
        self.shared.metrics.postgres_up.set(0);
        let limits = self.shared.config().shutdown;
        let outcome = shutdown::stop(pm, ShutdownMode::Fast, &limits, None).await;
        self.shared.with_runtime(|r| r.postmaster_pid = None);
        tracing::info!(status = %outcome.ended, "postgres stopped for a fence");
    }

    async fn shutdown(mut self, postmaster: Option<Postmaster>, mode: ShutdownMode) -> i32 {
        self.shared
            .state
            .transition(InstanceState::ShuttingDown, "shutdown requested");
        self.fail_restart_reply("the manager is shutting down".into());
        let Some(mut pm) = postmaster else {
            let clean = self.control_data_says_shut_down().await;
            self.shared
                .state
                .transition(InstanceState::Stopped, "postgres was not running");
            return if clean {
                exit_code::CLEAN
            } else {
                exit_code::UNCLEAN_STOP
            };
        };
        let limits = self.shared.config().shutdown;
        let outcome = shutdown::stop(&mut pm, mode, &limits, Some(&mut self.commands)).await;
        self.shared.metrics.postgres_up.set(0);
        self.shared.with_runtime(|r| r.postmaster_pid = None);
        // The control file is the truth: a postmaster killed before it installed its signal
        // handlers (shutdown right after start) or an attached one (no exit status) is clean
        // when pg_control says "shut down".
        let clean = outcome.clean() || self.control_data_says_shut_down().await;
        self.shared
            .state
            .transition(InstanceState::Stopped, "postgres stopped");
        if clean {
            tracing::info!("postgres shut down cleanly");
            exit_code::CLEAN
        } else {
            tracing::warn!(mode = ?outcome.mode, status = %outcome.ended, "postgres did not shut down cleanly");
            exit_code::UNCLEAN_STOP
        }
    }

    async fn control_data_says_shut_down(&self) -> bool {
        let mut command = std::process::Command::new(self.shared.bins.bin("pg_controldata"));
        command
            .arg("-D")
            .arg(&self.shared.pgdata)
            .env("LC_ALL", "C");
        match self.reaper.output(&mut command).await {
            Ok((_, stdout, _)) => stdout
                .lines()
                .any(|l| l.starts_with("Database cluster state:") && l.contains("shut down")),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "pg_controldata failed");
                false
            }
        }
    }
}

/// Make a primary that just started honour `archive_timeout` from its start. PostgreSQL's
/// checkpointer works out its first sleep while the startup process still runs, when
/// `archive_timeout` does not count yet, and sleeps for `checkpoint_timeout` (measured: 300 s
/// with `archive_timeout = 2s`, PostgreSQL 15 every time, 18 at times). A quiet segment would
/// wait that long for its switch, longer than the archive's promised bound when
/// `checkpoint_timeout` is longer. A configuration reload sets the checkpointer's latch, and
/// from then on it sleeps for `archive_timeout` at most. Sent on the kept status session the
/// probes open anyway.
fn wake_checkpointer(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let reload = crate::kept_connection::read(
            &shared,
            crate::kept_connection::ReadKind::Status,
            Duration::from_secs(5),
            |client| async move {
                client
                    .batch_execute("SELECT pg_reload_conf()")
                    .await
                    .context("pg_reload_conf")
            },
        );
        if let Err(e) = reload.await {
            tracing::warn!(error = %format!("{e:#}"), "could not wake the checkpointer: archive_timeout applies only after its first checkpoint_timeout");
        }
    });
}
