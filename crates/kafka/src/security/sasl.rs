//! SASL authentication of Kafka connections (KIP-43 handshake, KIP-152 SaslAuthenticate).
//!
//! A connection on a SASL listener starts unauthenticated: only ApiVersions, SaslHandshake and
//! SaslAuthenticate are accepted, as in Kafka, and anything else closes the connection.

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{MetadataError, MetadataStore};
use thiserror::Error;
use tracing::{debug, info, warn};

use super::scram::{
    ScramAlgorithm, ScramCredential, ScramError, ScramExchange, DEFAULT_ITERATIONS,
};

/// A SASL mechanism the listener can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// PLAIN (RFC 4616): the password in clear, so only sensible over TLS.
    Plain,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

/// A mechanism name that is not one of [`Mechanism`].
#[derive(Debug, Error)]
#[error("unknown SASL mechanism {0:?} (known: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")]
pub struct UnknownMechanism(pub String);

impl Mechanism {
    /// The IANA name clients send in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The SCRAM algorithm of this mechanism; `None` for PLAIN.
    pub fn scram(self) -> Option<ScramAlgorithm> {
        match self {
            Self::Plain => None,
            Self::ScramSha256 => Some(ScramAlgorithm::Sha256),
            Self::ScramSha512 => Some(ScramAlgorithm::Sha512),
        }
    }
}

impl std::str::FromStr for Mechanism {
    type Err = UnknownMechanism;

    /// Accepts the IANA name in any case, with `_` for `-` (config-file friendly).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            _ => Err(UnknownMechanism(s.to_string())),
        }
    }
}

type CredentialMap = HashMap<(String, ScramAlgorithm), ScramCredential>;

/// Most users whose last verified password [`SaslAuthenticator::verify_password`] remembers.
const MAX_VERIFIED_LOGINS: usize = 10_000;

/// A password [`SaslAuthenticator::verify_password`] accepted: a digest of salt and password
/// (never the password) and the StoredKey it matched, so a changed credential misses.
struct VerifiedLogin {
    digest: Vec<u8>,
    stored_key: Vec<u8>,
}

impl std::fmt::Debug for VerifiedLogin {
    // The digest is a fast hash of the password: it stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedLogin").finish_non_exhaustive()
    }
}

/// The enabled mechanisms and an in-memory copy of the users' SCRAM credentials (salted
/// derivatives only) from the metadata store, so authenticating needs no query.
#[derive(Debug)]
pub struct SaslAuthenticator {
    mechanisms: Vec<Mechanism>,
    credentials: RwLock<CredentialMap>,
    /// The last password verified per user (see [`Self::verify_password`]).
    verified: Mutex<HashMap<String, VerifiedLogin>>,
    /// Held from reading the store to replacing the map, so a periodic reload that read the
    /// store before a user change cannot overwrite the reload made after it.
    reloading: tokio::sync::Mutex<()>,
}

const SCRAM_ALGORITHMS: [(ScramAlgorithm, Mechanism); 2] = [
    (ScramAlgorithm::Sha256, Mechanism::ScramSha256),
    (ScramAlgorithm::Sha512, Mechanism::ScramSha512),
];

impl SaslAuthenticator {
    /// An authenticator offering `mechanisms`, with no users until [`Self::load`].
    pub fn new(mechanisms: Vec<Mechanism>) -> Self {
        Self {
            mechanisms,
            credentials: RwLock::default(),
            verified: Mutex::default(),
            reloading: tokio::sync::Mutex::default(),
        }
    }

    /// Creates or replaces `user` in `store` with SCRAM-SHA-256 and SCRAM-SHA-512 derivatives
    /// of `password` (PLAIN is verified against them), never the password itself, and makes it
    /// usable here at once.
    pub async fn create_user(
        &self,
        store: &dyn MetadataStore,
        user: &str,
        password: &str,
    ) -> Result<(), MetadataError> {
        for (alg, mechanism) in SCRAM_ALGORITHMS {
            let credential = ScramCredential::new(alg, password, DEFAULT_ITERATIONS);
            store
                .upsert_credential(&credential.to_record(user, mechanism.name()))
                .await?;
            let mut creds = self.credentials.write();
            creds.insert((user.to_string(), alg), credential);
        }
        Ok(())
    }

    /// Replaces the in-memory credentials with the store's (so deleted users stop working).
    pub async fn load(&self, store: &dyn MetadataStore) -> Result<(), MetadataError> {
        let _serialized = self.reloading.lock().await;
        let mut loaded = CredentialMap::new();
        for record in store.list_credentials().await? {
            let Ok(mechanism) = record.mechanism.parse::<Mechanism>() else {
                continue;
            };
            if let Some(alg) = mechanism.scram() {
                let key = (record.user.clone(), alg);
                loaded.insert(key, ScramCredential::from_record(record));
            }
        }
        *self.credentials.write() = loaded;
        Ok(())
    }

    /// Reloads the credentials every `every`, so users created through another agent work
    /// here too; a failed reload keeps the previous copy.
    pub fn spawn_refresh(
        self: Arc<Self>,
        store: Arc<dyn MetadataStore>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = self.load(store.as_ref()).await {
                    warn!("reloading SASL credentials failed: {e}");
                }
            }
        })
    }

    fn credential(&self, user: &str, alg: ScramAlgorithm) -> Option<ScramCredential> {
        let creds = self.credentials.read();
        creds.get(&(user.to_string(), alg)).cloned()
    }

    /// Whether `password` is `user`'s: checked against the user's SCRAM-SHA-256 credential, or
    /// its SCRAM-SHA-512 one when it has none, by deriving the salted password with the stored
    /// salt and iterations and comparing StoredKey. The one password check of the agent: SASL
    /// PLAIN and HTTP Basic both use it.
    ///
    /// The derivation costs thousands of HMACs by design, and HTTP clients send their password
    /// with every request, so a success is remembered as a fast digest of salt and password
    /// bound to the credential's StoredKey: the same password is then accepted without
    /// deriving again until the credential changes (a new salt or key misses the memo). Call it
    /// off the async workers (`spawn_blocking`), as a miss blocks for the derivation.
    pub fn verify_password(&self, user: &str, password: &str) -> bool {
        let Some((alg, credential)) = ScramAlgorithm::ALL
            .into_iter()
            .find_map(|alg| self.credential(user, alg).map(|c| (alg, c)))
        else {
            return false;
        };
        let memo = VerifiedLogin {
            digest: ScramAlgorithm::Sha256
                .hash(&[&credential.salt[..], password.as_bytes()].concat()),
            stored_key: credential.stored_key.clone(),
        };
        let verified = self.verified.lock();
        // Compared in constant time, so response times reveal nothing of the remembered digest.
        let remembered = verified.get(user).is_some_and(|v| {
            v.stored_key == memo.stored_key
                && aws_lc_rs::constant_time::verify_slices_are_equal(&v.digest, &memo.digest)
                    .is_ok()
        });
        drop(verified);
        if remembered {
            return true;
        }
        if !credential.matches_password(alg, password) {
            return false;
        }
        let mut verified = self.verified.lock();
        // Bounded: many distinct users would otherwise grow it without limit; starting afresh
        // costs each user one derivation.
        if verified.len() >= MAX_VERIFIED_LOGINS {
            verified.clear();
        }
        verified.insert(user.to_string(), memo);
        true
    }

    /// Verifies a PLAIN message `authzid NUL authcid NUL password`.
    fn plain(&self, token: &[u8]) -> Result<String, ScramError> {
        let mut parts = token.split(|&b| b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ScramError::Malformed("PLAIN message needs three fields"));
        };
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|_| ScramError::Malformed("PLAIN field is not UTF-8"))
        };
        let (authzid, user, password) = (text(authzid)?, text(user)?, text(password)?);
        let valid =
            (authzid.is_empty() || authzid == user) && self.verify_password(&user, &password);
        if valid {
            Ok(user)
        } else {
            Err(ScramError::InvalidCredentials(user))
        }
    }
}

/// Where a connection is in the SASL exchange.
enum Stage {
    /// Before SaslHandshake.
    Handshake,
    /// After SaslHandshake chose `mechanism`; `raw` means handshake v0, after which tokens come
    /// as bare length-prefixed frames rather than SaslAuthenticate requests.
    Authenticate { mechanism: Mechanism, raw: bool },
    /// Between the SCRAM server-first and client-final messages.
    ScramFinal {
        exchange: Box<ScramExchange>,
        raw: bool,
    },
    /// Authenticated as the principal `User:<name>`.
    Done { user: String },
    /// The exchange failed; the connection is being closed.
    Failed,
}

/// What the connection does with a request, given the SASL state.
pub(crate) enum Gate {
    /// Handle it normally.
    Pass(RequestKind),
    /// Send this response; close the connection afterwards when `close`.
    Respond { body: ResponseKind, close: bool },
    /// Close the connection without a response.
    Refuse(&'static str),
}

/// One connection's SASL state.
pub(crate) struct SaslSession {
    auth: std::sync::Arc<SaslAuthenticator>,
    stage: Stage,
}

impl SaslSession {
    pub(crate) fn new(auth: std::sync::Arc<SaslAuthenticator>) -> Self {
        Self {
            auth,
            stage: Stage::Handshake,
        }
    }

    /// The authenticated user, once there is one.
    pub(crate) fn user(&self) -> Option<&str> {
        match &self.stage {
            Stage::Done { user } => Some(user),
            _ => None,
        }
    }

    /// Whether the next frame is a bare SASL token (after SaslHandshake v0).
    pub(crate) fn expects_raw_token(&self) -> bool {
        matches!(
            self.stage,
            Stage::Authenticate { raw: true, .. } | Stage::ScramFinal { raw: true, .. }
        )
    }

    /// Decides what happens to a decoded request.
    pub(crate) fn gate(&mut self, version: i16, request: RequestKind) -> Gate {
        match request {
            RequestKind::SaslHandshake(r) => self.handshake(version, r.mechanism.as_str()),
            RequestKind::SaslAuthenticate(r) => self.authenticate(r.auth_bytes),
            other if self.user().is_some() || matches!(other, RequestKind::ApiVersions(_)) => {
                Gate::Pass(other)
            }
            _ => Gate::Refuse("request before SASL authentication"),
        }
    }

    fn handshake(&mut self, version: i16, requested: &str) -> Gate {
        let offered = self
            .auth
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()));
        let mut body = SaslHandshakeResponse::default().with_mechanisms(offered.collect());
        if !matches!(self.stage, Stage::Handshake) {
            body.error_code = ResponseError::IllegalSaslState.code();
            return self.fail(ResponseKind::SaslHandshake(body));
        }
        let chosen = requested
            .parse::<Mechanism>()
            .ok()
            .filter(|m| self.auth.mechanisms.contains(m));
        let Some(mechanism) = chosen else {
            body.error_code = ResponseError::UnsupportedSaslMechanism.code();
            return self.fail(ResponseKind::SaslHandshake(body));
        };
        self.stage = Stage::Authenticate {
            mechanism,
            raw: version == 0,
        };
        Gate::Respond {
            body: ResponseKind::SaslHandshake(body),
            close: false,
        }
    }

    fn fail(&mut self, body: ResponseKind) -> Gate {
        self.stage = Stage::Failed;
        Gate::Respond { body, close: true }
    }

    fn authenticate(&mut self, token: Bytes) -> Gate {
        let response = SaslAuthenticateResponse::default();
        match self.step(&token) {
            Ok(reply) => Gate::Respond {
                body: ResponseKind::SaslAuthenticate(response.with_auth_bytes(reply.into())),
                close: false,
            },
            Err(message) => {
                let body = response
                    .with_error_code(message.0.code())
                    .with_error_message(Some(StrBytes::from_string(message.1)));
                self.fail(ResponseKind::SaslAuthenticate(body))
            }
        }
    }

    /// Handles a bare token (after SaslHandshake v0); `None` means close the connection, which
    /// is how Kafka reports a failure in that mode.
    pub(crate) fn raw_token(&mut self, token: &[u8]) -> Option<Vec<u8>> {
        self.step(token).ok()
    }

    /// Advances the exchange by one client token, returning the server token.
    fn step(&mut self, token: &[u8]) -> Result<Vec<u8>, (ResponseError, String)> {
        let stage = std::mem::replace(&mut self.stage, Stage::Failed);
        let result = match stage {
            Stage::Authenticate { mechanism, raw } => self.first(mechanism, raw, token),
            Stage::ScramFinal { exchange, .. } => exchange.finish(token).map(|(user, reply)| {
                self.stage = Stage::Done { user };
                reply
            }),
            Stage::Handshake | Stage::Done { .. } | Stage::Failed => {
                return Err((
                    ResponseError::IllegalSaslState,
                    "SaslAuthenticate is not expected in the current SASL state".into(),
                ))
            }
        };
        match (&result, self.user()) {
            (Err(e), _) => info!("SASL authentication failed: {e}"),
            (Ok(_), Some(user)) => debug!(user, "SASL authentication succeeded"),
            (Ok(_), None) => {}
        }
        // Kafka sends one fixed message, so a client cannot tell an unknown user from a wrong
        // password.
        result.map_err(|_| {
            (
                ResponseError::SaslAuthenticationFailed,
                "Authentication failed: Invalid username or password".into(),
            )
        })
    }

    fn first(
        &mut self,
        mechanism: Mechanism,
        raw: bool,
        token: &[u8],
    ) -> Result<Vec<u8>, ScramError> {
        let Some(alg) = mechanism.scram() else {
            let user = self.auth.plain(token)?;
            self.stage = Stage::Done { user };
            return Ok(Vec::new());
        };
        let (exchange, reply) =
            ScramExchange::start(alg, token, |user| self.auth.credential(user, alg))?;
        self.stage = Stage::ScramFinal {
            exchange: Box::new(exchange),
            raw,
        };
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_user(user: &str, alg: ScramAlgorithm, password: &str) -> SaslAuthenticator {
        let auth = SaslAuthenticator::new(vec![Mechanism::Plain]);
        let credential = ScramCredential::new(alg, password, DEFAULT_ITERATIONS);
        let mut creds = auth.credentials.write();
        creds.insert((user.to_string(), alg), credential);
        drop(creds);
        auth
    }

    #[test]
    fn passwords_are_verified_and_remembered_per_credential() {
        let auth = with_user("alice", ScramAlgorithm::Sha256, "pw");
        assert!(!auth.verify_password("alice", "wrong"));
        assert!(!auth.verify_password("bob", "pw"));
        assert!(auth.verify_password("alice", "pw"));
        assert!(auth.verify_password("alice", "pw"), "remembered");
        assert!(
            !auth.verify_password("alice", "wrong"),
            "not the remembered one"
        );
        // A new password (new salt and keys) makes the remembered one worthless.
        let changed = ScramCredential::new(ScramAlgorithm::Sha256, "new", DEFAULT_ITERATIONS);
        let key = ("alice".to_string(), ScramAlgorithm::Sha256);
        auth.credentials.write().insert(key, changed);
        assert!(!auth.verify_password("alice", "pw"));
        assert!(auth.verify_password("alice", "new"));
        // A user with only a SCRAM-SHA-512 credential is checked against it.
        let only_512 = with_user("carol", ScramAlgorithm::Sha512, "pw512");
        assert!(only_512.verify_password("carol", "pw512"));
        assert!(!only_512.verify_password("carol", "pw"));
        assert!(only_512.plain(b"\0carol\0pw512").is_ok());
        assert!(only_512.plain(b"\0carol\0nope").is_err());
    }
}
