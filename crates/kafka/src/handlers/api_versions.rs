//! ApiVersions: what this agent serves, from [`streamhouse_protocol::versions`].

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;
use streamhouse_protocol::versions;

pub(crate) fn handle() -> ApiVersionsResponse {
    let api_keys = versions::all()
        .map(|(api, range)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(api_keys)
}

/// The v0 response to an ApiVersions request of a version we do not serve.
pub(crate) fn unsupported_version_response() -> kafka_protocol::messages::ResponseKind {
    kafka_protocol::messages::ResponseKind::ApiVersions(
        handle().with_error_code(ResponseError::UnsupportedVersion.code()),
    )
}
