//! A broker over in-memory stores and its HTTP router, called in-process.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use metrics_exporter_prometheus::PrometheusHandle;
use object_store::memory::InMemory;
use serde_json::Value;
use streamhouse_http::{AllowedHosts, HttpOptions, Metrics};
use streamhouse_kafka::security::{AclConfig, SaslAuthenticator, ScramAlgorithm};
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

/// A response: status, content type, headers and body.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: HeaderMap,
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

/// The super user of [`App::start_secured`] and its password.
pub const ADMIN: (&str, &str) = ("admin", "admin-pw");

#[derive(Clone)]
pub struct App {
    pub router: Router,
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
    /// Headers sent with every request (credentials, Host).
    headers: Vec<(String, String)>,
}

impl App {
    /// An open listener (no authentication, ACLs off), as a development agent.
    pub async fn start() -> Self {
        Self::start_with(BrokerConfig::default(), |_| HttpOptions::default()).await
    }

    /// As an agent with SASL on: ACLs enforced with `User:admin` a super user, HTTP Basic
    /// required (probes open), the Host allow-list of a listener on 127.0.0.1:8080 advertised
    /// as `broker.internal`. Users: [`ADMIN`], and whatever a test adds with [`Self::add_user`].
    pub async fn start_secured() -> Self {
        Self::start_secured_with(|options| options).await
    }

    /// [`Self::start_secured`] with its HTTP options changed by `change`.
    pub async fn start_secured_with(change: impl FnOnce(HttpOptions) -> HttpOptions) -> Self {
        let config = BrokerConfig {
            acl: AclConfig {
                enabled: true,
                super_users: vec![format!("User:{}", ADMIN.0)],
                ..AclConfig::default()
            },
            ..BrokerConfig::default()
        };
        let app = Self::start_with(config, |broker| {
            let auth = Arc::new(SaslAuthenticator::new(Vec::new()));
            broker.register_authenticator(&auth);
            change(HttpOptions {
                authenticator: Some(auth),
                allowed_hosts: AllowedHosts::for_listener(
                    "127.0.0.1:8080".parse().unwrap(),
                    "broker.internal",
                    &[],
                ),
                ..HttpOptions::default()
            })
        })
        .await;
        app.add_user(ADMIN.0, ADMIN.1).await;
        app.as_user(ADMIN.0, ADMIN.1)
    }

    /// Creates (or changes) a SCRAM user through the broker, as any other way would.
    pub async fn add_user(&self, name: &str, password: &str) {
        self.broker
            .users()
            .set_password(name, password, &[ScramAlgorithm::Sha256], 4096)
            .await
            .unwrap();
    }

    /// This app, sending `user`'s HTTP Basic credentials.
    pub fn as_user(&self, user: &str, password: &str) -> Self {
        let token = BASE64.encode(format!("{user}:{password}"));
        self.with_header("authorization", &format!("Basic {token}"))
    }

    /// This app without credentials.
    pub fn anonymous(&self) -> Self {
        let mut app = self.clone();
        app.headers.retain(|(k, _)| k != "authorization");
        app
    }

    /// This app, sending `name: value` with every request (replacing an earlier one).
    pub fn with_header(&self, name: &str, value: &str) -> Self {
        let mut app = self.clone();
        app.headers.retain(|(k, _)| k != name);
        app.headers.push((name.to_string(), value.to_string()));
        app
    }

    pub async fn start_with(
        config: BrokerConfig,
        options: impl FnOnce(&Arc<Broker>) -> HttpOptions,
    ) -> Self {
        let sqlite = SqliteMetadataStore::in_memory().await.unwrap();
        let metadata = Arc::new(CachedMetadataStore::new(
            Arc::new(sqlite),
            CacheConfig::default(),
        ));
        let store = Arc::new(MeteredObjectStore::new(Arc::new(InMemory::new())));
        let cache = Arc::new(SegmentCache::new(SegmentCacheConfig::default()));
        let broker = Broker::start(config, "test-agent".into(), metadata.clone(), store, cache);
        let metrics = Arc::new(Metrics::new(recorder()).with_metadata_cache(metadata));
        let options = options(&broker);
        Self {
            router: streamhouse_http::router(broker.clone(), metrics.clone(), options),
            broker,
            metrics,
            headers: Vec::new(),
        }
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let body = body.map_or_else(Body::empty, |v| Body::from(v.to_string()));
        self.raw(method, uri, "application/json", body).await
    }

    pub async fn raw(&self, method: Method, uri: &str, content_type: &str, body: Body) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request.body(body).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            content_type,
            headers,
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
