//! User administration: the SCRAM credentials SASL logins are checked against, kept in the
//! metadata store (salted derivatives only, never a password).
//!
//! [`Users`] is shared by the Kafka APIs (DescribeUserScramCredentials and
//! AlterUserScramCredentials, in `handlers::scram_users`) and the HTTP admin API. A change is
//! written to the store, then every SASL listener serving this broker reloads its credentials at
//! once; other agents pick it up on their periodic reload
//! ([`super::SaslAuthenticator::spawn_refresh`]).

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use streamhouse_metadata::MetadataStore;
use tracing::{info, warn};

use super::scram::{ScramAlgorithm, ScramCredential, MAX_ITERATIONS, MIN_ITERATIONS};
use super::{Mechanism, SaslAuthenticator};
use crate::api_error::ApiError;

/// Longest user name accepted, in characters.
pub const MAX_USER_NAME_CHARS: usize = 255;

/// Longest password accepted (HTTP API), in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Longest salt accepted, in bytes (clients send 16 to 64).
const MAX_SALT_BYTES: usize = 1024;

/// One SCRAM credential of a user, as it may be shown: never the salt or the keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialInfo {
    /// The mechanism (serialized as `SCRAM-SHA-256` or `SCRAM-SHA-512`).
    pub mechanism: ScramAlgorithm,
    /// PBKDF2 iteration count.
    pub iterations: u32,
}

/// A user and the mechanisms it can log in with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserDescription {
    /// The user name (the principal is `User:<name>`).
    pub name: String,
    /// One entry per mechanism, SCRAM-SHA-256 first.
    pub credentials: Vec<CredentialInfo>,
}

/// Checks a user name: not empty (Kafka's rule), bounded, no control characters (they would
/// corrupt logs and listings).
pub fn validate_user_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::Invalid("Username must not be empty".into()));
    }
    if name.chars().count() > MAX_USER_NAME_CHARS {
        return Err(ApiError::Invalid(format!(
            "user name is longer than {MAX_USER_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            "user name must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// Checks an iteration count against Kafka's bounds ([`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`]).
pub fn validate_iterations(iterations: i64) -> Result<u32, ApiError> {
    if iterations < i64::from(MIN_ITERATIONS) {
        return Err(ApiError::Invalid(format!(
            "Too few iterations: {iterations} (at least {MIN_ITERATIONS})"
        )));
    }
    if iterations > i64::from(MAX_ITERATIONS) {
        return Err(ApiError::Invalid(format!(
            "Too many iterations: {iterations} (at most {MAX_ITERATIONS})"
        )));
    }
    Ok(iterations as u32)
}

/// User administration of an agent; obtained with `Broker::users`.
pub struct Users<'a> {
    metadata: &'a dyn MetadataStore,
    /// The credential caches of the agent's SASL listeners, reloaded after every change.
    authenticators: &'a RwLock<Vec<Arc<SaslAuthenticator>>>,
}

impl<'a> Users<'a> {
    /// User administration over `metadata`, reloading `authenticators` after each change.
    pub(crate) fn new(
        metadata: &'a dyn MetadataStore,
        authenticators: &'a RwLock<Vec<Arc<SaslAuthenticator>>>,
    ) -> Self {
        Self {
            metadata,
            authenticators,
        }
    }
}

impl Users<'_> {
    /// Every user with at least one credential, ordered by name.
    pub async fn list(&self) -> Result<Vec<UserDescription>, ApiError> {
        let mut users: BTreeMap<String, Vec<(ScramAlgorithm, u32)>> = BTreeMap::new();
        for record in self.metadata.list_credentials().await? {
            // Rows of mechanisms this version does not know are not logins it offers.
            if let Some(alg) = algorithm_of(&record.mechanism) {
                let entry = users.entry(record.user).or_default();
                entry.push((alg, record.iterations));
            }
        }
        Ok(users
            .into_iter()
            .map(|(name, mut credentials)| {
                credentials.sort_by_key(|(alg, _)| alg.kafka_type());
                UserDescription {
                    name,
                    credentials: credentials
                        .into_iter()
                        .map(|(mechanism, iterations)| CredentialInfo {
                            mechanism,
                            iterations,
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// One user; [`ApiError::UnknownUser`] when it has no credential.
    pub async fn describe(&self, name: &str) -> Result<UserDescription, ApiError> {
        let mut credentials = Vec::new();
        for alg in ScramAlgorithm::ALL {
            let found = self
                .metadata
                .get_credential(name, alg.mechanism_name())
                .await?;
            if let Some(c) = found {
                credentials.push(CredentialInfo {
                    mechanism: alg,
                    iterations: c.iterations,
                });
            }
        }
        if credentials.is_empty() {
            return Err(ApiError::UnknownUser {
                user: name.to_string(),
                mechanism: None,
            });
        }
        Ok(UserDescription {
            name: name.to_string(),
            credentials,
        })
    }

    /// Whether `name` has a credential for `alg`.
    pub async fn has_credential(&self, name: &str, alg: ScramAlgorithm) -> Result<bool, ApiError> {
        let found = self
            .metadata
            .get_credential(name, alg.mechanism_name())
            .await?;
        Ok(found.is_some())
    }

    /// Creates or replaces `name`'s credential for `alg` from a salted password
    /// `Hi(password, salt, iterations)` computed by the client (AlterUserScramCredentials). Only
    /// its derivatives are stored.
    pub async fn upsert_salted(
        &self,
        name: &str,
        alg: ScramAlgorithm,
        iterations: i64,
        salt: &[u8],
        salted_password: &[u8],
    ) -> Result<(), ApiError> {
        validate_user_name(name)?;
        let iterations = validate_iterations(iterations)?;
        if salt.is_empty() || salt.len() > MAX_SALT_BYTES {
            return Err(ApiError::Invalid(format!(
                "salt must have 1 to {MAX_SALT_BYTES} bytes"
            )));
        }
        // A client derives it with the mechanism's hash, so any other length is not a salted
        // password and no login could ever match it.
        if salted_password.len() != alg.output_len() {
            return Err(ApiError::Invalid(format!(
                "a {} salted password has {} bytes, not {}",
                alg.mechanism_name(),
                alg.output_len(),
                salted_password.len()
            )));
        }
        let credential =
            ScramCredential::from_salted_password(alg, salt.to_vec(), iterations, salted_password);
        self.store(name, alg, credential).await?;
        self.apply_everywhere().await;
        Ok(())
    }

    /// Creates or replaces `name`'s credentials for each of `algorithms`, derived here from
    /// `password` with a fresh salt (HTTP API). Returns the user as it is now.
    pub async fn set_password(
        &self,
        name: &str,
        password: &str,
        algorithms: &[ScramAlgorithm],
        iterations: i64,
    ) -> Result<UserDescription, ApiError> {
        validate_user_name(name)?;
        let iterations = validate_iterations(iterations)?;
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::Invalid(format!(
                "password must have 1 to {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        if algorithms.is_empty() {
            return Err(ApiError::Invalid("at least one mechanism is needed".into()));
        }
        for &alg in algorithms {
            // PBKDF2 is deliberately slow: off the async workers.
            let password = password.to_string();
            let credential = tokio::task::spawn_blocking(move || {
                ScramCredential::new(alg, &password, iterations)
            })
            .await
            .expect("deriving a credential does not panic");
            self.store(name, alg, credential).await?;
        }
        self.apply_everywhere().await;
        self.describe(name).await
    }

    /// Deletes `name`'s credentials for each of `algorithms`.
    /// [`ApiError::UnknownUser`] when it had none of them (nothing changed then).
    pub async fn delete(&self, name: &str, algorithms: &[ScramAlgorithm]) -> Result<(), ApiError> {
        let mut deleted = false;
        for alg in algorithms {
            deleted |= self
                .metadata
                .delete_credential(name, alg.mechanism_name())
                .await?;
        }
        if !deleted {
            let mechanism = match algorithms {
                [one] => Some(one.mechanism_name()),
                _ => None,
            };
            return Err(ApiError::UnknownUser {
                user: name.to_string(),
                mechanism,
            });
        }
        info!(user = name, ?algorithms, "SCRAM credentials deleted");
        self.apply_everywhere().await;
        Ok(())
    }

    async fn store(
        &self,
        name: &str,
        alg: ScramAlgorithm,
        credential: ScramCredential,
    ) -> Result<(), ApiError> {
        let record = credential.to_record(name, alg.mechanism_name());
        self.metadata.upsert_credential(&record).await?;
        info!(
            user = name,
            mechanism = alg.mechanism_name(),
            "SCRAM credential stored"
        );
        Ok(())
    }

    /// Reloads the credentials of this broker's SASL listeners from the store, so the change
    /// applies to the next login here. The change is stored already: a failed reload is only
    /// late, since the periodic reload retries.
    async fn apply_everywhere(&self) {
        let authenticators = self.authenticators.read().clone();
        for auth in authenticators {
            if let Err(e) = auth.load(self.metadata).await {
                warn!("reloading SASL credentials after a user change failed: {e}");
            }
        }
    }
}

/// The SCRAM algorithm of a stored mechanism name.
fn algorithm_of(mechanism: &str) -> Option<ScramAlgorithm> {
    mechanism
        .parse::<Mechanism>()
        .ok()
        .and_then(Mechanism::scram)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_iterations_are_checked() {
        assert!(validate_user_name("alice").is_ok());
        assert!(validate_user_name("User:a,b=c ü").is_ok());
        for bad in ["", "a\nb", "tab\there", &"x".repeat(256)] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(validate_iterations(4096).unwrap(), 4096);
        assert_eq!(validate_iterations(16384).unwrap(), 16384);
        for bad in [-1, 0, 4095, 16385, i64::from(i32::MAX)] {
            assert!(validate_iterations(bad).is_err(), "{bad}");
        }
    }
}
