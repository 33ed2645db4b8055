//! DeleteRecords: truncates partitions before an offset and answers with the low watermarks.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_request::DeleteRecordsTopic;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::broker::Broker;
use crate::errors::storage_error_code;
use crate::security::{Access, Op, Resource};

pub(crate) async fn handle(
    b: &Broker,
    access: &Access,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let permitted = access.allows(Op::Delete, Resource::Topic, t.name.0.as_str());
        topics.push(delete_in_topic(b, t, permitted).await);
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

async fn delete_in_topic(
    b: &Broker,
    t: DeleteRecordsTopic,
    permitted: bool,
) -> DeleteRecordsTopicResult {
    let mut partitions = Vec::with_capacity(t.partitions.len());
    for p in t.partitions {
        let result = match u32::try_from(p.partition_index) {
            _ if !permitted => Err(ResponseError::TopicAuthorizationFailed),
            Ok(partition) => b
                .maintenance
                .delete_records(t.name.0.as_str(), partition, p.offset)
                .await
                .map_err(|e| storage_error_code(&e)),
            Err(_) => Err(ResponseError::UnknownTopicOrPartition),
        };
        let response =
            DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
        partitions.push(match result {
            Ok(low_watermark) => response.with_low_watermark(low_watermark),
            Err(code) => response.with_low_watermark(-1).with_error_code(code.code()),
        });
    }
    DeleteRecordsTopicResult::default()
        .with_name(t.name)
        .with_partitions(partitions)
}
