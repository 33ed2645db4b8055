//! HTTPS: the HTTP listener behind rustls, as an [`axum::serve::Listener`].
//!
//! TLS handshakes run in their own tasks, so a client that stalls in its handshake delays no
//! one else; axum gets connections only once their handshake succeeded.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for axum to take them.
const READY_BACKLOG: usize = 64;

/// A TCP listener whose connections are TLS-handshaken before axum serves them.
pub(crate) struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener`; `config` is the server's rustls configuration, to which
    /// HTTP/1.1 is added as the ALPN protocol.
    pub(crate) fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let (tx, ready) = mpsc::channel(READY_BACKLOG);
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let accepting = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(Self {
            local_addr,
            ready,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop holds a sender for as long as this listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

type Ready = mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>;

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, ready: Ready) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                backoff(e).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => debug!(%peer, "HTTPS handshake failed: {e}"),
                Err(_) => debug!(%peer, "HTTPS handshake timed out"),
            }
        });
    }
}

/// After a failed accept: a connection that went away is nothing; anything else (e.g. out of
/// file descriptors) would fail again at once, so wait a little, as axum's own listener does.
async fn backoff(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    warn!("accepting an HTTPS connection failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
