//! Settings of `streamhouse serve`: built-in defaults, overridden by an optional TOML file,
//! overridden by environment variables and flags (clap merges those two).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use streamhouse_metadata::SessionTimeouts;
use streamhouse_storage::{ObjectStoreConfig, SegmentCacheConfig};

/// Flags of `streamhouse serve`. Each also reads the environment variable shown in `--help`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and env vars take precedence).
    #[arg(long, env = "STREAMHOUSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the embedded metadata database and local object store
    /// [default: ./streamhouse-data].
    #[arg(long, env = "STREAMHOUSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kafka listener address [default: 127.0.0.1:9092].
    #[arg(long, env = "STREAMHOUSE_KAFKA_ADDR")]
    pub kafka_addr: Option<SocketAddr>,
    /// HTTP admin/health listener address [default: 127.0.0.1:8080].
    #[arg(long, env = "STREAMHOUSE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// `host:port` clients are told to connect to [default: the Kafka listener address].
    #[arg(long, env = "STREAMHOUSE_ADVERTISED_ADDR")]
    pub advertised_addr: Option<String>,
    /// Kafka node id of this agent; must be unique among the agents sharing a metadata
    /// database (clients address agents by it) [default: 0].
    #[arg(long, env = "STREAMHOUSE_NODE_ID")]
    pub node_id: Option<i32>,
    /// Metadata database shared by the agents of a cluster: `postgres://user:pass@host/db`
    /// [default: an embedded SQLite file, data_dir/metadata.db, for a single agent].
    #[arg(long, env = "STREAMHOUSE_METADATA_URL")]
    pub metadata_url: Option<String>,
    /// Store segments under this local directory instead of data_dir/objects; agents sharing
    /// one directory (e.g. a network file system) form a cluster like agents sharing a bucket.
    #[arg(long, env = "STREAMHOUSE_OBJECT_STORE_ROOT")]
    pub object_store_root: Option<PathBuf>,
    /// Partition lease duration in ms; an agent whose heartbeat is older than this counts as
    /// dead and its partitions move to the others, so it bounds failover time [default: 10000].
    #[arg(long, env = "STREAMHOUSE_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
    /// How often the agent records a heartbeat, in ms; keep well below the lease TTL
    /// [default: 2000].
    #[arg(long, env = "STREAMHOUSE_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// PostgreSQL `statement_timeout` of every metadata session, in ms; below the lease TTL
    /// [default: 40% of the lease TTL].
    #[arg(long, env = "STREAMHOUSE_PG_STATEMENT_TIMEOUT_MS")]
    pub pg_statement_timeout_ms: Option<u64>,
    /// PostgreSQL `lock_timeout` (longest wait for a row another session locks), in ms; below
    /// the lease TTL [default: 20% of the lease TTL].
    #[arg(long, env = "STREAMHOUSE_PG_LOCK_TIMEOUT_MS")]
    pub pg_lock_timeout_ms: Option<u64>,
    /// PostgreSQL `idle_in_transaction_session_timeout` (a stalled agent's open transaction is
    /// ended and its locks released), in ms; below the lease TTL [default: 50% of the lease TTL].
    #[arg(long, env = "STREAMHOUSE_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS")]
    pub pg_idle_in_transaction_timeout_ms: Option<u64>,
    /// Create unknown topics when a client asks for them (Kafka's auto.create.topics.enable)
    /// [default: false].
    #[arg(long, env = "STREAMHOUSE_AUTO_CREATE_TOPICS", num_args = 0..=1, default_missing_value = "true")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics and of CreateTopics without a count [default: 1].
    #[arg(long, env = "STREAMHOUSE_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<u32>,
    /// Group-commit interval: the longest a produced batch waits before its flush to object
    /// storage starts. Each flush is one object PUT for the whole agent, so this sets the
    /// request rate and cost [default: 5 on the local store, 150 on S3; see README].
    #[arg(long, env = "STREAMHOUSE_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// How long a new consumer group's first rebalance waits for more members, in ms,
    /// extended per joining member up to the rebalance timeout (Kafka's
    /// `group.initial.rebalance.delay.ms`) [default: 500].
    #[arg(long, env = "STREAMHOUSE_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// A partition with this many buffered bytes is flushed at once [default: 4194304].
    #[arg(long, env = "STREAMHOUSE_FLUSH_MAX_BYTES")]
    pub flush_max_bytes: Option<usize>,
    /// Produced bytes the agent holds until they are durable, across all partitions; a produce
    /// finding the budget full waits up to its timeout, then fails [default: 268435456].
    #[arg(long, env = "STREAMHOUSE_MAX_BUFFERED_BYTES")]
    pub max_buffered_bytes: Option<usize>,
    /// Largest Kafka request accepted, in bytes [default: 104857600].
    #[arg(long, env = "STREAMHOUSE_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Kafka connections held open at once; more are closed at once with a log line (Kafka's
    /// max.connections) [default: the open-file limit less 256].
    #[arg(long, env = "STREAMHOUSE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Kafka connections from one IP address at once (max.connections.per.ip) [default: 1000].
    #[arg(long, env = "STREAMHOUSE_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// A Kafka connection with nothing in progress for this long is closed
    /// (connections.max.idle.ms) [default: 600000].
    #[arg(long, env = "STREAMHOUSE_CONNECTIONS_MAX_IDLE_MS")]
    pub connections_max_idle_ms: Option<u64>,
    /// A request frame must arrive whole within this time of its first byte, or its connection
    /// is closed (slow clients) [default: 60000].
    #[arg(long, env = "STREAMHOUSE_FRAME_READ_TIMEOUT_MS")]
    pub frame_read_timeout_ms: Option<u64>,
    /// Largest frame accepted before SASL authentication (sasl.server.max.receive.size)
    /// [default: 524288].
    #[arg(long, env = "STREAMHOUSE_SASL_MAX_RECEIVE_SIZE")]
    pub sasl_max_receive_size: Option<usize>,
    /// Request bytes in progress across all Kafka connections; when spent, connections stop
    /// reading (queued.max.request.bytes) [default: 268435456].
    #[arg(long, env = "STREAMHOUSE_QUEUED_MAX_REQUEST_BYTES")]
    pub queued_max_request_bytes: Option<usize>,
    /// Most partitions (all topics) the cluster may hold [default: 100000].
    #[arg(long, env = "STREAMHOUSE_MAX_PARTITIONS_PER_CLUSTER")]
    pub max_partitions_per_cluster: Option<u64>,
    /// Most partitions per live agent; the cluster may hold this many times its live agents
    /// [default: 20000].
    #[arg(long, env = "STREAMHOUSE_MAX_PARTITIONS_PER_AGENT")]
    pub max_partitions_per_agent: Option<u64>,
    /// Idempotent-producer states (per producer per partition, ~1 KB each) all the agent's
    /// partitions keep; past it, least recent producers are forgotten first [default: 250000].
    #[arg(long, env = "STREAMHOUSE_MAX_PRODUCERS_PER_AGENT")]
    pub max_producers_per_agent: Option<usize>,
    /// Memory for cached segment bytes [default: 268435456].
    #[arg(long, env = "STREAMHOUSE_CACHE_MAX_BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// Size of the aligned blocks the segment cache reads objects in and keeps, from 4096 up
    /// to the cache's size: what one cache miss reads. Smaller blocks read less beside what
    /// a consumer asked for when many partitions share each flushed object, at more requests
    /// per MB (a billed GET each on S3); BENCHMARKS.md has the trade-off measured
    /// [default: 1048576].
    #[arg(long, env = "STREAMHOUSE_CACHE_BLOCK_BYTES")]
    pub cache_block_bytes: Option<u64>,
    /// How long a replaced or truncated object stays readable before it is deleted, for
    /// readers that already found it (Kafka's file.delete.delay.ms) [default: 60000].
    #[arg(long, env = "STREAMHOUSE_FILE_DELETE_DELAY_MS")]
    pub file_delete_delay_ms: Option<u64>,
    /// How often the orphan janitor lists the object store for objects no segment references
    /// [default: 600000].
    #[arg(long, env = "STREAMHOUSE_JANITOR_INTERVAL_MS")]
    pub janitor_interval_ms: Option<u64>,
    /// Objects younger than this are never taken for orphans; it must exceed the longest
    /// produce timeout, since an upload is committed at most that long after it started
    /// [default: 600000].
    #[arg(long, env = "STREAMHOUSE_JANITOR_MIN_AGE_MS")]
    pub janitor_min_age_ms: Option<u64>,
    /// Data younger than this stays in its flush's shared object [default: 10000].
    #[arg(long, env = "STREAMHOUSE_CONSOLIDATION_MIN_AGE_MS")]
    pub consolidation_min_age_ms: Option<u64>,
    /// Shared-object data is consolidated at the latest once it is this old [default: 60000].
    #[arg(long, env = "STREAMHOUSE_CONSOLIDATION_MAX_AGE_MS")]
    pub consolidation_max_age_ms: Option<u64>,
    /// How often compacted topics (cleanup.policy=compact) are checked for compaction, in ms
    /// [default: 15000].
    #[arg(long, env = "STREAMHOUSE_COMPACTION_INTERVAL_MS")]
    pub compaction_interval_ms: Option<u64>,
    /// Store segments in this S3 bucket instead of the data directory.
    #[arg(long, env = "STREAMHOUSE_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint URL (MinIO, moto, ...); implies path-style addressing.
    #[arg(long, env = "STREAMHOUSE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: from AWS_REGION].
    #[arg(long, env = "STREAMHOUSE_S3_REGION")]
    pub s3_region: Option<String>,
    /// PEM certificate chain for TLS on the Kafka listener (with --tls-key).
    #[arg(long, env = "STREAMHOUSE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the Kafka listener.
    #[arg(long, env = "STREAMHOUSE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate chain for HTTPS on the HTTP listener (with --http-tls-key).
    #[arg(long, env = "STREAMHOUSE_HTTP_TLS_CERT")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS on the HTTP listener.
    #[arg(long, env = "STREAMHOUSE_HTTP_TLS_KEY")]
    pub http_tls_key: Option<PathBuf>,
    /// Require SASL authentication (SCRAM-SHA-256 and SCRAM-SHA-512 unless --sasl-mechanisms).
    #[arg(long, env = "STREAMHOUSE_SASL")]
    pub sasl: bool,
    /// SASL mechanisms to offer, comma-separated: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
    #[arg(long, env = "STREAMHOUSE_SASL_MECHANISMS", value_delimiter = ',')]
    pub sasl_mechanisms: Option<Vec<String>>,
    /// A SASL user NAME:PASSWORD created at start-up (stored hashed); repeatable.
    #[arg(
        long = "sasl-user",
        env = "STREAMHOUSE_SASL_USERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub sasl_users: Vec<crate::security::SaslUser>,
    /// Enforce ACLs on the Kafka listener (`--acl=false` turns them off) [default: on when SASL
    /// is on].
    #[arg(long, env = "STREAMHOUSE_ACL", num_args = 0..=1, default_missing_value = "true")]
    pub acl: Option<bool>,
    /// A principal allowed everything regardless of ACLs, e.g. User:admin; repeatable.
    #[arg(
        long = "super-user",
        env = "STREAMHOUSE_SUPER_USERS",
        value_delimiter = ','
    )]
    pub super_users: Vec<String>,
    /// Serve the HTTP listener (API, console, probes, metrics); `--http-enabled=false` turns it
    /// off [default: true].
    #[arg(long, env = "STREAMHOUSE_HTTP_ENABLED", num_args = 0..=1, default_missing_value = "true")]
    pub http_enabled: Option<bool>,
    /// Serve the web console on the HTTP listener (`--console-enabled=false` turns it off)
    /// [default: true].
    #[arg(long, env = "STREAMHOUSE_CONSOLE_ENABLED", num_args = 0..=1, default_missing_value = "true")]
    pub console_enabled: Option<bool>,
    /// Require HTTP Basic authentication against the SASL users on the HTTP listener (HTTPS or
    /// a loopback address needed) [default: on when SASL is on].
    #[arg(long, env = "STREAMHOUSE_HTTP_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub http_auth: Option<bool>,
    /// Require authentication for /health, /ready and /metrics too [default: false].
    #[arg(long, env = "STREAMHOUSE_HTTP_AUTH_PROBES", num_args = 0..=1, default_missing_value = "true")]
    pub http_auth_probes: Option<bool>,
    /// A Host header value the HTTP listener accepts besides localhost, the loopback and
    /// listener addresses and the advertised host (DNS rebinding protection); repeatable, `*`
    /// accepts any.
    #[arg(
        long = "http-allowed-host",
        env = "STREAMHOUSE_HTTP_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub http_allowed_hosts: Vec<String>,
}

/// Settings as read from the TOML file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    kafka_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    advertised_addr: Option<String>,
    node_id: Option<i32>,
    metadata_url: Option<String>,
    lease_ttl_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    pg_statement_timeout_ms: Option<u64>,
    pg_lock_timeout_ms: Option<u64>,
    pg_idle_in_transaction_timeout_ms: Option<u64>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<u32>,
    flush_interval_ms: Option<u64>,
    group_initial_rebalance_delay_ms: Option<u64>,
    flush_max_bytes: Option<usize>,
    max_buffered_bytes: Option<usize>,
    max_request_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    connections_max_idle_ms: Option<u64>,
    frame_read_timeout_ms: Option<u64>,
    sasl_max_receive_size: Option<usize>,
    queued_max_request_bytes: Option<usize>,
    max_partitions_per_cluster: Option<u64>,
    max_partitions_per_agent: Option<u64>,
    max_producers_per_agent: Option<usize>,
    cache_max_bytes: Option<u64>,
    cache_block_bytes: Option<u64>,
    file_delete_delay_ms: Option<u64>,
    janitor_interval_ms: Option<u64>,
    janitor_min_age_ms: Option<u64>,
    consolidation_min_age_ms: Option<u64>,
    consolidation_max_age_ms: Option<u64>,
    compaction_interval_ms: Option<u64>,
    object_store: Option<ObjectStoreConfig>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    http_tls_cert: Option<PathBuf>,
    http_tls_key: Option<PathBuf>,
    sasl_mechanisms: Option<Vec<String>>,
    acl_enabled: Option<bool>,
    super_users: Option<Vec<String>>,
    http_enabled: Option<bool>,
    console_enabled: Option<bool>,
    http_auth: Option<bool>,
    http_auth_probes: Option<bool>,
    http_allowed_hosts: Option<Vec<String>>,
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub kafka_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub node_id: i32,
    /// `None`: the embedded SQLite database in the data directory.
    pub metadata_url: Option<String>,
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// Limits of every PostgreSQL metadata session (unused with SQLite).
    pub pg_timeouts: SessionTimeouts,
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    pub flush_interval: Duration,
    pub group_initial_rebalance_delay: Duration,
    pub flush_max_bytes: usize,
    pub max_buffered_bytes: usize,
    pub max_request_bytes: usize,
    /// Connection, memory and partition limits.
    pub limits: streamhouse_kafka::Limits,
    pub cache_max_bytes: u64,
    /// Size of the segment cache's blocks.
    pub cache_block_bytes: u64,
    /// Deletion delays, janitor and consolidation timing.
    pub maintenance: streamhouse_kafka::MaintenanceConfig,
    pub object_store: ObjectStoreConfig,
    pub security: crate::security::SecuritySettings,
}

impl ServeArgs {
    /// Resolves defaults < file < env/flags.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut maintenance = self.maintenance(&file)?;
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./streamhouse-data"));
        let kafka_addr = self
            .kafka_addr
            .or(file.kafka_addr)
            .unwrap_or_else(|| "127.0.0.1:9092".parse().expect("valid literal"));
        let advertised = self.advertised_addr.or(file.advertised_addr);
        let (advertised_host, advertised_port) = match advertised {
            Some(a) => split_host_port(&a)?,
            None => (kafka_addr.ip().to_string(), kafka_addr.port()),
        };
        let object_store = match (self.s3_bucket, self.object_store_root, file.object_store) {
            (Some(bucket), _, _) => ObjectStoreConfig::S3 {
                bucket,
                endpoint: self.s3_endpoint,
                region: self.s3_region,
                access_key_id: None,
                secret_access_key: None,
                allow_http: true,
                virtual_hosted_style: false,
            },
            (None, Some(root), _) => ObjectStoreConfig::Local { root },
            (None, None, Some(configured)) => configured,
            (None, None, None) => ObjectStoreConfig::Local {
                root: data_dir.join("objects"),
            },
        };
        let (lease_ttl, heartbeat_interval) = lease_timing(
            self.lease_ttl_ms.or(file.lease_ttl_ms),
            self.heartbeat_interval_ms.or(file.heartbeat_interval_ms),
        )?;
        let pg_timeouts = session_timeouts(
            lease_ttl,
            self.pg_statement_timeout_ms
                .or(file.pg_statement_timeout_ms),
            self.pg_lock_timeout_ms.or(file.pg_lock_timeout_ms),
            self.pg_idle_in_transaction_timeout_ms
                .or(file.pg_idle_in_transaction_timeout_ms),
        )?;
        let security = crate::security::SecuritySettings::resolve(
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
            self.http_tls_cert.or(file.http_tls_cert),
            self.http_tls_key.or(file.http_tls_key),
            self.sasl,
            self.sasl_mechanisms.or(file.sasl_mechanisms),
            self.sasl_users,
        )?
        .with_acl(
            self.acl.or(file.acl_enabled),
            match self.super_users {
                flagged if !flagged.is_empty() => flagged,
                _ => file.super_users.unwrap_or_default(),
            },
        )?
        .with_http(
            self.http_auth.or(file.http_auth),
            crate::security::HttpSettings {
                enabled: self.http_enabled.or(file.http_enabled).unwrap_or(true),
                console: self
                    .console_enabled
                    .or(file.console_enabled)
                    .unwrap_or(true),
                auth: false,
                protect_probes: self
                    .http_auth_probes
                    .or(file.http_auth_probes)
                    .unwrap_or(false),
                allowed_hosts: match self.http_allowed_hosts {
                    flagged if !flagged.is_empty() => flagged,
                    _ => file.http_allowed_hosts.unwrap_or_default(),
                },
            },
        );
        let defaults = streamhouse_kafka::Limits::default();
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        let limits = streamhouse_kafka::Limits {
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(defaults.max_connections),
            max_connections_per_ip: self
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(defaults.max_connections_per_ip),
            connections_max_idle: ms(
                self.connections_max_idle_ms
                    .or(file.connections_max_idle_ms),
                defaults.connections_max_idle,
            ),
            frame_read_timeout: ms(
                self.frame_read_timeout_ms.or(file.frame_read_timeout_ms),
                defaults.frame_read_timeout,
            ),
            sasl_max_receive_size: self
                .sasl_max_receive_size
                .or(file.sasl_max_receive_size)
                .unwrap_or(defaults.sasl_max_receive_size),
            queued_max_request_bytes: self
                .queued_max_request_bytes
                .or(file.queued_max_request_bytes)
                .unwrap_or(defaults.queued_max_request_bytes),
            max_partitions_per_cluster: self
                .max_partitions_per_cluster
                .or(file.max_partitions_per_cluster)
                .unwrap_or(defaults.max_partitions_per_cluster),
            max_partitions_per_agent: self
                .max_partitions_per_agent
                .or(file.max_partitions_per_agent)
                .unwrap_or(defaults.max_partitions_per_agent),
            max_producers_per_agent: self
                .max_producers_per_agent
                .or(file.max_producers_per_agent)
                .unwrap_or(defaults.max_producers_per_agent),
        };
        if limits.max_connections == 0
            || limits.max_connections_per_ip == 0
            || limits.connections_max_idle.is_zero()
            || limits.frame_read_timeout.is_zero()
            || limits.queued_max_request_bytes == 0
        {
            bail!(
                "max_connections, max_connections_per_ip, connections_max_idle_ms, \
                 frame_read_timeout_ms and queued_max_request_bytes must be positive"
            );
        }
        if let ObjectStoreConfig::Local { root } = &object_store {
            maintenance.janitor.local_root = Some(root.clone());
        }
        let cache_max_bytes = self
            .cache_max_bytes
            .or(file.cache_max_bytes)
            .unwrap_or(256 << 20);
        let cache_block_bytes = self
            .cache_block_bytes
            .or(file.cache_block_bytes)
            .unwrap_or(SegmentCacheConfig::default().block_size);
        if !(4096..=cache_max_bytes.max(4096)).contains(&cache_block_bytes) {
            bail!(
                "cache_block_bytes ({cache_block_bytes}) must be from 4096 up to \
                 cache_max_bytes ({cache_max_bytes})"
            );
        }
        Ok(Settings {
            limits,
            maintenance,
            security,
            kafka_addr,
            http_addr: self
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid literal")),
            advertised_host,
            advertised_port,
            node_id: self.node_id.or(file.node_id).unwrap_or(0),
            metadata_url: self.metadata_url.or(file.metadata_url),
            lease_ttl,
            heartbeat_interval,
            pg_timeouts,
            auto_create_topics: self
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(false),
            default_partitions: self
                .default_partitions
                .or(file.default_partitions)
                .unwrap_or(1),
            flush_interval: Duration::from_millis(
                self.flush_interval_ms
                    .or(file.flush_interval_ms)
                    .unwrap_or_else(|| default_flush_interval_ms(&object_store)),
            ),
            group_initial_rebalance_delay: self
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms)
                .map(Duration::from_millis)
                .unwrap_or_else(|| {
                    streamhouse_kafka::BrokerConfig::default().group_initial_rebalance_delay
                }),
            max_buffered_bytes: self
                .max_buffered_bytes
                .or(file.max_buffered_bytes)
                .unwrap_or(256 << 20),
            flush_max_bytes: self
                .flush_max_bytes
                .or(file.flush_max_bytes)
                .unwrap_or(4 << 20),
            max_request_bytes: self
                .max_request_bytes
                .or(file.max_request_bytes)
                .unwrap_or(100 << 20),
            cache_max_bytes,
            cache_block_bytes,
            object_store,
            data_dir,
        })
    }
}

impl ServeArgs {
    /// Deletion delays, janitor and consolidation timing: defaults < file < env/flags.
    fn maintenance(
        &self,
        file: &FileConfig,
    ) -> anyhow::Result<streamhouse_kafka::MaintenanceConfig> {
        let mut m = streamhouse_kafka::MaintenanceConfig::default();
        let ms = |flag: Option<u64>, file: Option<u64>, default: Duration| {
            flag.or(file).map_or(default, Duration::from_millis)
        };
        m.delete_grace = ms(
            self.file_delete_delay_ms,
            file.file_delete_delay_ms,
            m.delete_grace,
        );
        m.janitor.confirm_delay = m.delete_grace;
        m.janitor_interval = ms(
            self.janitor_interval_ms,
            file.janitor_interval_ms,
            m.janitor_interval,
        );
        m.janitor.min_age = ms(
            self.janitor_min_age_ms,
            file.janitor_min_age_ms,
            m.janitor.min_age,
        );
        let c = &mut m.consolidation;
        c.min_age = ms(
            self.consolidation_min_age_ms,
            file.consolidation_min_age_ms,
            c.min_age,
        );
        c.max_age = ms(
            self.consolidation_max_age_ms,
            file.consolidation_max_age_ms,
            c.max_age,
        );
        m.compaction_interval = ms(
            self.compaction_interval_ms,
            file.compaction_interval_ms,
            m.compaction_interval,
        );
        if m.janitor_interval.is_zero()
            || m.compaction_interval.is_zero()
            || m.janitor.min_age < Duration::from_secs(1)
        {
            bail!(
                "janitor_interval_ms and compaction_interval_ms must be positive, \
                 janitor_min_age_ms at least 1000"
            );
        }
        let min_age_set = self
            .consolidation_min_age_ms
            .or(file.consolidation_min_age_ms)
            .is_some();
        if m.consolidation.max_age < m.consolidation.min_age {
            // Only a maximum below the default minimum: consolidate as soon as it says.
            if min_age_set {
                bail!("consolidation_max_age_ms must not be below consolidation_min_age_ms");
            }
            m.consolidation.min_age = m.consolidation.max_age;
        }
        Ok(m)
    }
}

/// Lease TTL and heartbeat interval, defaulted and checked against each other.
fn lease_timing(
    lease_ttl_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
) -> anyhow::Result<(Duration, Duration)> {
    let lease_ttl = Duration::from_millis(lease_ttl_ms.unwrap_or(10_000));
    let heartbeat_interval = Duration::from_millis(heartbeat_interval_ms.unwrap_or(2_000));
    if heartbeat_interval.is_zero() || heartbeat_interval >= lease_ttl {
        bail!(
            "heartbeat interval ({heartbeat_interval:?}) must be positive and below the lease TTL \
             ({lease_ttl:?}), or live agents would be taken for dead"
        );
    }
    Ok((lease_ttl, heartbeat_interval))
}

/// The PostgreSQL session limits: each defaults to its share of the lease TTL and must stay
/// below it, or a call blocked on the database could outlast the leases it should renew.
fn session_timeouts(
    lease_ttl: Duration,
    statement_ms: Option<u64>,
    lock_ms: Option<u64>,
    idle_in_transaction_ms: Option<u64>,
) -> anyhow::Result<SessionTimeouts> {
    let defaults = SessionTimeouts::for_lease_ttl(lease_ttl);
    let pick = |name: &str, ms: Option<u64>, default: Duration| -> anyhow::Result<Duration> {
        let value = ms.map_or(default, Duration::from_millis);
        if value.is_zero() || value >= lease_ttl {
            bail!(
                "{name} ({value:?}) must be positive and below the lease TTL ({lease_ttl:?}), or \
                 a blocked metadata call could outlast the agent's leases"
            );
        }
        Ok(value)
    };
    Ok(SessionTimeouts {
        statement: pick("pg_statement_timeout_ms", statement_ms, defaults.statement)?,
        lock: pick("pg_lock_timeout_ms", lock_ms, defaults.lock)?,
        idle_in_transaction: pick(
            "pg_idle_in_transaction_timeout_ms",
            idle_in_transaction_ms,
            defaults.idle_in_transaction,
        )?,
        acquire: defaults.acquire,
    })
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

fn split_host_port(addr: &str) -> anyhow::Result<(String, u16)> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        bail!("advertised address '{addr}' is not host:port");
    };
    let port = port
        .parse()
        .with_context(|| format!("advertised address '{addr}' has an invalid port"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// The group-commit interval a store kind gets unless one is set, chosen by measurement
/// (`scripts/bench_s3_cost.py`, BENCHMARKS.md): on local disk a flush costs an fsync, so 5 ms
/// keeps acknowledgements fast; on S3 every flush is a billed PUT with ~30 ms of latency, and
/// 150 ms holds one agent under ~7 PUT/s (about $90 a month at list prices) while keeping the
/// produce p99 near 250 ms.
fn default_flush_interval_ms(store: &ObjectStoreConfig) -> u64 {
    match store {
        ObjectStoreConfig::S3 { .. } => 150,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_embedded() {
        let s = ServeArgs::default().resolve().unwrap();
        assert_eq!(s.kafka_addr.to_string(), "127.0.0.1:9092");
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (s.advertised_host.as_str(), s.advertised_port),
            ("127.0.0.1", 9092)
        );
        assert!(matches!(s.object_store, ObjectStoreConfig::Local { .. }));
        assert!(!s.auto_create_topics);
        assert_eq!(s.cache_block_bytes, 1 << 20);
    }

    #[test]
    fn cache_block_size_is_checked() {
        let with = |block: u64| {
            ServeArgs {
                cache_max_bytes: Some(1 << 20),
                cache_block_bytes: Some(block),
                ..Default::default()
            }
            .resolve()
            .map(|s| s.cache_block_bytes)
        };
        assert_eq!(with(64 << 10).unwrap(), 64 << 10);
        assert_eq!(with(1 << 20).unwrap(), 1 << 20);
        assert!(with(0).is_err());
        assert!(with(2 << 20).is_err());
    }

    #[test]
    fn maintenance_settings_resolve_and_are_checked() {
        let m = |args: ServeArgs| args.resolve().map(|s| s.maintenance);
        let only_max = m(ServeArgs {
            consolidation_max_age_ms: Some(1_000),
            janitor_interval_ms: Some(5_000),
            file_delete_delay_ms: Some(2_000),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(only_max.consolidation.min_age, Duration::from_secs(1));
        assert_eq!(only_max.janitor_interval, Duration::from_secs(5));
        assert_eq!(only_max.janitor.confirm_delay, Duration::from_secs(2));
        assert!(only_max.janitor.local_root.is_some());
        let contradictory = ServeArgs {
            consolidation_min_age_ms: Some(5_000),
            consolidation_max_age_ms: Some(1_000),
            ..Default::default()
        };
        assert!(m(contradictory).is_err());
        let too_young = ServeArgs {
            janitor_min_age_ms: Some(10),
            ..Default::default()
        };
        assert!(m(too_young).is_err());
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "kafka_addr = \"127.0.0.1:1111\"\nnode_id = 7\nflush_interval_ms = 9\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            node_id: Some(3),
            advertised_addr: Some("broker.example:19092".into()),
            ..Default::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.kafka_addr.port(), 1111);
        assert_eq!(s.node_id, 3);
        assert_eq!(s.flush_interval, Duration::from_millis(9));
        assert_eq!(
            (s.advertised_host.as_str(), s.advertised_port),
            ("broker.example", 19092)
        );
    }

    #[test]
    fn cluster_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "metadata_url = \"postgres://db/sh\"\nlease_ttl_ms = 3000\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            object_store_root: Some("/shared/objects".into()),
            heartbeat_interval_ms: Some(500),
            ..Default::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.metadata_url.as_deref(), Some("postgres://db/sh"));
        assert_eq!(s.lease_ttl, Duration::from_secs(3));
        assert_eq!(s.heartbeat_interval, Duration::from_millis(500));
        assert!(
            matches!(&s.object_store, ObjectStoreConfig::Local { root } if root == Path::new("/shared/objects"))
        );
        let defaults = ServeArgs::default().resolve().unwrap();
        assert_eq!(defaults.metadata_url, None);
        assert_eq!(defaults.lease_ttl, Duration::from_secs(10));
        let pg = defaults.pg_timeouts;
        assert_eq!(
            (pg.statement, pg.lock, pg.idle_in_transaction),
            (
                Duration::from_secs(4),
                Duration::from_secs(2),
                Duration::from_secs(5)
            )
        );
        // Shares of the configured TTL (3 s in the file), or set explicitly below it.
        assert_eq!(s.pg_timeouts.lock, Duration::from_millis(600));
        let explicit = ServeArgs {
            pg_lock_timeout_ms: Some(250),
            pg_statement_timeout_ms: Some(9_999),
            ..Default::default()
        };
        let pg = explicit.resolve().unwrap().pg_timeouts;
        assert_eq!(pg.lock, Duration::from_millis(250));
        assert_eq!(pg.statement, Duration::from_millis(9_999));
        for too_long in [
            ServeArgs {
                pg_idle_in_transaction_timeout_ms: Some(10_000),
                ..Default::default()
            },
            ServeArgs {
                pg_lock_timeout_ms: Some(0),
                ..Default::default()
            },
        ] {
            let err = too_long.resolve().unwrap_err();
            assert!(err.to_string().contains("below the lease TTL"), "{err}");
        }
        let slow_heartbeat = ServeArgs {
            lease_ttl_ms: Some(1000),
            heartbeat_interval_ms: Some(1000),
            ..Default::default()
        };
        assert!(slow_heartbeat.resolve().is_err());
    }

    #[test]
    fn https_settings_come_from_file_or_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "http_tls_cert = \"file.pem\"\nhttp_tls_key = \"file.key\"\n",
        )
        .unwrap();
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let tls = from_file.resolve().unwrap().security.http_tls;
        assert_eq!(tls, Some(("file.pem".into(), "file.key".into())));
        let flags = ServeArgs {
            config: Some(path),
            http_tls_cert: Some("flag.pem".into()),
            ..Default::default()
        };
        let tls = flags.resolve().unwrap().security.http_tls;
        assert_eq!(tls, Some(("flag.pem".into(), "file.key".into())));
        assert!(ServeArgs::default()
            .resolve()
            .unwrap()
            .security
            .http_tls
            .is_none());
    }

    #[test]
    fn limits_come_from_file_or_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "max_connections = 50\nmax_connections_per_ip = 5\nconnections_max_idle_ms = 1000\n\
             queued_max_request_bytes = 1048576\nmax_partitions_per_cluster = 10\n",
        )
        .unwrap();
        let s = ServeArgs {
            config: Some(path.clone()),
            max_connections_per_ip: Some(7),
            sasl_max_receive_size: Some(4096),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let l = s.limits;
        assert_eq!((l.max_connections, l.max_connections_per_ip), (50, 7));
        assert_eq!(l.connections_max_idle, Duration::from_secs(1));
        assert_eq!(l.sasl_max_receive_size, 4096);
        assert_eq!(l.queued_max_request_bytes, 1 << 20);
        assert_eq!(l.max_partitions_per_cluster, 10);
        let defaults = ServeArgs::default().resolve().unwrap().limits;
        assert_eq!(defaults, streamhouse_kafka::Limits::default());
        assert_eq!(defaults.connections_max_idle, Duration::from_secs(600));
        let zero = ServeArgs {
            max_connections: Some(0),
            ..Default::default()
        };
        assert!(zero.resolve().is_err());
    }

    #[test]
    fn http_security_follows_sasl_unless_set() {
        let defaults = ServeArgs::default().resolve().unwrap().security.http;
        assert!(defaults.enabled && defaults.console && !defaults.auth);
        assert!(!defaults.protect_probes && defaults.allowed_hosts.is_empty());
        let sasl = ServeArgs {
            sasl: true,
            ..Default::default()
        };
        assert!(sasl.resolve().unwrap().security.http.auth);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "http_auth = true\nconsole_enabled = false\nhttp_enabled = false\n\
             http_auth_probes = true\nhttp_allowed_hosts = [\"ops.example\"]\n",
        )
        .unwrap();
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let http = from_file.resolve().unwrap().security.http;
        assert!(http.auth && !http.console && !http.enabled && http.protect_probes);
        assert_eq!(http.allowed_hosts, ["ops.example"]);
        let flags = ServeArgs {
            config: Some(path),
            sasl: true,
            http_auth: Some(false),
            console_enabled: Some(true),
            http_allowed_hosts: vec!["*".into()],
            ..Default::default()
        };
        let http = flags.resolve().unwrap().security.http;
        assert!(!http.auth && http.console && !http.enabled);
        assert_eq!(http.allowed_hosts, ["*"]);
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "kafka_adr = \"x\"\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("kafka_adr"), "{err:#}");
    }
}
