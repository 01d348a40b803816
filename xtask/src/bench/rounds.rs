//! Rounds of the WAL benchmark: every round runs each tool once, back to back, so a slow
//! spell of the (shared, virtual) machine falls on all the tools of that round rather than on
//! one of them. A tool's row is its median round; every round's seconds are kept for the
//! report, and ratios are also given round by round.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::report::{Measured, Outcome};

/// Rounds when `PGSTEWARD_BENCH_ROUNDS` is unset.
pub const DEFAULT_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 9;

/// The number of rounds `PGSTEWARD_BENCH_ROUNDS` asks for (1 to 9, default 3).
pub fn wanted() -> Result<usize> {
    let Ok(value) = std::env::var("PGSTEWARD_BENCH_ROUNDS") else {
        return Ok(DEFAULT_ROUNDS);
    };
    let n: usize = value
        .trim()
        .parse()
        .with_context(|| format!("PGSTEWARD_BENCH_ROUNDS={value:?} is not a number"))?;
    if !(1..=MAX_ROUNDS).contains(&n) {
        bail!("PGSTEWARD_BENCH_ROUNDS={n}: between 1 and {MAX_ROUNDS}");
    }
    Ok(n)
}

fn median_duration(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// One tool's rounds in one phase as one outcome: the first failure if a round failed (a
/// tool that fails once is not reported as measured), else "not available" if it was not
/// run, else the median round's time and the median CPU, the largest peak RSS, and every
/// round's seconds in order.
pub fn combine(outcomes: Vec<Outcome>) -> Outcome {
    let count = outcomes.len();
    let mut measured = Vec::with_capacity(count);
    let mut unavailable = None;
    for (round, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Outcome::Measured(m) => measured.push(m),
            Outcome::Failed(reason) if count > 1 => {
                return Outcome::Failed(format!("round {} of {count}: {reason}", round + 1))
            }
            Outcome::Failed(reason) => return Outcome::Failed(reason),
            Outcome::NotAvailable(reason) => {
                unavailable.get_or_insert(reason);
            }
        }
    }
    if let Some(reason) = unavailable {
        return Outcome::NotAvailable(reason);
    }
    let Some(first) = measured.first() else {
        return Outcome::NotAvailable("no round ran".into());
    };
    let mut row = Measured {
        segments: first.segments,
        elapsed: median_duration(measured.iter().map(|m| m.elapsed).collect()),
        usage: first.usage,
        stored_bytes: first.stored_bytes,
        detached: measured.iter().map(|m| m.detached).max().unwrap_or(0),
        round_seconds: measured.iter().map(|m| m.elapsed.as_secs_f64()).collect(),
    };
    row.usage.cpu = median_duration(measured.iter().map(|m| m.usage.cpu).collect());
    row.usage.max_rss_kb = measured
        .iter()
        .map(|m| m.usage.max_rss_kb)
        .max()
        .unwrap_or(0);
    Outcome::Measured(row)
}

/// How many times `a`'s rate `b`'s is in each round (both measured in the same rounds).
pub fn per_round_speedups(a: &Measured, b: &Measured) -> Vec<f64> {
    a.round_seconds
        .iter()
        .zip(&b.round_seconds)
        .map(|(a, b)| b / a.max(1e-9))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::procs::Usage;

    fn measured(secs_ms: u64, cpu_ms: u64, rss_kb: u64) -> Outcome {
        Outcome::Measured(Measured {
            segments: 60,
            elapsed: Duration::from_millis(secs_ms),
            usage: Usage {
                cpu: Duration::from_millis(cpu_ms),
                max_rss_kb: rss_kb,
            },
            stored_bytes: 1 << 20,
            detached: 0,
            round_seconds: Vec::new(),
        })
    }

    #[test]
    fn a_row_is_the_median_round_with_every_round_kept() {
        let Outcome::Measured(row) = combine(vec![
            measured(3_900, 6_000, 100),
            measured(3_500, 5_800, 300),
            measured(3_600, 6_200, 200),
        ]) else {
            panic!("not measured")
        };
        assert_eq!(row.elapsed, Duration::from_millis(3_600));
        assert_eq!(row.usage.cpu, Duration::from_millis(6_000));
        assert_eq!(row.usage.max_rss_kb, 300);
        assert_eq!(row.round_seconds, vec![3.9, 3.5, 3.6]);
    }

    #[test]
    fn one_failed_round_fails_the_tool() {
        let outcome = combine(vec![
            measured(3_900, 6_000, 100),
            Outcome::Failed("restore_command exited with 1".into()),
            measured(3_600, 6_200, 200),
        ]);
        match outcome {
            Outcome::Failed(reason) => {
                assert!(reason.starts_with("round 2 of 3: restore"), "{reason}")
            }
            other => panic!("{}", other.summary()),
        }
        assert!(matches!(
            combine(vec![Outcome::NotAvailable("not selected".into())]),
            Outcome::NotAvailable(_)
        ));
    }

    #[test]
    fn speedups_pair_rounds_in_order() {
        let (Outcome::Measured(mut fast), Outcome::Measured(mut slow)) =
            (measured(1_000, 1, 1), measured(10_000, 1, 1))
        else {
            panic!("not measured")
        };
        fast.round_seconds = vec![2.0, 4.0];
        slow.round_seconds = vec![20.0, 30.0];
        assert_eq!(per_round_speedups(&fast, &slow), vec![10.0, 7.5]);
    }
}
