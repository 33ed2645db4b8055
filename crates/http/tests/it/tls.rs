//! HTTPS on the HTTP listener: a client trusting the certificate is served, plain HTTP and a
//! client trusting another certificate are not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use streamhouse_kafka::security::{client_config, server_config};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::harness::App;

/// A self-signed certificate for "localhost": `(cert.pem, key.pem)` in `dir`.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

async fn serve_https(app: &App, cert: &Path, key: &Path) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = server_config(cert, key).unwrap();
    let serving = streamhouse_http::serve_tls(
        listener,
        tls,
        app.broker.clone(),
        app.metrics.clone(),
        streamhouse_http::HttpOptions::default(),
    );
    tokio::spawn(serving);
    addr
}

/// Sends `GET path` over `stream` and returns everything the server sent until it closed.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn https_serves_clients_that_trust_the_certificate() {
    let app = App::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server");
    let addr = serve_https(&app, &cert, &key).await;
    let localhost = ServerName::try_from("localhost").unwrap();

    // Offering HTTP/1.1 by ALPN, as browsers and curl do.
    let mut config = (*client_config(&cert).unwrap()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let trusting = TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = trusting.connect(localhost.clone(), tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = get(tls, "/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");

    // Plain HTTP on the HTTPS port is not a TLS handshake: no HTTP answer.
    let plain = get(TcpStream::connect(addr).await.unwrap(), "/health").await;
    assert!(!plain.contains("HTTP/1.1"), "{plain}");

    // A client that trusts another certificate refuses the server.
    let (other, _) = self_signed(dir.path(), "other");
    let distrusting = TlsConnector::from(client_config(&other).unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(distrusting.connect(localhost, tcp).await.is_err());

    // The server still serves after those failures.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = trusting
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert!(get(tls, "/api/v1/users").await.ends_with("\r\n\r\n[]"));
}
