//! InitProducerId: hands out idempotent producer ids, and transactional producers' ids and
//! epochs from their transaction coordinator (`crate::txn`).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::security::{Access, Op, Resource};
use crate::txn::TxnProducer;

pub(crate) async fn handle(
    b: &Broker,
    access: &Access,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = req.transactional_id.as_ref().filter(|id| !id.is_empty()) {
        return transactional(b, access, id.0.as_str(), &req, response).await;
    }
    // KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some
    // topic.
    if !(access.on_some(Op::Write, Resource::Topic) || access.on_cluster(Op::IdempotentWrite)) {
        return response.with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    // Without a transactional id every request gets a fresh producer id, whatever id and epoch
    // it carries, as in Kafka's coordinator: an idempotent producer (KIP-360) bumps its epoch
    // itself and asks again only to start over, and bumping a sent id would let any client take
    // over another producer's sequence state.
    match b.segment_log().allocate_producer_id().await {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => response.with_error_code(metadata_error_code(&e).code()),
    }
}

/// A transactional producer: WRITE on its transactional id, then the coordinator bumps its
/// epoch (fencing older instances and aborting their open transaction).
async fn transactional(
    b: &Broker,
    access: &Access,
    id: &str,
    req: &InitProducerIdRequest,
    response: InitProducerIdResponse,
) -> InitProducerIdResponse {
    if !access.allows(Op::Write, Resource::TransactionalId, id) {
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    let claimed = TxnProducer {
        id: req.producer_id.0,
        epoch: req.producer_epoch,
    };
    match b
        .txn
        .init_txn_producer(id, req.transaction_timeout_ms, Some(claimed))
        .await
    {
        Ok(p) => response
            .with_producer_id(ProducerId(p.id))
            .with_producer_epoch(p.epoch),
        Err(e) => {
            tracing::debug!(transactional_id = id, code = ?e.code, "InitProducerId refused: {}", e.message);
            response.with_error_code(e.code.code())
        }
    }
}
