//! Limits that keep an agent up and its memory bounded whatever its clients do: connection
//! counts, idle and slow-frame timeouts, the pre-login frame size, one request-memory budget
//! for the whole agent, and partition caps.
//!
//! The names follow Kafka's broker settings where one exists (`max.connections`,
//! `max.connections.per.ip`, `connections.max.idle.ms`, `sasl.server.max.receive.size`,
//! `queued.max.request.bytes`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::warn;

/// Listener and partition limits of one agent (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections the Kafka listener holds open at once (Kafka's `max.connections`); more are
    /// accepted and closed at once with a log line. The default leaves room under the process's
    /// open-file limit for segment files, the database and the HTTP listener (see
    /// [`default_max_connections`]).
    pub max_connections: usize,
    /// Connections from one IP address at once (Kafka's `max.connections.per.ip`).
    pub max_connections_per_ip: usize,
    /// A connection with no request in progress and nothing received for this long is closed
    /// (Kafka's `connections.max.idle.ms`, 10 minutes).
    pub connections_max_idle: Duration,
    /// A frame whose first byte arrived must be complete within this time, or the connection is
    /// closed: a client sending one byte a minute (slowloris) cannot hold a connection forever.
    pub frame_read_timeout: Duration,
    /// Largest frame accepted before SASL authentication succeeds (Kafka's
    /// `sasl.server.max.receive.size`, 512 KiB); checked from the length prefix, so a larger
    /// frame closes the connection without its body being read.
    pub sasl_max_receive_size: usize,
    /// Request bytes the agent holds for all connections together, from reading a frame until
    /// its handler finished (Kafka's `queued.max.request.bytes`). When it is spent, connections
    /// stop reading their sockets until requests complete, so memory stays bounded however many
    /// clients flood the agent.
    pub queued_max_request_bytes: usize,
    /// Partitions (all topics) this agent's cluster may hold; CreateTopics and CreatePartitions
    /// beyond it are refused with POLICY_VIOLATION. Each open partition costs memory (~42 KB
    /// measured) and lease traffic, so an unbounded count is a denial of service.
    pub max_partitions_per_cluster: u64,
    /// Partitions per live agent: the cluster-wide cap is also at most this many times the
    /// number of live agents, since partitions spread evenly over them.
    pub max_partitions_per_agent: u64,
    /// Idempotent-producer states (one per producer per partition, ~1 KB each with the copies
    /// a flush in flight needs) this agent's partitions keep together. Any client can write
    /// with any producer id, so past it a partition forgets its least recent producers to take
    /// a new one (keeping a few of its own): their retries of old batches are then taken as
    /// new, as after `producer.id.expiration.ms`. Each partition also keeps at most 10,000.
    pub max_producers_per_agent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_connections_per_ip: 1_000,
            connections_max_idle: Duration::from_secs(600),
            frame_read_timeout: Duration::from_secs(60),
            sasl_max_receive_size: 512 * 1024,
            queued_max_request_bytes: 256 * 1024 * 1024,
            max_partitions_per_cluster: 100_000,
            max_partitions_per_agent: 20_000,
            max_producers_per_agent: 250_000,
        }
    }
}

/// File descriptors kept free for everything but Kafka connections: segment files and the
/// metadata database, the HTTP listener's connections, object-store sockets.
const RESERVED_FDS: u64 = 256;

/// The default `max_connections`: the process's open-file limit less 256 descriptors kept for
/// files, the database and object-store sockets (at least 64), so refusing a connection happens
/// before `accept` fails with "too many open files".
pub fn default_max_connections() -> usize {
    let soft = open_file_limit().unwrap_or(1024);
    usize::try_from(soft.saturating_sub(RESERVED_FDS).max(64)).unwrap_or(usize::MAX)
}

#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    // RLIM_INFINITY is u64::MAX; cap it so the sum in connection counting cannot overflow.
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every Unix
    ok.then(|| (limit.rlim_cur as u64).min(1 << 30))
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

/// Counts one listener's open connections in total and per IP against `max_connections` and
/// `max_connections_per_ip`; a [`ConnectionSlot`] releases its share when dropped, so every exit
/// path of a connection task gives its slot back. The Kafka and HTTP listeners each have one.
pub struct ConnectionCounter {
    listener: &'static str,
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refusals: RefusalLog,
}

impl ConnectionCounter {
    /// A counter for the listener named `listener` in its log lines ("Kafka", "HTTP").
    pub fn new(limits: &Limits, listener: &'static str) -> Arc<Self> {
        Arc::new(Self {
            listener,
            max_total: limits.max_connections.max(1),
            max_per_ip: limits.max_connections_per_ip.max(1),
            open: Mutex::new((0, HashMap::new())),
            refusals: RefusalLog::default(),
        })
    }

    /// A slot for a connection from `ip`, or `None` (and a log line, at most one a second)
    /// when a limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut open = self.open.lock();
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        let refused = if open.0 >= self.max_total {
            Some(("max.connections", self.max_total))
        } else if from_ip >= self.max_per_ip {
            Some(("max.connections.per.ip", self.max_per_ip))
        } else {
            None
        };
        if let Some((setting, limit)) = refused {
            drop(open);
            metrics::counter!("streamhouse_connections_refused_total", "listener" => self.listener)
                .increment(1);
            self.refusals.refused(self.listener, ip, setting, limit);
            return None;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Some(ConnectionSlot {
            counter: self.clone(),
            ip,
        })
    }

    /// Open connections (all addresses).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.lock().0
    }
}

/// One admitted connection's share of the limits; dropping it frees the share.
pub struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock();
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// Logs refused connections without letting a flood of them flood the log: the first at once,
/// then at most one line a second with the count since the last line.
#[derive(Default)]
struct RefusalLog {
    unlogged: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl RefusalLog {
    fn refused(&self, listener: &str, ip: IpAddr, setting: &str, limit: usize) {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock();
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        let count = self.unlogged.swap(0, Ordering::Relaxed);
        warn!(
            %ip,
            refused = count,
            "refusing {listener} connection: {setting} ({limit}) reached"
        );
    }
}

/// Backoff after a failed `accept`, so an exhausted resource (open files, memory) is retried
/// instead of ending the listener, without spinning: 10 ms doubling to 1 s, reset by a success.
pub(crate) struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// How long to wait after this failure.
    pub(crate) fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    pub(crate) fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Whether an `accept` error concerns only the connection being accepted (the peer reset it
/// before it was accepted): nothing to wait for.
pub(crate) fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_total_and_per_ip_and_releases_on_drop() {
        let limits = Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        };
        let counter = ConnectionCounter::new(&limits, "test");
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = counter.admit(a).unwrap();
        let _a2 = counter.admit(a).unwrap();
        assert!(counter.admit(a).is_none(), "per-IP limit");
        let _b1 = counter.admit(b).unwrap();
        assert!(counter.admit(b).is_none(), "total limit");
        drop(a1);
        assert_eq!(counter.open(), 2);
        assert!(counter.admit(b).is_some(), "a released slot is reusable");
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut backoff = AcceptBackoff::new();
        let waits: Vec<_> = (0..10).map(|_| backoff.failed()).collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert_eq!(waits[1], Duration::from_millis(20));
        assert_eq!(*waits.last().unwrap(), Duration::from_secs(1));
        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(10));
    }

    #[test]
    fn default_connections_leave_room_under_the_file_limit() {
        let max = default_max_connections() as u64;
        if let Some(soft) = open_file_limit() {
            assert!(
                max + RESERVED_FDS <= soft.max(64 + RESERVED_FDS),
                "{max} vs {soft}"
            );
        }
        assert!(max >= 64);
    }
}
