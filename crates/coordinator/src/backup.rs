//! Backups through the coordinator (`POST /backup {"target": "primary" | "prefer-standby"}`):
//! it picks the instance (the most advanced healthy streaming standby for `prefer-standby`,
//! falling back to the primary; the primary for `primary`) and forwards `POST /pg/backup` to
//! that instance's manager, whose answer (the backup id) it returns with the member's name.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::decide::{MemberRole, MemberView};
use crate::run::Coordinator;

/// Where a backup is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupTarget {
    Primary,
    /// A healthy streaming standby (the most advanced), else the primary.
    #[default]
    PreferStandby,
}

/// `POST /backup` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    #[serde(default)]
    pub target: BackupTarget,
    #[serde(default)]
    pub immediate_checkpoint: Option<bool>,
}

/// `POST /backup` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupStarted {
    /// The member taking the backup.
    pub member: String,
    /// Its role when chosen.
    pub role: MemberRole,
    /// The manager's answer (`backup_id`).
    pub answer: Value,
}

/// Why no backup was started (HTTP status, message).
pub type BackupRefused = (u16, String);

fn healthy(m: &MemberView) -> bool {
    m.reachable
        && m.unhealthy_for.is_none()
        && m.last.as_ref().is_some_and(|o| o.postgres_up && !o.fenced)
}

/// The member that takes a backup for `target`.
pub fn choose(members: &[MemberView], target: BackupTarget) -> Option<(&MemberView, MemberRole)> {
    if target == BackupTarget::PreferStandby {
        let standby = members
            .iter()
            .filter(|m| healthy(m))
            .filter(|m| {
                m.last
                    .as_ref()
                    .is_some_and(|o| o.role == MemberRole::Replica && o.streaming)
            })
            .max_by(|a, b| {
                let key = |m: &MemberView| m.last.as_ref().and_then(|o| o.replayed_lsn);
                key(a).cmp(&key(b)).then_with(|| b.name.cmp(&a.name))
            });
        if let Some(standby) = standby {
            return Some((standby, MemberRole::Replica));
        }
    }
    members
        .iter()
        .filter(|m| healthy(m))
        .filter(|m| {
            m.last
                .as_ref()
                .is_some_and(|o| o.role == MemberRole::Primary)
        })
        .max_by_key(|m| m.last.as_ref().map_or(0, |o| o.term))
        .map(|m| (m, MemberRole::Primary))
}

impl Coordinator {
    /// Start a backup on the member `request.target` selects.
    pub async fn backup(
        &mut self,
        request: &BackupRequest,
    ) -> Result<BackupStarted, BackupRefused> {
        let members = self.poll_now().await;
        let (chosen, role) = choose(&members, request.target).ok_or_else(|| {
            (
                409,
                "no healthy primary or streaming standby to take the backup".to_owned(),
            )
        })?;
        let name = chosen.name.clone();
        let member = self.member(&name).cloned().ok_or_else(|| {
            (
                500,
                format!("member {name} vanished from the configuration"),
            )
        })?;
        let token = self.token(&member);
        let body = match request.immediate_checkpoint {
            Some(fast) => json!({ "immediate_checkpoint": fast }),
            None => json!({}),
        };
        tracing::info!(member = %name, role = ?role, target = ?request.target, "backup requested: forwarding to the member");
        match self
            .client
            .post(
                &member.url,
                "/pg/backup",
                token.as_deref(),
                Some(body),
                self.config.action_timeout,
            )
            .await
        {
            Ok(answer) => Ok(BackupStarted {
                member: name,
                role,
                answer,
            }),
            Err(crate::client::ClientError::Status { status, body }) => {
                Err((status, format!("{name} refused the backup: {body}")))
            }
            Err(e) => Err((502, format!("{name} did not start the backup: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn member(name: &str, role: MemberRole, replayed: u64, streaming: bool) -> MemberView {
        let mut view = MemberView::for_test(name, role, 1);
        let observed = view.observed_mut();
        observed.replayed_lsn = Some(Lsn(replayed));
        observed.streaming = streaming;
        view
    }

    #[test]
    fn prefer_standby_picks_the_most_advanced_streaming_standby() {
        let members = vec![
            member("a", MemberRole::Primary, 0, false),
            member("b", MemberRole::Replica, 10, true),
            member("c", MemberRole::Replica, 20, true),
            member("d", MemberRole::Replica, 30, false),
        ];
        let (m, role) = choose(&members, BackupTarget::PreferStandby).unwrap();
        assert_eq!((m.name.as_str(), role), ("c", MemberRole::Replica));
        let (m, _) = choose(&members, BackupTarget::Primary).unwrap();
        assert_eq!(m.name, "a");
        let only_primary = vec![member("a", MemberRole::Primary, 0, false)];
        let (m, role) = choose(&only_primary, BackupTarget::PreferStandby).unwrap();
        assert_eq!((m.name.as_str(), role), ("a", MemberRole::Primary));
        let mut down = only_primary;
        down[0].reachable = false;
        assert!(choose(&down, BackupTarget::PreferStandby).is_none());
    }
}
