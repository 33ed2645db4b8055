//! Fault injection: a store wrapper adding latency, errors, outages and ambiguous timeouts to
//! puts and gets, and what the writer and reader guarantee under them.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use streamhouse_metadata::MetadataStore;
use streamhouse_storage::{PartitionWriter, StorageError, WriterConfig};

use crate::support::{batch, test_config, Env, TOPIC};

/// What to inject into one kind of request (puts or gets).
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Added to every request.
    pub latency: Duration,
    /// Every request fails (an outage) while set.
    pub outage: bool,
    /// The next this-many requests fail.
    pub fail_next: u32,
    /// Probability that a request fails without being performed.
    pub error_rate: f64,
    /// Probability that a request is performed but reported as failed after a delay: the
    /// ambiguous outcome of a client-side timeout (the object may well be stored).
    pub timeout_rate: f64,
}

/// The outcome drawn for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Fail,
    PerformThenTimeOut,
}

/// Request and injected-failure counts.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub requests: AtomicU32,
    pub failed: AtomicU32,
    pub timed_out: AtomicU32,
}

/// An in-memory store whose puts and gets misbehave as planned; seeded, so reproducible.
#[derive(Debug)]
pub struct FaultyStore {
    inner: InMemory,
    puts: Mutex<FaultPlan>,
    gets: Mutex<FaultPlan>,
    rng: Mutex<StdRng>,
    pub put_counts: FaultCounts,
    pub get_counts: FaultCounts,
}

impl FaultyStore {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            inner: InMemory::new(),
            puts: Mutex::default(),
            gets: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            put_counts: FaultCounts::default(),
            get_counts: FaultCounts::default(),
        })
    }

    pub fn set_puts(&self, plan: FaultPlan) {
        *self.puts.lock() = plan;
    }

    pub fn set_gets(&self, plan: FaultPlan) {
        *self.gets.lock() = plan;
    }

    fn draw(&self, plan: &Mutex<FaultPlan>) -> (Fault, Duration) {
        let mut plan = plan.lock();
        let roll: f64 = self.rng.lock().random();
        let fault = if plan.outage {
            Fault::Fail
        } else if plan.fail_next > 0 {
            plan.fail_next -= 1;
            Fault::Fail
        } else if roll < plan.error_rate {
            Fault::Fail
        } else if roll < plan.error_rate + plan.timeout_rate {
            Fault::PerformThenTimeOut
        } else {
            Fault::None
        };
        (fault, plan.latency)
    }

    /// Runs `op` under the plan: latency first, then the drawn fault.
    async fn inject<T>(
        &self,
        plan: &Mutex<FaultPlan>,
        counts: &FaultCounts,
        op: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let (fault, latency) = self.draw(plan);
        tokio::time::sleep(latency).await;
        match fault {
            Fault::None => op.await,
            Fault::Fail => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                Err(injected("injected failure"))
            }
            Fault::PerformThenTimeOut => {
                let _ = op.await;
                counts.timed_out.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
                Err(injected(
                    "injected timeout (request may have been performed)",
                ))
            }
        }
    }
}

fn injected(what: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: what.into(),
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let put = self.inner.put_opts(location, payload, opts);
        self.inject(&self.puts, &self.put_counts, put).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let get = self.inner.get_opts(location, options);
        self.inject(&self.gets, &self.get_counts, get).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Writer settings with enough retries to ride out a 50 % put failure rate.
fn patient() -> WriterConfig {
    WriterConfig {
        upload_retries: 10,
        ..test_config()
    }
}

/// Produces `rounds` single-batch flushes of `records` records; returns the base offsets of
/// the acknowledged ones and the number of failed ones. Asserts an acknowledgement only ever
/// follows a successful flush and a failure only a failed one.
async fn produce_rounds(
    writer: &PartitionWriter,
    rounds: usize,
    records: usize,
) -> (Vec<i64>, usize) {
    let (mut acked, mut failed) = (Vec::new(), 0);
    for round in 0..rounds {
        let appended = writer
            .append(vec![batch(records, 32, round as i64, None)])
            .unwrap();
        let flushed = writer.flush().await;
        match (flushed, appended.durable.wait().await) {
            (Ok(Some(_)), Ok(())) => acked.push(appended.base_offset),
            (Err(_), Err(StorageError::FlushFailed { .. })) => failed += 1,
            (flush, ticket) => panic!("flush {flush:?} but ticket {ticket:?}"),
        }
    }
    (acked, failed)
}

/// Every acknowledged record is readable by a cold reader exactly once, and nothing else is.
async fn assert_log_is(env: &Env, acked: &[i64], records: usize) {
    let stored = env.metadata.get_partition(TOPIC, 0).await.unwrap();
    assert_eq!(stored.high_watermark, (acked.len() * records) as i64);
    let reader = env.cold_reader();
    let mut offset = 0;
    let mut bases = Vec::new();
    while offset < stored.high_watermark {
        let read = reader.read(offset, 1 << 20).await.unwrap();
        bases.extend(read.batches.iter().map(|b| b.base_offset()));
        offset = read.next_offset;
    }
    assert_eq!(
        bases, acked,
        "acknowledged batches and stored batches differ"
    );
}

#[tokio::test]
async fn produce_under_put_failures_is_retried_and_acked_only_once_stored() {
    let store = FaultyStore::new(7);
    store.set_puts(FaultPlan {
        latency: Duration::from_millis(1),
        error_rate: 0.3,
        timeout_rate: 0.2,
        ..FaultPlan::default()
    });
    let env = Env::new(store.clone()).await;
    let writer = env.writer(patient(), None).await.unwrap();
    let (acked, failed) = produce_rounds(&writer, 40, 5).await;
    let faults = store.put_counts.failed.load(Ordering::Relaxed)
        + store.put_counts.timed_out.load(Ordering::Relaxed);
    assert!(faults >= 10, "only {faults} faults injected");
    // 10 retries at a 50 % failure rate: a flush fails with probability 0.5^11 < 0.05 %. A
    // failed flush is allowed by the contract (its ticket failed, checked above), not common
    // (this seed's draws do contain one run of 11 faults).
    assert!(failed <= 1, "{failed} flushes failed despite retries");
    let requests = store.put_counts.requests.load(Ordering::Relaxed);
    println!(
        "flushes=40 acknowledged={} failed={failed} puts={requests} injected_faults={faults}",
        acked.len()
    );
    let flushes = acked.len() as u32 + failed as u32;
    assert_eq!(flushes, 40);
    assert_eq!(
        requests,
        acked.len() as u32 + faults,
        "each acknowledged flush ends with exactly one successful put"
    );
    assert_log_is(&env, &acked, 5).await;
}

#[tokio::test]
async fn an_outage_fails_produces_without_a_trace_and_recovery_resumes() {
    let store = FaultyStore::new(1);
    let env = Env::new(store.clone()).await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let (before, _) = produce_rounds(&writer, 3, 4).await;

    store.set_puts(FaultPlan {
        outage: true,
        ..FaultPlan::default()
    });
    let (during, failed) = produce_rounds(&writer, 3, 4).await;
    assert!(during.is_empty());
    assert_eq!(failed, 3);
    assert_eq!(writer.high_watermark(), 12);
    assert_eq!(
        writer.next_offset(),
        12,
        "failed records must not hold offsets"
    );
    assert_eq!(
        env.metadata.list_segments(TOPIC, 0, 0).await.unwrap().len(),
        3,
        "no segment of the outage was committed"
    );

    store.set_puts(FaultPlan::default());
    let (after, failed) = produce_rounds(&writer, 3, 4).await;
    assert_eq!(failed, 0);
    assert_eq!(after, vec![12, 16, 20]);
    let acked: Vec<i64> = before.into_iter().chain(after).collect();
    assert_log_is(&env, &acked, 4).await;
}

#[tokio::test]
async fn reads_survive_transient_get_errors_and_latency() {
    let store = FaultyStore::new(3);
    let env = Env::new(store.clone()).await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let (acked, _) = produce_rounds(&writer, 20, 3).await;
    store.set_gets(FaultPlan {
        latency: Duration::from_millis(1),
        error_rate: 0.3,
        ..FaultPlan::default()
    });
    // Cold readers fetch every byte through the faulty store.
    assert_log_is(&env, &acked, 3).await;
    assert!(store.get_counts.failed.load(Ordering::Relaxed) > 0);

    // A persistent GET failure is reported as an error, never as data.
    store.set_gets(FaultPlan {
        outage: true,
        ..FaultPlan::default()
    });
    let error = env.cold_reader().read(0, 1 << 20).await.unwrap_err();
    assert!(
        matches!(error, StorageError::ObjectStore { .. }),
        "unexpected {error:?}"
    );
}
