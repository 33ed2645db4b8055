//! Object stores built from configuration.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use streamhouse_storage::{build_object_store, ObjectStoreConfig};

async fn round_trip(store: Arc<dyn ObjectStore>) {
    let key = Path::from("topics/1234/0/00000000000000000000-0.seg");
    let data: Bytes = (0..=255u8).cycle().take(10_000).collect::<Vec<_>>().into();
    store
        .put(&key, PutPayload::from(data.clone()))
        .await
        .unwrap();

    let whole = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(whole, data);
    assert_eq!(
        store.get_range(&key, 1000..1300).await.unwrap(),
        data.slice(1000..1300)
    );
    assert_eq!(store.head(&key).await.unwrap().size, 10_000);

    let multipart_key = Path::from("topics/1234/0/00000000000000000010-0.seg");
    let mut upload = store.put_multipart(&multipart_key).await.unwrap();
    upload.put_part(data.slice(..6000).into()).await.unwrap();
    upload.put_part(data.slice(6000..).into()).await.unwrap();
    upload.complete().await.unwrap();
    let read = store.get_range(&multipart_key, 5990..6010).await.unwrap();
    assert_eq!(read, data.slice(5990..6010));
}

#[tokio::test]
async fn local_store_round_trips_and_creates_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nested/objects");
    let store = build_object_store(&ObjectStoreConfig::Local { root: root.clone() }).unwrap();
    round_trip(store).await;
    assert!(root
        .join("topics/1234/0/00000000000000000000-0.seg")
        .is_file());
}

#[tokio::test]
async fn local_store_fsyncs_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = build_object_store(&ObjectStoreConfig::Local {
        root: dir.path().to_owned(),
    })
    .unwrap();
    // LocalFileSystem's durability switch is only visible through its Debug output; without it
    // a put is acknowledged before the file or its directory entry reach the disk.
    assert!(
        format!("{store:?}").contains("fsync: true"),
        "local store built without fsync: {store:?}"
    );
}

#[tokio::test]
async fn memory_store_round_trips() {
    round_trip(build_object_store(&ObjectStoreConfig::Memory).unwrap()).await;
}

#[test]
fn configs_deserialize_with_defaults() {
    let local: ObjectStoreConfig =
        serde_json::from_str(r#"{ "type": "local", "root": "/var/lib/sh" }"#).unwrap();
    assert_eq!(
        local,
        ObjectStoreConfig::Local {
            root: "/var/lib/sh".into()
        }
    );
    let s3: ObjectStoreConfig = serde_json::from_str(
        r#"{ "type": "s3", "bucket": "events", "endpoint": "http://localhost:9000",
             "allow_http": true }"#,
    )
    .unwrap();
    assert_eq!(
        s3,
        ObjectStoreConfig::S3 {
            bucket: "events".into(),
            endpoint: Some("http://localhost:9000".into()),
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: true,
            virtual_hosted_style: false,
        }
    );
    assert!(serde_json::from_str::<ObjectStoreConfig>(r#"{ "type": "s3" }"#).is_err());
    assert!(matches!(
        ObjectStoreConfig::default(),
        ObjectStoreConfig::Local { .. }
    ));
}

#[test]
fn s3_store_builds_from_explicit_settings() {
    let config = ObjectStoreConfig::S3 {
        bucket: "events".into(),
        endpoint: Some("http://localhost:9000".into()),
        region: Some("us-east-1".into()),
        access_key_id: Some("minio".into()),
        secret_access_key: Some("minio123".into()),
        allow_http: true,
        virtual_hosted_style: false,
    };
    let store = build_object_store(&config).unwrap();
    assert!(store.to_string().contains("events"), "{store}");
}

/// `object_store`'s own conformance suite (the one its backends run upon themselves), run on a
/// store as the agent builds it from configuration: the suite's create-only, overwrite,
/// conditional, ranged, listing, copy and rename checks then hold for the store the agent uses,
/// its settings (fsync) included. `supports_update`: the store takes conditional
/// overwrites (`PutMode::Update`; memory and S3 do, the local filesystem does not).
async fn conformance(config: ObjectStoreConfig, supports_update: bool) {
    use object_store::integration::*;
    let store = build_object_store(&config).unwrap();
    let store = store.as_ref();
    put_get_delete_list(store).await;
    list_with_offset_exclusivity(store).await;
    get_opts(store).await;
    list_uses_directories_correctly(store).await;
    list_with_delimiter(store).await;
    rename_and_copy(store).await;
    copy_if_not_exists(store).await;
    copy_rename_nonexistent_object(store).await;
    stream_get(store).await;
    put_opts(store, supports_update).await;
}

#[tokio::test]
async fn local_store_passes_object_store_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    conformance(ObjectStoreConfig::Local { root }, false).await;
}

#[tokio::test]
async fn memory_store_passes_object_store_conformance_suite() {
    conformance(ObjectStoreConfig::Memory, true).await;
}
