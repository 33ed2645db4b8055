//! `streamhouse serve`: wires metadata, object store and caches into a Kafka-speaking agent.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use std::time::Duration;
use streamhouse_kafka::{Broker, BrokerConfig};

use streamhouse_metadata::{
    CacheConfig, CachedMetadataStore, MetadataStore, PostgresMetadataStore, SqliteMetadataStore,
};
use streamhouse_storage::{
    build_object_store, MeteredObjectStore, SegmentCache, SegmentCacheConfig,
};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::{ServeArgs, Settings};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    // Before anything records a metric, so no early sample is lost.
    let metrics_handle =
        streamhouse_http::install_recorder().context("installing the metrics recorder")?;
    private_files();
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let _lock = lock_data_dir(&settings.data_dir)?;
    let agent_id = agent_id(&settings.data_dir)?;

    let cached = open_metadata(&settings).await?;
    warn_if_readable_by_others(&settings);
    let metadata: Arc<dyn MetadataStore> = cached.clone();
    let store = build_object_store(&settings.object_store).context("building the object store")?;
    let store = Arc::new(MeteredObjectStore::new(store));
    let metrics =
        Arc::new(streamhouse_http::Metrics::new(metrics_handle).with_metadata_cache(cached));
    let cache = Arc::new(SegmentCache::new(SegmentCacheConfig {
        max_bytes: settings.cache_max_bytes,
        block_size: settings.cache_block_bytes,
        exact_shared_reads: matches!(
            settings.object_store,
            streamhouse_storage::ObjectStoreConfig::Local { .. }
        ),
        ..SegmentCacheConfig::default()
    }));

    let kafka = TcpListener::bind(settings.kafka_addr)
        .await
        .with_context(|| format!("binding the Kafka listener on {}", settings.kafka_addr))?;
    let http_listener = match settings.security.http.enabled {
        true => Some(
            TcpListener::bind(settings.http_addr)
                .await
                .with_context(|| format!("binding the HTTP listener on {}", settings.http_addr))?,
        ),
        false => None,
    };

    let security = settings.security.listener_security(&metadata).await?;
    let http_tls = settings.security.http_tls_config()?;
    let broker = Broker::start(broker_config(&settings), agent_id, metadata, store, cache);
    // Before the listener starts, so no request is decided without the stored ACLs.
    broker.acls().reload().await.context("loading ACLs")?;
    let http_options = settings
        .security
        .http_options(
            settings.http_addr,
            &settings.advertised_host,
            security.sasl.as_ref(),
            &broker,
        )
        .await?;
    info!(
        kafka = %settings.kafka_addr,
        http = %settings.http_addr,
        data_dir = %settings.data_dir.display(),
        "streamhouse agent ready"
    );
    let acl = &settings.security.acl;
    info!(
        tls = security.tls.is_some(),
        sasl = ?settings.security.sasl_mechanisms,
        http_tls = http_tls.is_some(),
        http_enabled = settings.security.http.enabled,
        http_auth = http_options.authenticator.is_some(),
        console = settings.security.http.console,
        acl = acl.enabled,
        super_users = ?acl.super_users,
        "listener security"
    );
    if acl.enabled && security.sasl.is_none() {
        warn!("ACLs are enforced without SASL: every client is User:ANONYMOUS");
    }
    let kafka_task = tokio::spawn(streamhouse_kafka::serve_secured(
        kafka,
        broker.clone(),
        security,
    ));
    let http_task = match (http_listener, http_tls) {
        (Some(listener), Some(tls)) => tokio::spawn(streamhouse_http::serve_tls(
            listener,
            tls,
            broker.clone(),
            metrics,
            http_options,
        )),
        (Some(listener), None) => tokio::spawn(streamhouse_http::serve(
            listener,
            broker.clone(),
            metrics,
            http_options,
        )),
        // Turned off: a task that never ends, so the select below waits on Kafka alone.
        (None, _) => tokio::spawn(std::future::pending()),
    };

    #[cfg(debug_assertions)]
    abort_task_on_request(&broker);
    tokio::select! {
        r = kafka_task => bail!("Kafka listener stopped: {:?}", r),
        r = http_task => bail!("HTTP listener stopped: {:?}", r),
        failure = broker.task_failure() => {
            // A zombie agent (heartbeating, answering, but no longer flushing, renewing or
            // reconciling) would stall its partitions: leave so they move to live agents.
            error!("{failure}; shutting down");
            // Bounded: the loop that ended may be one the shutdown relies on.
            let _ = tokio::time::timeout(settings.lease_ttl, broker.shutdown()).await;
            bail!("{failure}");
        }
        _ = shutdown_signal() => {}
    }
    info!("shutting down: flushing buffered records");
    broker.shutdown().await;
    Ok(())
}

/// The metadata store behind its cache: PostgreSQL when a URL is configured (a cluster shares
/// it), else the embedded SQLite file in the data directory (a single agent).
async fn open_metadata(settings: &Settings) -> anyhow::Result<Arc<CachedMetadataStore>> {
    let (inner, cache): (Arc<dyn MetadataStore>, _) = match &settings.metadata_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = PostgresMetadataStore::connect(url, &settings.pg_timeouts)
                .await
                .with_context(|| format!("connecting to metadata database {}", redacted(url)))?;
            // Other agents change partitions this one may own next (their high watermarks), so
            // cached entries must not outlive one controller round by much.
            let cache = CacheConfig {
                ttl: Duration::from_secs(1),
                ..CacheConfig::default()
            };
            (Arc::new(store), cache)
        }
        Some(url) => bail!(
            "unsupported metadata URL {}: expected postgres:// or postgresql://",
            redacted(url)
        ),
        None => {
            let path = settings.data_dir.join("metadata.db");
            let store = SqliteMetadataStore::open(&path)
                .await
                .with_context(|| format!("opening metadata database {}", path.display()))?;
            (Arc::new(store), CacheConfig::default())
        }
    };
    Ok(Arc::new(CachedMetadataStore::new(inner, cache)))
}

/// `url` without its credentials, for messages.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn broker_config(s: &Settings) -> BrokerConfig {
    BrokerConfig {
        node_id: s.node_id,
        advertised_host: s.advertised_host.clone(),
        advertised_port: s.advertised_port,
        http_addr: s.http_addr.to_string(),
        lease_ttl: s.lease_ttl,
        heartbeat_interval: s.heartbeat_interval,
        auto_create_topics: s.auto_create_topics,
        default_partitions: s.default_partitions,
        flush_interval: s.flush_interval,
        group_initial_rebalance_delay: s.group_initial_rebalance_delay,
        flush_max_bytes: s.flush_max_bytes,
        max_buffered_bytes: s.max_buffered_bytes,
        max_request_bytes: s.max_request_bytes,
        acl: s.security.acl.clone(),
        limits: s.limits.clone(),
        maintenance: s.maintenance.clone(),
        ..BrokerConfig::default()
    }
}

/// Makes everything the agent creates from here on private to its user (directories 0700, files
/// 0600) whatever the umask it was started with: `metadata.db` holds the SCRAM keys and the
/// segment files hold the data, neither of which other local users should read.
fn private_files() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Warns about data written before (or by another tool) that other local users can read: the
/// agent does not change existing permissions behind the operator's back, but says so.
fn warn_if_readable_by_others(settings: &Settings) {
    let mut paths = vec![
        settings.data_dir.clone(),
        settings.data_dir.join("metadata.db"),
    ];
    if let streamhouse_storage::ObjectStoreConfig::Local { root } = &settings.object_store {
        paths.push(root.clone());
    }
    for path in paths {
        if let Some(mode) = wider_than_private(&path) {
            warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "readable or writable by other users; restrict it (chmod go-rwx)"
            );
        }
    }
}

/// The permission bits of `path` when they give its group or others any access.
fn wider_than_private(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Two agents on one data directory would both believe they own every partition.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(".lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "data directory {} is in use by another streamhouse process",
            dir.display()
        )
    })?;
    Ok(file)
}

/// A stable id, so a restarted agent renews its own leases instead of waiting them out.
fn agent_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("agent-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = format!("agent-{}", uuid::Uuid::new_v4());
            std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Fault injection for the end-to-end suite (debug builds only): with
/// `STREAMHOUSE_TEST_ABORT_TASK=<task>@<ms>`, aborts that background loop `ms` after start, as
/// a crash of the loop would, so a test can watch the agent leave.
#[cfg(debug_assertions)]
fn abort_task_on_request(broker: &Arc<Broker>) {
    let Ok(spec) = std::env::var("STREAMHOUSE_TEST_ABORT_TASK") else {
        return;
    };
    let Some((task, ms)) = spec.split_once('@') else {
        warn!("ignoring STREAMHOUSE_TEST_ABORT_TASK={spec:?}: expected <task>@<ms>");
        return;
    };
    let (task, delay) = (task.to_string(), ms.parse().unwrap_or(0));
    let broker = Arc::downgrade(broker);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if let Some(b) = broker.upgrade() {
            warn!(task = %task, aborted = b.abort_task(&task), "test fault: aborting a task");
        }
    });
}
