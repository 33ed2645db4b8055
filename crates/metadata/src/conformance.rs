//! Shared conformance suite: behaviour every [`MetadataStore`] backend must show.
//!
//! Each check is a public async function that panics on a violation, so backend tests call them
//! directly or all at once through [`run_all`]. Every check creates its own uniquely named
//! topics, groups and agents and never depends on what other checks left behind, so checks can
//! run in any order against a shared database.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

use futures::future::join_all;
use uuid::Uuid;

use crate::{
    now_ms, AclBinding, AclBindingFilter, AclOperation, AclPatternFilter, AclPatternType,
    AclPermission, AclResourceType, AgentInfo, CommitOutcome, CommittedOffset, GroupLease,
    HeldLease, LeaseFence, MetadataError, MetadataStore, NewTopic, PartitionLease,
    ProducerSnapshot, Result, SegmentCommit, SegmentInfo, SegmentTotals, Topic, TopicConfig,
    Transaction, TxnState, TxnUpdate, UserCredential, WrittenMarker,
};

/// A name no other check (or earlier run against the same database) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

async fn create(store: &dyn MetadataStore, name: &str, partitions: u32) -> Topic {
    store
        .create_topic(NewTopic {
            name: name.to_owned(),
            partitions,
            config: TopicConfig::default(),
        })
        .await
        .expect("create topic")
}

async fn fresh_topic(store: &dyn MetadataStore, partitions: u32) -> Topic {
    create(store, &unique("topic"), partitions).await
}

/// A segment covering `base..=last` of one partition.
fn segment(topic: &str, partition: u32, base: i64, last: i64) -> SegmentInfo {
    SegmentInfo {
        topic: topic.to_owned(),
        partition,
        base_offset: base,
        last_offset: last,
        record_count: last - base + 1,
        size_bytes: 100 * (last - base + 1).unsigned_abs(),
        object_offset: 0,
        object_size: 100 * (last - base + 1).unsigned_abs(),
        object_key: format!(
            "{topic}/{partition}/{base:020}-{}.seg",
            Uuid::new_v4().simple()
        ),
        min_timestamp_ms: 1_000 + base,
        max_timestamp_ms: 1_000 + last,
        created_at_ms: now_ms(),
    }
}

/// Commits consecutive segments of `len` offsets each, starting at the current high watermark.
async fn commit_run(
    store: &dyn MetadataStore,
    topic: &str,
    partition: u32,
    count: usize,
    len: i64,
) -> Vec<SegmentInfo> {
    let mut next = high_watermark(store, topic, partition).await;
    let mut committed = Vec::with_capacity(count);
    for _ in 0..count {
        let seg = segment(topic, partition, next, next + len - 1);
        store
            .commit_segment(&seg, None)
            .await
            .expect("commit segment");
        next += len;
        committed.push(seg);
    }
    committed
}

async fn high_watermark(store: &dyn MetadataStore, topic: &str, partition: u32) -> i64 {
    store
        .get_partition(topic, partition)
        .await
        .expect("get partition")
        .high_watermark
}

fn expect_err<T: Debug>(result: Result<T>, what: &str) -> MetadataError {
    match result {
        Ok(value) => panic!("{what}: expected an error, got {value:?}"),
        Err(error) => error,
    }
}

fn assert_unknown_topic<T: Debug>(result: Result<T>, topic: &str, what: &str) {
    let error = expect_err(result, what);
    assert!(
        matches!(&error, MetadataError::UnknownTopic(name) if name == topic),
        "{what}: expected UnknownTopic({topic}), got {error:?}"
    );
}

fn assert_invalid<T: Debug>(result: Result<T>, what: &str) {
    let error = expect_err(result, what);
    assert!(
        matches!(error, MetadataError::Invalid(_)),
        "{what}: got {error:?}"
    );
}

fn assert_fenced<T: Debug>(result: Result<T>, what: &str) {
    let error = expect_err(result, what);
    assert!(
        matches!(error, MetadataError::Fenced { .. }),
        "{what}: got {error:?}"
    );
}

fn assert_conflict<T: Debug>(result: Result<T>, expected_hw: i64, what: &str) {
    let error = expect_err(result, what);
    assert!(
        matches!(error, MetadataError::OffsetConflict { high_watermark, .. } if high_watermark == expected_hw),
        "{what}: expected OffsetConflict at {expected_hw}, got {error:?}"
    );
}

/// Create, read, list (ordered), reconfigure, grow, delete and re-create a topic.
pub async fn topics_crud(store: &dyn MetadataStore) {
    let prefix = unique("crud");
    let mut config = TopicConfig {
        retention_ms: None,
        retention_bytes: Some(1 << 30),
        ..TopicConfig::default()
    };
    config
        .extra
        .insert("cleanup.policy".into(), "delete".into());
    let name_b = format!("{prefix}-b");
    let created = store
        .create_topic(NewTopic {
            name: name_b.clone(),
            partitions: 3,
            config: config.clone(),
        })
        .await
        .expect("create topic");
    assert_eq!(created.name, name_b);
    assert_eq!(created.partitions, 3);
    assert_eq!(created.config, config);
    assert!(!created.id.is_nil());
    assert!(created.created_at_ms > 0);
    assert_eq!(
        store.get_topic(&name_b).await.unwrap(),
        Some(created.clone())
    );

    let created_a = create(store, &format!("{prefix}-a"), 1).await;
    let listed: Vec<Topic> = store
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.name.starts_with(&prefix))
        .collect();
    assert_eq!(
        listed,
        vec![created_a.clone(), created.clone()],
        "ordered by name"
    );

    let new_config = TopicConfig {
        retention_ms: Some(60_000),
        extra: BTreeMap::from([("min.insync.replicas".into(), "1".into())]),
        ..TopicConfig::default()
    };
    let set = new_config.clone();
    let updated = store
        .alter_topic_config(&name_b, &move |_| Ok(set.clone()))
        .await
        .unwrap();
    assert_eq!(updated.config, new_config);
    assert_eq!(updated.id, created.id);
    assert_eq!(
        store.get_topic(&name_b).await.unwrap().unwrap().config,
        new_config
    );

    let grown = store.add_partitions(&name_b, 5).await.unwrap();
    assert_eq!(grown.partitions, 5);
    assert_eq!(grown.config, new_config);
    assert_eq!(
        store.get_topic(&name_b).await.unwrap().unwrap().partitions,
        5
    );
    let partitions = store.list_partitions(&name_b).await.unwrap();
    assert_eq!(partitions.len(), 5);
    for (index, state) in partitions.iter().enumerate() {
        assert_eq!(state.partition as usize, index);
        assert_eq!((state.high_watermark, state.log_start_offset), (0, 0));
    }

    assert!(store.delete_topic(&name_b, 0).await.unwrap().is_empty());
    assert_eq!(store.get_topic(&name_b).await.unwrap(), None);
    assert!(store
        .list_topics()
        .await
        .unwrap()
        .iter()
        .all(|t| t.name != name_b));
    store.delete_topic(&created_a.name, 0).await.unwrap();

    let recreated = create(store, &name_b, 2).await;
    assert_ne!(recreated.id, created.id, "a re-created topic gets a new id");
    assert_eq!(store.list_partitions(&name_b).await.unwrap().len(), 2);
}

/// Every topic and partition operation reports missing or invalid targets precisely.
pub async fn topic_errors(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 2).await;
    let name = topic.name.as_str();
    let duplicate = store
        .create_topic(NewTopic {
            name: name.to_owned(),
            partitions: 1,
            config: TopicConfig::default(),
        })
        .await;
    let error = expect_err(duplicate, "duplicate create");
    assert!(
        matches!(&error, MetadataError::TopicExists(n) if n == name),
        "got {error:?}"
    );
    assert_eq!(
        store.get_topic(name).await.unwrap(),
        Some(topic.clone()),
        "duplicate left it alone"
    );

    let zero = store
        .create_topic(NewTopic {
            name: unique("zero"),
            partitions: 0,
            config: TopicConfig::default(),
        })
        .await;
    assert_invalid(zero, "zero partitions");

    let missing = unique("missing");
    assert_eq!(store.get_topic(&missing).await.unwrap(), None);
    assert_unknown_topic(store.delete_topic(&missing, 0).await, &missing, "delete");
    assert_unknown_topic(
        store.add_partitions(&missing, 3).await,
        &missing,
        "add partitions",
    );
    assert_unknown_topic(
        store.alter_topic_config(&missing, &|c| Ok(c.clone())).await,
        &missing,
        "update config",
    );
    assert_unknown_topic(
        store.get_partition(&missing, 0).await,
        &missing,
        "get partition",
    );
    assert_unknown_topic(
        store.list_partitions(&missing).await,
        &missing,
        "list partitions",
    );

    assert_invalid(store.add_partitions(name, 2).await, "same partition count");
    assert_invalid(store.add_partitions(name, 1).await, "shrink");
    assert_eq!(store.get_topic(name).await.unwrap().unwrap().partitions, 2);

    let error = expect_err(store.get_partition(name, 2).await, "partition out of range");
    assert!(
        matches!(&error, MetadataError::UnknownPartition { topic, partition: 2 } if topic == name),
        "got {error:?}"
    );
    let error = expect_err(
        store.commit_segment(&segment(name, 7, 0, 9), None).await,
        "commit to missing partition",
    );
    assert!(
        matches!(error, MetadataError::UnknownPartition { .. }),
        "got {error:?}"
    );
    let error = expect_err(
        store
            .commit_segment(&segment(&missing, 0, 0, 9), None)
            .await,
        "commit to missing topic",
    );
    assert!(
        matches!(error, MetadataError::UnknownTopic(_)),
        "got {error:?}"
    );
}

/// High watermarks start at 0 and move per partition.
pub async fn partitions_and_high_watermark(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 2).await;
    let first = store.get_partition(&topic.name, 0).await.unwrap();
    assert_eq!(
        (
            first.partition,
            first.high_watermark,
            first.log_start_offset
        ),
        (0, 0, 0)
    );

    store
        .commit_segment(&segment(&topic.name, 1, 0, 9), None)
        .await
        .unwrap();
    assert_eq!(high_watermark(store, &topic.name, 1).await, 10);
    assert_eq!(high_watermark(store, &topic.name, 0).await, 0);
    let listed = store.list_partitions(&topic.name).await.unwrap();
    let marks: Vec<(u32, i64)> = listed
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect();
    assert_eq!(marks, vec![(0, 0), (1, 10)]);
}

/// Consecutive commits advance the high watermark and round-trip every segment field.
pub async fn commit_segment_happy_path(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let committed = commit_run(store, &topic.name, 0, 3, 10).await;
    assert_eq!(high_watermark(store, &topic.name, 0).await, 30);
    assert_eq!(
        store.list_segments(&topic.name, 0, 0).await.unwrap(),
        committed
    );

    let single = segment(&topic.name, 0, 30, 30);
    store.commit_segment(&single, None).await.unwrap();
    assert_eq!(high_watermark(store, &topic.name, 0).await, 31);
    let keys = store.all_segment_keys().await.unwrap();
    for seg in committed.iter().chain([&single]) {
        assert!(
            keys.contains(&seg.object_key),
            "all_segment_keys lists {}",
            seg.object_key
        );
    }
}

/// A commit not starting at the high watermark is refused and changes nothing.
pub async fn commit_segment_offset_conflict(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let name = topic.name.as_str();
    store
        .commit_segment(&segment(name, 0, 0, 9), None)
        .await
        .unwrap();
    assert_conflict(
        store.commit_segment(&segment(name, 0, 5, 14), None).await,
        10,
        "overlap",
    );
    assert_conflict(
        store.commit_segment(&segment(name, 0, 11, 20), None).await,
        10,
        "gap",
    );
    assert_conflict(
        store.commit_segment(&segment(name, 0, 0, 9), None).await,
        10,
        "replay",
    );
    assert_invalid(
        store.commit_segment(&segment(name, 0, 10, 8), None).await,
        "last offset before base offset",
    );
    assert_eq!(high_watermark(store, name, 0).await, 10);
    assert_eq!(store.list_segments(name, 0, 0).await.unwrap().len(), 1);
}

/// Producer snapshots are written with their segment, replaced per producer, never written by
/// a refused commit, dropped with the topic and expired by age; expiry raises the partition's
/// bound on forgotten producers past every id it deletes, and never lowers it.
pub async fn producer_snapshots(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 2).await;
    let name = topic.name.as_str();
    let snapshot = |producer_id: i64, last_offset: i64, updated_at_ms: i64| ProducerSnapshot {
        producer_id,
        last_offset,
        updated_at_ms,
        state: vec![producer_id as u8, last_offset as u8, 0xff],
    };
    let listed = |partition: u32| async move {
        let listed = store
            .list_producer_snapshots(name, partition)
            .await
            .unwrap();
        (listed.snapshots, listed.forgotten_below)
    };
    let (a, b) = (snapshot(7, 4, 1_000), snapshot(3, 9, 2_000));
    store
        .commit_segment_with_producers(&segment(name, 0, 0, 9), &[a.clone(), b.clone()], None)
        .await
        .unwrap();
    assert_eq!(
        listed(0).await,
        (vec![b.clone(), a.clone()], 0),
        "ordered by producer id; nothing forgotten yet"
    );
    assert_eq!(listed(1).await, (vec![], 0));

    let newer_a = snapshot(7, 12, 3_000);
    store
        .commit_segment_with_producers(
            &segment(name, 0, 10, 19),
            std::slice::from_ref(&newer_a),
            None,
        )
        .await
        .unwrap();
    let refused = snapshot(3, 25, 4_000);
    assert_conflict(
        store
            .commit_segment_with_producers(&segment(name, 0, 0, 25), &[refused], None)
            .await,
        20,
        "conflicting commit",
    );
    assert_eq!(
        listed(0).await,
        (vec![b, newer_a.clone()], 0),
        "a replaced snapshot; nothing from the refused commit"
    );

    assert_eq!(store.expire_producer_snapshots(2_500).await.unwrap(), 1);
    assert_eq!(
        listed(0).await,
        (vec![newer_a.clone()], 4),
        "producer 3 expired: ids below 4 may be forgotten"
    );
    assert_eq!(
        listed(1).await,
        (vec![], 0),
        "another partition keeps its bound"
    );

    let older_id = snapshot(2, 21, 3_100);
    store
        .commit_segment_with_producers(&segment(name, 0, 20, 21), &[older_id], None)
        .await
        .unwrap();
    assert_eq!(store.expire_producer_snapshots(3_500).await.unwrap(), 2);
    assert_eq!(
        listed(0).await,
        (vec![], 8),
        "raised past producer 7, not lowered by 2"
    );
    store.delete_topic(name, 0).await.unwrap();
    assert_eq!(listed(0).await, (vec![], 0));
}

/// Fenced commits (wrong agent, wrong epoch, expired or absent lease) are refused.
pub async fn commit_segment_fencing(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 3).await;
    let name = topic.name.as_str();
    let lease = store
        .acquire_lease(name, 0, "agent-a", 60_000)
        .await
        .unwrap()
        .expect("free lease");
    let fence = |agent: &str, epoch: i64| LeaseFence {
        agent_id: agent.to_owned(),
        epoch,
    };
    store
        .commit_segment(
            &segment(name, 0, 0, 9),
            Some(&fence("agent-a", lease.epoch)),
        )
        .await
        .expect("holder commits");
    let next = segment(name, 0, 10, 19);
    assert_fenced(
        store
            .commit_segment(&next, Some(&fence("agent-b", lease.epoch)))
            .await,
        "wrong agent",
    );
    assert_fenced(
        store
            .commit_segment(&next, Some(&fence("agent-a", lease.epoch + 1)))
            .await,
        "wrong epoch",
    );
    assert_fenced(
        store
            .commit_segment(&segment(name, 1, 0, 9), Some(&fence("agent-a", 1)))
            .await,
        "no lease",
    );

    let expired = store
        .acquire_lease(name, 2, "agent-a", SHORT_TTL_MS)
        .await
        .unwrap()
        .expect("free lease");
    let_expire().await;
    assert_fenced(
        store
            .commit_segment(
                &segment(name, 2, 0, 9),
                Some(&fence("agent-a", expired.epoch)),
            )
            .await,
        "expired lease",
    );

    assert_eq!(high_watermark(store, name, 0).await, 10);
    assert_eq!(high_watermark(store, name, 1).await, 0);
    assert_eq!(high_watermark(store, name, 2).await, 0);
    store
        .commit_segment(&next, Some(&fence("agent-a", lease.epoch)))
        .await
        .expect("holder still commits after refused attempts");
}

/// Concurrent commits at the same base offset: exactly one wins, the rest conflict (after
/// retrying those that found the row locked too long).
pub async fn concurrent_commits_one_wins(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let candidates: Vec<SegmentInfo> = (0..8).map(|_| segment(&topic.name, 0, 0, 9)).collect();
    let results = join_all(candidates.iter().map(|seg| store.commit_segment(seg, None))).await;
    let mut winners = Vec::new();
    for (seg, mut result) in candidates.iter().zip(results) {
        // A commit that waited too long for the row another one held is answered RowLocked,
        // nothing recorded (a loaded machine makes that likely); its producer would retry.
        while matches!(result, Err(MetadataError::RowLocked { .. })) {
            result = store.commit_segment(seg, None).await;
        }
        match result {
            Ok(()) => winners.push(seg.object_key.clone()),
            Err(MetadataError::OffsetConflict {
                high_watermark: 10, ..
            }) => {}
            Err(other) => panic!("unexpected error from a racing commit: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racing commit wins");
    let stored = store.list_segments(&topic.name, 0, 0).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].object_key, winners[0]);
    assert_eq!(high_watermark(store, &topic.name, 0).await, 10);
}

/// `list_segments` returns segments ending at or after the offset, in order.
pub async fn list_segments_ranges(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 2).await;
    let name = topic.name.as_str();
    let segs = commit_run(store, name, 0, 3, 10).await;
    for (from, expected) in [(-1, 0), (0, 0), (9, 0), (10, 1), (25, 2), (29, 2), (30, 3)] {
        assert_eq!(
            store.list_segments(name, 0, from).await.unwrap(),
            segs[expected..].to_vec(),
            "list_segments from {from}"
        );
    }
    assert!(store.list_segments(name, 1, 0).await.unwrap().is_empty());
    let error = expect_err(store.list_segments(name, 2, 0).await, "missing partition");
    assert!(
        matches!(error, MetadataError::UnknownPartition { .. }),
        "got {error:?}"
    );
}

/// `list_segments_page` is the start of `list_segments`; `segment_totals` adds up what it
/// would list; `first_segment_reaching` is the first segment, in offset order, whose newest
/// timestamp reaches the time (not the one with the nearest timestamp).
pub async fn segment_pages_and_totals(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 3).await;
    let name = topic.name.as_str();
    let segs = commit_run(store, name, 0, 4, 10).await;
    for (from, limit) in [(0, 1), (0, 3), (0, 9), (15, 2), (40, 5)] {
        let all = store.list_segments(name, 0, from).await.unwrap();
        let expected: Vec<_> = all.into_iter().take(limit as usize).collect();
        let page = store.list_segments_page(name, 0, from, limit).await;
        assert_eq!(page.unwrap(), expected, "page of {limit} from {from}");
    }
    let totals = store.segment_totals(name, 0).await.unwrap();
    let expected = SegmentTotals {
        segments: 4,
        bytes: segs.iter().map(|s| s.size_bytes).sum(),
        max_timestamp_ms: Some(1_039),
    };
    assert_eq!(totals, expected);
    let empty = store.segment_totals(name, 1).await.unwrap();
    assert_eq!(empty, SegmentTotals::default(), "no segments yet");

    // Out of order: the second segment's records are older than the first's.
    let mut late = segment(name, 2, 0, 9);
    late.max_timestamp_ms = 5_000;
    let mut early = segment(name, 2, 10, 19);
    early.max_timestamp_ms = 2_000;
    let last = segment(name, 2, 20, 29);
    for s in [&late, &early, &last] {
        store.commit_segment(s, None).await.unwrap();
    }
    for (ts, expected) in [(0, Some(&late)), (3_000, Some(&late)), (5_001, None)] {
        let found = store.first_segment_reaching(name, 2, ts).await.unwrap();
        assert_eq!(found.as_ref(), expected, "first reaching {ts}");
    }
    let found = store.first_segment_reaching(name, 0, 1_015).await.unwrap();
    assert_eq!(
        found.as_ref(),
        Some(&segs[1]),
        "the first reaching 1015 in order"
    );
    let found = store.first_segment_reaching(name, 1, 0).await.unwrap();
    assert_eq!(found, None, "no segments yet");
    for (what, error) in [
        ("page", store.list_segments_page(name, 3, 0, 1).await.err()),
        ("totals", store.segment_totals(name, 3).await.err()),
        ("time", store.first_segment_reaching(name, 3, 0).await.err()),
    ] {
        assert!(
            matches!(error, Some(MetadataError::UnknownPartition { .. })),
            "{what} of a missing partition: {error:?}"
        );
    }
}

/// Truncation deletes whole segments below the new start and never moves the start backwards
/// or past the high watermark.
/// Compaction swaps adjacent segments for one, only when they still tile its range exactly.
pub async fn replace_segments(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let name = topic.name.as_str();
    let segs = commit_run(store, name, 0, 4, 10).await;
    let mut merged = segment(name, 0, 10, 29);
    // One replaced object already scheduled later keeps its time.
    let later = now_ms() + 600_000;
    store
        .schedule_object_deletions(std::slice::from_ref(&segs[2].object_key), later)
        .await
        .unwrap();
    let at = now_ms() + 300_000;
    assert_eq!(store.replace_segments(&merged, None, at).await.unwrap(), 2);
    let due = store.due_object_deletions(at, 10_000).await.unwrap();
    assert!(
        due.contains(&segs[1].object_key),
        "replaced object not scheduled"
    );
    assert!(
        !due.contains(&segs[2].object_key),
        "an earlier schedule was moved"
    );
    assert!(!due.contains(&segs[0].object_key) && !due.contains(&segs[3].object_key));
    let due = store.due_object_deletions(later, 10_000).await.unwrap();
    assert!(due.contains(&segs[2].object_key));
    store
        .forget_object_deletions(&[segs[1].object_key.clone(), segs[2].object_key.clone()])
        .await
        .unwrap();
    let listed = store.list_segments(name, 0, 0).await.unwrap();
    assert_eq!(
        listed,
        vec![segs[0].clone(), merged.clone(), segs[3].clone()]
    );
    let state = store.get_partition(name, 0).await.unwrap();
    assert_eq!((state.log_start_offset, state.high_watermark), (0, 40));
    let keys = store.all_segment_keys().await.unwrap();
    assert!(keys.contains(&merged.object_key) && !keys.contains(&segs[1].object_key));

    // Not a tiling: splits an existing segment, runs past the log, or miscounts records.
    for (base, last) in [(5, 29), (30, 45), (0, 15)] {
        let bad = segment(name, 0, base, last);
        let err = store.replace_segments(&bad, None, 0).await.unwrap_err();
        assert!(
            matches!(err, MetadataError::Invalid(_)),
            "{base}..={last}: {err}"
        );
    }
    merged.record_count -= 1;
    merged.object_key = format!("{}-again", merged.object_key);
    assert!(store.replace_segments(&merged, None, 0).await.is_err());
    assert_eq!(store.list_segments(name, 0, 0).await.unwrap(), listed);

    let fence = LeaseFence {
        agent_id: unique("nobody"),
        epoch: 1,
    };
    let whole = segment(name, 0, 0, 39);
    let err = store
        .replace_segments(&whole, Some(&fence), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, MetadataError::Fenced { .. }), "{err}");
}

/// Log compaction swaps segments for one holding fewer records, only when the replaced ones
/// still tile its range and hold the records the compactor read; the watermarks stay.
pub async fn compact_segments(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let name = topic.name.as_str();
    let segs = commit_run(store, name, 0, 3, 10).await;
    let mut compacted = segment(name, 0, 0, 19);
    compacted.record_count = 7;
    let stale = store.compact_segments(&compacted, 19, None, 0).await;
    assert!(matches!(stale, Err(MetadataError::Invalid(_))), "{stale:?}");
    assert_eq!(
        store
            .compact_segments(&compacted, 20, None, 0)
            .await
            .unwrap(),
        2
    );
    let listed = store.list_segments(name, 0, 0).await.unwrap();
    assert_eq!(listed, vec![compacted.clone(), segs[2].clone()]);
    let state = store.get_partition(name, 0).await.unwrap();
    assert_eq!((state.log_start_offset, state.high_watermark), (0, 30));
    // Compacting the compacted segment again counts its 7 records, not its 20 offsets.
    let mut again = segment(name, 0, 0, 29);
    again.record_count = 3;
    assert!(store.compact_segments(&again, 30, None, 0).await.is_err());
    store.compact_segments(&again, 17, None, 0).await.unwrap();
    let fence = LeaseFence {
        agent_id: unique("nobody"),
        epoch: 1,
    };
    let err = store
        .compact_segments(&again, 3, Some(&fence), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, MetadataError::Fenced { .. }), "{err}");
}

/// `truncate_before` drops the whole segments below an offset and raises the log start, never
/// lowering it and never past the high watermark.
pub async fn truncate_before(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let name = topic.name.as_str();
    let segs = commit_run(store, name, 0, 3, 10).await;

    assert_eq!(
        store.truncate_before(name, 0, 15, 0).await.unwrap(),
        segs[..1].to_vec()
    );
    let state = store.get_partition(name, 0).await.unwrap();
    assert_eq!((state.log_start_offset, state.high_watermark), (15, 30));
    assert_eq!(
        store.list_segments(name, 0, 0).await.unwrap(),
        segs[1..].to_vec()
    );
    let keys = store.all_segment_keys().await.unwrap();
    assert!(!keys.contains(&segs[0].object_key));

    assert!(
        store
            .truncate_before(name, 0, 5, 0)
            .await
            .unwrap()
            .is_empty(),
        "never lowers"
    );
    assert_eq!(
        store.get_partition(name, 0).await.unwrap().log_start_offset,
        15
    );

    assert_eq!(
        store.truncate_before(name, 0, 1_000, 0).await.unwrap(),
        segs[1..].to_vec()
    );
    let state = store.get_partition(name, 0).await.unwrap();
    assert_eq!(
        (state.log_start_offset, state.high_watermark),
        (30, 30),
        "capped at the HW"
    );
    store
        .commit_segment(&segment(name, 0, 30, 39), None)
        .await
        .expect("append after truncation");

    let missing = unique("missing");
    assert_unknown_topic(
        store.truncate_before(&missing, 0, 1, 0).await,
        &missing,
        "truncate",
    );
}

/// Deleting a topic returns its segments and removes its offsets and leases too.
pub async fn delete_topic_returns_segments(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 2).await;
    let name = topic.name.as_str();
    let mut segs = commit_run(store, name, 1, 1, 5).await;
    segs.splice(0..0, commit_run(store, name, 0, 2, 10).await);
    let group = unique("group");
    store
        .commit_offsets(&group, None, &[offset(name, 0, 12, None)])
        .await
        .unwrap();
    store
        .acquire_lease(name, 0, "agent-a", 60_000)
        .await
        .unwrap()
        .expect("lease");

    assert_eq!(
        store.delete_topic(name, 0).await.unwrap(),
        segs,
        "ordered by partition, offset"
    );
    let keys = store.all_segment_keys().await.unwrap();
    assert!(segs.iter().all(|s| !keys.contains(&s.object_key)));
    assert!(store.fetch_offsets(&group, None).await.unwrap().is_empty());
    assert!(store
        .list_leases()
        .await
        .unwrap()
        .iter()
        .all(|l| l.topic != name));

    create(store, name, 1).await;
    assert_eq!(high_watermark(store, name, 0).await, 0);
    assert!(store.list_segments(name, 0, 0).await.unwrap().is_empty());
}

/// Producer ids are unique under concurrency and keep increasing.
pub async fn producer_ids_unique(store: &dyn MetadataStore) {
    let ids: Vec<i64> = join_all((0..32).map(|_| store.allocate_producer_id()))
        .await
        .into_iter()
        .collect::<Result<_>>()
        .unwrap();
    let distinct: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "no id handed out twice: {ids:?}");
    assert!(ids.iter().all(|&id| id >= 0));
    let next = store.allocate_producer_id().await.unwrap();
    assert!(
        ids.iter().all(|&id| id < next),
        "{next} follows every earlier id"
    );
    assert!(store.allocate_producer_id().await.unwrap() > next);
}

fn offset(topic: &str, partition: u32, offset: i64, metadata: Option<&str>) -> CommittedOffset {
    CommittedOffset {
        topic: topic.to_owned(),
        partition,
        offset,
        leader_epoch: 3,
        metadata: metadata.map(str::to_owned),
        committed_at_ms: now_ms(),
    }
}

/// Offsets upsert per partition, keep their metadata, filter by topic and delete selectively.
pub async fn consumer_offsets(store: &dyn MetadataStore) {
    let (first, second) = (fresh_topic(store, 2).await, fresh_topic(store, 1).await);
    let (t1, t2) = (first.name.as_str(), second.name.as_str());
    let group = unique("group");
    let mut expected = vec![
        offset(t1, 0, 5, Some("client state")),
        offset(t1, 1, 7, None),
        offset(t2, 0, 3, Some("")),
    ];
    expected.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    store.commit_offsets(&group, None, &expected).await.unwrap();
    assert_eq!(store.fetch_offsets(&group, None).await.unwrap(), expected);
    let only_t1: Vec<_> = expected.iter().filter(|o| o.topic == t1).cloned().collect();
    assert_eq!(
        store.fetch_offsets(&group, Some(t1)).await.unwrap(),
        only_t1
    );

    let moved = CommittedOffset {
        leader_epoch: -1,
        ..offset(t1, 0, 9, Some("newer"))
    };
    store
        .commit_offsets(&group, None, std::slice::from_ref(&moved))
        .await
        .unwrap();
    let fetched = store.fetch_offsets(&group, Some(t1)).await.unwrap();
    assert_eq!(
        fetched,
        vec![moved.clone(), only_t1[1].clone()],
        "upsert replaces one row"
    );

    store
        .delete_offsets(&group, None, &[(t1.to_owned(), 1)])
        .await
        .unwrap();
    assert_eq!(
        store.fetch_offsets(&group, Some(t1)).await.unwrap(),
        vec![moved]
    );
    assert_eq!(
        store.fetch_offsets(&group, Some(t2)).await.unwrap().len(),
        1
    );
    assert!(store
        .fetch_offsets(&unique("nobody"), None)
        .await
        .unwrap()
        .is_empty());
}

/// Groups are listed while they have offsets and can be deleted whole.
pub async fn consumer_groups(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let (kept, dropped) = (unique("group"), unique("group"));
    for group in [&kept, &dropped] {
        store
            .commit_offsets(group, None, &[offset(&topic.name, 0, 1, None)])
            .await
            .unwrap();
    }
    let groups = store.list_groups().await.unwrap();
    assert!(groups.contains(&kept) && groups.contains(&dropped));

    assert!(store.delete_group(&dropped, None).await.unwrap());
    assert!(
        !store.delete_group(&dropped, None).await.unwrap(),
        "already gone"
    );
    let groups = store.list_groups().await.unwrap();
    assert!(groups.contains(&kept) && !groups.contains(&dropped));
    assert!(store
        .fetch_offsets(&dropped, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.fetch_offsets(&kept, None).await.unwrap().len(), 1);
}

fn agent(id: &str, port: u16, heartbeat_ms: i64) -> AgentInfo {
    AgentInfo {
        agent_id: id.to_owned(),
        kafka_host: "127.0.0.1".into(),
        kafka_port: port,
        http_addr: "127.0.0.1:8080".into(),
        node_id: i32::from(port),
        last_heartbeat_ms: heartbeat_ms,
        started_at_ms: heartbeat_ms - 5,
    }
}

/// Agents register (upsert), heartbeat, are listed while alive and deregister.
pub async fn agents(store: &dyn MetadataStore) {
    let now = now_ms();
    let (live_id, stale_id) = (unique("agent"), unique("agent"));
    let ours = |agents: Vec<AgentInfo>| -> Vec<AgentInfo> {
        agents
            .into_iter()
            .filter(|a| a.agent_id == live_id || a.agent_id == stale_id)
            .collect()
    };
    let live = agent(&live_id, 9092, now);
    let stale = agent(&stale_id, 9093, now - 100_000);
    store.register_agent(&live).await.unwrap();
    store.register_agent(&stale).await.unwrap();
    assert_eq!(
        ours(store.list_agents(now - 10_000).await.unwrap()),
        vec![live.clone()]
    );

    assert!(store.heartbeat(&stale_id, now).await.unwrap());
    assert!(!store.heartbeat(&unique("ghost"), now).await.unwrap());
    let revived = AgentInfo {
        last_heartbeat_ms: now,
        ..stale.clone()
    };
    let mut both = vec![live.clone(), revived];
    both.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    assert_eq!(ours(store.list_agents(now - 10_000).await.unwrap()), both);

    let moved = AgentInfo {
        kafka_port: 19092,
        node_id: 7,
        ..live.clone()
    };
    store.register_agent(&moved).await.unwrap();
    let listed = ours(store.list_agents(0).await.unwrap());
    assert!(
        listed.contains(&moved) && !listed.contains(&live),
        "re-registering replaces"
    );

    store.deregister_agent(&live_id).await.unwrap();
    let listed = ours(store.list_agents(0).await.unwrap());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].agent_id, stale_id);
}

/// Leases: take a free one, renew at the same epoch, refuse a live one, take over an expired
/// one (by the database's clock) at a higher epoch.
pub async fn leases(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let name = topic.name.as_str();
    let before = now_ms();
    let first = store
        .acquire_lease(name, 0, "a", 60_000)
        .await
        .unwrap()
        .expect("free");
    assert_expiry(&first, before, 60_000);
    assert_eq!(first.agent_id.as_str(), "a");
    assert_eq!((first.topic.as_str(), first.partition), (name, 0));

    assert_eq!(
        store.acquire_lease(name, 0, "b", 60_000).await.unwrap(),
        None
    );
    let renewed = store
        .acquire_lease(name, 0, "a", SHORT_TTL_MS)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.epoch, first.epoch, "renewed at the same epoch");
    let_expire().await;

    let stolen = store
        .acquire_lease(name, 0, "b", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stolen.agent_id.as_str(), stolen.epoch),
        ("b", first.epoch + 1)
    );
    assert_eq!(
        store.acquire_lease(name, 0, "a", 60_000).await.unwrap(),
        None
    );
    let kept = store
        .acquire_lease(name, 0, "b", SHORT_TTL_MS)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.epoch, stolen.epoch);
    let_expire().await;

    let lapsed = store
        .acquire_lease(name, 0, "b", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        lapsed.epoch,
        stolen.epoch + 1,
        "re-taking an expired lease bumps the epoch"
    );
    let listed: Vec<_> = store
        .list_leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.topic == name)
        .collect();
    assert_eq!(listed, vec![lapsed]);

    assert!(
        store.acquire_lease(name, 1, "a", 1_000).await.is_err(),
        "no partition 1"
    );
    assert!(store
        .acquire_lease(&unique("missing"), 0, "a", 1_000)
        .await
        .is_err());
}

/// A TTL the checks let lapse: shorter than [`let_expire`] waits, yet long enough that the
/// calls some checks make under it before it lapses finish in time on a loaded CI machine
/// (50 ms was not: a file-backed SQLite commit took longer once).
const SHORT_TTL_MS: i64 = 500;

/// Waits longer than [`SHORT_TTL_MS`], by any clock (the database's judges expiry).
async fn let_expire() {
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
}

/// Checks that `lease` expires `ttl_ms` after a moment between `before` and now (the
/// database's clock, on this machine the same as ours).
fn assert_expiry(lease: &PartitionLease, before: i64, ttl_ms: i64) {
    let after = now_ms();
    assert!(
        // A millisecond either way: the clocks round differently.
        (before + ttl_ms - 1..=after + ttl_ms + 1).contains(&lease.expires_at_ms),
        "{lease:?} should expire {ttl_ms} ms after a moment in {before}..={after}"
    );
}

/// `lease` without its expiry, for comparisons where only the database knows the moment.
fn sans_expiry(lease: &PartitionLease) -> PartitionLease {
    PartitionLease {
        expires_at_ms: 0,
        ..lease.clone()
    }
}

/// Agents racing for a free lease: exactly one gets it.
pub async fn concurrent_lease_acquisition(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let agents: Vec<String> = (0..6).map(|i| format!("agent-{i}")).collect();
    let results = join_all(
        agents
            .iter()
            .map(|agent| store.acquire_lease(&topic.name, 0, agent, 60_000)),
    )
    .await;
    let winners: Vec<_> = results.into_iter().filter_map(|r| r.unwrap()).collect();
    assert_eq!(winners.len(), 1, "exactly one agent wins: {winners:?}");
}

/// The leases of `topic`, by partition.
async fn leases_of(store: &dyn MetadataStore, topic: &str) -> BTreeMap<u32, PartitionLease> {
    let leases = store.list_leases().await.unwrap().into_iter();
    leases
        .filter(|l| l.topic == topic)
        .map(|l| (l.partition, l))
        .collect()
}

fn keys(topic: &str, partitions: impl IntoIterator<Item = u32>) -> Vec<(String, u32)> {
    partitions
        .into_iter()
        .map(|p| (topic.to_owned(), p))
        .collect()
}

/// Batched acquisition takes each lease exactly as `acquire_lease` would: free at epoch 1, its
/// own live one at the same epoch, an expired one (anyone's) at epoch + 1, and leaves out live
/// leases of others and partitions that do not exist.
pub async fn batch_lease_acquisition(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 5).await;
    let name = topic.name.as_str();
    let take = |partition, agent: &'static str, ttl_ms: i64| async move {
        let lease = store.acquire_lease(name, partition, agent, ttl_ms);
        lease.await.unwrap().expect("free")
    };
    let others_expired = take(2, "b", SHORT_TTL_MS).await;
    let own_expired = take(4, "a", SHORT_TTL_MS).await;
    let_expire().await;
    let others_live = take(1, "b", 60_000).await;
    let own_live = take(3, "a", 60_000).await;
    let mut wanted = keys(name, [4, 3, 2, 1, 0, 7]);
    wanted.push((unique("missing"), 0));
    let before = now_ms();
    let got = store.acquire_leases("a", &wanted, 1_000).await.unwrap();
    let lease = |partition, epoch| PartitionLease {
        topic: name.to_owned(),
        partition,
        agent_id: "a".into(),
        epoch,
        expires_at_ms: 0,
    };
    let expected = vec![
        lease(0, 1),
        lease(2, others_expired.epoch + 1),
        lease(3, own_live.epoch),
        lease(4, own_expired.epoch + 1),
    ];
    got.iter().for_each(|l| assert_expiry(l, before, 1_000));
    let got: Vec<_> = got.iter().map(sans_expiry).collect();
    assert_eq!(
        got, expected,
        "ordered by partition, the live one of b left out"
    );
    let stored = leases_of(store, name).await;
    assert_eq!(
        stored[&1], others_live,
        "another agent's live lease is untouched"
    );
    let stored_a: Vec<_> = stored
        .values()
        .filter(|l| l.agent_id == "a")
        .map(sans_expiry)
        .collect();
    assert_eq!(stored_a, expected);
    assert!(store
        .acquire_leases("a", &[], 1_000)
        .await
        .unwrap()
        .is_empty());
}

/// Batched renewal extends only the caller's unexpired leases at the epochs it names, in one
/// call, and never revives or re-numbers a lease that was lost.
pub async fn batch_lease_renewal(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 6).await;
    let name = topic.name.as_str();
    let mut held = Vec::new();
    for partition in 0..5 {
        // 1 and 2 lapse below; the others stay live.
        let ttl = if matches!(partition, 1 | 2) {
            SHORT_TTL_MS
        } else {
            60_000
        };
        let lease = store.acquire_lease(name, partition, "a", ttl);
        held.push(lease.await.unwrap().expect("free"));
    }
    let_expire().await;
    // 1: taken over by b after a's lease lapsed. 2: lapsed, nobody took it.
    let stolen = store
        .acquire_lease(name, 1, "b", 60_000)
        .await
        .unwrap()
        .expect("expired");
    // 3: a claims a stale epoch. 4: a released it.
    store
        .release_lease(name, 4, "a", held[4].epoch)
        .await
        .unwrap();
    let claims: Vec<HeldLease> = held
        .iter()
        .map(|l| HeldLease {
            topic: l.topic.clone(),
            partition: l.partition,
            epoch: if l.partition == 3 {
                l.epoch - 1
            } else {
                l.epoch
            },
        })
        .chain([
            // Never leased, and a partition that does not exist.
            HeldLease {
                topic: name.to_owned(),
                partition: 5,
                epoch: 1,
            },
            HeldLease {
                topic: unique("missing"),
                partition: 0,
                epoch: 1,
            },
        ])
        .collect();
    let before_leases = leases_of(store, name).await;
    let before = now_ms();
    let renewed = store.renew_leases("a", &claims, 5_000).await.unwrap();
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    assert_expiry(&renewed[0], before, 5_000);
    assert_eq!(sans_expiry(&renewed[0]), sans_expiry(&held[0]));
    let mut after = leases_of(store, name).await;
    assert_eq!(after.remove(&0), Some(renewed[0].clone()));
    let mut before_leases = before_leases;
    before_leases.remove(&0);
    assert_eq!(
        after, before_leases,
        "lost leases are untouched, none is created"
    );
    assert_eq!(after[&1], stolen);

    // Another agent's renewal of a's lease does nothing, even at the right epoch.
    let claim = &claims[..1];
    assert!(store
        .renew_leases("b", claim, 5_000)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .renew_leases("a", &[], 5_000)
        .await
        .unwrap()
        .is_empty());
}

/// Agents racing to take the same partitions in batches (in opposite orders): every partition
/// ends up with exactly one of them, and each agent's answer matches the stored leases.
pub async fn concurrent_batch_lease_acquisition(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 8).await;
    let name = topic.name.as_str();
    let agents: Vec<String> = (0..4).map(|i| format!("agent-{i}")).collect();
    let results = join_all(agents.iter().enumerate().map(|(i, agent)| {
        let mut wanted = keys(name, 0..8);
        if i % 2 == 1 {
            wanted.reverse();
        }
        async move { store.acquire_leases(agent, &wanted, 60_000).await }
    }))
    .await;
    let mut owners = BTreeMap::new();
    for lease in results.into_iter().flat_map(Result::unwrap) {
        let previous = owners.insert(lease.partition, lease.clone());
        assert!(previous.is_none(), "two winners: {previous:?}, {lease:?}");
    }
    assert_eq!(owners.len(), 8, "every free partition is taken");
    assert_eq!(owners, leases_of(store, name).await);
}

/// Releasing needs the holder and its epoch; afterwards anyone takes over at a higher epoch.
pub async fn lease_release(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let name = topic.name.as_str();
    let held = store
        .acquire_lease(name, 0, "a", 60_000)
        .await
        .unwrap()
        .unwrap();

    store
        .release_lease(name, 0, "a", held.epoch + 1)
        .await
        .unwrap();
    store.release_lease(name, 0, "b", held.epoch).await.unwrap();
    assert_eq!(
        store.acquire_lease(name, 0, "b", 60_000).await.unwrap(),
        None,
        "wrong epoch or agent does not release"
    );

    store.release_lease(name, 0, "a", held.epoch).await.unwrap();
    let taken = store
        .acquire_lease(name, 0, "b", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.epoch, held.epoch + 1);
    let fence = LeaseFence {
        agent_id: "a".into(),
        epoch: held.epoch,
    };
    assert_fenced(
        store
            .commit_segment(&segment(name, 0, 0, 0), Some(&fence))
            .await,
        "old holder after release",
    );
}

/// Whether `result` failed with `GroupFenced`.
fn assert_group_fenced<T: Debug>(result: Result<T>, what: &str) {
    match expect_err(result, what) {
        MetadataError::GroupFenced { .. } => {}
        other => panic!("{what}: expected GroupFenced, got {other:?}"),
    }
}

/// A group lease `agent` takes (it must be free, expired or its own).
async fn take_group(
    store: &dyn MetadataStore,
    group: &str,
    agent: &str,
    ttl_ms: i64,
) -> GroupLease {
    let lease = store.acquire_group_lease(group, agent, ttl_ms).await;
    lease.unwrap().expect("the group lease is free")
}

/// Group coordinator leases: a free one at epoch 1, renewed by its holder at the same epoch,
/// refused to others while live, taken over once expired (by the database's clock) at a higher
/// epoch; the recorded generation survives every change of holder.
pub async fn group_leases(store: &dyn MetadataStore) {
    let group = unique("group");
    let first = take_group(store, &group, "a", 60_000).await;
    assert_eq!(
        (first.agent_id.as_str(), first.epoch, first.generation),
        ("a", 1, 0)
    );
    assert_eq!(
        store
            .acquire_group_lease(&group, "b", 60_000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        take_group(store, &group, "a", 60_000).await,
        first,
        "renewed as it is"
    );
    store
        .record_group_generation(&group, &first.fence(), 3)
        .await
        .unwrap();
    store
        .record_group_generation(&group, &first.fence(), 2)
        .await
        .unwrap();
    assert_group_fenced(
        store
            .record_group_generation(
                &group,
                &LeaseFence {
                    epoch: 2,
                    ..first.fence()
                },
                9,
            )
            .await,
        "a generation at the wrong epoch",
    );
    let listed = store.list_group_leases().await.unwrap();
    let ours: Vec<_> = listed.into_iter().filter(|l| l.group_id == group).collect();
    assert_eq!(
        ours,
        vec![GroupLease {
            generation: 3,
            ..first.clone()
        }],
        "never lowered"
    );

    take_group(store, &group, "a", SHORT_TTL_MS).await;
    let_expire().await;
    assert!(
        !store
            .list_group_leases()
            .await
            .unwrap()
            .iter()
            .any(|l| l.group_id == group),
        "expired leases are not listed"
    );
    assert_group_fenced(
        store
            .record_group_generation(&group, &first.fence(), 4)
            .await,
        "an expired lease records nothing",
    );
    let second = take_group(store, &group, "b", 60_000).await;
    assert_eq!(
        (second.epoch, second.generation),
        (2, 3),
        "next epoch, same generation"
    );
    store
        .release_group_lease(&group, &first.fence())
        .await
        .unwrap();
    assert_eq!(
        store
            .acquire_group_lease(&group, "a", 60_000)
            .await
            .unwrap(),
        None,
        "not a's to release"
    );
    store
        .release_group_lease(&group, &second.fence())
        .await
        .unwrap();
    let third = take_group(store, &group, "a", 60_000).await;
    assert_eq!(
        (third.epoch, third.generation),
        (3, 3),
        "released: taken at once"
    );
}

/// Membership snapshots: stored under the lease, read by the next holder, never replaced by
/// one of an earlier generation, cleared with `None`.
pub async fn group_member_snapshots(store: &dyn MetadataStore) {
    let group = unique("group");
    assert_eq!(store.group_members(&group).await.unwrap(), None, "no row");
    let first = take_group(store, &group, "a", SHORT_TTL_MS).await;
    assert_eq!(store.group_members(&group).await.unwrap(), None, "none yet");
    let record = |fence: LeaseFence, generation, members: Option<&'static str>| {
        let group = group.clone();
        async move {
            store
                .record_group_members(&group, &fence, generation, members)
                .await
        }
    };
    record(first.fence(), 2, Some("two")).await.unwrap();
    record(first.fence(), 1, Some("one")).await.unwrap();
    assert_eq!(
        store.group_members(&group).await.unwrap(),
        Some((2, "two".to_owned())),
        "an earlier generation does not replace a later one"
    );
    record(first.fence(), 2, Some("two again")).await.unwrap();
    assert_eq!(
        store.group_members(&group).await.unwrap(),
        Some((2, "two again".to_owned())),
        "the same generation does"
    );
    assert_group_fenced(
        record(
            LeaseFence {
                epoch: 9,
                ..first.fence()
            },
            3,
            Some("x"),
        )
        .await,
        "a snapshot at the wrong epoch",
    );
    let_expire().await;
    assert_group_fenced(
        record(first.fence(), 3, Some("x")).await,
        "an expired lease records nothing",
    );
    let second = take_group(store, &group, "b", 60_000).await;
    assert_eq!(
        store.group_members(&group).await.unwrap(),
        Some((2, "two again".to_owned())),
        "the next holder reads it"
    );
    record(second.fence(), 3, None).await.unwrap();
    assert_eq!(store.group_members(&group).await.unwrap(), None, "cleared");
}

/// Renewal extends only leases still held at the given epoch, never revives a lost one, and
/// leaves out groups it does not know.
pub async fn group_lease_renewal(store: &dyn MetadataStore) {
    let (kept, lapsed, taken) = (unique("group"), unique("group"), unique("group"));
    let kept_lease = take_group(store, &kept, "a", SHORT_TTL_MS).await;
    let lapsed_lease = take_group(store, &lapsed, "a", SHORT_TTL_MS).await;
    let taken_lease = take_group(store, &taken, "a", SHORT_TTL_MS).await;
    let held: Vec<(String, i64)> = [&kept_lease, &lapsed_lease, &taken_lease]
        .iter()
        .map(|l| (l.group_id.clone(), l.epoch))
        .chain([(unique("group"), 1)])
        .collect();
    let renewed = store
        .renew_group_leases("a", &held[..1], 60_000)
        .await
        .unwrap();
    assert_eq!(renewed, vec![kept_lease.clone()]);
    let_expire().await;
    take_group(store, &taken, "b", 60_000).await;
    let renewed = store.renew_group_leases("a", &held, 60_000).await.unwrap();
    assert_eq!(renewed, vec![kept_lease], "only the live one, at its epoch");
    assert_eq!(
        store
            .acquire_group_lease(&lapsed, "b", 60_000)
            .await
            .unwrap()
            .map(|l| l.epoch),
        Some(2)
    );
    assert!(
        store
            .renew_group_leases("b", &held[..1], 60_000)
            .await
            .unwrap()
            .is_empty(),
        "not b's"
    );
}

/// Offset commits with a fence are stored only while its lease is held, unexpired; a stale
/// coordinator's commit stores nothing, not even part of a batch.
pub async fn fenced_offset_commits(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 2).await;
    let name = topic.name.as_str();
    let group = unique("group");
    let old = take_group(store, &group, "a", SHORT_TTL_MS).await;
    store
        .commit_offsets(&group, Some(&old.fence()), &[offset(name, 0, 5, None)])
        .await
        .unwrap();
    let_expire().await;
    assert_group_fenced(
        store
            .commit_offsets(&group, Some(&old.fence()), &[offset(name, 0, 7, None)])
            .await,
        "expired lease",
    );
    let new = take_group(store, &group, "b", 60_000).await;
    store
        .commit_offsets(&group, Some(&new.fence()), &[offset(name, 0, 9, None)])
        .await
        .unwrap();
    let stale = [offset(name, 0, 6, None), offset(name, 1, 6, None)];
    assert_group_fenced(
        store
            .commit_offsets(&group, Some(&old.fence()), &stale)
            .await,
        "former coordinator",
    );
    let stored: Vec<i64> = store
        .fetch_offsets(&group, None)
        .await
        .unwrap()
        .iter()
        .map(|o| o.offset)
        .collect();
    assert_eq!(stored, vec![9], "the stale commit changed nothing");

    // Offset deletion and group deletion are fenced the same way.
    let gone = [(name.to_owned(), 0)];
    assert_group_fenced(
        store
            .delete_offsets(&group, Some(&old.fence()), &gone)
            .await,
        "former coordinator deleting offsets",
    );
    assert_group_fenced(
        store.delete_group(&group, Some(&old.fence())).await,
        "former coordinator deleting the group",
    );
    assert_eq!(store.fetch_offsets(&group, None).await.unwrap().len(), 1);
    store
        .delete_offsets(&group, Some(&new.fence()), &gone)
        .await
        .unwrap();
    assert!(store.fetch_offsets(&group, None).await.unwrap().is_empty());
    store
        .commit_offsets(&group, Some(&new.fence()), &[offset(name, 1, 3, None)])
        .await
        .unwrap();
    let deleted = store.delete_group(&group, Some(&new.fence())).await;
    assert!(deleted.unwrap(), "the holder deletes the group");
}

/// SASL credentials: upsert replaces, lookups are per (user, mechanism), delete reports.
pub async fn credentials(store: &dyn MetadataStore) {
    let credential = |user: &str, mechanism: &str, key: u8| UserCredential {
        user: user.into(),
        mechanism: mechanism.into(),
        salt: vec![key; 16],
        iterations: 4096,
        stored_key: vec![key, 0, 255],
        server_key: vec![key; 32],
    };
    let alice = credential("conf-alice", "SCRAM-SHA-256", 1);
    store.upsert_credential(&alice).await.unwrap();
    store
        .upsert_credential(&credential("conf-alice", "SCRAM-SHA-512", 2))
        .await
        .unwrap();
    let get = |mechanism| store.get_credential("conf-alice", mechanism);
    assert_eq!(get("SCRAM-SHA-256").await.unwrap(), Some(alice));
    let replaced = credential("conf-alice", "SCRAM-SHA-256", 3);
    store.upsert_credential(&replaced).await.unwrap();
    assert_eq!(get("SCRAM-SHA-256").await.unwrap(), Some(replaced));
    assert_eq!(get("PLAIN").await.unwrap(), None);
    let listed = store.list_credentials().await.unwrap();
    let mine: Vec<_> = listed
        .iter()
        .filter(|c| c.user == "conf-alice")
        .map(|c| c.mechanism.as_str())
        .collect();
    assert_eq!(mine, ["SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert!(store
        .delete_credential("conf-alice", "SCRAM-SHA-256")
        .await
        .unwrap());
    assert!(!store
        .delete_credential("conf-alice", "SCRAM-SHA-256")
        .await
        .unwrap());
    assert_eq!(get("SCRAM-SHA-256").await.unwrap(), None);
    assert!(get("SCRAM-SHA-512").await.unwrap().is_some());
}

/// ACLs: creation is idempotent, filters select (MATCH included), deletion returns what it
/// removed exactly once.
pub async fn acls(store: &dyn MetadataStore) {
    let principal = format!("User:{}", unique("conf-acl"));
    let topic = unique("acl-topic");
    let binding = |name: &str, pattern, operation, permission| AclBinding {
        resource_type: AclResourceType::Topic,
        resource_name: name.to_string(),
        pattern_type: pattern,
        principal: principal.clone(),
        host: "*".into(),
        operation,
        permission,
    };
    use AclOperation::{Read, Write};
    use AclPatternType::{Literal, Prefixed};
    use AclPermission::{Allow, Deny};
    let read = binding(&topic, Literal, Read, Allow);
    let write = binding(&topic, Literal, Write, Allow);
    let prefix = binding("acl-", Prefixed, Read, Allow);
    let deny = binding(&topic, Literal, Write, Deny);
    let other_topic = binding("elsewhere", Literal, Read, Allow);
    let all = [&read, &write, &prefix, &deny, &other_topic].map(Clone::clone);
    store.create_acls(&all).await.unwrap();
    store.create_acls(&all[..2]).await.unwrap();
    let mine = AclBindingFilter {
        principal: Some(principal.clone()),
        ..AclBindingFilter::default()
    };
    let mut expected = all.to_vec();
    expected.sort();
    assert_eq!(
        store.list_acls(&mine).await.unwrap(),
        expected,
        "no duplicates"
    );

    let matching = AclBindingFilter {
        resource_type: Some(AclResourceType::Topic),
        resource_name: Some(topic.clone()),
        pattern: AclPatternFilter::Match,
        ..mine.clone()
    };
    let mut applying = vec![read.clone(), write.clone(), prefix.clone(), deny.clone()];
    applying.sort();
    assert_eq!(store.list_acls(&matching).await.unwrap(), applying);

    let denies = AclBindingFilter {
        permission: Some(Deny),
        ..mine.clone()
    };
    assert_eq!(store.delete_acls(&denies).await.unwrap(), vec![deny]);
    assert!(store.delete_acls(&denies).await.unwrap().is_empty());
    assert_eq!(store.delete_acls(&mine).await.unwrap().len(), 4);
    assert!(store.list_acls(&mine).await.unwrap().is_empty());
}

/// Slices of one shared object: one segment per `(partition, base, last)`, back to back.
fn shared_slices(topic: &str, runs: &[(u32, i64, i64)]) -> Vec<SegmentInfo> {
    let key = format!("wal/{}.obj", Uuid::new_v4().simple());
    let mut slices: Vec<SegmentInfo> = runs
        .iter()
        .map(|&(partition, base, last)| segment(topic, partition, base, last))
        .collect();
    let total: u64 = slices.iter().map(|s| s.size_bytes).sum();
    let mut at = 0;
    for slice in &mut slices {
        slice.object_key = key.clone();
        slice.object_offset = at;
        slice.object_size = total;
        at += slice.size_bytes;
    }
    slices
}

fn commits(slices: &[SegmentInfo], fence: Option<&LeaseFence>) -> Vec<SegmentCommit> {
    slices
        .iter()
        .map(|segment| SegmentCommit {
            segment: segment.clone(),
            producers: Vec::new(),
            fence: fence.cloned(),
            markers: Vec::new(),
        })
        .collect()
}

/// Group commit: one call records the slices of one shared object for many partitions; each is
/// decided alone (a conflict or a lost lease refuses only its own); a retry of the same commits
/// is recognised as done, never recorded twice; slices keep their byte range.
pub async fn group_commit(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 4).await;
    let name = topic.name.as_str();
    commit_run(store, name, 2, 1, 5).await;
    let slices = shared_slices(name, &[(0, 0, 9), (1, 0, 4), (2, 0, 2), (3, 0, 7)]);
    let mut batch = commits(&slices, None);
    let lease = store
        .acquire_lease(name, 3, "agent-a", 60_000)
        .await
        .unwrap()
        .unwrap();
    batch[3].fence = Some(LeaseFence {
        agent_id: "agent-b".into(),
        epoch: lease.epoch,
    });
    let outcomes = store.commit_segments(&batch).await.unwrap();
    assert_eq!(
        outcomes,
        vec![
            CommitOutcome::Committed,
            CommitOutcome::Committed,
            CommitOutcome::OffsetConflict { high_watermark: 5 },
            CommitOutcome::Fenced,
        ]
    );
    assert_eq!(high_watermark(store, name, 0).await, 10);
    assert_eq!(high_watermark(store, name, 1).await, 5);
    assert_eq!(high_watermark(store, name, 2).await, 5);
    assert_eq!(high_watermark(store, name, 3).await, 0);
    // The answer was "lost": the same commits again change nothing and report the same.
    let again = store.commit_segments(&batch[..2]).await.unwrap();
    assert_eq!(again, vec![CommitOutcome::Committed; 2]);
    assert_eq!(
        store.list_segments(name, 0, 0).await.unwrap(),
        vec![slices[0].clone()]
    );
    // A different segment at an offset already taken is a conflict, not a confirmation.
    let other = shared_slices(name, &[(0, 0, 9)]);
    let outcome = store.commit_segments(&commits(&other, None)).await.unwrap();
    assert_eq!(
        outcome,
        vec![CommitOutcome::OffsetConflict { high_watermark: 10 }]
    );
    assert!(store.commit_segments(&[]).await.unwrap().is_empty());
    group_commit_follows_order(store, name).await;
}

/// A group with two commits of one partition records both, the second following the first;
/// producer snapshots of several partitions are stored by the one group, a producer's later
/// snapshot replacing its earlier one; an empty producer state round-trips.
async fn group_commit_follows_order(store: &dyn MetadataStore, name: &str) {
    let slices = shared_slices(name, &[(1, 5, 6), (1, 7, 9), (2, 5, 5)]);
    let snapshot = |producer_id, last_offset, state: &[u8]| ProducerSnapshot {
        producer_id,
        last_offset,
        // Far ahead: expiry checks elsewhere in the suite count what they delete.
        updated_at_ms: 4_000_000_000_000 + last_offset,
        state: state.to_vec(),
    };
    let mut batch = commits(&slices, None);
    batch[0].producers = vec![snapshot(7, 6, &[1, 2, 255]), snapshot(8, 5, &[])];
    batch[1].producers = vec![snapshot(7, 9, &[0, 3])];
    batch[2].producers = vec![snapshot(7, 5, &[4])];
    let outcomes = store.commit_segments(&batch).await.unwrap();
    assert_eq!(outcomes, vec![CommitOutcome::Committed; 3]);
    assert_eq!(high_watermark(store, name, 1).await, 10);
    assert_eq!(high_watermark(store, name, 2).await, 6);
    let held = |p| async move {
        store
            .list_producer_snapshots(name, p)
            .await
            .unwrap()
            .snapshots
    };
    assert_eq!(
        held(1).await,
        vec![snapshot(7, 9, &[0, 3]), snapshot(8, 5, &[])]
    );
    assert_eq!(held(2).await, vec![snapshot(7, 5, &[4])]);
    // Given out of offset order, one partition's commits are still applied in offset order.
    let slices = shared_slices(name, &[(1, 12, 12), (1, 10, 11)]);
    let outcomes = store
        .commit_segments(&commits(&slices, None))
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![CommitOutcome::Committed, CommitOutcome::Committed]
    );
    assert_eq!(high_watermark(store, name, 1).await, 13);
}

/// Scheduled deletions: due only after their time, never while a segment references the
/// object (a shared object outlives its last reference only), kept until forgotten; truncation,
/// replacement and topic deletion schedule the objects they unreference.
pub async fn object_deletions(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 2).await;
    let name = topic.name.as_str();
    let slices = shared_slices(name, &[(0, 0, 9), (1, 0, 9)]);
    store
        .commit_segments(&commits(&slices, None))
        .await
        .unwrap();
    let shared = slices[0].object_key.clone();
    let lone = unique("orphan");
    let now = now_ms();
    store
        .schedule_object_deletions(&[lone.clone(), lone.clone()], now + 60_000)
        .await
        .unwrap();
    let due = |at: i64| async move { store.due_object_deletions(at, 1_000).await.unwrap() };
    assert!(!due(now).await.contains(&lone));
    assert!(due(now + 60_000).await.contains(&lone));
    // Truncating partition 0 drops one reference; partition 1 still holds the object.
    store.truncate_before(name, 0, 10, now).await.unwrap();
    assert!(!due(now + 1).await.contains(&shared));
    store.truncate_before(name, 1, 10, now + 5).await.unwrap();
    assert!(due(now + 1).await.contains(&shared));
    store
        .forget_object_deletions(&[shared.clone(), lone.clone()])
        .await
        .unwrap();
    let left = due(now + 120_000).await;
    assert!(!left.contains(&shared) && !left.contains(&lone));
    // Topic deletion schedules every object the topic referenced.
    commit_run(store, name, 0, 1, 5).await;
    let key = store.list_segments(name, 0, 0).await.unwrap()[0]
        .object_key
        .clone();
    store.delete_topic(name, now + 10).await.unwrap();
    assert!(!due(now).await.contains(&key));
    assert!(due(now + 10).await.contains(&key));
    store.forget_object_deletions(&[key]).await.unwrap();
    // Thousands at once (a consolidation swap's worth), duplicates among them.
    let many: Vec<String> = (0..3_000).map(|i| unique(&format!("many-{i}"))).collect();
    let twice = [&many[..], &many[..10]].concat();
    store.schedule_object_deletions(&twice, now).await.unwrap();
    let due_many = store.due_object_deletions(now, 10_000).await.unwrap();
    assert_eq!(due_many.iter().filter(|k| many.contains(k)).count(), 3_000);
    store.forget_object_deletions(&twice).await.unwrap();
    let left = store.due_object_deletions(now, 10_000).await.unwrap();
    assert!(!left.iter().any(|k| many.contains(k)));
}

/// Runs every check against `store`.
pub async fn run_all(store: Arc<dyn MetadataStore>) {
    let store = store.as_ref();
    topics_crud(store).await;
    topic_errors(store).await;
    concurrent_config_alterations(store).await;
    partitions_and_high_watermark(store).await;
    commit_segment_happy_path(store).await;
    commit_segment_offset_conflict(store).await;
    commit_segment_fencing(store).await;
    group_commit(store).await;
    object_deletions(store).await;
    producer_snapshots(store).await;
    concurrent_commits_one_wins(store).await;
    list_segments_ranges(store).await;
    segment_pages_and_totals(store).await;
    truncate_before(store).await;
    replace_segments(store).await;
    compact_segments(store).await;
    delete_topic_returns_segments(store).await;
    producer_ids_unique(store).await;
    consumer_offsets(store).await;
    consumer_groups(store).await;
    agents(store).await;
    leases(store).await;
    concurrent_lease_acquisition(store).await;
    batch_lease_acquisition(store).await;
    batch_lease_renewal(store).await;
    concurrent_batch_lease_acquisition(store).await;
    lease_release(store).await;
    group_leases(store).await;
    group_lease_renewal(store).await;
    group_member_snapshots(store).await;
    fenced_offset_commits(store).await;
    credentials(store).await;
    acls(store).await;
    transactions(store).await;
    transaction_decisions(store).await;
    transaction_offsets(store).await;
}

/// Alterations of one topic's settings running at once each apply their change to the
/// settings the others left: none is lost. A refused change stores nothing and says why.
pub async fn concurrent_config_alterations(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 1).await;
    let alterations = (0..8).map(|i| {
        let name = &topic.name;
        async move {
            let change = move |c: &TopicConfig| {
                let mut next = c.clone();
                next.extra.insert(format!("key.{i}"), i.to_string());
                Ok(next)
            };
            store.alter_topic_config(name, &change).await.unwrap()
        }
    });
    join_all(alterations).await;
    let stored = store.get_topic(&topic.name).await.unwrap().unwrap().config;
    let keys: Vec<&String> = stored.extra.keys().collect();
    assert_eq!(keys.len(), 8, "every alteration kept: {keys:?}");

    let refused = store
        .alter_topic_config(
            &topic.name,
            &|_| Err("retention.ms must be a number".into()),
        )
        .await;
    assert!(
        matches!(&refused, Err(MetadataError::Invalid(m)) if m.contains("retention.ms")),
        "got {refused:?}"
    );
    let after = store.get_topic(&topic.name).await.unwrap().unwrap().config;
    assert_eq!(after, stored, "a refused change stores nothing");
}

/// `agent`'s claim on `id` for a minute.
async fn claim(store: &dyn MetadataStore, id: &str, agent: &str) -> Option<Transaction> {
    store.claim_transaction(id, agent, 60_000).await.unwrap()
}

/// `txn` moved on to `state` by its holder, as a coordinator would.
fn txn_change(txn: &Transaction, state: TxnState, decision: Option<bool>) -> TxnUpdate {
    TxnUpdate {
        next: Transaction {
            state,
            ..txn.clone()
        },
        expected_version: txn.version,
        lease_ttl_ms: 60_000,
        decision,
    }
}

/// Transaction coordinator leases and compare-and-set updates.
pub async fn transactions(store: &dyn MetadataStore) {
    let id = unique("txn");
    let (a, b) = (unique("agent"), unique("agent"));
    let txn = claim(store, &id, &a).await.expect("free");
    assert_eq!(
        (txn.state, txn.producer_id, txn.coordinator_epoch),
        (TxnState::Empty, -1, 1)
    );
    assert!(txn.partitions.is_empty() && txn.groups.is_empty());
    assert!(claim(store, &id, &b).await.is_none(), "held by a");
    let again = claim(store, &id, &a).await.unwrap();
    assert_eq!(again.coordinator_epoch, 1, "renewal keeps the epoch");

    let mut ongoing = txn_change(&txn, TxnState::Ongoing, None);
    ongoing.next.producer_id = 42_000_000 + i64::from(rand_u16());
    ongoing.next.producer_epoch = 3;
    ongoing.next.partitions = vec![("t".into(), 1), ("u".into(), 0)];
    ongoing.next.groups = vec!["g".into()];
    store.update_transaction(&ongoing).await.unwrap();
    let stored = store.get_transaction(&id).await.unwrap().unwrap();
    assert_eq!(stored.version, txn.version + 1);
    assert_eq!(
        Transaction {
            version: 0,
            updated_at_ms: 0,
            ..stored.clone()
        },
        Transaction {
            version: 0,
            updated_at_ms: 0,
            ..ongoing.next.clone()
        }
    );
    let by_producer = store
        .transaction_of_producer(stored.producer_id)
        .await
        .unwrap();
    assert_eq!(by_producer.as_ref(), Some(&stored));
    assert!(store.list_transactions().await.unwrap().contains(&stored));
    // A stale version is refused and changes nothing.
    let stale = store.update_transaction(&ongoing).await.unwrap_err();
    assert!(
        matches!(stale, MetadataError::TxnConflict { .. }),
        "{stale:?}"
    );
    // A lease lost to expiry fences its holder; the next holder has a higher epoch.
    let short = store.claim_transaction(&id, &a, 1).await.unwrap().unwrap();
    let_expire().await;
    let fenced = store
        .update_transaction(&txn_change(&short, TxnState::Ongoing, None))
        .await
        .unwrap_err();
    assert!(
        matches!(fenced, MetadataError::TxnConflict { .. }),
        "{fenced:?}"
    );
    let taken = claim(store, &id, &b).await.unwrap();
    assert_eq!(
        (taken.coordinator.as_str(), taken.coordinator_epoch),
        (b.as_str(), 2)
    );
    assert_eq!(
        taken.state,
        TxnState::Ongoing,
        "the state survives a new coordinator"
    );
    assert!(store
        .get_transaction(&unique("txn"))
        .await
        .unwrap()
        .is_none());
}

fn rand_u16() -> u16 {
    Uuid::new_v4().as_bytes()[0] as u16 * 256 + Uuid::new_v4().as_bytes()[1] as u16
}

/// Where `txn` stands now.
async fn state_of(store: &dyn MetadataStore, txn: &Transaction) -> TxnState {
    let stored = store.get_transaction(&txn.transactional_id).await.unwrap();
    stored.expect("claimed").state
}

/// Decides `txn` (its holder's update to Prepare with the decision).
async fn decide(store: &dyn MetadataStore, txn: &Transaction, commit: bool) {
    let state = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    let update = txn_change(txn, state, Some(commit));
    store.update_transaction(&update).await.unwrap();
}

/// An open transaction over two partitions: the producer id and coordinator fields a test
/// transaction carries, Ongoing.
async fn open_txn(store: &dyn MetadataStore, topic: &str, groups: Vec<String>) -> Transaction {
    let id = unique("txn");
    let txn = claim(store, &id, "agent").await.unwrap();
    let mut update = txn_change(&txn, TxnState::Ongoing, None);
    update.next.producer_id = store.allocate_producer_id().await.unwrap();
    update.next.producer_epoch = 0;
    update.next.partitions = vec![(topic.to_owned(), 0), (topic.to_owned(), 1)];
    update.next.groups = groups;
    store.update_transaction(&update).await.unwrap();
    store.get_transaction(&id).await.unwrap().unwrap()
}

/// A decision records a marker per partition; the segment commits that store them discharge
/// them, record aborted ranges, and the last completes the transaction.
pub async fn transaction_decisions(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 2).await.name;
    let txn = open_txn(store, &topic, Vec::new()).await;
    decide(store, &txn, false).await;
    let markers: Vec<_> = store
        .list_txn_markers()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.producer_id == txn.producer_id)
        .collect();
    assert_eq!(markers.len(), 2);
    assert!(markers
        .iter()
        .all(|m| !m.commit && m.coordinator_epoch == 1));
    for (i, marker) in markers.into_iter().enumerate() {
        let commit = SegmentCommit {
            segment: segment(&topic, marker.partition, 0, 4),
            producers: Vec::new(),
            fence: None,
            markers: vec![WrittenMarker {
                marker,
                offset: 4,
                first_offset: Some(1),
            }],
        };
        let outcome = store.commit_segments(&[commit]).await.unwrap();
        assert_eq!(outcome, vec![CommitOutcome::Committed]);
        let state = state_of(store, &txn).await;
        let expected = if i == 0 {
            TxnState::PrepareAbort
        } else {
            TxnState::CompleteAbort
        };
        assert_eq!(state, expected, "complete once the last marker is stored");
    }
    let aborted = store.list_aborted_txns(&topic, 1, 0).await.unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (
            aborted[0].producer_id,
            aborted[0].first_offset,
            aborted[0].last_offset
        ),
        (txn.producer_id, 1, 4)
    );
    assert!(store
        .list_aborted_txns(&topic, 1, 5)
        .await
        .unwrap()
        .is_empty());
    // A deleted topic's pending markers are forgotten and free their transaction.
    let doomed = fresh_topic(store, 2).await.name;
    let txn = open_txn(store, &doomed, Vec::new()).await;
    decide(store, &txn, true).await;
    store.delete_topic(&doomed, 0).await.unwrap();
    let state = state_of(store, &txn).await;
    assert_eq!(state, TxnState::CompleteCommit);
    assert!(store
        .list_txn_markers()
        .await
        .unwrap()
        .iter()
        .all(|m| m.topic != doomed));
}

/// Offsets committed in a transaction are visible only once it commits.
pub async fn transaction_offsets(store: &dyn MetadataStore) {
    let topic = fresh_topic(store, 2).await.name;
    let group = unique("group");
    let offset = |o| CommittedOffset {
        topic: topic.clone(),
        partition: 0,
        offset: o,
        leader_epoch: -1,
        metadata: None,
        committed_at_ms: 1,
    };
    for commit in [false, true] {
        let txn = open_txn(store, &topic, vec![group.clone()]).await;
        let wrong_epoch = store
            .commit_txn_offsets(txn.producer_id, 1, &group, &[offset(5)])
            .await;
        assert!(matches!(
            wrong_epoch,
            Err(MetadataError::TxnConflict { .. })
        ));
        let other_group = store
            .commit_txn_offsets(txn.producer_id, 0, &unique("group"), &[offset(5)])
            .await;
        assert!(matches!(
            other_group,
            Err(MetadataError::TxnConflict { .. })
        ));
        let value = if commit { 7 } else { 9 };
        store
            .commit_txn_offsets(txn.producer_id, 0, &group, &[offset(value)])
            .await
            .unwrap();
        assert!(store.fetch_offsets(&group, None).await.unwrap().is_empty() || commit);
        let pending = store.pending_txn_offsets(&group).await.unwrap();
        assert_eq!(
            pending,
            [(topic.clone(), 0)],
            "pending while the transaction is open"
        );
        decide(store, &txn, commit).await;
        assert!(store.pending_txn_offsets(&group).await.unwrap().is_empty());
        let committed = store.fetch_offsets(&group, None).await.unwrap();
        let offsets: Vec<i64> = committed.iter().map(|o| o.offset).collect();
        assert_eq!(
            offsets,
            if commit { vec![7] } else { vec![] },
            "commit {commit}"
        );
    }
}
