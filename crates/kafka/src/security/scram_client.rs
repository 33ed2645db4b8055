//! The client side of SCRAM (RFC 5802), for the operator CLI: it logs in to a SASL listener and
//! proves it knows the password without sending it, and checks that the server knows it too.

use aws_lc_rs::{constant_time, rand};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::scram::{attribute, ScramAlgorithm, ScramError, MAX_ITERATIONS, MIN_ITERATIONS};

/// A SCRAM login in progress, before the server's first message.
pub struct ScramClient {
    alg: ScramAlgorithm,
    password: String,
    nonce: String,
    /// `client-first-message-bare`, the start of AuthMessage.
    first_bare: String,
}

/// What the server's final message must prove, once the client sent its proof.
pub struct ScramServerCheck {
    alg: ScramAlgorithm,
    expected_signature: Vec<u8>,
}

/// Encodes a `saslname`: `,` and `=` are escaped as RFC 5802 requires.
fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

impl std::fmt::Debug for ScramClient {
    // The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts a login of `user` with a fresh random nonce.
    pub fn new(alg: ScramAlgorithm, user: &str, password: &str) -> Self {
        let mut nonce = [0u8; 24];
        rand::fill(&mut nonce).expect("the system random source is available");
        let nonce = B64.encode(nonce);
        Self {
            alg,
            password: password.to_string(),
            first_bare: format!("n={},r={nonce}", encode_saslname(user)),
            nonce,
        }
    }

    /// `client-first-message`: no channel binding, no authorization identity.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// Answers `server-first-message` with `client-final-message` (carrying the proof), and
    /// returns what the server's final message must contain.
    pub fn client_final(
        self,
        server_first: &[u8],
    ) -> Result<(Vec<u8>, ScramServerCheck), ScramError> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| ScramError::Malformed("server-first-message is not UTF-8"))?;
        let mut attrs = server_first.split(',');
        let nonce = attribute(attrs.next(), 'r')?;
        let salt = B64
            .decode(attribute(attrs.next(), 's')?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = attribute(attrs.next(), 'i')?
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count is not a number"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Malformed("server nonce does not extend ours"));
        }
        // Too few would make the stored credential cheap to attack; too many would stall this
        // process on a hostile server's word.
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Malformed("iteration count out of range"));
        }
        let alg = self.alg;
        let salted = alg.salted_password(&self.password, &salt, iterations);
        let client_key = alg.hmac(&salted, b"Client Key");
        let stored_key = alg.hash(&client_key);
        // "biws" is base64("n,,"), the GS2 header of client_first.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = alg.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = alg.hmac(&salted, b"Server Key");
        let check = ScramServerCheck {
            alg,
            expected_signature: alg.hmac(&server_key, auth_message.as_bytes()),
        };
        let message = format!("{without_proof},p={}", B64.encode(proof));
        Ok((message.into_bytes(), check))
    }
}

impl ScramServerCheck {
    /// Verifies `server-final-message`: an error (`e=...`) or a wrong signature fails.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| ScramError::Malformed("server-final-message is not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramError::Refused(error.to_string()));
        }
        let signature = B64
            .decode(attribute(text.split(',').next(), 'v')?)
            .map_err(|_| ScramError::Malformed("server signature is not base64"))?;
        debug_assert_eq!(self.expected_signature.len(), self.alg.output_len());
        constant_time::verify_slices_are_equal(&signature, &self.expected_signature)
            .map_err(|_| ScramError::ServerNotVerified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::{ScramCredential, ScramExchange};

    /// A full exchange against the server side, for both algorithms, with a user name that
    /// needs escaping; a wrong password fails on the server, a wrong server on the client.
    #[test]
    fn client_and_server_agree() {
        for alg in ScramAlgorithm::ALL {
            let credential = ScramCredential::new(alg, "pencil", MIN_ITERATIONS);
            let lookup = |u: &str| (u == "a,b=c").then(|| credential.clone());
            let client = ScramClient::new(alg, "a,b=c", "pencil");
            let (exchange, server_first) =
                ScramExchange::start(alg, &client.client_first(), lookup).unwrap();
            let (client_final, check) = client.client_final(&server_first).unwrap();
            let (user, server_final) = exchange.finish(&client_final).unwrap();
            assert_eq!(user, "a,b=c");
            check.verify(&server_final).unwrap();
            assert!(matches!(
                check.verify(b"v=AAAA"),
                Err(ScramError::ServerNotVerified)
            ));
            assert!(matches!(
                check.verify(b"e=invalid-proof"),
                Err(ScramError::Refused(e)) if e == "invalid-proof"
            ));

            let client = ScramClient::new(alg, "a,b=c", "wrong");
            let (exchange, server_first) =
                ScramExchange::start(alg, &client.client_first(), lookup).unwrap();
            let (client_final, _) = client.client_final(&server_first).unwrap();
            assert!(exchange.finish(&client_final).is_err());
        }
    }

    #[test]
    fn hostile_server_first_messages_are_refused() {
        let bad_messages: [fn(&str) -> String; 6] = [
            |n| format!("r={n},s=c2FsdA==,i=4096"), // the nonce was not extended
            |n| format!("r=other{n},s=c2FsdA==,i=4096"),
            |n| format!("r={n}x,s=c2FsdA==,i=1"),
            |n| format!("r={n}x,s=c2FsdA==,i=100000000"),
            |n| format!("r={n}x,s=!!,i=4096"),
            |_| "garbage".to_string(),
        ];
        for bad in bad_messages {
            let client = ScramClient::new(ScramAlgorithm::Sha256, "u", "p");
            let message = bad(&client.nonce);
            assert!(
                client.client_final(message.as_bytes()).is_err(),
                "{message}"
            );
        }
        let client = ScramClient::new(ScramAlgorithm::Sha256, "u", "p");
        let good = format!("r={}x,s=c2FsdA==,i=4096", client.nonce);
        assert!(client.client_final(good.as_bytes()).is_ok());
    }
}
