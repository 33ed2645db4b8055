//! Security of the Kafka listener: TLS transport, SASL authentication and ACL authorization.
//! All are off unless configured, so a default listener is plaintext, unauthenticated and
//! allows everything. Also the TLS configurations of the HTTP listener and the CLI, the SCRAM
//! client the CLI logs in with, and user administration ([`Users`]).

mod acl;
mod sasl;
mod scram;
mod scram_client;
mod tls;
mod users;

use std::sync::Arc;

pub use acl::{principal, Access, AclConfig};
pub(crate) use acl::{Authorizer, Op, Resource};
pub(crate) use sasl::{Gate, SaslSession};
pub use sasl::{Mechanism, SaslAuthenticator, UnknownMechanism};
pub use scram::{
    random_salt, ScramAlgorithm, ScramCredential, ScramError, DEFAULT_ITERATIONS, MAX_ITERATIONS,
    MIN_ITERATIONS,
};
pub use scram_client::{ScramClient, ScramServerCheck};
pub use tls::{client_config, server_config, tls_acceptor, TlsError};
pub use users::{
    validate_iterations, validate_user_name, CredentialInfo, UserDescription, Users,
    MAX_PASSWORD_BYTES, MAX_USER_NAME_CHARS,
};

/// How a Kafka listener secures its connections.
#[derive(Clone, Default)]
pub struct ListenerSecurity {
    /// Accept TLS connections only (from [`tls_acceptor`]).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Require SASL authentication before any request but ApiVersions.
    pub sasl: Option<Arc<SaslAuthenticator>>,
}
