//! The replication lines of `pgsteward status` (human-readable summary): role and term,
//! upstream and WAL receiver with replay lag on a standby, standbys and slots on a primary.

use pgsteward_api::{InstanceStatus, ReplicationRole};

/// Lines to append to the status summary (empty when the status has no replication block).
pub fn lines(s: &InstanceStatus) -> String {
    let Some(r) = &s.replication else {
        return String::new();
    };
    let role = match r.role {
        ReplicationRole::Primary => "primary",
        ReplicationRole::Replica => "replica",
    };
    let mut out = format!("replication   {role}, term {}\n", r.term);
    if let Some(upstream) = &r.upstream {
        out.push_str(&format!(
            "upstream      {upstream} (slot {})\n",
            r.slot_name.as_deref().unwrap_or("-")
        ));
    }
    if let Some(rx) = &r.receiver {
        out.push_str(&format!(
            "wal receiver  {} received {} replayed {} lag {} B / {:.1} s\n",
            rx.wal_receiver_status.as_deref().unwrap_or("not running"),
            rx.received_lsn.as_deref().unwrap_or("-"),
            rx.replayed_lsn.as_deref().unwrap_or("-"),
            rx.replay_lag_bytes
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            rx.replay_lag_seconds.unwrap_or(0.0),
        ));
    }
    for sb in &r.standbys {
        out.push_str(&format!(
            "standby       {} {} {} replay {} lag {} B / {:.1} s\n",
            sb.application_name,
            sb.state.as_deref().unwrap_or("-"),
            sb.sync_state.as_deref().unwrap_or("-"),
            sb.replay_lsn.as_deref().unwrap_or("-"),
            sb.replay_lag_bytes
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            sb.replay_lag_seconds.unwrap_or(0.0),
        ));
    }
    for slot in &r.slots {
        out.push_str(&format!(
            "slot          {} {} restart {} retains {} B\n",
            slot.slot_name,
            if slot.active { "active" } else { "inactive" },
            slot.restart_lsn.as_deref().unwrap_or("-"),
            slot.retained_bytes.unwrap_or(0),
        ));
    }
    if let Some(names) = r
        .synchronous_standby_names
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        out.push_str(&format!("sync names    {names}\n"));
    }
    out
}
