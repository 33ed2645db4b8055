//! AlterConfigs (legacy: replaces a topic's settings) and IncrementalAlterConfigs (KIP-339:
//! SET / DELETE / APPEND / SUBTRACT). Both go through `Admin::change_config`, as the HTTP API
//! does, so the settings are validated in one place (`topic_config`).

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::api_error::ApiError;
use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::security::{Access, Op, Resource};
use crate::topic_config::{self, ConfigChange};

/// Kafka's `ConfigResource.Type` codes this agent knows.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// IncrementalAlterConfigs operation codes (`AlterConfigOp.OpType`).
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

type Outcome = Result<(), (ResponseError, String)>;

pub(crate) async fn alter_configs(
    b: &Broker,
    access: &Access,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let settings: Result<Vec<(String, String)>, _> = r
            .configs
            .iter()
            .map(|c| match &c.value {
                Some(v) => Ok((c.name.to_string(), v.to_string())),
                // As Kafka: the legacy API has no way to say "default" but leaving a name out.
                None => Err((
                    ResponseError::InvalidRequest,
                    format!("null value for config '{}'", c.name.as_str()),
                )),
            })
            .collect();
        let names = r.configs.iter().map(|c| c.name.as_str());
        let outcome = match settings {
            Ok(settings) => {
                alter(access, r.resource_type, &r.resource_name, names, async {
                    let entries = settings.iter().map(|(k, v)| (k.as_str(), Some(v.as_str())));
                    let parsed = topic_config::parse(entries);
                    change(
                        b,
                        &r.resource_name,
                        move |_| parsed.clone(),
                        req.validate_only,
                    )
                    .await
                })
                .await
            }
            Err(refusal) => Err(refusal),
        };
        let (code, message) = split(outcome);
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub(crate) async fn incremental_alter_configs(
    b: &Broker,
    access: &Access,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let changes: Result<Vec<(String, ConfigChange)>, _> = r
            .configs
            .iter()
            .map(|c| {
                // As Kafka: only DELETE goes without a value.
                let value = || {
                    c.value.as_ref().map(|v| v.to_string()).ok_or_else(|| {
                        (
                            ResponseError::InvalidRequest,
                            format!("null value for config '{}'", c.name.as_str()),
                        )
                    })
                };
                let change = match c.config_operation {
                    OP_SET => ConfigChange::Set(value()?),
                    OP_DELETE => ConfigChange::Delete,
                    OP_APPEND => ConfigChange::Append(value()?),
                    OP_SUBTRACT => ConfigChange::Subtract(value()?),
                    op => {
                        return Err((
                            ResponseError::InvalidRequest,
                            format!("unknown config operation {op}"),
                        ))
                    }
                };
                Ok((c.name.to_string(), change))
            })
            .collect();
        let names = r.configs.iter().map(|c| c.name.as_str());
        let outcome = match changes {
            Ok(changes) => {
                alter(access, r.resource_type, &r.resource_name, names, async {
                    let apply = |c: &_| topic_config::apply(c, &changes);
                    change(b, &r.resource_name, apply, req.validate_only).await
                })
                .await
            }
            Err(refusal) => Err(refusal),
        };
        let (code, message) = split(outcome);
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The checks both APIs make before `apply` runs: the resource type, its authorization, and no
/// setting named twice (Kafka refuses that as ambiguous).
async fn alter<'a>(
    access: &Access,
    resource_type: i8,
    resource: &StrBytes,
    names: impl Iterator<Item = &'a str>,
    apply: impl std::future::Future<Output = Outcome>,
) -> Outcome {
    match resource_type {
        RESOURCE_TOPIC => {
            if !access.allows(Op::AlterConfigs, Resource::Topic, resource.as_str()) {
                return Err((
                    ResponseError::TopicAuthorizationFailed,
                    format!("not authorized to alter configs of topic '{resource}'"),
                ));
            }
        }
        RESOURCE_BROKER => {
            return Err((
                ResponseError::InvalidRequest,
                "broker settings are read-only over Kafka: set them in the agent's configuration"
                    .into(),
            ))
        }
        other => {
            return Err((
                ResponseError::InvalidRequest,
                format!("config resource type {other} is not supported"),
            ))
        }
    }
    let mut seen = BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err((
                ResponseError::InvalidRequest,
                format!("config '{name}' named more than once"),
            ));
        }
    }
    apply.await
}

async fn change(
    b: &Broker,
    topic: &StrBytes,
    apply: impl Fn(
            &streamhouse_metadata::TopicConfig,
        ) -> Result<streamhouse_metadata::TopicConfig, topic_config::ConfigError>
        + Send
        + Sync,
    validate_only: bool,
) -> Outcome {
    b.admin()
        .change_config(topic.as_str(), apply, validate_only)
        .await
        .map(|_| ())
        .map_err(|e| {
            let code = match &e {
                ApiError::Invalid(_) => ResponseError::InvalidConfig,
                ApiError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
                ApiError::Metadata(m) => metadata_error_code(m),
                _ => ResponseError::UnknownServerError,
            };
            (code, e.to_string())
        })
}

fn split(outcome: Outcome) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((code, message)) => (code.code(), Some(str_bytes(&message))),
    }
}
