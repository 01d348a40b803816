//! The primary's `synchronous_standby_names`, kept equal to what the decision computed:
//! sent with `POST /pg/synchronous` when the primary reports another value, at most once per
//! value every `SYNC_RETRY`.

use std::time::{Duration, Instant};

use crate::decide::Input;
use crate::run::Coordinator;

/// How long before the same `synchronous_standby_names` is sent again.
const SYNC_RETRY: Duration = Duration::from_secs(5);

impl Coordinator {
    /// Set `names` on the healthy `primary` when it reports another value (at most one
    /// attempt per value every `SYNC_RETRY`); the outcome when something was sent.
    pub(crate) async fn apply_synchronous(
        &mut self,
        input: &Input,
        primary: &str,
        names: &str,
        now: Instant,
    ) -> Option<String> {
        let observed = input
            .members
            .iter()
            .find(|m| m.name == primary)
            .and_then(|m| m.last.as_ref())?;
        if observed.synchronous_standby_names.as_deref().unwrap_or("") == names {
            return None;
        }
        if let Some((last, at)) = &self.sync_attempt {
            if last == names && now.saturating_duration_since(*at) < SYNC_RETRY {
                return None;
            }
        }
        self.sync_attempt = Some((names.to_owned(), now));
        let member = self.member(primary)?.clone();
        let token = self.token(&member);
        let term = observed.term;
        let result = self
            .client
            .set_synchronous(
                &member.url,
                token.as_deref(),
                term,
                names,
                self.config.request_timeout.max(Duration::from_secs(2)),
            )
            .await;
        Some(match result {
            Ok(_) => {
                tracing::info!(member = %primary, term, names = %names, previous = ?observed.synchronous_standby_names, "synchronous standby names applied");
                format!("set synchronous_standby_names of {primary} to {names:?}")
            }
            Err(e) => {
                tracing::error!(member = %primary, term, names = %names, error = %e, "setting the synchronous standby names failed");
                format!("setting synchronous_standby_names of {primary} failed: {e}")
            }
        })
    }
}
