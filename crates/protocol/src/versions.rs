//! The API versions this agent serves. This table is the single source of truth: ApiVersions
//! advertises it and the dispatcher refuses anything outside it, so a client never negotiates a
//! version the handlers do not really implement.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

/// `(api, min, max)` as implemented here. Ceilings sit below the newest versions where those
/// switch to topic ids or transactional features the handlers do not implement.
const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    // v7: max timestamp (-3), v8: earliest local (-4), v9: latest tiered (-5), v10: timeout.
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DeleteRecords, 0, 2),
    // Transactions (KIP-98). AddPartitionsToTxn v4 is the brokers' batched verification call
    // and EndTxn v5 KIP-890's per-transaction epoch bump, neither implemented; v2 of
    // ListTransactions adds a regular-expression filter, which nothing here needs.
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    // SASL (KIP-43, KIP-152); the handshake v0 raw-token mode is served too.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    // SCRAM user administration (KIP-554).
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // Classic consumer groups.
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    // KIP-848 consumer groups (v1: the client picks its member id). OffsetCommit v9 carries a
    // member epoch (STALE_MEMBER_EPOCH), OffsetFetch v9 a member id and epoch, ListGroups v5
    // group types; the v10 offsets APIs switch to topic ids.
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    // ACL administration (KIP-140; v0 has no pattern type and left Kafka in 4.0).
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// Versions of `api` this agent serves, or `None` when it does not serve the API at all.
pub(crate) fn supported(api: ApiKey) -> Option<VersionRange> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|&(_, min, max)| VersionRange { min, max }.intersect(&api.valid_versions()))
        .filter(|r| !r.is_empty())
}

/// Every served API with its version range, for the ApiVersions response.
pub fn all() -> impl Iterator<Item = (ApiKey, VersionRange)> {
    SUPPORTED
        .iter()
        .filter_map(|&(api, _, _)| supported(api).map(|r| (api, r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_within_what_the_codec_can_decode() {
        for &(api, min, max) in SUPPORTED {
            let r = supported(api).expect("served");
            assert_eq!((r.min, r.max), (min, max), "{api:?} clipped by the codec");
        }
    }
}
