//! The state machine of one consumer-protocol group (KIP-848): members heartbeat, the
//! coordinator computes a target assignment with a server-side assignor whenever the group
//! epoch moves (membership, subscriptions or the subscribed topics' partitions changed), and
//! each member is reconciled towards its target one heartbeat at a time, as Kafka's
//! `CurrentAssignmentBuilder` does: partitions to revoke are taken away first (the member
//! keeps its epoch until it reports them released), partitions another member still owns are
//! given only once released, so no partition is ever owned by two members at once.
//!
//! Like the classic state machine it knows nothing of the wire format and takes the time as an
//! argument. Membership lives in memory with the coordinator lease; the group epoch is
//! recorded in the metadata store by the coordinator before a member learns it, so epochs
//! continue across coordinator moves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use regex::{Regex, RegexBuilder};
use tracing::info;
use uuid::Uuid;

use super::assignor::{assign, Assignment, AssignorMember, ASSIGNORS, DEFAULT_ASSIGNOR};
use super::{GroupError, GroupState};

/// Member epoch of a heartbeat that joins (or rejoins after being fenced).
pub(crate) const JOIN_EPOCH: i32 = 0;
/// Member epoch of a heartbeat that leaves the group.
pub(crate) const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member's heartbeat that leaves for now (KIP-848).
pub(crate) const STATIC_LEAVE_EPOCH: i32 = -2;

/// The topics a group may be assigned from: name to (id, partition count).
pub(crate) type TopicImage = BTreeMap<String, (Uuid, i32)>;

/// A ConsumerGroupHeartbeat, decoded. `None` fields are unchanged since the last heartbeat.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConsumerHeartbeat {
    /// Empty on a v0 first join (the coordinator picks one); chosen by the client from v1.
    pub(crate) member_id: String,
    pub(crate) member_epoch: i32,
    pub(crate) instance_id: Option<String>,
    pub(crate) rack_id: Option<String>,
    /// -1 when unchanged.
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) subscribed_topic_names: Option<Vec<String>>,
    pub(crate) subscribed_topic_regex: Option<String>,
    pub(crate) server_assignor: Option<String>,
    /// The partitions the member owns now (after running its callbacks).
    pub(crate) owned: Option<Assignment>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
}

/// What a member learns from its heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConsumerHeartbeatResponse {
    pub(crate) member_id: String,
    pub(crate) member_epoch: i32,
    /// The member's whole assignment, when it joined, reported what it owns or it changed.
    pub(crate) assignment: Option<Assignment>,
}

/// Where a member is on its way to its target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconciliation {
    /// At the target epoch with its whole target assignment.
    Stable,
    /// Must release partitions first; stays at its epoch until it reports them released.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions other members still own.
    UnreleasedPartitions,
}

/// One member of a consumer-protocol group.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerMember {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) rack_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) subscribed_names: BTreeSet<String>,
    pub(crate) subscribed_regex: Option<String>,
    /// `subscribed_regex` compiled (checked when the heartbeat was validated).
    compiled_regex: Option<Regex>,
    server_assignor: Option<String>,
    rebalance_timeout: Duration,
    pub(crate) epoch: i32,
    previous_epoch: i32,
    state: Reconciliation,
    /// The partitions it owns (may consume) at its epoch.
    pub(crate) assigned: Assignment,
    /// Partitions it must release; still owned until it reports them gone.
    pending_revocation: Assignment,
    /// The member epoch at which it came to own each partition it owns.
    owned_since: BTreeMap<(Uuid, i32), i32>,
    /// Partitions it gave up that nobody has owned since, with the epoch it owned them from:
    /// a commit of them that crossed the release is still the newest.
    released: BTreeMap<(Uuid, i32), i32>,
    session_deadline: Instant,
    /// When a requested revocation must be done by, else the member is removed.
    revocation_deadline: Option<Instant>,
}

/// One consumer-protocol group's members, epochs and assignments.
pub(crate) struct ConsumerGroup {
    id: String,
    /// Bumped by every change that needs a new target assignment.
    epoch: i32,
    /// The group epoch the target assignment was computed at.
    assignment_epoch: i32,
    members: BTreeMap<String, ConsumerMember>,
    /// Each member's target assignment (computed at `assignment_epoch`).
    target: BTreeMap<String, Assignment>,
    /// The subscribed topics the target was computed from.
    topics: TopicImage,
    assignor: String,
    session_timeout: Duration,
}

/// Heartbeat interval and session timeout for consumer-protocol members
/// (`group.consumer.heartbeat.interval.ms`, `group.consumer.session.timeout.ms`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsumerTimeouts {
    pub(crate) heartbeat_interval: Duration,
    pub(crate) session_timeout: Duration,
}

impl ConsumerGroup {
    /// An empty group whose next epoch follows `epoch` (the last one recorded).
    pub(crate) fn new(id: &str, epoch: i32, session_timeout: Duration) -> Self {
        Self {
            id: id.to_string(),
            epoch,
            assignment_epoch: epoch,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            topics: TopicImage::new(),
            assignor: DEFAULT_ASSIGNOR.to_string(),
            session_timeout,
        }
    }

    /// The group epoch.
    pub(crate) fn epoch(&self) -> i32 {
        self.epoch
    }

    /// Whether the group has no members.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kafka's consumer group states: Empty, Assigning (target behind the group epoch),
    /// Reconciling (a member not yet at its target), Stable.
    pub(crate) fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.assignment_epoch < self.epoch {
            GroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| m.state != Reconciliation::Stable || m.epoch != self.assignment_epoch)
        {
            GroupState::Reconciling
        } else {
            GroupState::Stable
        }
    }

    /// Moves the group epoch up to `epoch` (the highest recorded for the group id, by either
    /// protocol), so an empty group's next epoch follows every generation handed out.
    pub(crate) fn advance_epoch(&mut self, epoch: i32) {
        if self.members.is_empty() && epoch > self.epoch {
            self.epoch = epoch;
            self.assignment_epoch = epoch;
        }
    }

    /// The assignor the target assignment is computed with.
    pub(crate) fn assignor(&self) -> &str {
        &self.assignor
    }

    /// The target assignment epoch.
    pub(crate) fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    /// Members ordered by id.
    pub(crate) fn members(&self) -> impl Iterator<Item = &ConsumerMember> {
        self.members.values()
    }

    /// A member's target assignment.
    pub(crate) fn target_of(&self, member: &str) -> Assignment {
        self.target.get(member).cloned().unwrap_or_default()
    }

    /// Whether any member subscribes to `topic` (by name or pattern).
    pub(crate) fn is_subscribed_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| m.subscribes_to(topic))
    }

    /// Handles a heartbeat. `topics` holds every topic the group may subscribe to. Returns the
    /// answer and whether the group epoch moved (the coordinator records it before answering).
    pub(crate) fn heartbeat(
        &mut self,
        req: ConsumerHeartbeat,
        topics: &TopicImage,
        now: Instant,
    ) -> Result<ConsumerHeartbeatResponse, GroupError> {
        validate(&self.id, &req)?;
        if matches!(req.member_epoch, LEAVE_EPOCH | STATIC_LEAVE_EPOCH) {
            return self.leave(&req);
        }
        let joining = req.member_epoch == JOIN_EPOCH;
        let member_id = self.member_for(&req, now)?;
        let member = self.members.get_mut(&member_id).expect("found or created");
        let subscription_changed = member.update(&req);
        member.session_deadline = now + self.session_timeout;
        if subscription_changed {
            self.bump_epoch();
        }
        self.refresh_target(topics);
        let before = self.members[&member_id].assigned.clone();
        self.reconcile(&member_id, req.owned.as_ref(), now);
        let member = &self.members[&member_id];
        let changed = member.assigned != before;
        Ok(ConsumerHeartbeatResponse {
            member_id: member_id.clone(),
            member_epoch: member.epoch,
            assignment: (joining || changed || req.owned.is_some())
                .then(|| member.assigned.clone()),
        })
    }

    /// Finds the heartbeat's member, checking its epoch, or creates it on a join.
    fn member_for(&mut self, req: &ConsumerHeartbeat, now: Instant) -> Result<String, GroupError> {
        if req.member_epoch == JOIN_EPOCH {
            return self.join(req, now);
        }
        let Some(member) = self.members.get(&req.member_id) else {
            return Err(GroupError::UnknownMember {
                group: self.id.clone(),
                member: req.member_id.clone(),
            });
        };
        member.check_epoch(&self.id, req.member_epoch, req.owned.as_ref())?;
        Ok(member.id.clone())
    }

    /// A member joins, or rejoins with epoch 0 after being fenced: whatever it owned under
    /// that id before is released (the client dropped it when it was fenced).
    fn join(&mut self, req: &ConsumerHeartbeat, now: Instant) -> Result<String, GroupError> {
        let id = if req.member_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            req.member_id.clone()
        };
        if let Some(instance) = &req.instance_id {
            let other = self
                .members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance) && m.id != id);
            if let Some(other) = other {
                return Err(GroupError::UnreleasedInstance {
                    group: self.id.clone(),
                    instance: instance.clone(),
                    member: other.id.clone(),
                });
            }
        }
        if self.members.remove(&id).is_some() {
            info!(group = %self.id, member = %id, "member rejoined");
        } else {
            info!(group = %self.id, member = %id, "member joined");
        }
        self.members
            .insert(id.clone(), ConsumerMember::new(&id, req, now));
        self.bump_epoch();
        Ok(id)
    }

    fn leave(&mut self, req: &ConsumerHeartbeat) -> Result<ConsumerHeartbeatResponse, GroupError> {
        if self.members.remove(&req.member_id).is_none() {
            return Err(GroupError::UnknownMember {
                group: self.id.clone(),
                member: req.member_id.clone(),
            });
        }
        info!(group = %self.id, member = %req.member_id, "member left");
        self.target.remove(&req.member_id);
        self.bump_epoch();
        Ok(ConsumerHeartbeatResponse {
            member_id: req.member_id.clone(),
            member_epoch: req.member_epoch,
            assignment: None,
        })
    }

    fn bump_epoch(&mut self) {
        self.epoch += 1;
    }

    /// Recomputes the target assignment when the group epoch moved past it or the subscribed
    /// topics changed (created, deleted, partitions added).
    fn refresh_target(&mut self, all_topics: &TopicImage) {
        let topics: TopicImage = all_topics
            .iter()
            .filter(|(name, _)| self.is_subscribed_to(name))
            .map(|(name, info)| (name.clone(), *info))
            .collect();
        if topics != self.topics {
            self.topics = topics;
            if self.assignment_epoch == self.epoch {
                self.bump_epoch();
            }
        }
        if self.assignment_epoch == self.epoch {
            return;
        }
        self.assignor = self.preferred_assignor();
        let partitions: BTreeMap<Uuid, i32> = self.topics.values().copied().collect();
        let empty = Assignment::new();
        let members: Vec<AssignorMember<'_>> = self
            .members
            .values()
            .map(|m| AssignorMember {
                id: &m.id,
                topics: self
                    .topics
                    .iter()
                    .filter(|(name, _)| m.subscribes_to(name))
                    .map(|(_, (id, _))| *id)
                    .collect(),
                previous: self.target.get(&m.id).unwrap_or(&empty),
            })
            .collect();
        self.target = assign(&self.assignor, &members, &partitions);
        self.assignment_epoch = self.epoch;
        info!(group = %self.id, epoch = self.epoch, members = self.members.len(),
              assignor = %self.assignor, "new target assignment");
    }

    /// The assignor most members ask for (ties: the first in [`ASSIGNORS`]), else the default.
    fn preferred_assignor(&self) -> String {
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.server_assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        ASSIGNORS
            .iter()
            .filter(|a| votes.contains_key(**a))
            .max_by_key(|a| (votes[**a], std::cmp::Reverse(**a)))
            .unwrap_or(&DEFAULT_ASSIGNOR)
            .to_string()
    }

    /// Moves a member one step towards its target (Kafka's `CurrentAssignmentBuilder`).
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now: Instant) {
        let member = &self.members[member_id];
        let epoch = match member.state {
            Reconciliation::Stable | Reconciliation::UnreleasedPartitions => member.epoch,
            // Done revoking (it reported what it owns and none of it is pending): on to the
            // next epoch.
            Reconciliation::UnrevokedPartitions => match owned {
                Some(owned) if !overlaps(owned, &member.pending_revocation) => {
                    (member.epoch + 1).min(self.assignment_epoch)
                }
                _ => return,
            },
        };
        let needed = member.state != Reconciliation::Stable
            || member.epoch != self.assignment_epoch
            || member.assigned != self.target_of(member_id);
        if needed {
            let next = self.next_assignment(member_id, epoch, owned);
            let member = self.members.get_mut(member_id).expect("exists");
            let acquired = member.apply(next, now);
            // Once another member has a partition, a late commit by its earlier owner would
            // move its offset back.
            for other in self.members.values_mut().filter(|m| m.id != member_id) {
                other.released.retain(|p, _| !acquired.contains(p));
            }
        }
    }

    /// The member's next state given its target and what others still own.
    fn next_assignment(&self, member_id: &str, epoch: i32, owned: Option<&Assignment>) -> Step {
        let member = &self.members[member_id];
        let target = self.target_of(member_id);
        let owners = self.owners(member_id);
        let mut assigned = Assignment::new();
        let mut revoke = Assignment::new();
        let mut unreleased = false;
        let topics: BTreeSet<Uuid> = target
            .keys()
            .chain(member.assigned.keys())
            .copied()
            .collect();
        for topic in topics {
            let want = target.get(&topic).cloned().unwrap_or_default();
            let have = member.assigned.get(&topic).cloned().unwrap_or_default();
            let mut keep: BTreeSet<i32> = have.intersection(&want).copied().collect();
            let gone: BTreeSet<i32> = have.difference(&want).copied().collect();
            for &p in want.difference(&have) {
                if owners.contains(&(topic, p)) {
                    unreleased = true;
                } else {
                    keep.insert(p);
                }
            }
            if !keep.is_empty() {
                assigned.insert(topic, keep);
            }
            if !gone.is_empty() {
                revoke.insert(topic, gone);
            }
        }
        // Without a report of what it owns, the member is assumed to still own what it must
        // revoke.
        let still_owns = owned.is_none_or(|o| overlaps(o, &revoke));
        if !revoke.is_empty() && still_owns {
            Step {
                state: Reconciliation::UnrevokedPartitions,
                epoch,
                assigned,
                revoke,
            }
        } else {
            Step {
                state: if unreleased {
                    Reconciliation::UnreleasedPartitions
                } else {
                    Reconciliation::Stable
                },
                epoch: self.assignment_epoch.max(epoch),
                assigned,
                revoke: Assignment::new(),
            }
        }
    }

    /// Partitions owned (assigned or still being revoked) by members other than `except`.
    fn owners(&self, except: &str) -> BTreeSet<(Uuid, i32)> {
        self.members
            .values()
            .filter(|m| m.id != except)
            .flat_map(|m| flatten(&m.assigned).chain(flatten(&m.pending_revocation)))
            .collect()
    }

    /// Removes members whose session expired or who did not revoke in time.
    pub(crate) fn tick(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline <= now || m.revocation_deadline.is_some_and(|d| d <= now)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            info!(group = %self.id, member = %id, "member timed out (session or revocation); removed");
            self.members.remove(&id);
            self.target.remove(&id);
            self.bump_epoch();
        }
    }

    /// Checks an offset commit by `member_id` at `member_epoch` (OffsetCommit v9+ sends the
    /// member epoch where the classic protocol sends the generation). A negative epoch commits
    /// as a standalone consumer, allowed only while the group has no members. A commit at an
    /// earlier epoch than the member's (it crossed the heartbeat that moved the member on) is
    /// checked partition by partition with [`Self::may_commit`], as KIP-1251 does: refusing it
    /// whole would fail a client's commit for a race it cannot avoid.
    pub(crate) fn validate_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
    ) -> Result<CommitCheck, GroupError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(CommitCheck::Any);
        }
        let Some(member) = self.members.get(member_id) else {
            return Err(GroupError::UnknownMember {
                group: self.id.clone(),
                member: member_id.to_string(),
            });
        };
        match member_epoch {
            e if e == member.epoch => Ok(CommitCheck::Any),
            e if (0..member.epoch).contains(&e) => Ok(CommitCheck::Partitions),
            e => Err(self.stale(e, member.epoch)),
        }
    }

    /// Whether `member_id` at `member_epoch` may commit `partition`: it owned it at that
    /// epoch (it came to own it then or earlier) and nobody else has owned it since, so the
    /// commit cannot move back an offset another member committed.
    pub(crate) fn may_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        partition: (Uuid, i32),
    ) -> Result<(), GroupError> {
        let member = self.members.get(member_id);
        let since = member.and_then(|m| {
            m.owned_since
                .get(&partition)
                .or_else(|| m.released.get(&partition))
        });
        match (member, since) {
            (Some(m), Some(&since)) if since <= member_epoch && member_epoch <= m.epoch => Ok(()),
            (Some(m), _) => Err(self.stale(member_epoch, m.epoch)),
            (None, _) => Err(GroupError::UnknownMember {
                group: self.id.clone(),
                member: member_id.to_string(),
            }),
        }
    }

    fn stale(&self, got: i32, current: i32) -> GroupError {
        GroupError::StaleMemberEpoch {
            group: self.id.clone(),
            got,
            current,
        }
    }
}

/// How the partitions of an offset commit are to be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitCheck {
    /// At the member's current epoch (or standalone): every partition may be committed.
    Any,
    /// At an earlier epoch: each partition with [`ConsumerGroup::may_commit`].
    Partitions,
}

/// A member's state after one reconciliation step.
struct Step {
    state: Reconciliation,
    epoch: i32,
    assigned: Assignment,
    revoke: Assignment,
}

impl ConsumerMember {
    fn new(id: &str, req: &ConsumerHeartbeat, now: Instant) -> Self {
        Self {
            id: id.to_string(),
            instance_id: req.instance_id.clone(),
            rack_id: req.rack_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            subscribed_names: BTreeSet::new(),
            subscribed_regex: None,
            compiled_regex: None,
            server_assignor: None,
            rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
            epoch: JOIN_EPOCH,
            previous_epoch: JOIN_EPOCH,
            state: Reconciliation::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            owned_since: BTreeMap::new(),
            released: BTreeMap::new(),
            session_deadline: now,
            revocation_deadline: None,
        }
    }

    /// Applies the heartbeat's changed fields; returns whether the subscription changed.
    fn update(&mut self, req: &ConsumerHeartbeat) -> bool {
        if req.rebalance_timeout_ms >= 0 {
            self.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms as u64);
        }
        if req.rack_id.is_some() {
            self.rack_id = req.rack_id.clone();
        }
        if req.server_assignor.is_some() {
            self.server_assignor = req.server_assignor.clone();
        }
        let mut changed = false;
        if let Some(names) = &req.subscribed_topic_names {
            let names: BTreeSet<String> = names.iter().cloned().collect();
            changed |= names != self.subscribed_names;
            self.subscribed_names = names;
        }
        if let Some(regex) = &req.subscribed_topic_regex {
            let regex = (!regex.is_empty()).then(|| regex.clone());
            changed |= regex != self.subscribed_regex;
            self.compiled_regex = regex.as_deref().and_then(|r| full_match(r).ok());
            self.subscribed_regex = regex;
        }
        changed
    }

    fn subscribes_to(&self, topic: &str) -> bool {
        self.subscribed_names.contains(topic)
            || self
                .compiled_regex
                .as_ref()
                .is_some_and(|r| r.is_match(topic))
    }

    /// A heartbeat's epoch must be the member's, or its previous one when the answer that
    /// moved it on was lost and it owns nothing beyond its assignment.
    fn check_epoch(
        &self,
        group: &str,
        epoch: i32,
        owned: Option<&Assignment>,
    ) -> Result<(), GroupError> {
        let lost_answer = epoch == self.previous_epoch
            && owned.is_some_and(|o| flatten(o).all(|p| contains(&self.assigned, p)));
        if epoch == self.epoch || (epoch < self.epoch && lost_answer) {
            return Ok(());
        }
        Err(GroupError::FencedMemberEpoch {
            group: group.to_string(),
            member: self.id.clone(),
            got: epoch,
            current: self.epoch,
        })
    }

    /// Moves to `step`; returns the partitions it did not own before.
    fn apply(&mut self, step: Step, now: Instant) -> BTreeSet<(Uuid, i32)> {
        if step.epoch != self.epoch {
            self.previous_epoch = self.epoch;
        }
        self.revocation_deadline = match step.state {
            Reconciliation::UnrevokedPartitions => self
                .revocation_deadline
                .or(Some(now + self.rebalance_timeout)),
            _ => None,
        };
        self.state = step.state;
        self.epoch = step.epoch;
        self.assigned = step.assigned;
        self.pending_revocation = step.revoke;
        let owned: BTreeSet<(Uuid, i32)> = flatten(&self.assigned)
            .chain(flatten(&self.pending_revocation))
            .collect();
        let (kept, released): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.owned_since)
                .into_iter()
                .partition(|(p, _)| owned.contains(p));
        self.owned_since = kept;
        self.released.extend(released);
        let acquired: BTreeSet<(Uuid, i32)> = owned
            .into_iter()
            .filter(|p| !self.owned_since.contains_key(p))
            .collect();
        for p in &acquired {
            self.owned_since.insert(*p, step.epoch);
            self.released.remove(p);
        }
        acquired
    }
}

/// Checks what Kafka checks before anything else: a join says what it subscribes to.
fn validate(group: &str, req: &ConsumerHeartbeat) -> Result<(), GroupError> {
    let invalid = |why: &str| {
        Err(GroupError::InvalidRequest(format!(
            "ConsumerGroupHeartbeat for group {group}: {why}"
        )))
    };
    if req.member_epoch < STATIC_LEAVE_EPOCH {
        return invalid("member epoch below -2");
    }
    if req.member_epoch == JOIN_EPOCH {
        if req.rebalance_timeout_ms < 0 {
            return invalid("a join must give its rebalance timeout");
        }
        if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
            return invalid("a join must give its subscription");
        }
    } else if req.member_id.is_empty() {
        return invalid("member id required");
    }
    if let Some(name) = req.server_assignor.as_deref() {
        if !ASSIGNORS.contains(&name) {
            return Err(GroupError::UnsupportedAssignor(name.to_string()));
        }
    }
    if let Some(regex) = req
        .subscribed_topic_regex
        .as_deref()
        .filter(|r| !r.is_empty())
    {
        if let Err(e) = full_match(regex) {
            return invalid(&format!("invalid regular expression {regex:?}: {e}"));
        }
    }
    Ok(())
}

/// KIP-848 patterns (RE2 syntax, which the `regex` crate shares) match whole topic names.
/// A client's pattern is bounded like any other input: matching is linear-time and the
/// compiled program may not exceed [`MAX_REGEX_BYTES`].
fn full_match(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_REGEX_BYTES)
        .build()
}

/// The most memory one member's compiled subscription pattern may take.
const MAX_REGEX_BYTES: usize = 1 << 20;

fn flatten(a: &Assignment) -> impl Iterator<Item = (Uuid, i32)> + '_ {
    a.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
}

fn contains(a: &Assignment, (topic, p): (Uuid, i32)) -> bool {
    a.get(&topic).is_some_and(|ps| ps.contains(&p))
}

fn overlaps(a: &Assignment, b: &Assignment) -> bool {
    flatten(a).any(|p| contains(b, p))
}

#[cfg(test)]
mod tests;
