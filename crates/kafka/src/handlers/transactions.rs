//! ListTransactions (KIP-664) and DescribeTransactions. StreamHouse has no transaction
//! coordinator and refuses transactional producers (`init_producer_id`), so no transaction
//! exists: the listing is empty and every transactional id is unknown, which is what admin tools
//! and Kafka UIs need to show, instead of an unsupported-API error.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId,
};

/// The transaction states Kafka's coordinator knows; a filter naming another is reported back as
/// unknown, as Kafka does.
const STATES: [&str; 8] = [
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

pub(crate) fn list_transactions(req: ListTransactionsRequest) -> ListTransactionsResponse {
    let unknown = req
        .state_filters
        .into_iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .collect();
    ListTransactionsResponse::default().with_unknown_state_filters(unknown)
}

pub(crate) fn describe_transactions(
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            TransactionState::default()
                .with_transactional_id(id)
                .with_error_code(ResponseError::TransactionalIdNotFound.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
