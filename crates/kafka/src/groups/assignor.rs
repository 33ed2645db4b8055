//! Server-side partition assignors for consumer-protocol groups (KIP-848): `uniform` (the
//! default: balanced and sticky) and `range` (per topic, contiguous ranges, co-partitioned).
//! Pure functions of the members' subscriptions and the topics' partition counts, so the
//! coordinator can recompute a target assignment whenever either changes.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id, as KIP-848 assignments name them.
pub(crate) type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The assignors this coordinator serves, by the names clients configure
/// (`group.remote.assignor`).
pub(crate) const ASSIGNORS: &[&str] = &["uniform", "range"];

/// The assignor used when no member asks for one (Kafka's default too).
pub(crate) const DEFAULT_ASSIGNOR: &str = "uniform";

/// A member as an assignor sees it: the topics it subscribes to (ids) and what it was assigned
/// by the previous target assignment (for stickiness).
pub(crate) struct AssignorMember<'a> {
    pub(crate) id: &'a str,
    pub(crate) topics: BTreeSet<Uuid>,
    pub(crate) previous: &'a Assignment,
}

/// Computes the target assignment of `members` over `partitions` (partition count by topic id)
/// with the assignor named `name` (one of [`ASSIGNORS`]).
pub(crate) fn assign(
    name: &str,
    members: &[AssignorMember<'_>],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    match name {
        "range" => range(members, partitions),
        _ => uniform(members, partitions),
    }
}

/// Each topic's partitions split into contiguous ranges over its subscribers ordered by member
/// id, the first `count % subscribers` getting one more: members subscribed to the same
/// co-partitioned topics get the same partition numbers of each (as Kafka's range assignor).
fn range(
    members: &[AssignorMember<'_>],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.id.to_string(), Assignment::new()))
        .collect();
    for (&topic, &count) in partitions {
        let mut subscribers: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(&topic))
            .map(|m| m.id)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort_unstable();
        let n = subscribers.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in subscribers.into_iter().enumerate() {
            let len = per + i32::from((i as i32) < extra);
            if len > 0 {
                let owned = out.get_mut(member).expect("every member has an entry");
                owned.entry(topic).or_default().extend(next..next + len);
            }
            next += len;
        }
    }
    out
}

/// Balanced and sticky: a partition stays with its previous member while that member still
/// subscribes to it; the others go to the least-loaded subscriber; then partitions move from
/// the most- to the least-loaded member able to take them until no move narrows the gap to
/// below two. With identical subscriptions every member ends with `floor` or `ceil` of the
/// average, and only the partitions that must move do.
fn uniform(
    members: &[AssignorMember<'_>],
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    let mut load = vec![0usize; members.len()];
    for (i, m) in members.iter().enumerate() {
        for (topic, owned) in m.previous {
            let Some(&count) = partitions.get(topic).filter(|_| m.topics.contains(topic)) else {
                continue;
            };
            for &p in owned.iter().filter(|&&p| p < count) {
                if let std::collections::btree_map::Entry::Vacant(e) = owner.entry((*topic, p)) {
                    e.insert(i);
                    load[i] += 1;
                }
            }
        }
    }
    for (&topic, &count) in partitions {
        for p in 0..count {
            if owner.contains_key(&(topic, p)) {
                continue;
            }
            let Some(i) = least_loaded(members, &load, topic, None) else {
                continue;
            };
            owner.insert((topic, p), i);
            load[i] += 1;
        }
    }
    rebalance(members, &mut owner, &mut load);
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.id.to_string(), Assignment::new()))
        .collect();
    for ((topic, p), i) in owner {
        let member = out
            .get_mut(members[i].id)
            .expect("every member has an entry");
        member.entry(topic).or_default().insert(p);
    }
    out
}

/// The subscriber of `topic` with the fewest partitions (ties: the earliest), other than `not`.
fn least_loaded(
    members: &[AssignorMember<'_>],
    load: &[usize],
    topic: Uuid,
    not: Option<usize>,
) -> Option<usize> {
    (0..members.len())
        .filter(|&i| Some(i) != not && members[i].topics.contains(&topic))
        .min_by_key(|&i| load[i])
}

/// Moves single partitions from a member to a less-loaded subscriber while that narrows a gap
/// of two or more. Each move lowers the sum of squared loads, so this ends; the bound on
/// rounds only guards against a mistake.
fn rebalance(
    members: &[AssignorMember<'_>],
    owner: &mut BTreeMap<(Uuid, i32), usize>,
    load: &mut [usize],
) {
    let max_moves = owner.len() * members.len().max(1);
    for _ in 0..max_moves {
        let mut best: Option<((Uuid, i32), usize, usize)> = None;
        for (&(topic, p), &from) in owner.iter() {
            let Some(to) = least_loaded(members, load, topic, Some(from)) else {
                continue;
            };
            let gap = load[from].saturating_sub(load[to]);
            let better = best.is_none_or(|(_, f, t)| gap > load[f].saturating_sub(load[t]));
            if gap >= 2 && better {
                best = Some(((topic, p), from, to));
            }
        }
        let Some((partition, from, to)) = best else {
            return;
        };
        owner.insert(partition, to);
        load[from] -= 1;
        load[to] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(n: u128) -> Vec<Uuid> {
        (1..=n).map(Uuid::from_u128).collect()
    }

    fn counts(a: &BTreeMap<String, Assignment>) -> Vec<usize> {
        a.values()
            .map(|m| m.values().map(BTreeSet::len).sum())
            .collect()
    }

    fn every_partition_once(a: &BTreeMap<String, Assignment>, partitions: &BTreeMap<Uuid, i32>) {
        let mut seen = BTreeSet::new();
        for m in a.values() {
            for (t, ps) in m {
                for p in ps {
                    assert!(seen.insert((*t, *p)), "{t}/{p} assigned twice");
                }
            }
        }
        let total: i32 = partitions.values().sum();
        assert_eq!(seen.len(), total as usize, "every partition assigned");
    }

    #[test]
    fn uniform_balances_and_keeps_what_it_can() {
        let t = topics(2);
        let partitions = BTreeMap::from([(t[0], 7), (t[1], 5)]);
        let empty = Assignment::new();
        let subs: BTreeSet<Uuid> = t.iter().copied().collect();
        let two: Vec<_> = ["a", "b"]
            .iter()
            .map(|id| AssignorMember {
                id,
                topics: subs.clone(),
                previous: &empty,
            })
            .collect();
        let first = assign("uniform", &two, &partitions);
        every_partition_once(&first, &partitions);
        assert_eq!(counts(&first), vec![6, 6]);

        // A third member joins: each old member gives up exactly two partitions.
        let mut three: Vec<_> = ["a", "b"]
            .iter()
            .map(|id| AssignorMember {
                id,
                topics: subs.clone(),
                previous: &first[*id],
            })
            .collect();
        three.push(AssignorMember {
            id: "c",
            topics: subs.clone(),
            previous: &empty,
        });
        let second = assign("uniform", &three, &partitions);
        every_partition_once(&second, &partitions);
        assert_eq!(counts(&second), vec![4, 4, 4]);
        for id in ["a", "b"] {
            let kept: usize = second[id]
                .iter()
                .map(|(t, ps)| ps.intersection(&first[id][t]).count())
                .sum();
            assert_eq!(kept, 4, "{id} keeps four of its six partitions");
        }
    }

    #[test]
    fn uniform_respects_subscriptions() {
        let t = topics(2);
        let partitions = BTreeMap::from([(t[0], 4), (t[1], 4)]);
        let empty = Assignment::new();
        let members = vec![
            AssignorMember {
                id: "a",
                topics: BTreeSet::from([t[0]]),
                previous: &empty,
            },
            AssignorMember {
                id: "b",
                topics: BTreeSet::from([t[0], t[1]]),
                previous: &empty,
            },
        ];
        let out = assign("uniform", &members, &partitions);
        every_partition_once(&out, &partitions);
        assert!(out["a"].keys().all(|topic| *topic == t[0]));
        assert_eq!(counts(&out), vec![4, 4]);
    }

    #[test]
    fn range_gives_contiguous_co_partitioned_ranges() {
        let t = topics(2);
        let partitions = BTreeMap::from([(t[0], 5), (t[1], 5)]);
        let empty = Assignment::new();
        let subs: BTreeSet<Uuid> = t.iter().copied().collect();
        let members: Vec<_> = ["b", "a"]
            .iter()
            .map(|id| AssignorMember {
                id,
                topics: subs.clone(),
                previous: &empty,
            })
            .collect();
        let out = assign("range", &members, &partitions);
        every_partition_once(&out, &partitions);
        for topic in &t {
            assert_eq!(out["a"][topic], BTreeSet::from([0, 1, 2]));
            assert_eq!(out["b"][topic], BTreeSet::from([3, 4]));
        }
    }

    #[test]
    fn nobody_subscribed_leaves_partitions_unassigned() {
        let t = topics(1);
        let partitions = BTreeMap::from([(t[0], 3)]);
        let empty = Assignment::new();
        let members = vec![AssignorMember {
            id: "a",
            topics: BTreeSet::new(),
            previous: &empty,
        }];
        for name in ASSIGNORS {
            let out = assign(name, &members, &partitions);
            assert!(out["a"].is_empty(), "{name}");
        }
    }
}
