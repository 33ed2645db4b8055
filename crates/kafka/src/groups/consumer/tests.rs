use super::*;

const T1: Uuid = Uuid::from_u128(1);
const T2: Uuid = Uuid::from_u128(2);

fn topics() -> TopicImage {
    TopicImage::from([
        ("orders".to_string(), (T1, 6)),
        ("audit".to_string(), (T2, 2)),
    ])
}

fn group() -> ConsumerGroup {
    ConsumerGroup::new("g", 10, Duration::from_secs(45))
}

fn join(id: &str, topics: &[&str]) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        member_id: id.to_string(),
        member_epoch: JOIN_EPOCH,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(topics.iter().map(|t| t.to_string()).collect()),
        owned: Some(Assignment::new()),
        ..Default::default()
    }
}

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// A well-behaved client: adopts every assignment at once (its callbacks are instant) and
/// reports what it owns when that changed.
struct Client {
    id: String,
    epoch: i32,
    owned: Assignment,
    report: bool,
}

impl Client {
    fn join(g: &mut ConsumerGroup, id: &str, subs: &[&str], now: Instant) -> Self {
        let r = g.heartbeat(join(id, subs), &topics(), now).expect("join");
        let mut c = Self {
            id: r.member_id.clone(),
            epoch: 0,
            owned: Assignment::new(),
            report: false,
        };
        c.apply(r);
        c
    }

    fn beat(&mut self, g: &mut ConsumerGroup, now: Instant) {
        let req = ConsumerHeartbeat {
            member_id: self.id.clone(),
            member_epoch: self.epoch,
            rebalance_timeout_ms: -1,
            owned: self.report.then(|| self.owned.clone()),
            ..Default::default()
        };
        let r = g.heartbeat(req, &topics(), now).expect("heartbeat");
        self.report = false;
        self.apply(r);
    }

    fn apply(&mut self, r: ConsumerHeartbeatResponse) {
        self.epoch = r.member_epoch;
        if let Some(a) = r.assignment {
            self.report = a != self.owned;
            self.owned = a;
        }
    }
}

fn assert_disjoint(clients: &[Client]) {
    let mut seen = BTreeSet::new();
    for c in clients {
        for p in flatten(&c.owned) {
            assert!(seen.insert(p), "{p:?} owned by two members at once");
        }
    }
}

#[test]
fn a_lone_member_gets_every_subscribed_partition() {
    let mut g = group();
    let now = Instant::now();
    let c = Client::join(&mut g, "a", &["orders", "audit"], now);
    assert_eq!(count(&c.owned), 8);
    assert!(c.epoch > 10, "epochs continue after the recorded one");
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn partitions_move_only_after_their_owner_released_them() {
    let mut g = group();
    let now = Instant::now();
    let mut clients = vec![Client::join(&mut g, "a", &["orders"], now)];
    clients.push(Client::join(&mut g, "b", &["orders"], now));
    // b joined while a owns all six: b gets nothing a still owns.
    assert_eq!(count(&clients[1].owned), 0);
    assert_disjoint(&clients);
    assert_eq!(g.state(), GroupState::Reconciling);
    for _ in 0..4 {
        for i in 0..clients.len() {
            clients[i].beat(&mut g, now);
            assert_disjoint(&clients);
        }
    }
    assert_eq!(count(&clients[0].owned), 3);
    assert_eq!(count(&clients[1].owned), 3);
    assert_eq!(clients[0].epoch, clients[1].epoch);
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn random_joins_leaves_and_heartbeats_never_share_a_partition() {
    let mut g = group();
    let now = Instant::now();
    let mut clients: Vec<Client> = Vec::new();
    let mut seed = 7u64;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    for step in 0..2_000 {
        match next(10) {
            0 if clients.len() < 5 => {
                let id = format!("m{step}");
                clients.push(Client::join(&mut g, &id, &["orders", "audit"], now));
            }
            1 if !clients.is_empty() => {
                let c = clients.swap_remove(next(clients.len()));
                let leave = ConsumerHeartbeat {
                    member_id: c.id,
                    member_epoch: LEAVE_EPOCH,
                    ..Default::default()
                };
                g.heartbeat(leave, &topics(), now).expect("leave");
            }
            _ if !clients.is_empty() => {
                let i = next(clients.len());
                clients[i].beat(&mut g, now);
            }
            _ => {}
        }
        assert_disjoint(&clients);
    }
    // Quiet heartbeats converge on the target: every partition owned, balanced.
    for _ in 0..4 {
        for c in clients.iter_mut() {
            c.beat(&mut g, now);
        }
    }
    if !clients.is_empty() {
        let total: usize = clients.iter().map(|c| count(&c.owned)).sum();
        assert_eq!(total, 8);
        assert_eq!(g.state(), GroupState::Stable);
    }
}

#[test]
fn a_stale_epoch_is_fenced_but_a_lost_answer_is_forgiven() {
    let mut g = group();
    let now = Instant::now();
    let mut a = Client::join(&mut g, "a", &["orders"], now);
    let old_epoch = a.epoch;
    let old_owned = a.owned.clone();
    let _b = Client::join(&mut g, "b", &["orders"], now);
    a.beat(&mut g, now); // told to revoke three
    a.beat(&mut g, now); // reports them gone: moves to the new epoch
    assert!(a.epoch > old_epoch);
    // The answer that moved it on was lost: it retries at its previous epoch, owning a subset.
    let retry = ConsumerHeartbeat {
        member_id: a.id.clone(),
        member_epoch: old_epoch,
        rebalance_timeout_ms: -1,
        owned: Some(a.owned.clone()),
        ..Default::default()
    };
    assert!(g.heartbeat(retry.clone(), &topics(), now).is_ok());
    // Claiming partitions it no longer has at that epoch is fenced.
    let stale = ConsumerHeartbeat {
        owned: Some(old_owned),
        ..retry
    };
    let err = g.heartbeat(stale, &topics(), now).unwrap_err();
    assert!(matches!(err, GroupError::FencedMemberEpoch { .. }), "{err}");
    let ahead = ConsumerHeartbeat {
        member_id: a.id.clone(),
        member_epoch: a.epoch + 5,
        ..Default::default()
    };
    let err = g.heartbeat(ahead, &topics(), now).unwrap_err();
    assert!(matches!(err, GroupError::FencedMemberEpoch { .. }), "{err}");
}

#[test]
fn expired_sessions_and_slow_revocations_remove_members() {
    let mut g = group();
    let t0 = Instant::now();
    let mut a = Client::join(&mut g, "a", &["orders"], t0);
    let mut b = Client::join(&mut g, "b", &["orders"], t0);
    a.beat(&mut g, t0); // told to revoke three partitions
    b.beat(&mut g, t0);
    // a never reports them revoked; past its rebalance timeout it is removed and b gets
    // everything.
    g.tick(t0 + Duration::from_secs(31));
    b.beat(&mut g, t0 + Duration::from_secs(31));
    b.beat(&mut g, t0 + Duration::from_secs(31));
    assert_eq!(count(&b.owned), 6);
    let err = g
        .heartbeat(
            ConsumerHeartbeat {
                member_id: a.id.clone(),
                member_epoch: a.epoch,
                ..Default::default()
            },
            &topics(),
            t0,
        )
        .unwrap_err();
    assert!(matches!(err, GroupError::UnknownMember { .. }), "{err}");
    a.epoch = 0;
    g.tick(t0 + Duration::from_secs(100));
    assert!(g.is_empty(), "b's session expired too");
}

#[test]
fn a_pattern_subscription_follows_new_topics() {
    let mut g = group();
    let now = Instant::now();
    let req = ConsumerHeartbeat {
        subscribed_topic_names: None,
        subscribed_topic_regex: Some("ord.*".to_string()),
        ..join("a", &[])
    };
    let r = g.heartbeat(req, &topics(), now).expect("join");
    assert_eq!(r.assignment.as_ref().map(count), Some(6));
    let epoch = g.epoch();
    let mut more = topics();
    more.insert("orders-eu".to_string(), (Uuid::from_u128(3), 4));
    let beat = ConsumerHeartbeat {
        member_id: r.member_id.clone(),
        member_epoch: r.member_epoch,
        rebalance_timeout_ms: -1,
        ..Default::default()
    };
    let r = g.heartbeat(beat, &more, now).expect("heartbeat");
    assert!(
        g.epoch() > epoch,
        "a new matching topic moves the group epoch"
    );
    assert_eq!(r.assignment.as_ref().map(count), Some(10));
}

#[test]
fn commits_need_the_current_member_epoch_or_ownership_since() {
    let mut g = group();
    let now = Instant::now();
    let standalone = g.validate_commit("", -1).ok();
    assert_eq!(
        standalone,
        Some(CommitCheck::Any),
        "standalone, empty group"
    );
    let mut a = Client::join(&mut g, "a", &["orders"], now);
    let first = a.epoch;
    assert_eq!(
        g.validate_commit(&a.id, a.epoch).ok(),
        Some(CommitCheck::Any)
    );
    let err = g.validate_commit(&a.id, a.epoch + 1).unwrap_err();
    assert!(matches!(err, GroupError::StaleMemberEpoch { .. }), "{err}");
    assert!(
        g.validate_commit("", -1).is_err(),
        "standalone commit to a live group"
    );
    // b joins; a gives up three partitions and moves to a later epoch.
    let mut b = Client::join(&mut g, "b", &["orders"], now);
    for _ in 0..3 {
        a.beat(&mut g, now);
        b.beat(&mut g, now);
    }
    assert!(a.epoch > first);
    // A commit at a's first epoch crossed that move: allowed for what a still owns, refused
    // for what it gave up (b owns that now).
    assert_eq!(
        g.validate_commit(&a.id, first).ok(),
        Some(CommitCheck::Partitions)
    );
    let kept = flatten(&a.owned).next().expect("a owns partitions");
    let given = flatten(&b.owned).next().expect("b owns partitions");
    assert!(g.may_commit(&a.id, first, kept).is_ok());
    assert!(g.may_commit(&a.id, first, given).is_err());
    // b came to own its partitions after a's first epoch: b cannot commit at that epoch.
    assert!(g.may_commit(&b.id, first, given).is_err());
    assert!(g.may_commit(&b.id, b.epoch, given).is_ok());
}

#[test]
fn bad_joins_are_refused() {
    let mut g = group();
    let now = Instant::now();
    let no_subscription = ConsumerHeartbeat {
        subscribed_topic_names: None,
        ..join("a", &[])
    };
    assert!(g.heartbeat(no_subscription, &topics(), now).is_err());
    let assignor = ConsumerHeartbeat {
        server_assignor: Some("sticky-ish".to_string()),
        ..join("a", &["orders"])
    };
    let err = g.heartbeat(assignor, &topics(), now).unwrap_err();
    assert!(matches!(err, GroupError::UnsupportedAssignor(_)), "{err}");
    let regex = ConsumerHeartbeat {
        subscribed_topic_regex: Some("(".to_string()),
        ..join("a", &[])
    };
    assert!(g.heartbeat(regex, &topics(), now).is_err());
    let huge = ConsumerHeartbeat {
        subscribed_topic_regex: Some("a{1000}{1000}".to_string()),
        ..join("a", &[])
    };
    assert!(
        g.heartbeat(huge, &topics(), now).is_err(),
        "pattern too large"
    );
    assert!(g.is_empty());
}

#[test]
fn a_released_partition_may_be_committed_until_someone_else_owns_it() {
    let mut g = group();
    let now = Instant::now();
    let mut a = Client::join(&mut g, "a", &["orders"], now);
    let first = a.epoch;
    let all: Vec<(Uuid, i32)> = flatten(&a.owned).collect();
    let mut b = Client::join(&mut g, "b", &["orders"], now);
    a.beat(&mut g, now); // revokes three
    a.beat(&mut g, now); // reports them gone: released, b does not have them yet
    let released: Vec<_> = all.iter().filter(|p| !contains(&a.owned, **p)).collect();
    assert_eq!(released.len(), 3);
    for p in &released {
        assert!(
            g.may_commit(&a.id, first, **p).is_ok(),
            "{p:?} is still nobody else's"
        );
    }
    b.beat(&mut g, now); // b takes them
    for p in &released {
        assert!(g.may_commit(&a.id, first, **p).is_err(), "{p:?} is b's now");
    }
}
