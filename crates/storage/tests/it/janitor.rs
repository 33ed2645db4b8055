//! The orphan janitor: unreferenced objects go, committed and young ones stay.

use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use streamhouse_metadata::LeaseFence;
use streamhouse_storage::{JanitorConfig, OrphanJanitor, SweepReport};

use crate::support::{object, overwrite, plain, test_config, Env};

fn janitor(env: &Env, min_age: Duration, confirm_delay: Duration) -> OrphanJanitor {
    OrphanJanitor::new(
        env.store.clone(),
        env.metadata(),
        JanitorConfig {
            min_age,
            confirm_delay,
            local_root: None,
        },
    )
}

async fn keys(store: &dyn ObjectStore) -> Vec<String> {
    use futures::TryStreamExt;
    let mut keys: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// A committed segment plus two orphans: one left by a writer whose commit was fenced, one
/// raw put. Returns (committed key, fenced orphan key, raw orphan key).
async fn committed_and_orphans(env: &Env) -> (String, String, String) {
    let writer = env.writer(test_config(), None).await.unwrap();
    let ok = writer.append(vec![plain(3)]).unwrap();
    let committed = writer.flush().await.unwrap().unwrap().object_key;
    ok.durable.wait().await.unwrap();

    // No lease is held at this epoch, so the upload happens and the commit is refused.
    let ghost = LeaseFence {
        agent_id: "ghost".into(),
        epoch: 7,
    };
    let zombie = env.writer(test_config(), Some(ghost)).await.unwrap();
    let lost = zombie.append(vec![plain(2)]).unwrap();
    assert!(zombie.flush().await.unwrap_err().is_fenced());
    assert!(lost.durable.wait().await.is_err());
    let fenced = keys(&*env.store)
        .await
        .into_iter()
        .find(|k| k.starts_with("wal/") && *k != committed)
        .expect("the fenced writer's upload");

    let raw = format!("topics/{}/0/stray.seg", env.topic.id);
    overwrite(&*env.store, &raw, Bytes::from_static(b"half an upload")).await;
    (committed, fenced, raw)
}

#[tokio::test]
async fn orphans_are_deleted_and_committed_objects_kept() {
    let env = Env::in_memory().await;
    let (committed, fenced, raw) = committed_and_orphans(&env).await;
    // Outside the segment prefix: not the janitor's business.
    overwrite(&*env.store, "elsewhere/file", Bytes::from_static(b"x")).await;

    let report = janitor(&env, Duration::ZERO, Duration::ZERO)
        .sweep()
        .await
        .unwrap();
    assert_eq!(
        report,
        SweepReport {
            scanned: 3,
            orphans: 2,
            deleted: 2,
            staging_removed: 0,
        }
    );
    assert_eq!(
        keys(&*env.store).await,
        vec!["elsewhere/file".to_string(), committed.clone()]
    );
    for orphan in [&fenced, &raw] {
        assert!(!keys(&*env.store).await.contains(orphan));
    }
    // The committed segment is intact and still readable.
    assert!(!object(&*env.store, &committed).await.is_empty());
    let read = env.cold_reader().read(0, 1 << 20).await.unwrap();
    assert_eq!(read.next_offset, 3);
}

#[tokio::test]
async fn young_objects_are_never_touched() {
    let env = Env::in_memory().await;
    committed_and_orphans(&env).await;
    let before = keys(&*env.store).await;
    let report = janitor(&env, Duration::from_secs(600), Duration::ZERO)
        .sweep()
        .await
        .unwrap();
    assert_eq!((report.orphans, report.deleted), (0, 0));
    assert_eq!(keys(&*env.store).await, before);
}

#[tokio::test]
async fn an_orphan_is_deleted_only_once_confirmed_by_a_later_sweep() {
    let env = Env::in_memory().await;
    let (committed, _, _) = committed_and_orphans(&env).await;
    let janitor = janitor(&env, Duration::ZERO, Duration::from_millis(100));
    let first = janitor.sweep().await.unwrap();
    assert_eq!((first.orphans, first.deleted), (2, 0));
    // Real time, not paused: an orphan's age is its object's `last_modified` against the wall clock.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let second = janitor.sweep().await.unwrap();
    assert_eq!((second.orphans, second.deleted), (2, 2));
    assert_eq!(keys(&*env.store).await, vec![committed]);
    // A later sweep has nothing left to do.
    let third = janitor.sweep().await.unwrap();
    assert_eq!((third.orphans, third.deleted), (0, 0));
}
