//! An [`ObjectStore`] wrapper that records Prometheus-style metrics for every request:
//!
//! - `streamhouse_object_store_requests_total{op}`
//! - `streamhouse_object_store_errors_total{op}`
//! - `streamhouse_object_store_bytes_total{op}` (payload bytes of `put` and `get`)
//! - `streamhouse_object_store_request_duration_seconds{op}` (histogram; for `get`, the time
//!   until the response started, since the body is streamed by the caller)
//!
//! - `streamhouse_object_store_cost_nano_usd_total` (the requests' cost, in billionths of a dollar, at S3 Standard list prices:
//!   PUT, COPY, LIST $0.005 per 1,000; GET $0.0004 per 1,000; DELETE free)
//!
//! `op` is one of `put`, `put_multipart`, `get`, `get_ranges`, `delete`, `list`,
//! `list_with_delimiter`, `copy`, `rename`.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Wraps an object store and meters its requests (see the module docs for the series).
#[derive(Debug)]
pub struct MeteredObjectStore {
    inner: Arc<dyn ObjectStore>,
}

impl MeteredObjectStore {
    /// Meters every request made through the returned store to `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

impl fmt::Display for MeteredObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

/// What one request of `op` costs on S3 Standard, in US dollars (list prices; a rename is a
/// copy and a delete).
fn s3_list_price(op: &str) -> f64 {
    match op {
        "put" | "put_multipart" | "copy" | "rename" | "list_with_delimiter" => 5e-6,
        "get" | "get_ranges" => 0.4e-6,
        // Counted per listed object: one LIST request returns up to 1,000.
        "list" => 5e-9,
        _ => 0.0,
    }
}

/// Counts one request of `op`, its outcome and duration.
fn record<T>(op: &'static str, started: Instant, result: &Result<T>, bytes: impl Fn(&T) -> u64) {
    metrics::counter!("streamhouse_object_store_requests_total", "op" => op).increment(1);
    // Counted in nano-dollars: metrics counters are integers.
    let nano_usd = (s3_list_price(op) * 1e9).round() as u64;
    if nano_usd > 0 {
        metrics::counter!("streamhouse_object_store_cost_nano_usd_total").increment(nano_usd);
    }
    metrics::histogram!("streamhouse_object_store_request_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(value) => {
            let n = bytes(value);
            if n > 0 {
                metrics::counter!("streamhouse_object_store_bytes_total", "op" => op).increment(n);
            }
        }
        Err(_) => {
            metrics::counter!("streamhouse_object_store_errors_total", "op" => op).increment(1)
        }
    }
}

/// Runs one request and records it.
async fn metered<T>(
    op: &'static str,
    bytes: impl Fn(&T) -> u64,
    request: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = request.await;
    record(op, started, &result, bytes);
    result
}

fn none<T>(_: &T) -> u64 {
    0
}

/// Counts every item of a streamed request (list, delete) as one request of `op`.
fn metered_stream<T: Send + 'static>(
    op: &'static str,
    stream: BoxStream<'static, Result<T>>,
) -> BoxStream<'static, Result<T>> {
    let started = Instant::now();
    stream
        .inspect(move |item| record(op, started, item, none))
        .boxed()
}

#[async_trait]
impl ObjectStore for MeteredObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let len = payload.content_length() as u64;
        let put = self.inner.put_opts(location, payload, opts);
        metered("put", |_| len, put).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let put = self.inner.put_multipart_opts(location, opts);
        metered("put_multipart", none, put).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let get = self.inner.get_opts(location, options);
        metered("get", |r: &GetResult| r.range.end - r.range.start, get).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let get = self.inner.get_ranges(location, ranges);
        let total = |parts: &Vec<Bytes>| parts.iter().map(|b| b.len() as u64).sum();
        metered("get_ranges", total, get).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        metered_stream("delete", self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        metered_stream("list", self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        metered_stream("list", self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let list = self.inner.list_with_delimiter(prefix);
        metered("list_with_delimiter", none, list).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        metered("copy", none, self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        metered("rename", none, self.inner.rename_opts(from, to, options)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    /// The wrapper forwards every operation unchanged (metrics go to whatever recorder is
    /// installed; none in unit tests).
    #[tokio::test]
    async fn forwards_requests() {
        let store = MeteredObjectStore::new(Arc::new(InMemory::new()));
        let path = Path::from("a/b");
        store
            .put(&path, Bytes::from_static(b"hello").into())
            .await
            .unwrap();
        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"hello");
        let ranges = store.get_ranges(&path, &[0..1, 1..3]).await.unwrap();
        assert_eq!((&ranges[0][..], &ranges[1][..]), (&b"h"[..], &b"el"[..]));
        assert_eq!(store.list(None).count().await, 1);
        store.delete(&path).await.unwrap();
        assert!(store.get(&path).await.is_err());
        assert!(store.to_string().starts_with("Metered("));
    }
}
