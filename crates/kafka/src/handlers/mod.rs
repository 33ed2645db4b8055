//! One module per Kafka API. Each turns a decoded request into a response; errors inside a
//! request become Kafka error codes in the response, never a dropped connection.

pub(crate) mod acls;
pub(crate) mod admin;
pub(crate) mod api_versions;
pub(crate) mod cluster;
pub(crate) mod configs;
pub(crate) mod consumer_groups;
pub(crate) mod delete_records;
pub(crate) mod fetch;
pub(crate) mod groups;
pub(crate) mod init_producer_id;
pub(crate) mod list_offsets;
pub(crate) mod metadata;
pub(crate) mod offsets;
pub(crate) mod produce;
pub(crate) mod producers;
pub(crate) mod sasl;
pub(crate) mod scram_users;
pub(crate) mod transactions;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{RequestHeader, RequestKind, ResponseKind, TopicName};

use crate::fetch_frame::FetchReply;
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::security::{Access, SaslSession};

/// What a connection remembers between requests.
#[derive(Default)]
pub(crate) struct ConnectionState {
    /// Completes when the previous Produce on this connection has appended its batches.
    pub(crate) produce_order: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Completes when the previous offset change (OffsetCommit, TxnOffsetCommit, OffsetDelete,
    /// DeleteGroups) on this connection has finished.
    pub(crate) commit_order: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Completes when the previous administrative request (topics, partitions, configs, ACLs,
    /// SCRAM users, DeleteRecords, and the describes of what they change) on this connection
    /// has finished.
    pub(crate) admin_order: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Set once the connection stops reading (the client went away, or it is being closed):
    /// work of its requests that has not taken effect by then is abandoned (see
    /// `produce::append_partition`).
    pub(crate) gone: Arc<std::sync::atomic::AtomicBool>,
    /// The client's address (DescribeGroups reports each member's host).
    pub(crate) peer: Option<SocketAddr>,
    /// SASL progress; `None` when the listener does not require authentication.
    pub(crate) sasl: Option<SaslSession>,
    /// Set when the response being sent is the last one (e.g. a failed authentication).
    pub(crate) closing: bool,
}

/// Partitions of one request looked up at once (Fetch, ListOffsets): the first request over
/// many partitions builds their logs (writer, reader, index) in parallel, not one by one.
pub(crate) const CONCURRENT_PARTITIONS: usize = 16;

/// What a started request will send back.
pub(crate) enum Reply {
    /// Work whose completion is not answered (Produce with acks=0).
    Silent(BoxFuture<'static, ()>),
    /// A response, once the future completes.
    Respond(BoxFuture<'static, ResponseKind>),
    /// A Fetch response, its records kept apart so they are written without a copy.
    Fetch(BoxFuture<'static, FetchReply>),
}

/// Starts handling a request whose version the caller has checked against [`streamhouse_protocol::versions`].
///
/// Each handler is given the request's [`Access`] and checks it where it resolves each topic
/// or group, so a refused part gets Kafka's authorization error in its usual place in the
/// response while the rest of the request proceeds.
pub(crate) fn dispatch(
    broker: &Arc<Broker>,
    conn: &mut ConnectionState,
    header: &RequestHeader,
    request: RequestKind,
) -> Reply {
    let v = header.request_api_version;
    let b = broker.clone();
    let user = conn.sasl.as_ref().and_then(|s| s.user());
    let a = Access::new(&broker.authorizer, user, conn.peer);
    match request {
        RequestKind::Produce(r) => produce::start(broker, conn, a, r),
        RequestKind::Fetch(r) => {
            Reply::Fetch(Box::pin(async move { fetch::handle(&b, &a, r).await }))
        }
        RequestKind::ListOffsets(r) => {
            later(async move { ResponseKind::ListOffsets(list_offsets::handle(&b, &a, r).await) })
        }
        RequestKind::Metadata(r) => {
            later(async move { ResponseKind::Metadata(metadata::handle(&b, &a, r, v).await) })
        }
        RequestKind::ApiVersions(_) => {
            later(async move { ResponseKind::ApiVersions(api_versions::handle()) })
        }
        RequestKind::CreateTopics(r) => later(in_order(&mut conn.admin_order, async move {
            ResponseKind::CreateTopics(admin::create_topics(&b, &a, r).await)
        })),
        RequestKind::DeleteTopics(r) => later(in_order(&mut conn.admin_order, async move {
            ResponseKind::DeleteTopics(admin::delete_topics(&b, &a, r).await)
        })),
        RequestKind::CreatePartitions(r) => later(in_order(&mut conn.admin_order, async move {
            ResponseKind::CreatePartitions(admin::create_partitions(&b, &a, r).await)
        })),
        RequestKind::DescribeConfigs(r) => later(in_order(&mut conn.admin_order, async move {
            ResponseKind::DescribeConfigs(admin::describe_configs(&b, &a, r).await)
        })),
        RequestKind::AlterConfigs(r) => later(in_order(&mut conn.admin_order, async move {
            ResponseKind::AlterConfigs(configs::alter_configs(&b, &a, r).await)
        })),
        RequestKind::IncrementalAlterConfigs(r) => {
            later(in_order(&mut conn.admin_order, async move {
                ResponseKind::IncrementalAlterConfigs(
                    configs::incremental_alter_configs(&b, &a, r).await,
                )
            }))
        }
        RequestKind::DescribeCluster(r) => later(async move {
            ResponseKind::DescribeCluster(cluster::describe_cluster(&b, &a, r).await)
        }),
        RequestKind::DescribeLogDirs(r) => later(async move {
            ResponseKind::DescribeLogDirs(cluster::describe_log_dirs(&b, &a, r).await)
        }),
        RequestKind::DescribeTopicPartitions(r) => later(async move {
            ResponseKind::DescribeTopicPartitions(
                metadata::describe_topic_partitions(&b, &a, r).await,
            )
        }),
        RequestKind::DescribeProducers(r) => later(async move {
            ResponseKind::DescribeProducers(producers::describe_producers(&b, &a, r).await)
        }),
        RequestKind::ListTransactions(r) => later(async move {
            ResponseKind::ListTransactions(transactions::list_transactions(&b, &a, r).await)
        }),
        RequestKind::DescribeTransactions(r) => later(async move {
            ResponseKind::DescribeTransactions(transactions::describe_transactions(&b, &a, r).await)
        }),
        RequestKind::AddPartitionsToTxn(r) => later(async move {
            ResponseKind::AddPartitionsToTxn(transactions::add_partitions_to_txn(&b, &a, r).await)
        }),
        RequestKind::AddOffsetsToTxn(r) => later(async move {
            ResponseKind::AddOffsetsToTxn(transactions::add_offsets_to_txn(&b, &a, r).await)
        }),
        RequestKind::EndTxn(r) => {
            later(async move { ResponseKind::EndTxn(transactions::end_txn(&b, &a, r).await) })
        }
        RequestKind::TxnOffsetCommit(r) => later(in_order(&mut conn.commit_order, async move {
            ResponseKind::TxnOffsetCommit(transactions::txn_offset_commit(&b, &a, r).await)
        })),
        RequestKind::InitProducerId(r) => {
            later(
                async move { ResponseKind::InitProducerId(init_producer_id::handle(&b, &a, r).await) },
            )
        }
        RequestKind::FindCoordinator(r) => {
            later(
                async move { ResponseKind::FindCoordinator(groups::find_coordinator(&b, &a, r, v)) },
            )
        }
        RequestKind::JoinGroup(r) => {
            let client = groups::Client::new(header, conn);
            later(
                async move { ResponseKind::JoinGroup(groups::join_group(&b, &a, client, r, v).await) },
            )
        }
        RequestKind::ConsumerGroupHeartbeat(r) => {
            let client = groups::Client::new(header, conn);
            later(async move {
                ResponseKind::ConsumerGroupHeartbeat(
                    consumer_groups::heartbeat(&b, &a, client, r).await,
                )
            })
        }
        RequestKind::ConsumerGroupDescribe(r) => later(async move {
            ResponseKind::ConsumerGroupDescribe(consumer_groups::describe(&b, &a, r).await)
        }),
        RequestKind::SyncGroup(r) => {
            later(async move { ResponseKind::SyncGroup(groups::sync_group(&b, &a, r, v).await) })
        }
        RequestKind::Heartbeat(r) => {
            later(async move { ResponseKind::Heartbeat(groups::heartbeat(&b, &a, r).await) })
        }
        RequestKind::LeaveGroup(r) => {
            later(async move { ResponseKind::LeaveGroup(groups::leave_group(&b, &a, r, v).await) })
        }
        RequestKind::ListGroups(r) => {
            later(async move { ResponseKind::ListGroups(groups::list_groups(&b, &a, r, v).await) })
        }
        RequestKind::DescribeGroups(r) => later(async move {
            ResponseKind::DescribeGroups(groups::describe_groups(&b, &a, r, v).await)
        }),
        RequestKind::DeleteGroups(r) => later(in_order(&mut conn.commit_order, async move {
            ResponseKind::DeleteGroups(groups::delete_groups(&b, &a, r).await)
        })),
        RequestKind::OffsetCommit(r) => later(in_order(&mut conn.commit_order, async move {
            ResponseKind::OffsetCommit(offsets::offset_commit(&b, &a, r).await)
        })),
        RequestKind::OffsetFetch(r) => {
            later(
                async move { ResponseKind::OffsetFetch(offsets::offset_fetch(&b, &a, r, v).await) },
            )
        }
        RequestKind::OffsetDelete(r) => later(in_order(&mut conn.commit_order, async move {
            ResponseKind::OffsetDelete(offsets::offset_delete(&b, &a, r).await)
        })),
        RequestKind::DeleteRecords(r) => later(in_order(&mut conn.admin_order, async move {
            ResponseKind::DeleteRecords(delete_records::handle(&b, &a, r).await)
        })),
        RequestKind::CreateAcls(r) => later(in_order(&mut conn.admin_order, async move {
            ResponseKind::CreateAcls(acls::create_acls(&b, &a, r).await)
        })),
        RequestKind::DescribeAcls(r) => later(in_order(&mut conn.admin_order, async move {
            ResponseKind::DescribeAcls(acls::describe_acls(&b, &a, r).await)
        })),
        RequestKind::DeleteAcls(r) => later(in_order(&mut conn.admin_order, async move {
            ResponseKind::DeleteAcls(acls::delete_acls(&b, &a, r).await)
        })),
        RequestKind::DescribeUserScramCredentials(r) => {
            later(in_order(&mut conn.admin_order, async move {
                ResponseKind::DescribeUserScramCredentials(scram_users::describe(&b, &a, r).await)
            }))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            later(in_order(&mut conn.admin_order, async move {
                ResponseKind::AlterUserScramCredentials(scram_users::alter(&b, &a, r).await)
            }))
        }
        RequestKind::SaslHandshake(_) => later(async { sasl::handshake_disabled() }),
        RequestKind::SaslAuthenticate(_) => later(async { sasl::authenticate_disabled() }),
        other => unreachable!("version table admits {other:?} but no handler exists"),
    }
}

fn later(fut: impl std::future::Future<Output = ResponseKind> + Send + 'static) -> Reply {
    Reply::Respond(fut.boxed())
}

/// `work`, started only once the previous work chained on `slot` (this connection's last
/// request of its kind) has finished, so such requests take effect in the order they were sent.
///
/// Requests of a connection are otherwise served concurrently, while Kafka serves them one at
/// a time, and clients count on that order for appends (an idempotent producer pipelines
/// consecutive sequence numbers), for offset commits (librdkafka sends the commits it held
/// back while the coordinator was away all at once, oldest first, and takes the last one as
/// the committed offset: applied out of order, an older commit would overwrite a newer one
/// whose success the client had already seen) and for administration (Java's admin client
/// keeps many requests in flight on one connection: an alteration and the describe after it,
/// or a topic's creation and its deletion, must not pass each other). Fetch, Metadata and the
/// group protocol's own requests stay concurrent: they change nothing a later request of the
/// same connection reads, or wait on purpose (a JoinGroup parks until the rebalance ends).
pub(super) fn in_order<T>(
    slot: &mut Option<tokio::sync::oneshot::Receiver<()>>,
    work: impl std::future::Future<Output = T>,
) -> impl std::future::Future<Output = T> {
    let previous = slot.take();
    let (done, next) = tokio::sync::oneshot::channel::<()>();
    *slot = Some(next);
    async move {
        if let Some(previous) = previous {
            let _ = previous.await;
        }
        let out = work.await;
        drop(done);
        out
    }
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}
