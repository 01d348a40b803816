//! What the coordinator's loop and its API share: the status report `GET /status` serves
//! (term, primary, members, the last decision and action, re-admissions, the last switchover),
//! the metrics, the channel of commands the API hands to the loop (switchovers, backups) and
//! the API's credentials (the token, read from its file at each use; the accepted
//! client-certificate names).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::decide::Decision;
use crate::metrics::Metrics;
use crate::observe::MemberReport;
use crate::readmit::Readmission;
use crate::switchover::{SwitchoverAnswer, SwitchoverError};

/// Work the API hands to the loop.
pub enum Command {
    Switchover {
        to: String,
        reply: oneshot::Sender<Result<SwitchoverAnswer, SwitchoverError>>,
    },
    Backup {
        request: crate::backup::BackupRequest,
        reply: oneshot::Sender<Result<crate::backup::BackupStarted, crate::backup::BackupRefused>>,
    },
    /// The configuration file as read at a SIGHUP (`reload`).
    Reload(Box<crate::config::Config>),
}

/// The last decision as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    pub at_unix_ms: u128,
    pub decision: Decision,
    /// Outcome of the action (promotion answer or error), when one was taken.
    pub outcome: Option<String>,
}

/// `GET /status` body.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub term: u64,
    pub primary: Option<String>,
    /// `instance_name` of the primary, as its manager reports it (managers look for
    /// themselves here: `ha.coordinator_url`).
    pub primary_instance: Option<String>,
    /// Term the primary holds (the new term right after a failover).
    pub primary_term: Option<u64>,
    pub synchronous_standby_names: String,
    pub failovers: u64,
    pub members: Vec<MemberReport>,
    pub last_decision: Option<DecisionRecord>,
    /// Last decision that was not "none" (a failover or a refusal).
    pub last_action: Option<DecisionRecord>,
    /// Members being (or recently) told to follow the primary, by name.
    pub readmissions: BTreeMap<String, Readmission>,
    /// How the last switchover ended.
    pub last_switchover: Option<String>,
    /// Settings changed in the configuration file that apply only at a restart (the running
    /// values stay until then; see `reload`).
    pub pending_restart: Vec<String>,
}

/// The coordinator's API token (`api_token_file`), read again at each use so that a rotated
/// Secret applies without a restart, as the members' token files do. A file that cannot be
/// read at that moment (a volume being swapped) keeps the last token read, and is logged.
pub struct ApiToken {
    path: PathBuf,
    last: Mutex<String>,
}

impl ApiToken {
    /// Read the file once; it must hold a token at start.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let token = crate::config::read_token_file(path)?;
        Ok(ApiToken {
            path: path.to_owned(),
            last: Mutex::new(token),
        })
    }

    /// The token in the file now.
    pub fn current(&self) -> String {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match crate::config::read_token_file(&self.path) {
            Ok(token) => *last = token,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read api_token_file; using the token read last")
            }
        }
        last.clone()
    }
}

/// State shared between the loop and the API.
pub struct Shared {
    report: Mutex<StatusReport>,
    pub metrics: Metrics,
    /// To the loop (switchovers).
    pub commands: mpsc::Sender<Command>,
    /// Bearer token of the mutating routes (None: only a client certificate can use them).
    pub api_token: Option<ApiToken>,
    /// With `api_tls.client_ca_file`: the names a verified client certificate must be valid
    /// for (empty: any); None without a client CA. Changed by a reload.
    api_client_names: RwLock<Option<Vec<String>>>,
}

impl Shared {
    pub fn new(
        metrics: Metrics,
        term: u64,
        commands: mpsc::Sender<Command>,
        api_token: Option<ApiToken>,
        api_client_names: Option<Vec<String>>,
    ) -> Self {
        Shared {
            report: Mutex::new(StatusReport {
                term,
                primary: None,
                primary_instance: None,
                primary_term: None,
                synchronous_standby_names: String::new(),
                failovers: 0,
                members: Vec::new(),
                last_decision: None,
                last_action: None,
                readmissions: BTreeMap::new(),
                last_switchover: None,
                pending_restart: Vec::new(),
            }),
            metrics,
            commands,
            api_token,
            api_client_names: RwLock::new(api_client_names),
        }
    }

    /// The names a client certificate must be valid for (see the field).
    pub fn api_client_names(&self) -> Option<Vec<String>> {
        self.api_client_names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replace them (a reload changed `api_tls.client_names`).
    pub fn set_api_client_names(&self, names: Option<Vec<String>>) {
        *self
            .api_client_names
            .write()
            .unwrap_or_else(PoisonError::into_inner) = names;
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, StatusReport> {
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> StatusReport {
        self.lock().clone()
    }
}
