//! Starting an agent: the services built and composed into a [`Broker`], then every
//! background loop started under its supervisor. The top of the crate's service graph: it
//! alone knows every loop (the services' own, and those of the layers above the broker:
//! maintenance and transactions).

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use streamhouse_metadata::{now_ms, AgentInfo, CallDeadline, HookedMetadataStore, MetadataStore};
use streamhouse_storage::SegmentCache;

use crate::broker::{Broker, Services};
use crate::cluster::{run_controller, run_heartbeat, run_lease_renewal, Controller};
use crate::config::BrokerConfig;
use crate::groups::{ConsumerTimeouts, GroupCoordinator};
use crate::maintenance::Maintenance;
use crate::membership::Membership;
use crate::partitions::{run_flusher, Partitions};
use crate::security::Authorizer;
use crate::txn::{run_marker_writer, run_timeouts, Transactions};

impl Broker {
    /// Creates the agent and starts its background tasks: the flusher, the heartbeat (which
    /// registers the agent), the controller (which hands off and leases), lease renewal, the
    /// group sweeper, maintenance and the transaction loops. Every call on `metadata` is
    /// bounded: half the lease TTL, at least a second.
    pub fn start(
        config: BrokerConfig,
        agent_id: String,
        metadata: Arc<dyn MetadataStore>,
        store: Arc<dyn ObjectStore>,
        cache: Arc<SegmentCache>,
    ) -> Arc<Self> {
        let deadline = CallDeadline(metadata_call_deadline(config.lease_ttl));
        let metadata: Arc<dyn MetadataStore> =
            Arc::new(HookedMetadataStore::new(metadata, deadline));
        let services = services(&config, &agent_id, &metadata, &store, &cache);
        let broker = Arc::new(Broker::compose(config, agent_id, metadata, cache, services));
        spawn_loops(&broker);
        broker
    }
}

/// Builds the services of agent `agent_id`.
fn services(
    config: &BrokerConfig,
    agent_id: &str,
    metadata: &Arc<dyn MetadataStore>,
    store: &Arc<dyn ObjectStore>,
    cache: &Arc<SegmentCache>,
) -> Services {
    let groups = GroupCoordinator::new(
        metadata.clone(),
        agent_id,
        config.lease_ttl,
        config.group_initial_rebalance_delay,
        ConsumerTimeouts {
            heartbeat_interval: config.group_consumer_heartbeat_interval,
            session_timeout: config.group_consumer_session_timeout,
        },
    );
    let membership = Arc::new(Membership::new(registration(config, agent_id)));
    let partitions = Arc::new(Partitions::new(
        config.clone(),
        agent_id.to_string(),
        metadata.clone(),
        store.clone(),
        cache.clone(),
        membership.clone(),
    ));
    let controller = Arc::new(Controller::new(
        config.clone(),
        metadata.clone(),
        membership.clone(),
        partitions.clone(),
        groups.clone(),
    ));
    let txn = Arc::new(Transactions::new(
        config.clone(),
        agent_id.to_string(),
        metadata.clone(),
        membership.clone(),
        partitions.clone(),
    ));
    let maintenance = Arc::new(Maintenance::new(
        config.maintenance.clone(),
        metadata.clone(),
        store.clone(),
        partitions.clone(),
    ));
    let authorizer = Arc::new(Authorizer::new(&config.acl));
    if config.acl.enabled {
        // The first reload runs at once; `Acls::reload` awaits one before serving.
        authorizer.spawn_refresh(metadata.clone(), config.acl.refresh);
    }
    Services {
        partitions,
        membership,
        controller,
        groups,
        authorizer,
        txn,
        maintenance,
    }
}

/// Starts every background loop of `broker` under its supervisor. Each holds its service
/// weakly, so dropping the broker ends them all.
fn spawn_loops(broker: &Arc<Broker>) {
    let tasks = &broker.tasks;
    let controller = || Arc::downgrade(&broker.controller);
    tasks.spawn("flusher", run_flusher(Arc::downgrade(&broker.partitions)));
    tasks.spawn("heartbeat", run_heartbeat(controller()));
    tasks.spawn("controller", run_controller(controller()));
    tasks.spawn("lease renewal", run_lease_renewal(controller()));
    let sweeper = crate::groups::run_sweeper(Arc::downgrade(broker.groups_arc()));
    tasks.spawn("group sweeper", sweeper);
    crate::maintenance::spawn_loops(&broker.maintenance, tasks);
    let txn = || Arc::downgrade(&broker.txn);
    tasks.spawn("transaction markers", run_marker_writer(txn()));
    tasks.spawn("transaction timeouts", run_timeouts(txn()));
}

/// How long any one metadata call of the agent may take: half the lease TTL, so a call stuck
/// on a stalled database fails (and is retried) while the leases it would renew are still
/// valid; never below a second, so a slow but working store is not cut short.
fn metadata_call_deadline(lease_ttl: Duration) -> Duration {
    (lease_ttl / 2).max(Duration::from_secs(1))
}

/// This agent's row in the agents table.
fn registration(config: &BrokerConfig, agent_id: &str) -> AgentInfo {
    let now = now_ms();
    AgentInfo {
        agent_id: agent_id.to_string(),
        kafka_host: config.advertised_host.clone(),
        kafka_port: config.advertised_port,
        http_addr: config.http_addr.clone(),
        node_id: config.node_id,
        last_heartbeat_ms: now,
        started_at_ms: now,
    }
}
