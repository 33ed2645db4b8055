//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): SCRAM users managed
//! over the Kafka protocol, with Kafka's per-user error codes. The work is done by
//! [`crate::security::Users`].

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::str_bytes;
use crate::api_error::ApiError;
use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::security::{validate_iterations, Access, Op, ScramAlgorithm, UserDescription};

/// A per-user failure: code and message.
type Failure = (ResponseError, String);

fn unauthorized() -> Failure {
    (
        ResponseError::ClusterAuthorizationFailed,
        "not authorized to manage SCRAM users".into(),
    )
}

pub(crate) async fn describe(
    b: &Broker,
    access: &Access,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let response = DescribeUserScramCredentialsResponse::default();
    let listed = if access.on_cluster(Op::Describe) {
        b.users().list().await.map_err(|e| failure(&e))
    } else {
        Err(unauthorized())
    };
    let users = match listed {
        Ok(users) => users,
        Err((code, message)) => {
            return response
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(&message)))
        }
    };
    let requested: Vec<String> = req
        .users
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.name.to_string())
        .collect();
    // Null or empty asks for every user, as in Kafka.
    let results = if requested.is_empty() {
        users.iter().map(described).collect()
    } else {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for name in &requested {
            *counts.entry(name).or_default() += 1;
        }
        let mut results = Vec::with_capacity(counts.len());
        for name in &requested {
            let Some(count) = counts.remove(name.as_str()) else {
                continue; // a duplicate, answered at its first occurrence
            };
            let result = if count > 1 {
                Err((
                    ResponseError::DuplicateResource,
                    format!("Cannot describe SCRAM credentials for the same user twice in a single request: {name}"),
                ))
            } else {
                users.iter().find(|u| &u.name == name).ok_or_else(|| {
                    (
                        ResponseError::ResourceNotFound,
                        format!(
                            "Attempt to describe a user credential that does not exist: {name}"
                        ),
                    )
                })
            };
            results.push(match result {
                Ok(user) => described(user),
                Err((code, message)) => DescribeUserScramCredentialsResult::default()
                    .with_user(str_bytes(name))
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&message))),
            });
        }
        results
    };
    response.with_results(results)
}

fn described(user: &UserDescription) -> DescribeUserScramCredentialsResult {
    let infos = user.credentials.iter().map(|c| {
        CredentialInfo::default()
            .with_mechanism(c.mechanism.kafka_type())
            .with_iterations(c.iterations as i32)
    });
    DescribeUserScramCredentialsResult::default()
        .with_user(str_bytes(&user.name))
        .with_credential_infos(infos.collect())
}

/// The one change a request makes to a user.
enum Planned {
    Delete(ScramAlgorithm),
    Upsert(ScramAlgorithm, ScramCredentialUpsertion),
    Failed(Failure),
}

pub(crate) async fn alter(
    b: &Broker,
    access: &Access,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let authorized = access.on_cluster(Op::Alter);
    // Users in first-seen order, each with one planned change: as in Kafka (KRaft), a user
    // named twice in one request (whatever the mechanisms) fails with DUPLICATE_RESOURCE, and a
    // user whose change is invalid keeps its first error.
    let mut order: Vec<String> = Vec::new();
    let mut plan: HashMap<String, Planned> = HashMap::new();
    let deletions = req
        .deletions
        .into_iter()
        .map(|d| (d.name, d.mechanism, None));
    let upsertions = req
        .upsertions
        .into_iter()
        .map(|u| (u.name.clone(), u.mechanism, Some(u)));
    for (name, mechanism, upsertion) in deletions.chain(upsertions) {
        let name = name.to_string();
        let next = match plan.get(&name) {
            Some(Planned::Failed(_)) => continue,
            Some(_) => Planned::Failed((
                ResponseError::DuplicateResource,
                "A user credential cannot be altered twice in the same request".into(),
            )),
            None if !authorized => Planned::Failed(unauthorized()),
            None => validate(b, &name, mechanism, upsertion).await,
        };
        if !plan.contains_key(&name) {
            order.push(name.clone());
        }
        plan.insert(name, next);
    }
    let mut results = Vec::with_capacity(order.len());
    for name in order {
        let outcome = match plan.remove(&name).expect("planned") {
            Planned::Failed(failure) => Err(failure),
            Planned::Delete(alg) => b
                .users()
                .delete(&name, &[alg])
                .await
                .map_err(|e| failure(&e)),
            Planned::Upsert(alg, u) => {
                let iterations = i64::from(u.iterations);
                let users = b.users();
                let upserted =
                    users.upsert_salted(&name, alg, iterations, &u.salt, &u.salted_password);
                upserted.await.map_err(|e| failure(&e))
            }
        };
        let result = AlterUserScramCredentialsResult::default().with_user(str_bytes(&name));
        results.push(match outcome {
            Ok(()) => result,
            Err((code, message)) => result
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(&message))),
        });
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// Checks one change before anything is applied; a deletion must name an existing credential.
async fn validate(
    b: &Broker,
    name: &str,
    mechanism: i8,
    upsertion: Option<ScramCredentialUpsertion>,
) -> Planned {
    if name.is_empty() {
        return Planned::Failed((
            ResponseError::UnacceptableCredential,
            "Username must not be empty".into(),
        ));
    }
    let Some(alg) = ScramAlgorithm::from_kafka_type(mechanism) else {
        return Planned::Failed((
            ResponseError::UnsupportedSaslMechanism,
            format!("Unknown SCRAM mechanism {mechanism}"),
        ));
    };
    match upsertion {
        Some(u) => match validate_iterations(i64::from(u.iterations)) {
            Ok(_) => Planned::Upsert(alg, u),
            Err(e) => Planned::Failed(failure(&e)),
        },
        None => match b.users().has_credential(name, alg).await {
            Ok(true) => Planned::Delete(alg),
            Ok(false) => Planned::Failed((
                ResponseError::ResourceNotFound,
                "Attempt to delete a user credential that does not exist".into(),
            )),
            Err(e) => Planned::Failed(failure(&e)),
        },
    }
}

/// The Kafka error code and message of a failed user operation.
fn failure(e: &ApiError) -> Failure {
    let code = match e {
        ApiError::Invalid(_) => ResponseError::UnacceptableCredential,
        ApiError::UnknownUser { .. } => ResponseError::ResourceNotFound,
        ApiError::Metadata(m) => metadata_error_code(m),
        _ => ResponseError::UnknownServerError,
    };
    (code, e.to_string())
}
