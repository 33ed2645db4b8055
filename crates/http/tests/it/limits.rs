//! The HTTP listener's limits (issue 12): connections past `max_connections` are closed at once,
//! idle and stalled ones after `connections_max_idle`, and normal clients are still served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use streamhouse_http::HttpOptions;
use streamhouse_kafka::{BrokerConfig, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::App;

async fn serve_http(limits: Limits) -> SocketAddr {
    let config = BrokerConfig {
        limits,
        ..BrokerConfig::default()
    };
    let app = App::start_with(config, |_| HttpOptions::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = HttpOptions::default();
    tokio::spawn(streamhouse_http::serve(
        listener,
        app.broker,
        app.metrics,
        options,
    ));
    addr
}

/// Whether the server closed `stream` within `within` without answering.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("unexpected answer: {}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => false,
    }
}

async fn health(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_and_idle_ones_time_out() {
    let addr = serve_http(Limits {
        max_connections: 3,
        connections_max_idle: Duration::from_millis(400),
        ..Limits::default()
    })
    .await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    // Real time, not paused: real sockets to an agent over SQLite (see crates/kafka/tests/it).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut refused = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut refused, Duration::from_secs(2)).await);
    let started = Instant::now();
    for stream in [&mut idle, &mut stalled, &mut third] {
        assert!(closed_within(stream, Duration::from_secs(5)).await);
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Their slots are free again; a normal client is served.
    assert!(health(addr).await.starts_with("HTTP/1.1 200"));
}
