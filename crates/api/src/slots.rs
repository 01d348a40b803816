//! Replication slot naming shared by the manager (which creates its slot on its upstream) and
//! the coordinator (which tells members to drop the slots nobody streams from any more), and
//! the `POST /pg/slots/drop` request and response.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest name postgres accepts for a replication slot (`NAMEDATALEN - 1`).
pub const SLOT_NAME_MAX: usize = 63;

/// The physical replication slot of an instance: its `instance_name` lower-cased, with every
/// character a slot name cannot hold (anything but `a-z`, `0-9`, `_`) replaced by `_`, cut at
/// 63 characters.
pub fn slot_name(instance_name: &str) -> String {
    instance_name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(SLOT_NAME_MAX)
        .collect()
}

/// True for a name postgres accepts as a slot name (`a-z`, `0-9`, `_`, 1 to 63 characters).
pub fn is_valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= SLOT_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `POST /pg/slots/drop` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotDropRequest {
    /// The term the instance holds (anything else is refused: the caller's view is stale).
    pub term: u64,
    /// Physical slots to drop when inactive (1 to 64 valid slot names).
    pub slots: Vec<String>,
}

/// `POST /pg/slots/drop` response: every requested slot lands in exactly one list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SlotDropResponse {
    pub term: u64,
    /// Dropped now.
    pub dropped: Vec<String>,
    /// Kept: a WAL sender uses it.
    pub active: Vec<String>,
    /// No physical slot of that name.
    pub missing: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_valid() {
        assert_eq!(slot_name("Test-5432"), "test_5432");
        assert_eq!(slot_name("pg_1"), "pg_1");
        assert_eq!(slot_name(&"x".repeat(80)).len(), SLOT_NAME_MAX);
        for name in ["Test-5432", "pg.1", "ä", "a b"] {
            assert!(is_valid_slot_name(&slot_name(name)), "{name}");
        }
        for bad in ["", "A", "a-b", "a'b", &"x".repeat(64)] {
            assert!(!is_valid_slot_name(bad), "{bad:?}");
        }
    }
}
