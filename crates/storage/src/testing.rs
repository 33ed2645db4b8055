//! Fault injection for tests (feature `testing`): an in-memory object store whose puts and gets
//! misbehave as planned — latency, errors, outages and ambiguous timeouts — so tests can check
//! what the writer, the reader and the agent guarantee under them.

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
use rand::{RngExt, SeedableRng};

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

/// Request and injected-failure counts of one kind of request.
#[derive(Debug, Default)]
pub struct FaultCounts {
    requests: AtomicU32,
    failed: AtomicU32,
    timed_out: AtomicU32,
}

impl FaultCounts {
    /// Requests made, failed ones included.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests failed without being performed.
    pub fn failed(&self) -> u32 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Requests performed but reported as failed.
    pub fn timed_out(&self) -> u32 {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// An in-memory store whose puts and gets misbehave as planned; seeded, so reproducible.
#[derive(Debug)]
pub struct FaultyStore {
    inner: InMemory,
    puts: Mutex<FaultPlan>,
    gets: Mutex<FaultPlan>,
    rng: Mutex<StdRng>,
    put_counts: FaultCounts,
    get_counts: FaultCounts,
    /// Every key ever written, to refuse (and count) a second write to one.
    written: Mutex<std::collections::HashSet<Path>>,
    second_writes: AtomicU32,
}

impl FaultyStore {
    /// A store with no faults planned; `seed` makes the random draws reproducible.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            inner: InMemory::new(),
            puts: Mutex::default(),
            gets: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            put_counts: FaultCounts::default(),
            get_counts: FaultCounts::default(),
            written: Mutex::default(),
            second_writes: AtomicU32::new(0),
        })
    }

    /// Replaces the plan for puts.
    pub fn set_puts(&self, plan: FaultPlan) {
        *self.puts.lock() = plan;
    }

    /// Replaces the plan for gets (ranged gets included).
    pub fn set_gets(&self, plan: FaultPlan) {
        *self.gets.lock() = plan;
    }

    /// Puts that tried to write a key written before (refused with `AlreadyExists`, whatever
    /// their mode): committed objects must never be overwritten, so tests expect none that
    /// were not a retry of the same upload.
    pub fn second_writes(&self) -> u32 {
        self.second_writes.load(Ordering::Relaxed)
    }

    /// Put counts so far.
    pub fn puts(&self) -> &FaultCounts {
        &self.put_counts
    }

    /// Get counts so far.
    pub fn gets(&self) -> &FaultCounts {
        &self.get_counts
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
        let put = async {
            if !self.written.lock().insert(location.clone()) {
                self.second_writes.fetch_add(1, Ordering::Relaxed);
                return Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "FaultyStore refuses a second write to a key".into(),
                });
            }
            self.inner.put_opts(location, payload, opts).await
        };
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

/// What to inject into metadata-store calls of one method (see [`FaultyMetadata`]).
#[derive(Debug, Clone, Default)]
pub struct MetadataFaultPlan {
    /// Probability that a call fails without reaching the store.
    pub error_rate: f64,
    /// Probability that a call is carried out but answers with an error: the commit-then-lose-
    /// the-connection case of a real database.
    pub lost_answer_rate: f64,
    /// Every call fails (the store is gone) while set.
    pub outage: bool,
}

/// A [`streamhouse_metadata::CallHook`] failing calls of one method as planned; wrap a store
/// with [`streamhouse_metadata::HookedMetadataStore`]. Seeded, so reproducible.
#[derive(Debug)]
pub struct FaultyMetadata {
    method: &'static str,
    plan: Mutex<MetadataFaultPlan>,
    rng: Mutex<StdRng>,
    /// Whether the call in progress is to lose its answer (drawn in `before`).
    lose_answer: Mutex<bool>,
    failed: AtomicU32,
    lost: AtomicU32,
}

impl FaultyMetadata {
    /// Faults for calls of `method` (e.g. `"commit_segments"`), none planned yet.
    pub fn new(method: &'static str, seed: u64) -> Self {
        Self {
            method,
            plan: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            lose_answer: Mutex::new(false),
            failed: AtomicU32::new(0),
            lost: AtomicU32::new(0),
        }
    }

    /// Replaces the plan.
    pub fn set(&self, plan: MetadataFaultPlan) {
        *self.plan.lock() = plan;
    }

    /// Calls failed before reaching the store, and calls carried out whose answer was lost.
    pub fn injected(&self) -> (u32, u32) {
        (
            self.failed.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
        )
    }
}

fn injected_metadata(what: &str) -> streamhouse_metadata::MetadataError {
    streamhouse_metadata::MetadataError::Database(sqlx_io_error(what))
}

/// A connection-level error, as a lost database connection reports.
fn sqlx_io_error(what: &str) -> streamhouse_metadata::SqlxError {
    streamhouse_metadata::SqlxError::Io(std::io::Error::other(what.to_owned()))
}

#[async_trait]
impl streamhouse_metadata::CallHook for FaultyMetadata {
    async fn before(&self, method: &'static str) -> streamhouse_metadata::Result<()> {
        if method != self.method {
            return Ok(());
        }
        let plan = self.plan.lock().clone();
        let roll: f64 = self.rng.lock().random();
        if plan.outage || roll < plan.error_rate {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Err(injected_metadata("injected: connection refused"));
        }
        *self.lose_answer.lock() = roll < plan.error_rate + plan.lost_answer_rate;
        Ok(())
    }

    async fn after(&self, method: &'static str) -> streamhouse_metadata::Result<()> {
        if method != self.method || !std::mem::take(&mut *self.lose_answer.lock()) {
            return Ok(());
        }
        self.lost.fetch_add(1, Ordering::Relaxed);
        Err(injected_metadata(
            "injected: connection lost after the call",
        ))
    }
}
