//! Retrying transient store errors with exponential backoff inside a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::StoreError;

/// Run `op` until it succeeds, fails permanently, or `deadline` passes.
pub async fn with_retry<T, F, Fut>(
    what: &str,
    deadline: Instant,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        // Each attempt is bounded by what is left of the deadline (the SDK's own timeouts are
        // longer than a caller may wait).
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt_result = match tokio::time::timeout(remaining, op()).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Transient(format!(
                "{what}: no answer before the deadline"
            ))),
        };
        match attempt_result {
            Ok(value) => return Ok(value),
            Err(e) if e.is_transient() && Instant::now() + delay < deadline => {
                tracing::warn!(operation = what, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "transient object store error: retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
