//! The state machine of one classic-protocol group: membership, generations and the
//! join/sync barriers of a rebalance. It knows nothing of the wire format and takes the current
//! time as an argument, so the coordinator drives it and tests can reason about timeouts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::info;

use super::member::{select_protocol, subscribed_topics, Member};
use super::snapshot::{StoredMember, StoredMembership};
use super::types::{
    GroupDescription, GroupState, JoinRequest, JoinResponse, JoinedMember, MemberDescription,
    Pending, SyncRequest, SyncResponse,
};
use super::GroupError;

/// One group's membership and rebalance progress.
pub(super) struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: HashMap<String, Member>,
    /// group.instance.id -> its current member id.
    static_members: HashMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, valid until the given instant.
    pending_members: HashMap<String, Instant>,
    /// End of the current join phase (rebalance timeout) or sync phase.
    deadline: Option<Instant>,
    /// A new group's join phase lasts at least until then (initial rebalance delay).
    initial_delay_until: Option<Instant>,
    initial_delay: Duration,
    next_seq: u64,
    /// Bumped whenever what [`Group::membership`] returns changes, so the coordinator stores
    /// the membership only when it changed (`snapshot.rs`).
    membership_version: u64,
}

impl Group {
    /// An empty group whose next generation follows `generation` (the last one handed out,
    /// by this coordinator or an earlier one).
    pub(super) fn new(id: &str, initial_delay: Duration, generation: i32) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: HashMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            deadline: None,
            initial_delay_until: None,
            initial_delay,
            next_seq: 0,
            membership_version: 0,
        }
    }

    /// A stable group as a stored snapshot describes it (an earlier coordinator's, of
    /// `generation`): the same members, ids, leader and assignments, their sessions starting
    /// now. Fails on a snapshot that cannot be a stable group (no members, bad encoding).
    pub(super) fn restore(
        id: &str,
        initial_delay: Duration,
        generation: i32,
        stored: StoredMembership,
        now: Instant,
    ) -> Result<Self, String> {
        if stored.members.is_empty() {
            return Err("a stable group without members".into());
        }
        let mut group = Self::new(id, initial_delay, generation);
        for stored_member in stored.members {
            let (member_id, info, assignment) = stored_member.decode()?;
            group.next_seq += 1;
            let mut member = Member::new(member_id.clone(), info, group.next_seq, now);
            member.assignment = assignment;
            if let Some(instance) = &member.info.group_instance_id {
                group
                    .static_members
                    .insert(instance.clone(), member_id.clone());
            }
            group.members.insert(member_id, member);
        }
        let first = group.ordered_members()[0].id.clone();
        group.leader = Some(
            stored
                .leader
                .filter(|l| group.members.contains_key(l))
                .unwrap_or(first),
        );
        group.protocol_type = stored.protocol_type;
        group.protocol_name = stored.protocol_name;
        group.state = GroupState::Stable;
        Ok(group)
    }

    /// What to store of the membership now, with the generation it is of: a stable group's
    /// members, or `None` in any other state (a rebalance or an empty group: the next
    /// coordinator then starts afresh and members rejoin, as without a snapshot).
    pub(super) fn membership(&self) -> (i32, Option<StoredMembership>) {
        if self.state != GroupState::Stable {
            return (self.generation, None);
        }
        let members = self
            .ordered_members()
            .into_iter()
            .map(|m| StoredMember::encode(&m.id, &m.info, &m.assignment));
        let stored = StoredMembership {
            version: StoredMembership::VERSION,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members: members.collect(),
        };
        (self.generation, Some(stored))
    }

    /// How many members the group has.
    pub(super) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Changes whenever [`Group::membership`] does.
    pub(super) fn membership_version(&self) -> u64 {
        self.membership_version
    }

    pub(super) fn state(&self) -> GroupState {
        self.state
    }

    /// The current generation.
    pub(super) fn generation(&self) -> i32 {
        self.generation
    }

    /// This agent stops coordinating the group (its lease was lost or handed off): every
    /// waiting member is told to find the new coordinator.
    pub(super) fn unload(&mut self) {
        let id = self.id.clone();
        for member in self.members.values_mut() {
            fail_waiters(member, || GroupError::NotCoordinator(id.clone()));
        }
    }

    pub(super) fn protocol_type(&self) -> &str {
        self.protocol_type.as_deref().unwrap_or_default()
    }

    /// Only groups without members may be deleted.
    pub(super) fn is_deletable(&self) -> bool {
        matches!(self.state, GroupState::Empty | GroupState::Dead)
    }

    /// Empty and not expecting anyone: the coordinator may drop it.
    pub(super) fn is_idle(&self) -> bool {
        self.state == GroupState::Empty && self.pending_members.is_empty()
    }

    pub(super) fn mark_dead(&mut self) {
        self.membership_version += u64::from(self.state == GroupState::Stable);
        self.state = GroupState::Dead;
    }

    // ---- join ---------------------------------------------------------------------------------

    pub(super) fn join(&mut self, req: JoinRequest, now: Instant) -> Pending<JoinResponse> {
        self.try_join(req, now)
            .unwrap_or_else(|e| Pending::Ready(Err(e)))
    }

    fn try_join(
        &mut self,
        req: JoinRequest,
        now: Instant,
    ) -> Result<Pending<JoinResponse>, GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.unavailable());
        }
        if !self.supports_protocols(&req) {
            return Err(GroupError::InconsistentProtocol {
                group: self.id.clone(),
            });
        }
        if req.member_id.is_empty() {
            self.join_new(req, now)
        } else {
            self.join_known(req, now)
        }
    }

    fn supports_protocols(&self, req: &JoinRequest) -> bool {
        if req.protocol_type.is_empty() || req.info.protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(req.protocol_type.as_str())
            && req
                .info
                .protocols
                .iter()
                .any(|p| self.members.values().all(|m| m.supports(&p.name)))
    }

    fn join_new(
        &mut self,
        req: JoinRequest,
        now: Instant,
    ) -> Result<Pending<JoinResponse>, GroupError> {
        let id = new_member_id(&req.info.client_id);
        if let Some(instance) = &req.info.group_instance_id {
            if let Some(old) = self.static_members.get(instance).cloned() {
                return Ok(self.replace_static_member(&old, id, req, now));
            }
        } else if req.require_known_member_id {
            let expiry = now + req.info.session_timeout;
            self.pending_members.insert(id.clone(), expiry);
            return Err(GroupError::MemberIdRequired {
                group: self.id.clone(),
                member: id,
            });
        }
        Ok(self.add_member(id, req, now))
    }

    fn join_known(
        &mut self,
        req: JoinRequest,
        now: Instant,
    ) -> Result<Pending<JoinResponse>, GroupError> {
        let id = req.member_id.clone();
        if self.pending_members.remove(&id).is_some() {
            return Ok(self.add_member(id, req, now));
        }
        self.check_member(&id, req.info.group_instance_id.as_deref())?;
        let member = self.members.get_mut(&id).expect("checked above");
        let unchanged = member.info.protocols == req.info.protocols;
        member.info = req.info;
        member.last_seen = now;
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        Ok(match self.state {
            // Nothing changed for this member: it gets the current generation back.
            GroupState::CompletingRebalance if unchanged => {
                Pending::Ready(Ok(self.join_response(&id, false)))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Pending::Ready(Ok(self.join_response(&id, false)))
            }
            _ => self.await_join(&id, now),
        })
    }

    fn add_member(&mut self, id: String, req: JoinRequest, now: Instant) -> Pending<JoinResponse> {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type);
        }
        if let Some(instance) = &req.info.group_instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        info!(group = %self.id, member = %id, client = %req.info.client_id, "member joined");
        self.next_seq += 1;
        let member = Member::new(id.clone(), req.info, self.next_seq, now);
        self.members.insert(id.clone(), member);
        self.extend_initial_delay(now);
        self.await_join(&id, now)
    }

    /// A static member came back under a new member id: the old id is fenced. With unchanged
    /// protocols and a stable group it keeps its assignment and no rebalance happens.
    fn replace_static_member(
        &mut self,
        old: &str,
        new: String,
        req: JoinRequest,
        now: Instant,
    ) -> Pending<JoinResponse> {
        let mut member = self.members.remove(old).expect("static member is a member");
        let instance = req.info.group_instance_id.clone().unwrap_or_default();
        let fenced = || GroupError::FencedInstance {
            group: self.id.clone(),
            instance: instance.clone(),
            member: old.to_string(),
            current: new.clone(),
        };
        fail_waiters(&mut member, fenced);
        let unchanged = member.info.protocols == req.info.protocols;
        member.id = new.clone();
        member.info = req.info;
        member.last_seen = now;
        self.members.insert(new.clone(), member);
        self.static_members.insert(instance, new.clone());
        if self.leader.as_deref() == Some(old) {
            self.leader = Some(new.clone());
        }
        self.membership_version += 1;
        info!(group = %self.id, old, new = %new, "static member rejoined");
        if self.state == GroupState::Stable && unchanged {
            return Pending::Ready(Ok(self.join_response(&new, true)));
        }
        self.await_join(&new, now)
    }

    /// Parks the member until the join phase completes, starting a rebalance if none is running.
    fn await_join(&mut self, id: &str, now: Instant) -> Pending<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        let member = self.members.get_mut(id).expect("joining member exists");
        if let Some(previous) = member.join_waiter.replace(tx) {
            let _ = previous.send(Err(GroupError::RebalanceInProgress {
                group: self.id.clone(),
            }));
        }
        self.prepare_rebalance(now);
        self.maybe_complete_join(now);
        Pending::Waiting(rx)
    }

    fn join_response(&self, id: &str, static_rejoin: bool) -> JoinResponse {
        let is_leader = self.leader.as_deref() == Some(id);
        JoinResponse {
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: id.to_string(),
            members: if is_leader {
                self.joined_members()
            } else {
                Vec::new()
            },
            skip_assignment: static_rejoin && is_leader,
        }
    }

    fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.ordered_members()
            .into_iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.info.group_instance_id.clone(),
                metadata: m.metadata_for(protocol),
            })
            .collect()
    }

    fn ordered_members(&self) -> Vec<&Member> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.seq);
        members
    }

    // ---- rebalance ----------------------------------------------------------------------------

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            // Members waiting for the old generation's assignment must rejoin instead.
            let group = self.id.clone();
            for m in self.members.values_mut() {
                if let Some(tx) = m.sync_waiter.take() {
                    let _ = tx.send(Err(GroupError::RebalanceInProgress {
                        group: group.clone(),
                    }));
                }
            }
        }
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        let from_empty = self.state == GroupState::Empty;
        self.membership_version += u64::from(self.state == GroupState::Stable);
        let deadline = now + self.max_rebalance_timeout();
        self.state = GroupState::PreparingRebalance;
        self.deadline = Some(deadline);
        self.initial_delay_until = from_empty.then(|| (now + self.initial_delay).min(deadline));
        info!(group = %self.id, generation = self.generation, "preparing rebalance");
    }

    /// Every new member during the initial delay pushes the join phase out by one more delay,
    /// bounded by the rebalance timeout, so a starting fleet lands in one generation.
    fn extend_initial_delay(&mut self, now: Instant) {
        if let (Some(until), Some(deadline)) = (self.initial_delay_until, self.deadline) {
            if until > now {
                self.initial_delay_until = Some((now + self.initial_delay).min(deadline));
            }
        }
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.info.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.pending_members.is_empty()
            && self.members.values().all(|m| m.join_waiter.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        let timed_out = self.deadline.is_some_and(|d| now >= d);
        if (all_joined && delay_over) || timed_out {
            self.complete_join(now);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, the next generation starts
    /// and every joined member learns it (the leader with everyone's metadata).
    fn complete_join(&mut self, now: Instant) {
        for id in self.members_where(|m| m.join_waiter.is_none()) {
            info!(group = %self.id, member = %id, "member did not rejoin in time; removed");
            self.forget_member(&id);
        }
        self.generation += 1;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        let ordered = self.ordered_members();
        let protocol = select_protocol(&ordered).map(str::to_string);
        let first = ordered[0].id.clone();
        self.protocol_name = protocol;
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = Some(first);
        }
        self.state = GroupState::CompletingRebalance;
        self.deadline = Some(now + self.max_rebalance_timeout());
        info!(group = %self.id, generation = self.generation, members = self.members.len(),
              protocol = ?self.protocol_name, "join phase complete");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.join_response(&id, false);
            let member = self.members.get_mut(&id).expect("listed above");
            member.last_seen = now;
            if let Some(tx) = member.join_waiter.take() {
                let _ = tx.send(Ok(response));
            }
        }
    }

    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.protocol_name = None;
        self.leader = None;
        self.deadline = None;
        info!(group = %self.id, generation = self.generation, "group is empty");
    }

    // ---- sync ---------------------------------------------------------------------------------

    pub(super) fn sync(&mut self, req: SyncRequest, now: Instant) -> Pending<SyncResponse> {
        match self.try_sync(req, now) {
            Ok(pending) => pending,
            Err(e) => Pending::Ready(Err(e)),
        }
    }

    fn try_sync(
        &mut self,
        req: SyncRequest,
        now: Instant,
    ) -> Result<Pending<SyncResponse>, GroupError> {
        self.check_generation_member(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        )?;
        let mismatched = |given: &Option<String>, ours: &Option<String>| {
            given.as_ref().is_some_and(|g| Some(g) != ours.as_ref())
        };
        if mismatched(&req.protocol_type, &self.protocol_type)
            || mismatched(&req.protocol_name, &self.protocol_name)
        {
            return Err(GroupError::InconsistentProtocol {
                group: self.id.clone(),
            });
        }
        let member = self.members.get_mut(&req.member_id).expect("checked");
        member.last_seen = now;
        match self.state {
            GroupState::Stable => Ok(Pending::Ready(Ok(self.sync_response(&req.member_id)))),
            GroupState::CompletingRebalance => Ok(self.await_assignment(req)),
            _ => Err(self.rebalancing()),
        }
    }

    fn await_assignment(&mut self, req: SyncRequest) -> Pending<SyncResponse> {
        let (tx, rx) = oneshot::channel();
        let member = self.members.get_mut(&req.member_id).expect("checked");
        member.sync_waiter = Some(tx);
        if self.leader.as_deref() == Some(req.member_id.as_str()) {
            self.apply_assignments(req.assignments);
        }
        Pending::Waiting(rx)
    }

    /// The leader's SyncGroup ends the rebalance: every member gets its assignment.
    fn apply_assignments(&mut self, assignments: Vec<(String, Bytes)>) {
        let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
        for m in self.members.values_mut() {
            m.assignment = by_member.remove(&m.id).unwrap_or_default();
        }
        self.state = GroupState::Stable;
        self.deadline = None;
        self.membership_version += 1;
        info!(group = %self.id, generation = self.generation, "group is stable");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.sync_response(&id);
            if let Some(tx) = self.members.get_mut(&id).and_then(|m| m.sync_waiter.take()) {
                let _ = tx.send(Ok(response));
            }
        }
    }

    fn sync_response(&self, id: &str) -> SyncResponse {
        SyncResponse {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self.members[id].assignment.clone(),
        }
    }

    // ---- heartbeat, leave, commit checks ------------------------------------------------------

    pub(super) fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.unavailable());
        }
        self.check_member(member_id, instance)?;
        self.members.get_mut(member_id).expect("checked").last_seen = now;
        self.check_generation(generation)?;
        match self.state {
            GroupState::PreparingRebalance => Err(self.rebalancing()),
            _ => Ok(()),
        }
    }

    /// Removes a member that leaves on purpose; `member_id` may be empty for a static member
    /// leaving by instance id (KIP-345).
    pub(super) fn leave(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        now: Instant,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.unavailable());
        }
        let id = match (member_id.is_empty(), instance) {
            (true, Some(instance)) => self
                .static_members
                .get(instance)
                .cloned()
                .ok_or_else(|| self.unknown_member(member_id))?,
            _ => {
                self.check_member(member_id, instance)?;
                member_id.to_string()
            }
        };
        info!(group = %self.id, member = %id, "member left");
        self.remove_member(&id, now);
        Ok(())
    }

    /// Whether `member_id` may commit offsets for `generation`. Generation -1 is a standalone
    /// (non-member) commit, allowed only while the group has no members.
    pub(super) fn validate_commit(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => return Err(self.unavailable()),
            GroupState::Empty if generation < 0 => return Ok(()),
            _ => {}
        }
        self.check_generation_member(member_id, instance, generation)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(self.rebalancing());
        }
        self.members.get_mut(member_id).expect("checked").last_seen = now;
        Ok(())
    }

    /// Kafka's check of a TxnOffsetCommit (KIP-447): a named member must belong to the group
    /// and a generation (when given, >= 0) must be the current one, so a zombie of an older
    /// generation is fenced; no rebalance check (the transaction commits or aborts as a whole).
    pub(super) fn validate_txn_commit(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.unavailable());
        }
        if !member_id.is_empty() {
            self.check_member(member_id, instance)?;
        }
        if generation >= 0 {
            self.check_generation(generation)?;
        }
        Ok(())
    }

    fn check_generation_member(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.unavailable());
        }
        self.check_member(member_id, instance)?;
        self.check_generation(generation)
    }

    fn check_member(&self, member_id: &str, instance: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance) = instance {
            if let Some(current) = self.static_members.get(instance) {
                if current != member_id {
                    return Err(GroupError::FencedInstance {
                        group: self.id.clone(),
                        instance: instance.to_string(),
                        member: member_id.to_string(),
                        current: current.clone(),
                    });
                }
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(self.unknown_member(member_id))
        }
    }

    fn check_generation(&self, generation: i32) -> Result<(), GroupError> {
        if generation == self.generation {
            Ok(())
        } else {
            Err(GroupError::IllegalGeneration {
                group: self.id.clone(),
                got: generation,
                current: self.generation,
            })
        }
    }

    // ---- expiry -------------------------------------------------------------------------------

    /// Applies timeouts: expired sessions and pending ids, and the end of a join or sync phase.
    pub(super) fn tick(&mut self, now: Instant) {
        self.pending_members.retain(|_, expiry| *expiry > now);
        for id in self.members_where(|m| m.session_expired(now)) {
            info!(group = %self.id, member = %id, "session timed out; member removed");
            self.remove_member(&id, now);
        }
        let phase_over = self.deadline.is_some_and(|d| now >= d);
        if self.state == GroupState::CompletingRebalance && phase_over {
            self.expire_unsynced(now);
        }
        self.maybe_complete_join(now);
    }

    /// The leader did not deliver an assignment in time: members that never synced are dropped
    /// and the others rejoin.
    fn expire_unsynced(&mut self, now: Instant) {
        for id in self.members_where(|m| m.sync_waiter.is_none()) {
            info!(group = %self.id, member = %id, "member did not sync in time; removed");
            self.forget_member(&id);
        }
        self.prepare_rebalance(now);
    }

    /// Ids of the members matching `pred`, collected so the caller can remove them.
    fn members_where(&self, pred: impl Fn(&Member) -> bool) -> Vec<String> {
        self.members
            .values()
            .filter(|m| pred(m))
            .map(|m| m.id.clone())
            .collect()
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        self.forget_member(id);
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
    }

    /// Drops a member without changing the group state.
    fn forget_member(&mut self, id: &str) {
        let Some(mut member) = self.members.remove(id) else {
            return;
        };
        if let Some(instance) = &member.info.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(id) {
                self.static_members.remove(instance);
            }
        }
        let unknown = || self.unknown_member(id);
        fail_waiters(&mut member, unknown);
    }

    // ---- admin --------------------------------------------------------------------------------

    pub(super) fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = if stable {
            self.protocol_name.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let members = self
            .ordered_members()
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                group_instance_id: m.info.group_instance_id.clone(),
                client_id: m.info.client_id.clone(),
                client_host: m.info.client_host.clone(),
                metadata: if stable {
                    m.metadata_for(&protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type().to_string(),
            protocol,
            members,
            consumer_protocol: false,
        }
    }

    /// Whether live members subscribe to `topic` (consumer protocol only). Unparseable
    /// subscriptions count as subscribed, so offsets are never deleted under a member.
    pub(super) fn is_subscribed_to(&self, topic: &str) -> bool {
        let chosen = self.protocol_name.as_deref();
        self.members.values().any(|m| {
            let protocol = chosen.or(m.info.protocols.first().map(|p| p.name.as_str()));
            let metadata = m.metadata_for(protocol.unwrap_or_default());
            subscribed_topics(&metadata).is_none_or(|topics| topics.contains(topic))
        })
    }

    // ---- errors -------------------------------------------------------------------------------

    fn unavailable(&self) -> GroupError {
        GroupError::CoordinatorNotAvailable {
            group: self.id.clone(),
        }
    }

    fn rebalancing(&self) -> GroupError {
        GroupError::RebalanceInProgress {
            group: self.id.clone(),
        }
    }

    fn unknown_member(&self, member: &str) -> GroupError {
        GroupError::UnknownMember {
            group: self.id.clone(),
            member: member.to_string(),
        }
    }
}

/// Kafka's member id format: the client id and a unique suffix.
fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

fn fail_waiters(member: &mut Member, error: impl Fn() -> GroupError) {
    if let Some(tx) = member.join_waiter.take() {
        let _ = tx.send(Err(error()));
    }
    if let Some(tx) = member.sync_waiter.take() {
        let _ = tx.send(Err(error()));
    }
}
