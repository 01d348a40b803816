//! Live progress of a base backup (phase, bytes read of total, bytes uploaded, rate), shared
//! between the engine and the manager's status and metrics.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Phases a backup goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Copying,
    Stopping,
    Finishing,
    Done,
    Failed,
}

const PHASES: [Phase; 6] = [
    Phase::Starting,
    Phase::Copying,
    Phase::Stopping,
    Phase::Finishing,
    Phase::Done,
    Phase::Failed,
];

/// Live progress of one backup, shared with status and metrics.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    phase: AtomicU8,
    backup_id: Mutex<Option<String>>,
    /// Bytes of files read so far and in total (from the scan).
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
    /// Compressed bytes handed to the store.
    pub bytes_uploaded: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            started: Instant::now(),
            phase: AtomicU8::new(0),
            backup_id: Mutex::new(None),
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_uploaded: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of [`Progress`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProgressSnapshot {
    pub backup_id: Option<String>,
    pub phase: Phase,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_uploaded: u64,
    pub elapsed_seconds: f64,
    /// Bytes read per second so far.
    pub rate_bytes_per_second: f64,
}

impl Progress {
    pub(crate) fn set_phase(&self, phase: Phase) {
        let index = PHASES.iter().position(|p| *p == phase).unwrap_or(0);
        self.phase.store(index as u8, Ordering::Relaxed);
    }

    pub(crate) fn set_id(&self, id: &str) {
        if let Ok(mut slot) = self.backup_id.lock() {
            *slot = Some(id.to_owned());
        }
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let elapsed = self.started.elapsed().as_secs_f64();
        let done = self.bytes_done.load(Ordering::Relaxed);
        ProgressSnapshot {
            backup_id: self.backup_id.lock().ok().and_then(|id| id.clone()),
            phase: PHASES[usize::from(self.phase.load(Ordering::Relaxed)).min(PHASES.len() - 1)],
            bytes_done: done,
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            elapsed_seconds: elapsed,
            rate_bytes_per_second: if elapsed > 0.0 {
                done as f64 / elapsed
            } else {
                0.0
            },
        }
    }
}
