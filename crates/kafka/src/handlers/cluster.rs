//! DescribeCluster (KIP-700) and DescribeLogDirs: what admin tools and Kafka UIs show of the
//! agents and of where partitions' data lives.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse,
};
use streamhouse_metadata::Topic;

use super::{str_bytes, topic_name};
use crate::api_error::ApiError;
use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::security::{Access, Op, Resource};

/// DescribeCluster endpoint type asking for brokers (2 asks for controllers, which a KRaft
/// cluster has apart; StreamHouse has none).
const ENDPOINT_BROKERS: i8 = 1;

/// Kafka's value for "authorized operations not requested".
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

/// The one log directory each agent reports: every partition's data is in the object store.
const LOG_DIR: &str = "object-store";

pub(crate) async fn describe_cluster(
    b: &Broker,
    access: &Access,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let config = b.config();
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(str_bytes(&config.cluster_id))
        .with_cluster_authorized_operations(OPERATIONS_NOT_REQUESTED);
    if req.endpoint_type != ENDPOINT_BROKERS {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes("only broker endpoints exist")));
    }
    let view = b.cluster_view();
    let brokers = super::metadata::brokers(&view)
        .map(|(id, host, port)| {
            DescribeClusterBroker::default()
                .with_broker_id(id)
                .with_host(host)
                .with_port(port)
        })
        .collect();
    // Any agent can act as the controller (there is no election); Metadata names the answering
    // agent too, so both APIs agree.
    let response = response
        .with_controller_id(BrokerId(config.node_id))
        .with_brokers(brokers);
    if !req.include_cluster_authorized_operations {
        return response;
    }
    let operations = Resource::Cluster
        .operations()
        .iter()
        .filter(|&&op| access.on_cluster(op))
        .fold(0, |bits, op| bits | 1 << op.code());
    response.with_cluster_authorized_operations(operations)
}

pub(crate) async fn describe_log_dirs(
    b: &Broker,
    access: &Access,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    // As Kafka: the log dirs of a broker are cluster information.
    if !access.on_cluster(Op::Describe) {
        return DescribeLogDirsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let topics = match b.catalog().list_topics().await {
        Ok(topics) => topics,
        Err(e) => {
            return DescribeLogDirsResponse::default()
                .with_error_code(metadata_error_code(&e).code())
        }
    };
    let view = b.cluster_view();
    let me = b.config().node_id;
    let mut out = Vec::new();
    for topic in &topics {
        // `None` asks for every partition; otherwise only the named ones.
        let wanted: Option<Vec<i32>> = match &req.topics {
            None => None,
            Some(ts) => match ts.iter().find(|t| t.topic.0.as_str() == topic.name) {
                Some(t) => Some(t.partitions.clone()),
                None => continue,
            },
        };
        let mut partitions = Vec::new();
        // Each agent reports the partitions it leads, as each Kafka broker reports its own
        // replicas: a tool adding up all brokers counts every partition once.
        for (index, leader) in (0_i32..).zip(view.leaders(topic)) {
            let asked = wanted.as_ref().is_none_or(|w| w.contains(&index));
            if leader.node != me || !asked {
                continue;
            }
            match partition_size(b, topic, index as u32).await {
                Ok(size) => partitions.push(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(index)
                        .with_partition_size(size)
                        .with_offset_lag(0),
                ),
                Err(code) => {
                    return DescribeLogDirsResponse::default().with_error_code(code.code())
                }
            }
        }
        if !partitions.is_empty() {
            out.push(
                DescribeLogDirsTopic::default()
                    .with_name(topic_name(&topic.name))
                    .with_partitions(partitions),
            );
        }
    }
    // Object storage has no fixed capacity: -1 is Kafka's "unknown" for both volume sizes.
    let dir = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(LOG_DIR))
        .with_topics(out)
        .with_total_bytes(-1)
        .with_usable_bytes(-1);
    DescribeLogDirsResponse::default().with_results(vec![dir])
}

/// Bytes of the retained segment objects of one partition, from the metadata store.
async fn partition_size(b: &Broker, topic: &Topic, partition: u32) -> Result<i64, ResponseError> {
    let state = b
        .catalog()
        .get_partition(&topic.name, partition)
        .await
        .map_err(|e| metadata_error_code(&e))?;
    match b.admin().retained(&topic.name, &state).await {
        Ok((_, bytes)) => Ok(bytes as i64),
        Err(ApiError::Metadata(e)) => Err(metadata_error_code(&e)),
        Err(_) => Err(ResponseError::UnknownTopicOrPartition),
    }
}
