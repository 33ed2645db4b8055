//! Limits on the HTTP listener, as on the Kafka one: connections beyond `max_connections` (in
//! total and per IP) are closed at once with a log line, and a connection on which nothing was
//! read or written for `connections_max_idle` is closed, so idle or stalled clients cannot hold
//! the process's file descriptors. Accept errors never end the listener: axum's listener and
//! [`crate::tls::TlsListener`] wait and retry.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use streamhouse_kafka::{ConnectionCounter, ConnectionSlot, Limits};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A listener whose connections are counted and time out when idle.
pub(crate) struct Guarded<L> {
    inner: L,
    counter: Arc<ConnectionCounter>,
    idle: Duration,
}

impl<L> Guarded<L> {
    pub(crate) fn new(inner: L, limits: &Limits) -> Self {
        Self {
            inner,
            counter: ConnectionCounter::new(limits, "HTTP"),
            idle: limits.connections_max_idle,
        }
    }
}

impl<L> Listener for Guarded<L>
where
    L: Listener<Addr = SocketAddr>,
    L::Io: Unpin,
{
    type Io = IdleTimeout<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = self.inner.accept().await;
            // Refused connections are closed by dropping them (the counter logs them).
            if let Some(slot) = self.counter.admit(addr.ip()) {
                return (IdleTimeout::new(io, self.idle, slot), addr);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails its pending read or write once nothing moved for `idle`; hyper then
/// closes it. Any progress (or end of stream) in either direction restarts the clock.
pub(crate) struct IdleTimeout<T> {
    io: T,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _slot: ConnectionSlot,
}

impl<T> IdleTimeout<T> {
    fn new(io: T, idle: Duration, slot: ConnectionSlot) -> Self {
        Self {
            io,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _slot: slot,
        }
    }

    fn progressed(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// The outcome of one I/O poll: progress restarts the clock; a pending operation fails
    /// once the deadline passed (the timer's waker is registered, so the task is woken then).
    fn observe<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.progressed();
            return poll;
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP connection idle past connections_max_idle_ms",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        this.observe(cx, poll)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.observe(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.observe(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.observe(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
