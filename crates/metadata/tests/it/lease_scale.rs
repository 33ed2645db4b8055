//! What one agent's controller round costs in the metadata store at many partitions: taking
//! them over in batches, then the steady-state round (read agents, topics and leases, renew every
//! lease in one statement), against renewing lease by lease as agents once did. A measurement,
//! not a benchmark with a pass mark: it is `#[ignore]`d, prints its figures (BENCHMARKS.md) and
//! asserts only what must hold at any speed (every lease taken and renewed at its epoch).
//!
//! `cargo test -p streamhouse-metadata --release --test it lease_round -- --ignored --nocapture`
//! (`STREAMHOUSE_LEASE_PARTITIONS` sets the partition count, default 10,000).

use std::time::{Duration, Instant};

use streamhouse_metadata::{now_ms, HeldLease, MetadataStore, NewTopic, TopicConfig};

/// Leases per acquisition transaction, as the agent's controller takes them.
const ACQUIRE_BATCH: usize = 256;
/// Steady-state rounds timed.
const ROUNDS: usize = 5;
const TTL_MS: i64 = 10_000;

fn partitions() -> u32 {
    std::env::var("STREAMHOUSE_LEASE_PARTITIONS")
        .ok()
        .map(|n| n.parse().expect("STREAMHOUSE_LEASE_PARTITIONS is a number"))
        .unwrap_or(10_000)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Takes over, renews and re-renews one lease per partition of a new topic on `store`; prints
/// the timings, labelled with `backend`.
pub(crate) async fn lease_round(store: &dyn MetadataStore, backend: &str) {
    let count = partitions();
    let topic = format!("scale-{}", now_ms());
    store
        .create_topic(NewTopic {
            name: topic.clone(),
            partitions: count,
            config: TopicConfig::default(),
        })
        .await
        .unwrap();
    let keys: Vec<(String, u32)> = (0..count).map(|p| (topic.clone(), p)).collect();

    let started = Instant::now();
    let mut held = Vec::new();
    for batch in keys.chunks(ACQUIRE_BATCH) {
        let leases = store.acquire_leases("a", batch, TTL_MS).await;
        held.extend(leases.unwrap());
    }
    let takeover = started.elapsed();
    assert_eq!(held.len(), count as usize, "every free partition is taken");
    assert!(held.iter().all(|l| l.epoch == 1));
    let held: Vec<HeldLease> = held
        .into_iter()
        .map(|l| HeldLease {
            topic: l.topic,
            partition: l.partition,
            epoch: l.epoch,
        })
        .collect();

    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        // What a controller round reads before renewing: live agents, topics, all leases.
        store.list_agents(0).await.unwrap();
        store.list_topics().await.unwrap();
        store.list_leases().await.unwrap();
        let renewed = store.renew_leases("a", &held, TTL_MS).await.unwrap();
        rounds.push(started.elapsed());
        assert_eq!(renewed.len(), held.len(), "every lease is renewed");
        assert!(renewed.iter().all(|l| l.epoch == 1), "at its epoch");
    }
    rounds.sort();

    // The former renewal: one transaction per partition. When that takes longer than the TTL,
    // the last leases lapse before their turn and are re-taken at a new epoch, as the agent's
    // did at 9,999 partitions.
    let started = Instant::now();
    let mut lapsed = 0;
    for (topic, partition) in &keys {
        let lease = store.acquire_lease(topic, *partition, "a", TTL_MS);
        let epoch = lease.await.unwrap().expect("own lease").epoch;
        lapsed += usize::from(epoch != 1);
    }
    let one_by_one = started.elapsed();

    println!(
        "{backend}, {count} partitions on one agent: takeover in batches of {ACQUIRE_BATCH} {}; \
         round (list agents, topics, leases + renew all in one statement) median {} max {} \
         of {ROUNDS}; renewing one lease per transaction {} ({lapsed} lapsed meanwhile)",
        ms(takeover),
        ms(rounds[ROUNDS / 2]),
        ms(rounds[ROUNDS - 1]),
        ms(one_by_one),
    );
    store.delete_topic(&topic, 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (BENCHMARKS.md): run with --ignored --nocapture"]
async fn lease_round_on_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = streamhouse_metadata::SqliteMetadataStore::open(&path)
        .await
        .unwrap();
    lease_round(&store, "SQLite (file, synchronous=FULL)").await;
}
