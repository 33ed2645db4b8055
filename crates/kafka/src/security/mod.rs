//! Security of the Kafka listener: TLS transport, SASL authentication and ACL authorization.
//! All are off unless configured, so a default listener is plaintext, unauthenticated and
//! allows everything.

mod acl;
mod sasl;
mod scram;
mod tls;

use std::sync::Arc;

pub use acl::AclConfig;
pub(crate) use acl::{Access, Authorizer, Op, Resource};
pub(crate) use sasl::{Gate, SaslSession};
pub use sasl::{Mechanism, SaslAuthenticator, UnknownMechanism};
pub use scram::{ScramAlgorithm, ScramClient, ScramCredential, ScramError, DEFAULT_ITERATIONS};
pub use tls::{tls_acceptor, TlsError};

/// How a Kafka listener secures its connections.
#[derive(Clone, Default)]
pub struct ListenerSecurity {
    /// Accept TLS connections only (from [`tls_acceptor`]).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Require SASL authentication before any request but ApiVersions.
    pub sasl: Option<Arc<SaslAuthenticator>>,
}
