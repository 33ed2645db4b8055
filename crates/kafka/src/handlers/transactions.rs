//! The transaction APIs (KIP-98, KIP-664): AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
//! TxnOffsetCommit, DescribeTransactions and ListTransactions, over the coordinator in
//! `crate::txn` and the `transactions` rows of the metadata store.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedState,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use streamhouse_metadata::{now_ms, CommittedOffset, MetadataError, Transaction, TxnState};

use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::groups::Committer;
use crate::security::{Access, Op, Resource};
use crate::txn::{TxnError, TxnProducer};

/// Requests about a transactional id need WRITE on it (as Kafka).
fn permitted(access: &Access, id: &str) -> Result<(), TxnError> {
    if access.allows(Op::Write, Resource::TransactionalId, id) {
        Ok(())
    } else {
        Err(TxnError {
            code: ResponseError::TransactionalIdAuthorizationFailed,
            message: format!("no WRITE on transactional id '{id}'"),
        })
    }
}

fn log_refusal(api: &str, id: &str, e: &TxnError) {
    tracing::debug!(transactional_id = id, code = ?e.code, "{api} refused: {}", e.message);
}

pub(crate) async fn add_partitions_to_txn(
    b: &Broker,
    access: &Access,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let id = req.v3_and_below_transactional_id.0.to_string();
    let producer = TxnProducer {
        id: req.v3_and_below_producer_id.0,
        epoch: req.v3_and_below_producer_epoch,
    };
    let mut partitions = Vec::new();
    let mut refused = None;
    for t in &req.v3_and_below_topics {
        let topic = t.name.0.to_string();
        if !access.allows(Op::Write, Resource::Topic, &topic) {
            refused = Some(ResponseError::TopicAuthorizationFailed);
        }
        match b.catalog().get_topic(&topic).await {
            Ok(Some(found))
                if t.partitions
                    .iter()
                    .all(|&p| p >= 0 && (p as u32) < found.partitions) => {}
            _ => refused = refused.or(Some(ResponseError::UnknownTopicOrPartition)),
        }
        partitions.extend(t.partitions.iter().map(|&p| (topic.clone(), p as u32)));
    }
    let result = match (permitted(access, &id), refused) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(code)) => Err(TxnError {
            code,
            message: "a partition cannot be added".into(),
        }),
        (Ok(()), None) => b.txn.add_txn_partitions(&id, producer, &partitions).await,
    };
    let code = match &result {
        Ok(()) => 0,
        Err(e) => {
            log_refusal("AddPartitionsToTxn", &id, e);
            e.code.code()
        }
    };
    let topics = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let results = t.partitions.iter().map(|&p| {
                AddPartitionsToTxnPartitionResult::default()
                    .with_partition_index(p)
                    .with_partition_error_code(code)
            });
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(results.collect())
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

pub(crate) async fn add_offsets_to_txn(
    b: &Broker,
    access: &Access,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let id = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let producer = TxnProducer {
        id: req.producer_id.0,
        epoch: req.producer_epoch,
    };
    let result = match permitted(access, &id) {
        Err(e) => Err(e),
        Ok(()) if !access.allows(Op::Read, Resource::Group, &group) => Err(TxnError {
            code: ResponseError::GroupAuthorizationFailed,
            message: format!("no READ on group '{group}'"),
        }),
        Ok(()) => b.txn.add_txn_group(&id, producer, &group).await,
    };
    AddOffsetsToTxnResponse::default().with_error_code(error_code("AddOffsetsToTxn", &id, result))
}

pub(crate) async fn end_txn(b: &Broker, access: &Access, req: EndTxnRequest) -> EndTxnResponse {
    let id = req.transactional_id.0.to_string();
    let producer = TxnProducer {
        id: req.producer_id.0,
        epoch: req.producer_epoch,
    };
    let result = match permitted(access, &id) {
        Ok(()) => b.txn.end_txn(&id, producer, req.committed).await,
        Err(e) => Err(e),
    };
    EndTxnResponse::default()
        .with_error_code(error_code("EndTxn", &id, result))
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

fn error_code(api: &str, id: &str, result: Result<(), TxnError>) -> i16 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            log_refusal(api, id, &e);
            e.code.code()
        }
    }
}

/// TxnOffsetCommit, sent to the group's coordinator: the offsets are kept with the producer's
/// open transaction and applied only when it commits.
pub(crate) async fn txn_offset_commit(
    b: &Broker,
    access: &Access,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let id = req.transactional_id.0.to_string();
    let now = now_ms();
    let offsets: Vec<CommittedOffset> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| CommittedOffset {
                topic: t.name.0.to_string(),
                partition: p.partition_index.max(0) as u32,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                committed_at_ms: now,
            })
        })
        .collect();
    let committer = Committer {
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
    };
    let code = match txn_commit_check(b, access, &id, &group, &committer).await {
        Err(code) => code.code(),
        Ok(()) => match b
            .txn_store()
            .commit_txn_offsets(req.producer_id.0, req.producer_epoch, &group, &offsets)
            .await
        {
            Ok(()) => 0,
            // The producer's transaction is not open with this group (fenced or finished).
            Err(MetadataError::TxnConflict { reason, .. }) => {
                tracing::debug!(transactional_id = %id, "TxnOffsetCommit refused: {reason}");
                ResponseError::InvalidTxnState.code()
            }
            Err(e) => metadata_error_code(&e).code(),
        },
    };
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t.partitions.iter().map(|p| {
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
            });
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions.collect())
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// Authorization (the transactional id and the group), group coordination and the
/// committer's membership for TxnOffsetCommit.
async fn txn_commit_check(
    b: &Broker,
    access: &Access,
    id: &str,
    group: &str,
    committer: &Committer,
) -> Result<(), ResponseError> {
    if !access.allows(Op::Write, Resource::TransactionalId, id) {
        return Err(ResponseError::TransactionalIdAuthorizationFailed);
    }
    super::groups::coordinating(b, access, Op::Read, group)
        .await
        .and_then(|()| b.groups().validate_txn_committer(group, committer))
        .map_err(|e| e.code())
}

pub(crate) async fn list_transactions(
    b: &Broker,
    access: &Access,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let known: Vec<&str> = TxnState::ALL.iter().map(|s| s.name()).collect();
    let unknown = req
        .state_filters
        .iter()
        .filter(|s| !known.contains(&s.as_str()))
        .cloned()
        .collect();
    let response = ListTransactionsResponse::default().with_unknown_state_filters(unknown);
    let all = match b.txn_store().list_transactions().await {
        Ok(all) => all,
        Err(e) => return response.with_error_code(metadata_error_code(&e).code()),
    };
    let now = now_ms();
    let listed = all
        .into_iter()
        .filter(|t| t.producer_id >= 0)
        .filter(|t| access.allows(Op::Describe, Resource::TransactionalId, &t.transactional_id))
        .filter(|t| {
            req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == t.state.name())
        })
        .filter(|t| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&ProducerId(t.producer_id))
        })
        // KIP-994: only transactions running longer than the filter (-1: any).
        .filter(|t| {
            req.duration_filter < 0
                || (t.started_at_ms >= 0 && now - t.started_at_ms >= req.duration_filter)
        })
        .map(|t| {
            ListedState::default()
                .with_transactional_id(TransactionalId(str_bytes(&t.transactional_id)))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(str_bytes(t.state.name()))
        })
        .collect();
    response.with_transaction_states(listed)
}

pub(crate) async fn describe_transactions(
    b: &Broker,
    access: &Access,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        let state = DescribedState::default()
            .with_transactional_id(id.clone())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let name = id.0.to_string();
        let found = if !access.allows(Op::Describe, Resource::TransactionalId, &name) {
            Err(ResponseError::TransactionalIdAuthorizationFailed)
        } else {
            match b.txn_store().get_transaction(&name).await {
                Ok(Some(t)) if t.producer_id >= 0 => Ok(t),
                Ok(_) => Err(ResponseError::TransactionalIdNotFound),
                Err(e) => Err(metadata_error_code(&e)),
            }
        };
        states.push(match found {
            Ok(t) => described(state, &t),
            Err(code) => state.with_error_code(code.code()),
        });
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

fn described(state: DescribedState, t: &Transaction) -> DescribedState {
    let mut topics: Vec<TopicData> = Vec::new();
    for (topic, partition) in &t.partitions {
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == topic => last.partitions.push(*partition as i32),
            _ => topics.push(
                TopicData::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![*partition as i32]),
            ),
        }
    }
    state
        .with_transaction_state(str_bytes(t.state.name()))
        .with_transaction_timeout_ms(t.timeout_ms)
        .with_transaction_start_time_ms(t.started_at_ms)
        .with_producer_id(ProducerId(t.producer_id))
        .with_producer_epoch(t.producer_epoch)
        .with_topics(topics)
}
