//! SaslHandshake and SaslAuthenticate on a listener without SASL. With SASL enabled the
//! connection answers them itself (see `security::SaslSession`), since they change its state.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;

/// No mechanism is enabled, so any requested one is unsupported.
pub(crate) fn handshake_disabled() -> ResponseKind {
    ResponseKind::SaslHandshake(
        SaslHandshakeResponse::default()
            .with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
    )
}

/// There is no exchange to continue.
pub(crate) fn authenticate_disabled() -> ResponseKind {
    ResponseKind::SaslAuthenticate(
        SaslAuthenticateResponse::default()
            .with_error_code(ResponseError::IllegalSaslState.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "SASL is not enabled on this listener",
            ))),
    )
}
