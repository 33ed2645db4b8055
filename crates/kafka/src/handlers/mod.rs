//! One module per Kafka API. Each turns a decoded request into a response; errors inside a
//! request become Kafka error codes in the response, never a dropped connection.

pub(crate) mod admin;
pub(crate) mod api_versions;
pub(crate) mod delete_records;
pub(crate) mod fetch;
pub(crate) mod groups;
pub(crate) mod init_producer_id;
pub(crate) mod list_offsets;
pub(crate) mod metadata;
pub(crate) mod offsets;
pub(crate) mod produce;
pub(crate) mod sasl;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{RequestHeader, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::connection::ConnectionState;

/// What a started request will send back.
pub(crate) enum Reply {
    /// Work whose completion is not answered (Produce with acks=0).
    Silent(BoxFuture<'static, ()>),
    /// A response, once the future completes.
    Respond(BoxFuture<'static, ResponseKind>),
}

/// Starts handling a request whose version the caller has checked against [`streamhouse_protocol::versions`].
pub(crate) fn dispatch(
    broker: &Arc<Broker>,
    conn: &mut ConnectionState,
    header: &RequestHeader,
    request: RequestKind,
) -> Reply {
    let v = header.request_api_version;
    let b = broker.clone();
    match request {
        RequestKind::Produce(r) => produce::start(broker, conn, r),
        RequestKind::Fetch(r) => {
            later(async move { ResponseKind::Fetch(fetch::handle(&b, r, v).await) })
        }
        RequestKind::ListOffsets(r) => {
            later(async move { ResponseKind::ListOffsets(list_offsets::handle(&b, r).await) })
        }
        RequestKind::Metadata(r) => {
            later(async move { ResponseKind::Metadata(metadata::handle(&b, r, v).await) })
        }
        RequestKind::ApiVersions(_) => {
            later(async move { ResponseKind::ApiVersions(api_versions::handle()) })
        }
        RequestKind::CreateTopics(r) => {
            later(async move { ResponseKind::CreateTopics(admin::create_topics(&b, r).await) })
        }
        RequestKind::DeleteTopics(r) => {
            later(async move { ResponseKind::DeleteTopics(admin::delete_topics(&b, r).await) })
        }
        RequestKind::CreatePartitions(r) => {
            later(
                async move { ResponseKind::CreatePartitions(admin::create_partitions(&b, r).await) },
            )
        }
        RequestKind::DescribeConfigs(r) => {
            later(
                async move { ResponseKind::DescribeConfigs(admin::describe_configs(&b, r).await) },
            )
        }
        RequestKind::InitProducerId(r) => {
            later(
                async move { ResponseKind::InitProducerId(init_producer_id::handle(&b, r).await) },
            )
        }
        RequestKind::FindCoordinator(r) => {
            later(async move { ResponseKind::FindCoordinator(groups::find_coordinator(&b, r, v)) })
        }
        RequestKind::JoinGroup(r) => {
            let client = groups::Client::new(header, conn);
            later(
                async move { ResponseKind::JoinGroup(groups::join_group(&b, client, r, v).await) },
            )
        }
        RequestKind::SyncGroup(r) => {
            later(async move { ResponseKind::SyncGroup(groups::sync_group(&b, r, v).await) })
        }
        RequestKind::Heartbeat(r) => {
            later(async move { ResponseKind::Heartbeat(groups::heartbeat(&b, r)) })
        }
        RequestKind::LeaveGroup(r) => {
            later(async move { ResponseKind::LeaveGroup(groups::leave_group(&b, r, v)) })
        }
        RequestKind::ListGroups(r) => {
            later(async move { ResponseKind::ListGroups(groups::list_groups(&b, r, v).await) })
        }
        RequestKind::DescribeGroups(r) => {
            later(
                async move { ResponseKind::DescribeGroups(groups::describe_groups(&b, r, v).await) },
            )
        }
        RequestKind::DeleteGroups(r) => {
            later(async move { ResponseKind::DeleteGroups(groups::delete_groups(&b, r).await) })
        }
        RequestKind::OffsetCommit(r) => {
            later(async move { ResponseKind::OffsetCommit(offsets::offset_commit(&b, r).await) })
        }
        RequestKind::OffsetFetch(r) => {
            later(async move { ResponseKind::OffsetFetch(offsets::offset_fetch(&b, r, v).await) })
        }
        RequestKind::OffsetDelete(r) => {
            later(async move { ResponseKind::OffsetDelete(offsets::offset_delete(&b, r).await) })
        }
        RequestKind::DeleteRecords(r) => {
            later(async move { ResponseKind::DeleteRecords(delete_records::handle(&b, r).await) })
        }
        RequestKind::SaslHandshake(_) => later(async { sasl::handshake_disabled() }),
        RequestKind::SaslAuthenticate(_) => later(async { sasl::authenticate_disabled() }),
        other => unreachable!("version table admits {other:?} but no handler exists"),
    }
}

fn later(fut: impl std::future::Future<Output = ResponseKind> + Send + 'static) -> Reply {
    Reply::Respond(fut.boxed())
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}
