//! Integration tests of the storage crate.

mod cache;
mod objects;
mod segment_index;

mod producer_state;
mod reader;
mod roundtrip;
mod transactions;
mod writer;

mod compaction;
mod consolidation;
mod faults;
mod janitor;
mod metadata_faults;
mod retention;

/// Shared fixtures for the writer, reader and round-trip tests (engineer B).
#[allow(dead_code)]
mod support {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    use streamhouse_metadata::prelude::*;
    use streamhouse_metadata::{
        LeaseFence, MetadataStore, NewTopic, SegmentInfo, SqliteMetadataStore, Topic, TopicConfig,
    };
    use streamhouse_segment::RecordBatch;
    use streamhouse_storage::testing::{FaultPlan, FaultyStore};
    use streamhouse_storage::{
        Budget, FlushContext, PartitionReader, PartitionStorage, PartitionWriter, SegmentCache,
        SegmentCacheConfig, SegmentIndex, SegmentIndexConfig, WriterConfig,
    };

    /// Topic used by every test; one partition.
    pub const TOPIC: &str = "orders";

    /// A metadata store with [`TOPIC`], an object store, and the writer-side index and cache.
    pub struct Env {
        pub metadata: Arc<SqliteMetadataStore>,
        pub store: Arc<dyn ObjectStore>,
        pub topic: Topic,
        pub index: Arc<SegmentIndex>,
        pub cache: Arc<SegmentCache>,
    }

    impl Env {
        pub async fn new(store: Arc<dyn ObjectStore>) -> Self {
            let metadata = Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
            let topic = metadata
                .create_topic(NewTopic {
                    name: TOPIC.into(),
                    partitions: 1,
                    config: TopicConfig::default(),
                })
                .await
                .unwrap();
            let (index, cache) = index_and_cache(&metadata);
            Self {
                metadata,
                store,
                topic,
                index,
                cache,
            }
        }

        pub async fn in_memory() -> Self {
            Self::new(Arc::new(InMemory::new())).await
        }

        pub fn metadata(&self) -> Arc<dyn MetadataStore> {
            self.metadata.clone()
        }

        /// The partition's storage with the env's (writer-side) index and cache.
        pub fn storage(&self) -> PartitionStorage {
            self.storage_with(self.index.clone(), self.cache.clone())
        }

        /// The partition's storage with a fresh index and an empty cache, as on a restarted
        /// or another agent.
        pub fn fresh_storage(&self) -> PartitionStorage {
            let (index, cache) = index_and_cache(&self.metadata);
            self.storage_with(index, cache)
        }

        /// The partition's storage with the given index and cache.
        pub fn storage_with(
            &self,
            index: Arc<SegmentIndex>,
            cache: Arc<SegmentCache>,
        ) -> PartitionStorage {
            PartitionStorage {
                topic: self.topic.clone(),
                partition: 0,
                store: self.store.clone(),
                metadata: self.metadata(),
                index,
                cache,
                producer_budget: Budget::new(usize::MAX),
            }
        }

        /// Opens a writer sharing the env's index and cache.
        pub async fn writer(
            &self,
            config: WriterConfig,
            fence: Option<LeaseFence>,
        ) -> streamhouse_storage::Result<PartitionWriter> {
            PartitionWriter::open(self.storage(), config, fence).await
        }

        /// Simulates a restart: a writer with a fresh index and cache over the same stores.
        pub async fn reopened_writer(&self, config: WriterConfig) -> PartitionWriter {
            PartitionWriter::open(self.fresh_storage(), config, None)
                .await
                .unwrap()
        }

        /// A reader as on another agent: its own index and an empty cache, so every byte comes
        /// from the object store.
        pub fn cold_reader(&self) -> PartitionReader {
            PartitionReader::new(self.fresh_storage())
        }

        /// A reader on the writer's agent: shared index and cache, high watermark from the writer.
        pub fn local_reader(&self, writer: &PartitionWriter) -> PartitionReader {
            PartitionReader::new(self.storage()).with_writer(writer)
        }
    }

    fn index_and_cache(
        metadata: &Arc<SqliteMetadataStore>,
    ) -> (Arc<SegmentIndex>, Arc<SegmentCache>) {
        let index = SegmentIndex::new(TOPIC, 0, metadata.clone(), SegmentIndexConfig::default());
        let cache = SegmentCache::new(SegmentCacheConfig {
            max_bytes: 64 * 1024 * 1024,
            block_size: 4096,
            ..SegmentCacheConfig::default()
        });
        (Arc::new(index), Arc::new(cache))
    }

    /// Writer settings for tests: no automatic roll, fast retries.
    pub fn test_config() -> WriterConfig {
        WriterConfig {
            segment_max_bytes: u64::MAX,
            upload_retries: 2,
            upload_backoff: Duration::from_millis(1),
            upload_backoff_max: Duration::from_millis(5),
            default_deadline: Duration::from_secs(30),
        }
    }

    /// Producer fields of a batch: (producer id, epoch, base sequence).
    pub type Producer = (i64, i16, i32);

    /// A valid Kafka v2 batch of `records` records with `value_len`-byte values, encoded by
    /// kafka-protocol (as a real client would send it).
    pub fn batch(
        records: usize,
        value_len: usize,
        timestamp: i64,
        producer: Option<Producer>,
    ) -> RecordBatch {
        let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
        let records: Vec<Record> = (0..records)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch when offset - sequence changes.
                sequence: base_sequence.wrapping_add(i as i32),
                timestamp: timestamp + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(
                    (0..value_len).map(|b| (b + i) as u8).collect::<Vec<u8>>(),
                )),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        encode(&records)
    }

    /// `records` encoded by kafka-protocol as one uncompressed v2 batch.
    pub fn encode(records: &[Record]) -> RecordBatch {
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, records, &options).unwrap();
        let mut batches = RecordBatch::parse_all(buf.freeze()).unwrap();
        assert_eq!(batches.len(), 1);
        batches.remove(0)
    }

    /// A non-idempotent batch of `records` small records.
    pub fn plain(records: usize) -> RecordBatch {
        batch(records, 16, 1_000, None)
    }

    /// Replaces an object's bytes, e.g. to corrupt it.
    pub async fn overwrite(store: &dyn ObjectStore, key: &str, bytes: Bytes) {
        store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .unwrap();
    }

    /// An object's bytes.
    pub async fn object(store: &dyn ObjectStore, key: &str) -> Bytes {
        store
            .get(&Path::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    }

    /// A store whose next `failures` puts fail; `u32::MAX` means every put fails (an outage).
    pub fn flaky_store(failures: u32) -> Arc<FaultyStore> {
        let store = FaultyStore::new(1);
        store.set_puts(if failures == u32::MAX {
            FaultPlan {
                outage: true,
                ..FaultPlan::default()
            }
        } else {
            FaultPlan {
                fail_next: failures,
                ..FaultPlan::default()
            }
        });
        store
    }

    /// Every partition of a new topic `name` open for writing on `store` and `metadata`, one
    /// block cache for all, and the flush context of an agent owning them.
    pub struct Partitions {
        pub storages: Vec<PartitionStorage>,
        pub writers: Vec<PartitionWriter>,
        pub context: FlushContext,
    }

    pub async fn open_partitions(
        metadata: Arc<dyn MetadataStore>,
        store: Arc<dyn ObjectStore>,
        name: &str,
        partitions: u32,
    ) -> Partitions {
        open_partitions_with_budget(metadata, store, name, partitions, Budget::new(usize::MAX))
            .await
    }

    /// [`open_partitions`] with the writers sharing `producer_budget`.
    pub async fn open_partitions_with_budget(
        metadata: Arc<dyn MetadataStore>,
        store: Arc<dyn ObjectStore>,
        name: &str,
        partitions: u32,
        producer_budget: Arc<Budget>,
    ) -> Partitions {
        let topic = metadata
            .create_topic(NewTopic {
                name: name.into(),
                partitions,
                config: TopicConfig::default(),
            })
            .await
            .unwrap();
        let cache = Arc::new(SegmentCache::new(SegmentCacheConfig::default()));
        let (mut storages, mut writers) = (Vec::new(), Vec::new());
        for partition in 0..partitions {
            let index = SegmentIndex::new(name, partition, metadata.clone(), Default::default());
            let storage = PartitionStorage {
                topic: topic.clone(),
                partition,
                store: store.clone(),
                metadata: metadata.clone(),
                index: Arc::new(index),
                cache: cache.clone(),
                producer_budget: producer_budget.clone(),
            };
            let writer = PartitionWriter::open(storage.clone(), test_config(), None);
            writers.push(writer.await.unwrap());
            storages.push(storage);
        }
        let context = FlushContext {
            store,
            metadata,
            cache,
            upload: test_config(),
        };
        Partitions {
            storages,
            writers,
            context,
        }
    }

    /// A metadata store that records each listing of segments: where it starts and how many
    /// rows it returns.
    pub struct ListingRecorder {
        inner: Arc<dyn MetadataStore>,
        listings: parking_lot::Mutex<Vec<(i64, usize)>>,
    }

    impl ListingRecorder {
        /// A recorder in front of `inner`.
        pub fn over(inner: Arc<dyn MetadataStore>) -> Arc<Self> {
            Arc::new(Self {
                inner,
                listings: Default::default(),
            })
        }

        /// Where each listing started, in order.
        pub fn listing_starts(&self) -> Vec<i64> {
            self.listings.lock().iter().map(|(from, _)| *from).collect()
        }

        /// How many segment rows the listings returned in all.
        pub fn rows_listed(&self) -> usize {
            self.listings.lock().iter().map(|(_, rows)| rows).sum()
        }

        fn record(
            &self,
            from: i64,
            listed: streamhouse_metadata::Result<Vec<SegmentInfo>>,
        ) -> streamhouse_metadata::Result<Vec<SegmentInfo>> {
            let rows = listed.as_ref().map_or(0, Vec::len);
            self.listings.lock().push((from, rows));
            listed
        }
    }

    impl streamhouse_metadata::Layer for ListingRecorder {
        fn inner(&self) -> &dyn MetadataStore {
            self.inner.as_ref()
        }
    }

    #[async_trait::async_trait]
    impl streamhouse_metadata::SegmentLogLayer for ListingRecorder {
        async fn list_segments(
            &self,
            topic: &str,
            partition: u32,
            from_offset: i64,
        ) -> streamhouse_metadata::Result<Vec<SegmentInfo>> {
            let listed = self
                .inner
                .list_segments(topic, partition, from_offset)
                .await;
            self.record(from_offset, listed)
        }

        async fn list_segments_page(
            &self,
            topic: &str,
            partition: u32,
            from_offset: i64,
            limit: u32,
        ) -> streamhouse_metadata::Result<Vec<SegmentInfo>> {
            let listed = self
                .inner
                .list_segments_page(topic, partition, from_offset, limit)
                .await;
            self.record(from_offset, listed)
        }
    }

    impl streamhouse_metadata::CatalogLayer for ListingRecorder {}
    impl streamhouse_metadata::LeasesLayer for ListingRecorder {}
    impl streamhouse_metadata::GroupStoreLayer for ListingRecorder {}
    impl streamhouse_metadata::CredentialsLayer for ListingRecorder {}
    impl streamhouse_metadata::AclStoreLayer for ListingRecorder {}
    impl streamhouse_metadata::TxnStoreLayer for ListingRecorder {}
}
