//! A broker over in-memory stores and its HTTP router, called in-process.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use object_store::memory::InMemory;
use serde_json::Value;
use streamhouse_http::Metrics;
use streamhouse_kafka::{Broker, BrokerConfig};
use streamhouse_metadata::{CacheConfig, CachedMetadataStore, SqliteMetadataStore};
use streamhouse_storage::{MeteredObjectStore, SegmentCache, SegmentCacheConfig};
use tower::ServiceExt;

/// The recorder is process-wide, so every test shares one.
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| streamhouse_http::install_recorder().expect("install recorder"))
        .clone()
}

/// A response: status, content type and body.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an error response with this status and code.
    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, code: &str) {
        let body = self.expect(status);
        assert_eq!(body["code"], code, "body: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

pub struct App {
    pub router: Router,
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
}

impl App {
    pub async fn start() -> Self {
        Self::start_with(BrokerConfig::default()).await
    }

    pub async fn start_with(config: BrokerConfig) -> Self {
        let sqlite = SqliteMetadataStore::in_memory().await.unwrap();
        let metadata = Arc::new(CachedMetadataStore::new(
            Arc::new(sqlite),
            CacheConfig::default(),
        ));
        let store = Arc::new(MeteredObjectStore::new(Arc::new(InMemory::new())));
        let cache = Arc::new(SegmentCache::new(SegmentCacheConfig::default()));
        let broker = Broker::start(config, "test-agent".into(), metadata.clone(), store, cache);
        let metrics = Arc::new(Metrics::new(recorder()).with_metadata_cache(metadata));
        Self {
            router: streamhouse_http::router(broker.clone(), metrics.clone()),
            broker,
            metrics,
        }
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let body = body.map_or_else(Body::empty, |v| Body::from(v.to_string()));
        self.raw(method, uri, "application/json", body).await
    }

    pub async fn raw(&self, method: Method, uri: &str, content_type: &str, body: Body) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(body)
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            content_type,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None).await
    }

    pub async fn post(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::POST, uri, Some(body)).await
    }

    pub async fn put(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::PUT, uri, Some(body)).await
    }

    pub async fn delete(&self, uri: &str) -> Reply {
        self.call(Method::DELETE, uri, None).await
    }

    /// Creates a topic and asserts it was created.
    pub async fn create_topic(&self, name: &str, partitions: u32) -> Value {
        let body = serde_json::json!({"name": name, "partitions": partitions});
        self.post("/api/v1/topics", body)
            .await
            .expect(StatusCode::CREATED)
    }

    /// Produces UTF-8 records and returns the offsets answer.
    pub async fn produce(&self, topic: &str, records: Value) -> Value {
        let uri = format!("/api/v1/topics/{topic}/records");
        self.post(&uri, serde_json::json!({ "records": records }))
            .await
            .expect(StatusCode::OK)
    }
}
