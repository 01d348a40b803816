//! Retention policy text: CNPG's short spelling (`30d`, `4w`, `6m`) and barman's
//! `REDUNDANCY n` / `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS` (case-insensitive, the unit's
//! trailing `S` optional as barman allows). A month is 31 days, as in barman.

use std::fmt;
use std::str::FromStr;

use chrono::TimeDelta;

/// The unit of a recovery window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowUnit {
    Days,
    Weeks,
    Months,
}

impl WindowUnit {
    fn as_str(self) -> &'static str {
        match self {
            WindowUnit::Days => "DAYS",
            WindowUnit::Weeks => "WEEKS",
            WindowUnit::Months => "MONTHS",
        }
    }

    fn days(self) -> i64 {
        match self {
            WindowUnit::Days => 1,
            WindowUnit::Weeks => 7,
            WindowUnit::Months => 31,
        }
    }
}

/// A retention policy for base backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionPolicy {
    /// Keep the newest `n` DONE backups.
    Redundancy(u32),
    /// Keep what is needed to recover to any point of the last `value` units.
    RecoveryWindow { value: u32, unit: WindowUnit },
}

/// Why a policy text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid retention policy {text:?}: {reason} (expected e.g. \"30d\", \"4w\", \"6m\", \
     \"RECOVERY WINDOW OF 30 DAYS\" or \"REDUNDANCY 3\")"
)]
pub struct PolicyError {
    pub text: String,
    pub reason: String,
}

fn unit_of(word: &str) -> Option<WindowUnit> {
    let word = word.to_ascii_lowercase();
    let word = word.strip_suffix('s').unwrap_or(&word);
    match word {
        "day" => Some(WindowUnit::Days),
        "week" => Some(WindowUnit::Weeks),
        "month" => Some(WindowUnit::Months),
        _ => None,
    }
}

fn number(text: &str, word: &str) -> Result<u32, PolicyError> {
    let error = |reason: String| PolicyError {
        text: text.to_owned(),
        reason,
    };
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(format!("{word:?} is not a whole number")));
    }
    let value: u32 = word
        .parse()
        .map_err(|_| error(format!("{word} is too large")))?;
    if value == 0 {
        return Err(error(
            "0 would make every backup obsolete; the value must be at least 1".into(),
        ));
    }
    Ok(value)
}

impl RetentionPolicy {
    /// Parse a policy; see the module doc for the accepted spellings.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let error = |reason: &str| PolicyError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            [] => Err(error("it is empty")),
            [short] if !short.eq_ignore_ascii_case("redundancy") => {
                // CNPG: ^[1-9][0-9]*[dwm]$
                let (digits, unit) =
                    short.split_at(short.len() - short.chars().last().map_or(0, char::len_utf8));
                let unit = match unit {
                    "d" => WindowUnit::Days,
                    "w" => WindowUnit::Weeks,
                    "m" => WindowUnit::Months,
                    _ => return Err(error("a short policy is a number followed by d, w or m")),
                };
                if digits.len() > 1 && digits.starts_with('0') {
                    return Err(error("a short policy's number must not start with 0"));
                }
                Ok(RetentionPolicy::RecoveryWindow {
                    value: number(text, digits)?,
                    unit,
                })
            }
            [keyword, n] if keyword.eq_ignore_ascii_case("redundancy") => {
                Ok(RetentionPolicy::Redundancy(number(text, n)?))
            }
            [recovery, window, of, n, unit]
                if recovery.eq_ignore_ascii_case("recovery")
                    && window.eq_ignore_ascii_case("window")
                    && of.eq_ignore_ascii_case("of") =>
            {
                let unit = unit_of(unit).ok_or_else(|| {
                    error("the unit of a recovery window is DAYS, WEEKS or MONTHS")
                })?;
                Ok(RetentionPolicy::RecoveryWindow {
                    value: number(text, n)?,
                    unit,
                })
            }
            [keyword, ..] if keyword.eq_ignore_ascii_case("redundancy") => {
                Err(error("REDUNDANCY takes exactly one number"))
            }
            [keyword, ..] if keyword.eq_ignore_ascii_case("recovery") => Err(error(
                "the form is RECOVERY WINDOW OF <n> DAYS|WEEKS|MONTHS",
            )),
            _ => Err(error("not a policy pgsteward or barman knows")),
        }
    }

    /// The recovery window as a duration (None for a redundancy policy).
    pub fn window(&self) -> Option<TimeDelta> {
        match self {
            RetentionPolicy::Redundancy(_) => None,
            RetentionPolicy::RecoveryWindow { value, unit } => {
                Some(TimeDelta::days(i64::from(*value) * unit.days()))
            }
        }
    }
}

impl FromStr for RetentionPolicy {
    type Err = PolicyError;
    fn from_str(text: &str) -> Result<Self, PolicyError> {
        RetentionPolicy::parse(text)
    }
}

/// barman's spelling, which `barman-cloud-backup-delete --retention-policy` accepts.
impl fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetentionPolicy::Redundancy(n) => write!(f, "REDUNDANCY {n}"),
            RetentionPolicy::RecoveryWindow { value, unit } => {
                write!(f, "RECOVERY WINDOW OF {value} {}", unit.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_spellings() {
        let window = |value, unit| RetentionPolicy::RecoveryWindow { value, unit };
        for (text, expected) in [
            ("30d", window(30, WindowUnit::Days)),
            ("4w", window(4, WindowUnit::Weeks)),
            ("6m", window(6, WindowUnit::Months)),
            (" 10d ", window(10, WindowUnit::Days)),
            ("RECOVERY WINDOW OF 7 DAYS", window(7, WindowUnit::Days)),
            ("recovery window of 2 weeks", window(2, WindowUnit::Weeks)),
            ("Recovery  Window Of 1 MONTH", window(1, WindowUnit::Months)),
            ("recovery window of 1 day", window(1, WindowUnit::Days)),
            ("REDUNDANCY 3", RetentionPolicy::Redundancy(3)),
            ("redundancy   1", RetentionPolicy::Redundancy(1)),
        ] {
            assert_eq!(RetentionPolicy::parse(text), Ok(expected), "{text}");
        }
        assert_eq!(
            RetentionPolicy::parse("6m").unwrap().window(),
            Some(TimeDelta::days(186))
        );
        assert_eq!(
            RetentionPolicy::parse("30d").unwrap().to_string(),
            "RECOVERY WINDOW OF 30 DAYS"
        );
        assert_eq!(
            RetentionPolicy::parse("redundancy 2").unwrap().to_string(),
            "REDUNDANCY 2"
        );
    }

    #[test]
    fn refused_spellings_name_the_problem() {
        for (text, reason) in [
            ("", "empty"),
            ("30", "number followed by d, w or m"),
            ("30y", "number followed by d, w or m"),
            ("030d", "must not start with 0"),
            ("0d", "at least 1"),
            ("d", "not a whole number"),
            ("-3d", "not a whole number"),
            ("99999999999d", "too large"),
            ("REDUNDANCY", "exactly one number"),
            ("REDUNDANCY 0", "at least 1"),
            ("REDUNDANCY two", "not a whole number"),
            ("REDUNDANCY 1 2", "exactly one number"),
            ("RECOVERY WINDOW OF 7 YEARS", "DAYS, WEEKS or MONTHS"),
            ("RECOVERY WINDOW 7 DAYS", "RECOVERY WINDOW OF"),
            ("keep everything", "not a policy"),
            ("30 days", "not a policy"),
        ] {
            let err = RetentionPolicy::parse(text).unwrap_err();
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }
}
