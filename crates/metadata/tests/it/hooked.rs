//! Hooks around a store's calls: every call goes through the hook, and a deadline abandons a
//! call the store does not answer.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use streamhouse_metadata::prelude::*;
use streamhouse_metadata::{
    conformance, CacheConfig, CachedMetadataStore, CallDeadline, CallHook, HookedMetadataStore,
    MetadataError, MetadataStore, SqliteMetadataStore,
};

/// A store that answers `list_topics` only after an hour (a paused database).
struct Stalls;

#[async_trait]
impl CallHook for Stalls {
    async fn after(&self, method: &'static str) -> streamhouse_metadata::Result<()> {
        if method == "list_topics" {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
        }
        Ok(())
    }
}

// Real time (this crate's tests run without tokio's test clock): 200 ms against an hour.
#[tokio::test]
async fn a_deadline_abandons_a_stalled_call() {
    let sqlite: Arc<dyn MetadataStore> = Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let stalled: Arc<dyn MetadataStore> = Arc::new(HookedMetadataStore::new(sqlite, Stalls));
    let bounded = HookedMetadataStore::new(stalled, CallDeadline(Duration::from_millis(200)));
    let started = tokio::time::Instant::now();
    match bounded.list_topics().await {
        Err(MetadataError::Timeout { method, after }) => {
            assert_eq!((method, after), ("list_topics", Duration::from_millis(200)));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(
        bounded.list_groups().await.unwrap().is_empty(),
        "other calls go through"
    );
}

/// Records the name of every call it sees.
#[derive(Default)]
struct Records(Mutex<BTreeSet<&'static str>>);

#[async_trait]
impl CallHook for Records {
    async fn before(&self, method: &'static str) -> streamhouse_metadata::Result<()> {
        self.0.lock().unwrap().insert(method);
        Ok(())
    }
}

/// The generated forwarding: a hooked store (over a cached one) behaves as the store it wraps,
/// and calls of every narrow trait pass through the hook.
#[tokio::test]
async fn a_hooked_store_forwards_every_call_through_its_hook() {
    let sqlite: Arc<dyn MetadataStore> = Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let cached = Arc::new(CachedMetadataStore::new(sqlite, CacheConfig::default()));
    let hooked = Arc::new(HookedMetadataStore::new(cached, Records::default()));
    conformance::run_all(hooked.clone()).await;
    let seen = hooked.hook().0.lock().unwrap().clone();
    for method in [
        "create_topic",
        "get_partition",
        "commit_segments",
        "acquire_lease",
        "acquire_group_lease",
        "claim_transaction",
        "upsert_credential",
        "create_acls",
    ] {
        assert!(
            seen.contains(method),
            "{method} not seen by the hook: {seen:?}"
        );
    }
}
