//! Classic groups' membership stored under the coordinator lease, so the next coordinator
//! serves a stable group as it stood (as Kafka's loads a group from `__consumer_offsets`):
//! members keep their ids, generation and assignments, and their heartbeats and offset commits
//! go on without a rebalance after the agent coordinating them stops or hands the group off.
//!
//! - A group's membership is stored when it becomes stable (the leader's assignment delivered)
//!   or a static member is replaced while it is, and cleared when a rebalance starts: a group
//!   restored is always one whose members were all settled, never one half-way through a
//!   rebalance (its members are rejoining anyway; the next coordinator starts afresh).
//! - Writes are fenced by the lease, go one at a time per group and always carry the latest
//!   state; a failed one is retried after [`RETRY_AFTER`] by the sweeper. A missing or stale
//!   snapshot only costs what it cost before there were any: every member rejoins.
//! - A new coordinator restores a snapshot only when it is of the generation recorded last (a
//!   later generation handed out means members moved on). Restored sessions start at the
//!   restore, so a member that is gone meanwhile times out as any silent member does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use streamhouse_metadata::GroupLease;
use tracing::warn;

use super::member::{MemberInfo, Protocol};
use super::{Coordinated, Group, GroupCoordinator};

/// How long a group whose membership failed to store waits before the next attempt.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A stable classic group's membership as stored (JSON, opaque to the metadata store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredMembership {
    /// Format version; a coordinator restores only versions it knows.
    pub(super) version: u32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol_name: Option<String>,
    pub(super) leader: Option<String>,
    /// In join order (the earliest leads when the leader is gone).
    pub(super) members: Vec<StoredMember>,
}

impl StoredMembership {
    /// The format this build writes.
    pub(super) const VERSION: u32 = 1;
}

/// One member as stored; byte strings in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredMember {
    id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    /// (protocol name, its metadata) in the member's order of preference.
    protocols: Vec<(String, String)>,
    assignment: String,
}

impl StoredMember {
    pub(super) fn encode(id: &str, info: &MemberInfo, assignment: &Bytes) -> Self {
        Self {
            id: id.to_owned(),
            group_instance_id: info.group_instance_id.clone(),
            client_id: info.client_id.clone(),
            client_host: info.client_host.clone(),
            session_timeout_ms: info.session_timeout.as_millis() as u64,
            rebalance_timeout_ms: info.rebalance_timeout.as_millis() as u64,
            protocols: info
                .protocols
                .iter()
                .map(|p| (p.name.clone(), B64.encode(&p.metadata)))
                .collect(),
            assignment: B64.encode(assignment),
        }
    }

    /// The member's id, its join information and its assignment.
    pub(super) fn decode(self) -> Result<(String, MemberInfo, Bytes), String> {
        let bytes = |text: &str| {
            B64.decode(text)
                .map(Bytes::from)
                .map_err(|e| format!("member {}: {e}", self.id))
        };
        let protocols = self
            .protocols
            .iter()
            .map(|(name, metadata)| {
                Ok(Protocol {
                    name: name.clone(),
                    metadata: bytes(metadata)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let assignment = bytes(&self.assignment)?;
        let info = MemberInfo {
            group_instance_id: self.group_instance_id,
            client_id: self.client_id,
            client_host: self.client_host,
            session_timeout: Duration::from_millis(self.session_timeout_ms),
            rebalance_timeout: Duration::from_millis(self.rebalance_timeout_ms),
            protocols,
        };
        Ok((self.id, info, assignment))
    }
}

/// Where a coordinated group's stored membership stands.
#[derive(Debug, Default)]
pub(super) struct MembershipStore {
    /// The [`Group::membership_version`] last stored (or found stored at the restore).
    stored_version: u64,
    /// A write is under way (at most one per group).
    writing: bool,
    /// After a failed write, no other before this.
    retry_at: Option<Instant>,
}

impl MembershipStore {
    /// Nothing to store until `group` changes.
    pub(super) fn stored(group: &Group) -> Self {
        Self {
            stored_version: group.membership_version(),
            ..Self::default()
        }
    }
}

impl Coordinated {
    /// Whether a write of the membership should start now (and if so, marks it started).
    fn start_membership_write(&mut self, now: Instant) -> bool {
        let store = &mut self.membership;
        let due = !store.writing
            && store.stored_version != self.group.membership_version()
            && store.retry_at.is_none_or(|t| now >= t);
        store.writing |= due;
        due
    }
}

impl GroupCoordinator {
    /// Starts storing the membership of each group in `ids` that changed since it was last
    /// stored (unless a write of it is under way: that one picks the change up).
    pub(super) fn store_memberships<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let due: Vec<String> = self.with_groups(|groups| {
            ids.into_iter()
                .filter(|id| {
                    groups
                        .get_mut(*id)
                        .is_some_and(|c| c.start_membership_write(now))
                })
                .map(str::to_owned)
                .collect()
        });
        self.spawn_membership_writes(due);
    }

    /// As [`GroupCoordinator::store_memberships`] for every group (the sweeper: timeouts
    /// change memberships too, and failed writes are retried from there).
    pub(super) fn store_all_memberships(&self) {
        let now = Instant::now();
        let due: Vec<String> = self.with_groups(|groups| {
            groups
                .iter_mut()
                .filter_map(|(id, c)| c.start_membership_write(now).then(|| id.clone()))
                .collect()
        });
        self.spawn_membership_writes(due);
    }

    fn spawn_membership_writes(&self, due: Vec<String>) {
        let Some(me) = self.me.upgrade() else { return };
        for id in due {
            tokio::spawn(me.clone().write_memberships(id));
        }
    }

    /// Stores `group_id`'s membership, again while it changes meanwhile.
    async fn write_memberships(self: Arc<Self>, group_id: String) {
        loop {
            let next = self.with_coordinated(&group_id, |c| {
                let version = c.group.membership_version();
                if version == c.membership.stored_version {
                    c.membership.writing = false;
                    return None;
                }
                Some((c.fence.clone(), version, c.group.membership()))
            });
            let Some((fence, version, (generation, members))) = next.flatten() else {
                return;
            };
            let json = members.map(|m| serde_json::to_string(&m).expect("plain data serializes"));
            let written = self
                .metadata
                .record_group_members(&group_id, &fence, generation, json.as_deref())
                .await;
            let failed = written.is_err();
            if let Err(e) = written {
                warn!(group = %group_id, generation, "storing the group's membership failed: {e}");
                // A fenced write unloads the group (another agent coordinates it now).
                let _ = self.lease_failure(&group_id, &fence, e);
            }
            let go_on = self.with_coordinated(&group_id, |c| {
                if c.fence != fence {
                    return false;
                }
                if failed {
                    c.membership.writing = false;
                    c.membership.retry_at = Some(Instant::now() + RETRY_AFTER);
                } else {
                    c.membership.stored_version = version;
                    c.membership.retry_at = None;
                }
                !failed
            });
            if go_on != Some(true) {
                return;
            }
        }
    }

    /// The stable group an earlier coordinator stored under `lease`'s generation, if any.
    /// Unreadable snapshots are logged and ignored: the members rejoin instead.
    pub(super) async fn restore_membership(&self, lease: &GroupLease) -> Option<Group> {
        if lease.generation <= 0 {
            return None;
        }
        let (generation, json) = match self.metadata.group_members(&lease.group_id).await {
            Ok(stored) => stored?,
            Err(e) => {
                warn!(group = %lease.group_id, "reading the group's stored membership failed: {e}");
                return None;
            }
        };
        if generation != lease.generation {
            return None;
        }
        let restored = serde_json::from_str::<StoredMembership>(&json)
            .map_err(|e| e.to_string())
            .and_then(|stored| match stored.version {
                StoredMembership::VERSION => Ok(stored),
                v => Err(format!("unknown format version {v}")),
            })
            .and_then(|stored| {
                let delay = self.initial_rebalance_delay;
                Group::restore(&lease.group_id, delay, generation, stored, Instant::now())
            });
        match restored {
            Ok(group) => Some(group),
            Err(e) => {
                warn!(group = %lease.group_id, generation, "stored membership ignored: {e}");
                None
            }
        }
    }
}
