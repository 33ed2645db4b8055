//! Building the object store that holds segment objects: local filesystem (embedded default),
//! in-memory (tests) or S3 (and S3-compatible services such as MinIO).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use serde::Deserialize;
use thiserror::Error;

use crate::local::LocalStore;

/// Where segment objects are stored.
///
/// Deserializes from an externally tagged form with a `type` field, e.g.
/// `{ "type": "local", "root": "/var/lib/streamhouse/data" }` or
/// `{ "type": "s3", "bucket": "events", "endpoint": "http://localhost:9000", "allow_http": true }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ObjectStoreConfig {
    /// A directory on the local filesystem (created if missing). Every acknowledged write is
    /// fsynced, file and directory entries both.
    Local {
        /// Directory under which object keys become file paths.
        root: PathBuf,
    },
    /// Process memory; contents vanish on exit. For tests.
    Memory,
    /// Amazon S3 or an S3-compatible service.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Custom endpoint (MinIO, LocalStack, R2, ...). When set, path-style requests are used
        /// unless `virtual_hosted_style` is true.
        #[serde(default)]
        endpoint: Option<String>,
        /// Region; falls back to `AWS_REGION` / `AWS_DEFAULT_REGION`.
        #[serde(default)]
        region: Option<String>,
        /// Access key; falls back to `AWS_ACCESS_KEY_ID` (or the other usual AWS credential
        /// sources).
        #[serde(default)]
        access_key_id: Option<String>,
        /// Secret key; falls back to `AWS_SECRET_ACCESS_KEY`.
        #[serde(default)]
        secret_access_key: Option<String>,
        /// Permit plain `http://` endpoints (local MinIO).
        #[serde(default)]
        allow_http: bool,
        /// Use `https://{bucket}.{endpoint}` addressing instead of path-style.
        #[serde(default)]
        virtual_hosted_style: bool,
    },
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        Self::Local {
            root: PathBuf::from("./data/objects"),
        }
    }
}

/// Why an object store could not be built from its configuration.
#[derive(Debug, Error)]
pub enum ObjectStoreBuildError {
    /// The local root directory could not be created.
    #[error("cannot create local object store root {root}: {source}")]
    CreateRoot {
        /// The configured root.
        root: PathBuf,
        /// Underlying IO error.
        source: std::io::Error,
    },
    /// `object_store` rejected the configuration.
    #[error("invalid {kind} object store configuration: {source}")]
    Invalid {
        /// `"local"` or `"s3"`.
        kind: &'static str,
        /// Underlying error.
        source: object_store::Error,
    },
}

/// Builds the object store described by `config`.
pub fn build_object_store(
    config: &ObjectStoreConfig,
) -> Result<Arc<dyn ObjectStore>, ObjectStoreBuildError> {
    match config {
        ObjectStoreConfig::Local { root } => {
            Ok(Arc::new(LocalStore::new(durable_local_store(root)?)))
        }
        ObjectStoreConfig::Memory => Ok(Arc::new(InMemory::new())),
        ObjectStoreConfig::S3 {
            bucket,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            allow_http,
            virtual_hosted_style,
        } => {
            let base = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(*allow_http)
                // Custom endpoints (MinIO, LocalStack) rarely have per-bucket DNS, so path-style
                // stays the default, as in object_store.
                .with_virtual_hosted_style_request(*virtual_hosted_style);
            // Explicit settings override whatever `from_env` found; unset ones keep the env value.
            let explicit = [
                (AmazonS3ConfigKey::Endpoint, endpoint),
                (AmazonS3ConfigKey::Region, region),
                (AmazonS3ConfigKey::AccessKeyId, access_key_id),
                (AmazonS3ConfigKey::SecretAccessKey, secret_access_key),
            ];
            let builder = explicit
                .into_iter()
                .filter_map(|(key, value)| Some((key, value.as_deref()?)))
                .fold(base, |builder, (key, value)| {
                    builder.with_config(key, value)
                });
            let store = builder
                .build()
                .map_err(|source| ObjectStoreBuildError::Invalid { kind: "s3", source })?;
            Ok(Arc::new(store))
        }
    }
}

/// A local store whose successful writes are durable.
///
/// "Acknowledged means durable": the writer advances the high watermark as soon as the upload
/// returns, so a crash right after must not lose the segment. `LocalFileSystem` does not fsync by
/// default; `with_fsync(true)` (object_store 0.14) makes `put`, multipart completion, copy and
/// rename `sync_all` the file before publishing it by rename and fsync every directory whose
/// entries changed (new parent directories included) before returning, which is exactly the
/// guarantee needed: [`LocalStore`] around it changes reads only.
fn durable_local_store(root: &std::path::Path) -> Result<LocalFileSystem, ObjectStoreBuildError> {
    std::fs::create_dir_all(root).map_err(|source| ObjectStoreBuildError::CreateRoot {
        root: root.to_path_buf(),
        source,
    })?;
    let store = LocalFileSystem::new_with_prefix(root).map_err(|source| {
        ObjectStoreBuildError::Invalid {
            kind: "local",
            source,
        }
    })?;
    Ok(store.with_fsync(true))
}
