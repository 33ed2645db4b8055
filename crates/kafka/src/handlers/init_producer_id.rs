//! InitProducerId: hands out idempotent producer ids. Transactions are not supported.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::security::{Access, Op, Resource};

pub(crate) async fn handle(
    b: &Broker,
    access: &Access,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        // A transactional producer needs a transaction coordinator, which StreamHouse does not
        // have; refuse clearly instead of pretending.
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
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
    match b.metadata().allocate_producer_id().await {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => response.with_error_code(metadata_error_code(&e).code()),
    }
}
