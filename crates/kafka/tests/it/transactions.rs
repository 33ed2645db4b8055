//! Transactions at the wire level: KIP-890 verification of transactional writes, the last
//! stable offset and read_committed Fetch, and epoch fencing.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::harness::{transactional_batch, Client, TestServer};
use crate::protocol::{create_topic, fetch, produce, produce_result};

const TOPIC: &str = "txn";

fn txn_id() -> TransactionalId {
    TransactionalId(StrBytes::from_static_str("tx"))
}

/// One transactional batch of `values` from `(pid, epoch)` at sequence `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Bytes {
    let records: Vec<(&str, &str)> = values.iter().map(|v| ("k", *v)).collect();
    transactional_batch(&records, (pid, epoch, seq))
}

async fn init(c: &mut Client) -> (i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id()))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match c.send(RequestKind::InitProducerId(req), 4).await {
        ResponseKind::InitProducerId(r) if r.error_code == 0 => (r.producer_id.0, r.producer_epoch),
        other => panic!("InitProducerId: {other:?}"),
    }
}

async fn add_partition(c: &mut Client, (pid, epoch): (i64, i16), partition: i32) -> i16 {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id())
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![partition])]);
    let ResponseKind::AddPartitionsToTxn(r) = c.send(RequestKind::AddPartitionsToTxn(req), 3).await
    else {
        panic!()
    };
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

async fn end_txn(c: &mut Client, (pid, epoch): (i64, i16), commit: bool) -> i16 {
    let req = EndTxnRequest::default()
        .with_transactional_id(txn_id())
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let ResponseKind::EndTxn(r) = c.send(RequestKind::EndTxn(req), 3).await else {
        panic!()
    };
    r.error_code
}

/// `(last stable offset, records bytes, aborted transactions)` of partition 0, read_committed.
async fn fetch_committed(c: &mut Client) -> (i64, usize, Option<usize>) {
    let RequestKind::Fetch(req) = fetch(TOPIC, 0, 0, 0) else {
        unreachable!()
    };
    let ResponseKind::Fetch(r) = c
        .send(RequestKind::Fetch(req.with_isolation_level(1)), 12)
        .await
    else {
        panic!()
    };
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let bytes = p.records.as_ref().map_or(0, |r| r.len());
    (
        p.last_stable_offset,
        bytes,
        p.aborted_transactions.as_ref().map(|a| a.len()),
    )
}

#[tokio::test]
async fn transactional_writes_are_verified_and_read_committed_waits_for_the_commit() {
    let server = TestServer::start().await;
    create_topic(&server, TOPIC, 2).await;
    let mut c = server.client().await;
    let producer = init(&mut c).await;
    let (pid, epoch) = producer;
    let invalid = ResponseError::InvalidTxnState.code();

    // KIP-890: no transaction includes the partition yet, so the write is refused.
    let write = |seq, partition| {
        produce(
            TOPIC,
            partition,
            txn_batch(pid, epoch, seq, &["a", "b"]),
            -1,
        )
    };
    assert_eq!(produce_result(c.send(write(0, 0), 9).await).0, invalid);
    assert_eq!(add_partition(&mut c, producer, 0).await, 0);
    assert_eq!(produce_result(c.send(write(0, 0), 9).await), (0, 0));
    // Partition 1 was never added.
    assert_eq!(produce_result(c.send(write(0, 1), 9).await).0, invalid);

    // Open: read_committed sees nothing, stopped at the transaction's first offset.
    assert_eq!(fetch_committed(&mut c).await, (0, 0, Some(0)));
    assert_eq!(end_txn(&mut c, producer, true).await, 0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (lso, bytes, _) = fetch_committed(&mut c).await;
        if lso == 3 {
            assert!(bytes > 0, "the committed batch and its marker are returned");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "commit marker not written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A late write of the finished transaction is refused rather than opening another.
    assert_eq!(produce_result(c.send(write(2, 0), 9).await).0, invalid);

    // A new instance bumps the epoch; the old one is fenced.
    let (_, newer) = init(&mut c).await;
    assert_eq!(newer, epoch + 1);
    assert_eq!(
        add_partition(&mut c, producer, 0).await,
        ResponseError::ProducerFenced.code()
    );
}

async fn add_offsets(c: &mut Client, (pid, epoch): (i64, i16), group: &str) -> i16 {
    let req = AddOffsetsToTxnRequest::default()
        .with_transactional_id(txn_id())
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(StrBytes::from_string(group.into())));
    let ResponseKind::AddOffsetsToTxn(r) = c.send(RequestKind::AddOffsetsToTxn(req), 3).await
    else {
        panic!()
    };
    r.error_code
}

async fn txn_offset_commit(c: &mut Client, (pid, epoch): (i64, i16), group: &str) -> i16 {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn_id())
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)])]);
    let ResponseKind::TxnOffsetCommit(r) = c.send(RequestKind::TxnOffsetCommit(req), 3).await
    else {
        panic!()
    };
    r.topics[0].partitions[0].error_code
}

/// `(error, offset)` of partition 0 in `group`'s OffsetFetch (v7).
async fn committed(c: &mut Client, group: &str, require_stable: bool) -> (i16, i64) {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_require_stable(require_stable)
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_indexes(vec![0])]));
    let ResponseKind::OffsetFetch(r) = c.send(RequestKind::OffsetFetch(req), 7).await else {
        panic!()
    };
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.committed_offset)
}

#[tokio::test]
async fn offsets_committed_in_a_transaction_are_unstable_until_it_commits() {
    let server = TestServer::start().await;
    create_topic(&server, TOPIC, 1).await;
    let mut c = server.client().await;
    let producer = init(&mut c).await;
    // Not added to the transaction: refused.
    assert_eq!(
        txn_offset_commit(&mut c, producer, "g").await,
        ResponseError::InvalidTxnState.code()
    );
    assert_eq!(add_offsets(&mut c, producer, "g").await, 0);
    assert_eq!(txn_offset_commit(&mut c, producer, "g").await, 0);
    assert_eq!(
        committed(&mut c, "g", false).await,
        (0, -1),
        "not visible before the commit"
    );
    let unstable = ResponseError::UnstableOffsetCommit.code();
    assert_eq!(committed(&mut c, "g", true).await, (unstable, -1));
    assert_eq!(end_txn(&mut c, producer, true).await, 0);
    assert_eq!(committed(&mut c, "g", true).await, (0, 5));
}
