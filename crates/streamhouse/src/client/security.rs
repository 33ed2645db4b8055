//! What a connection needs to reach a listener that requires TLS and/or SASL. The operator
//! commands build it from their flags (`cli/kafka_security.rs`).

use std::sync::Arc;

use streamhouse_kafka::security::Mechanism;
use tokio_rustls::rustls::ClientConfig;

/// TLS and SASL settings of a connection to the Kafka listener.
pub struct KafkaSecurity {
    /// The TLS client configuration, when the listener speaks TLS.
    pub tls: Option<Arc<ClientConfig>>,
    /// The SASL login, when one was asked for.
    pub login: Option<Login>,
}

impl std::fmt::Debug for KafkaSecurity {
    // The password stays out of any debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let login = self.login.as_ref();
        f.debug_struct("KafkaSecurity")
            .field("tls", &self.tls.is_some())
            .field("mechanism", &login.map(|l| l.mechanism.name()))
            .field("username", &login.map(|l| &l.username))
            .finish()
    }
}

/// A SASL login.
pub struct Login {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}
