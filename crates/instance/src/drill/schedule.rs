//! The manager's periodic restore drills (`archive.drill.interval`): one drill at a time, the
//! first one interval after the manager started, each recorded in the metrics and in
//! `GET /pg/status` (`drill`). The interval is read again before each wait, so a reload that
//! changes or removes it takes effect at the next drill.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::supervisor::reaper::Reaper;
use crate::supervisor::shared::Shared;

/// Start the schedule task (it idles while no interval is configured).
pub fn spawn(shared: Arc<Shared>, reaper: Reaper) {
    tokio::spawn(async move {
        loop {
            let config = shared.config();
            let Some(interval) = config
                .archive
                .drill
                .interval
                .filter(|_| config.archive.destination.is_some())
            else {
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            };
            let next = Utc::now() + chrono::Duration::from_std(interval).unwrap_or_default();
            update(&shared, |status| {
                status.next_run_time = Some(next.to_rfc3339());
            });
            tokio::time::sleep(interval).await;
            run_once(&shared, &reaper).await;
        }
    });
}

/// Run one drill now and record it.
pub async fn run_once(shared: &Arc<Shared>, reaper: &Reaper) {
    update(shared, |status| {
        status.running = true;
        status.next_run_time = None;
    });
    let config = shared.config();
    let report = super::run(reaper, &shared.bins, &config, &shared.executable).await;
    update(shared, |status| {
        status.running = false;
        report.record(&shared.metrics.drill, status);
    });
}

fn update(shared: &Shared, change: impl FnOnce(&mut pgsteward_api::DrillStatus)) {
    let mut guard = shared.drill.lock().unwrap_or_else(|p| p.into_inner());
    change(guard.get_or_insert_with(Default::default));
}
