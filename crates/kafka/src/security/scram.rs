//! SCRAM (RFC 5802, with SHA-256 per RFC 7677 and SHA-512 as Kafka uses it): the server side
//! (the client side is `scram_client.rs`).
//!
//! The server keeps only [`ScramCredential`]s (salt, iteration count, StoredKey, ServerKey), so a
//! leaked credential table does not reveal passwords and cannot be replayed as a PLAIN password.

use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2, rand};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use streamhouse_metadata::UserCredential;
use thiserror::Error;

/// Iterations used for new credentials: Kafka's minimum for SCRAM, which clients accept.
pub const DEFAULT_ITERATIONS: u32 = MIN_ITERATIONS;

/// Fewest PBKDF2 iterations a credential may have (Kafka's minimum for both mechanisms); clients
/// refuse fewer.
pub const MIN_ITERATIONS: u32 = 4096;

/// Most PBKDF2 iterations a credential may have (Kafka's `MAX_ITERATIONS`): every login costs the
/// server that many HMACs.
pub const MAX_ITERATIONS: u32 = 16384;

/// Why a SCRAM exchange failed. Messages never contain a password or a key.
#[derive(Debug, Error)]
pub enum ScramError {
    /// A client message did not follow the RFC 5802 grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The user does not exist or the proof did not match.
    #[error("authentication failed: invalid credentials for user {0:?}")]
    InvalidCredentials(String),
    /// The server ended the exchange with an error (`e=...` in its final message).
    #[error("the server refused the SCRAM exchange: {0}")]
    Refused(String),
    /// The server's signature did not match: it does not hold this password's credential.
    #[error("the server's SCRAM signature does not match: it is not the server this password was set on")]
    ServerNotVerified,
}

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramAlgorithm {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramAlgorithm {
    /// Both algorithms, SHA-256 first.
    pub const ALL: [Self; 2] = [Self::Sha256, Self::Sha512];

    /// The SASL mechanism name (`SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn mechanism_name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Kafka's `ScramMechanism` type code on the wire (KIP-554): 1 and 2.
    pub fn kafka_type(self) -> i8 {
        match self {
            Self::Sha256 => 1,
            Self::Sha512 => 2,
        }
    }

    /// The algorithm of a Kafka `ScramMechanism` type code; `None` for `UNKNOWN` (0) and others.
    pub fn from_kafka_type(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.kafka_type() == code)
    }

    /// Length of the hash output, and so of a salted password.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    /// `Hi(password, salt, iterations)` of RFC 5802 (PBKDF2 with this hash): what a client sends
    /// in AlterUserScramCredentials, so the password itself never reaches the server.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let alg = match self {
            Self::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Self::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        };
        let n = NonZeroU32::new(iterations.max(1)).expect("at least one iteration");
        let mut out = vec![0; self.output_len()];
        pbkdf2::derive(alg, n, salt, password.as_bytes(), &mut out);
        out
    }

    pub(super) fn hash(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Self::Sha256 => &digest::SHA256,
            Self::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }

    pub(super) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        };
        hmac::sign(&hmac::Key::new(alg, key), data)
            .as_ref()
            .to_vec()
    }
}

impl serde::Serialize for ScramAlgorithm {
    /// As its mechanism name, the form operators and the HTTP API use.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.mechanism_name())
    }
}

/// A fresh random salt for a new credential.
pub fn random_salt() -> Vec<u8> {
    let mut salt = vec![0; 32];
    rand::fill(&mut salt).expect("the system random source is available");
    salt
}

/// What the server stores for one user and one SCRAM mechanism; never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// Random salt of the salted password.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`: verifies client proofs.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`: signs the server's final message.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    // Keys stay out of logs even though they are not the password: with them a server can be
    // impersonated.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Derives a credential for `password` with a fresh random salt.
    pub fn new(alg: ScramAlgorithm, password: &str, iterations: u32) -> Self {
        Self::derive(alg, password, random_salt(), iterations)
    }

    fn derive(alg: ScramAlgorithm, password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let salted = alg.salted_password(password, &salt, iterations);
        Self::from_salted_password(alg, salt, iterations, &salted)
    }

    /// The credential of a salted password `Hi(password, salt, iterations)`, as a client sends
    /// it in AlterUserScramCredentials. Only its derivatives are kept.
    pub fn from_salted_password(
        alg: ScramAlgorithm,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> Self {
        let client_key = alg.hmac(salted_password, b"Client Key");
        Self {
            stored_key: alg.hash(&client_key),
            server_key: alg.hmac(salted_password, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// The row stored in the metadata store.
    pub fn to_record(&self, user: &str, mechanism: &str) -> UserCredential {
        UserCredential {
            user: user.to_string(),
            mechanism: mechanism.to_string(),
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }

    /// The credential of a stored row.
    pub fn from_record(record: UserCredential) -> Self {
        Self {
            salt: record.salt,
            iterations: record.iterations,
            stored_key: record.stored_key,
            server_key: record.server_key,
        }
    }

    /// Whether `password` is the one this credential was derived from (for SASL/PLAIN).
    pub fn matches_password(&self, alg: ScramAlgorithm, password: &str) -> bool {
        let candidate = Self::derive(alg, password, self.salt.clone(), self.iterations);
        constant_time::verify_slices_are_equal(&candidate.stored_key, &self.stored_key).is_ok()
    }
}

/// A SCRAM exchange after the server's first message, waiting for the client's final message.
pub(crate) struct ScramExchange {
    alg: ScramAlgorithm,
    user: String,
    credential: ScramCredential,
    gs2_header: String,
    nonce: String,
    /// `client-first-message-bare "," server-first-message`, the start of AuthMessage.
    transcript: String,
}

/// Splits `attr=value` and checks the attribute name.
pub(super) fn attribute(part: Option<&str>, name: char) -> Result<&str, ScramError> {
    let part = part.ok_or(ScramError::Malformed("missing attribute"))?;
    let mut chars = part.chars();
    if chars.next() != Some(name) || chars.next() != Some('=') {
        return Err(ScramError::Malformed("unexpected attribute"));
    }
    Ok(&part[2..])
}

/// Decodes a `saslname` (`=2C` is ',' and `=3D` is '=').
fn decode_saslname(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramExchange {
    /// Handles `client-first-message`; `lookup` finds the user's credential. Returns the
    /// exchange and `server-first-message`.
    pub(crate) fn start(
        alg: ScramAlgorithm,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(Self, Vec<u8>), ScramError> {
        let msg = std::str::from_utf8(client_first)
            .map_err(|_| ScramError::Malformed("client-first-message is not UTF-8"))?;
        let mut parts = msg.splitn(3, ',');
        let cbind = parts.next().unwrap_or_default();
        if cbind != "n" && cbind != "y" {
            return Err(ScramError::Malformed("channel binding is not supported"));
        }
        let authzid = parts
            .next()
            .ok_or(ScramError::Malformed("missing authzid"))?;
        let bare = parts
            .next()
            .ok_or(ScramError::Malformed("missing bare message"))?;
        let mut attrs = bare.split(',');
        let user = decode_saslname(attribute(attrs.next(), 'n')?)?;
        let client_nonce = attribute(attrs.next(), 'r')?;
        if client_nonce.is_empty() {
            return Err(ScramError::Malformed("empty client nonce"));
        }
        // Kafka accepts only the authenticated user itself as authorization identity.
        if !authzid.is_empty() && decode_saslname(attribute(Some(authzid), 'a')?)? != user {
            return Err(ScramError::InvalidCredentials(user));
        }
        let credential =
            lookup(&user).ok_or_else(|| ScramError::InvalidCredentials(user.clone()))?;
        let mut server_nonce = [0u8; 24];
        rand::fill(&mut server_nonce).expect("the system random source is available");
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let exchange = Self {
            alg,
            user,
            credential,
            gs2_header: format!("{cbind},{authzid},"),
            nonce,
            transcript: format!("{bare},{server_first}"),
        };
        Ok((exchange, server_first.into_bytes()))
    }

    /// Handles `client-final-message`: verifies the proof and returns the authenticated user
    /// and `server-final-message`.
    pub(crate) fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let msg = std::str::from_utf8(client_final)
            .map_err(|_| ScramError::Malformed("client-final-message is not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attribute(attrs.next(), 'c')?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        if attribute(attrs.next(), 'r')? != self.nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let auth_message = format!("{},{without_proof}", self.transcript);
        let signature = self
            .alg
            .hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::InvalidCredentials(self.user));
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored_key = self.alg.hash(&client_key);
        if constant_time::verify_slices_are_equal(&stored_key, &self.credential.stored_key).is_err()
        {
            return Err(ScramError::InvalidCredentials(self.user));
        }
        let server_signature = self
            .alg
            .hmac(&self.credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", B64.encode(server_signature));
        Ok((self.user, server_final.into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3 test vector (SCRAM-SHA-256, user "user", password "pencil").
    #[test]
    fn rfc7677_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::derive(ScramAlgorithm::Sha256, "pencil", salt, 4096);
        let (mut exchange, _) = ScramExchange::start(
            ScramAlgorithm::Sha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |u| (u == "user").then(|| credential.clone()),
        )
        .unwrap();
        // Replace the random server nonce with the RFC's so its proof applies.
        exchange.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        exchange.transcript = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".into();
        let good = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (user, server_final) = exchange.finish(good).unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }

    #[test]
    fn plain_password_check_and_escapes() {
        let c = ScramCredential::new(ScramAlgorithm::Sha512, "secret", DEFAULT_ITERATIONS);
        assert!(c.matches_password(ScramAlgorithm::Sha512, "secret"));
        assert!(!c.matches_password(ScramAlgorithm::Sha512, "Secret"));
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert!(decode_saslname("a=2").is_err());
        assert!(!format!("{c:?}").contains("stored_key"));
    }
}
