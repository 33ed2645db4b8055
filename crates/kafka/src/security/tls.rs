//! TLS (rustls with the aws-lc-rs provider) for the Kafka listener, the HTTP listener and the
//! operator CLI: the one place PEM files become rustls configurations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Why the TLS configuration could not be loaded.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A certificate file (chain or CA) is unreadable or holds no usable PEM certificate.
    #[error("cannot read TLS certificates {path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key file is unreadable or holds no PEM private key.
    #[error("cannot read TLS private key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("invalid TLS certificate/key pair: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds a TLS acceptor from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1). Client certificates are not requested.
pub fn tls_acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config(cert_path, key_path)?))
}

/// The rustls server configuration of [`tls_acceptor`], for servers that need to set more (the
/// HTTP listener offers ALPN protocols).
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certificates(cert_path)?;
    // The key's error message never includes key material.
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.into(),
        reason: e.to_string(),
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// A client configuration that trusts only the certificates of the PEM file `ca_path` (a
/// private CA, or a self-signed server certificate).
pub fn client_config(ca_path: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(ca_path)? {
        roots.add(cert).map_err(|e| TlsError::Certificate {
            path: ca_path.into(),
            reason: e.to_string(),
        })?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every certificate of a PEM file; an error when there is none.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: path.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            path: path.into(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}
