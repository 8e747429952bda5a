//! Idle HTTP/1.1 connections by origin, and pacing of the connections opened to one origin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::h1::UpstreamConn;

/// The origins, with foldhash seeded at random per process (HashDoS-resistant against keys a
/// request chooses; SipHash cost about 250 instructions per request here, foldhash a tenth).
type OriginMap = std::collections::HashMap<Arc<str>, Origin, foldhash::fast::RandomState>;

/// One origin's idle connections, and the connections being opened to it.
struct Origin {
    /// The map's key, shared with the tickets and permits of this origin.
    key: Arc<str>,
    /// Boxed as they are everywhere else: a checkout moves a pointer, not the connection.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<UpstreamConn>>,
    connecting: usize,
    waiting: usize,
    /// Wakes a waiting request when a connection comes back or a connect slot frees up.
    ready: Arc<tokio::sync::Notify>,
}

impl Origin {
    fn new(key: Arc<str>) -> Origin {
        Origin { key, idle: Vec::new(), connecting: 0, waiting: 0, ready: Arc::default() }
    }
}

/// Idle keep-alive connections by `scheme://authority`, and at most `max_connecting` connections
/// being opened to one origin at a time: requests released together (a burst, or thousands that
/// waited for one token refresh) take connections as they come back or open them a few at a
/// time, instead of flooding the upstream's accept queue.
pub(crate) struct Pool {
    /// Keyed by origin with a keyed hash: a host rendered from a request's context
    /// (`allow_hosts` wildcards) is chosen by the request.
    origins: Mutex<OriginMap>,
    timeout: Duration,
    max_per_host: usize,
    max_connecting: usize,
    /// Bumped when the upstream settings change: connections opened before are not kept.
    generation: AtomicU64,
}

/// What a request gets from [`Pool::checkout`].
pub(crate) enum Checkout {
    /// A live pooled connection.
    Idle(Box<UpstreamConn>),
    /// Permission to open a connection (given back when dropped).
    Connect(ConnectPermit),
    /// Wait for [`WaitTicket::ready`], then check out again.
    Wait(WaitTicket),
}

/// A request waiting for a connection to an origin; counted as waiting until dropped.
pub(crate) struct WaitTicket {
    pool: Arc<Pool>,
    key: Arc<str>,
    ready: Arc<tokio::sync::Notify>,
}

impl WaitTicket {
    /// Resolves when a connection came back or a connect slot freed up, or after a short while
    /// in any case (a safety net: the caller checks out again either way).
    pub(crate) async fn ready(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(100), self.ready.notified()).await;
    }

    /// Passes the wake-up on to the next waiter: this one found an HTTP/2 connection, which
    /// every waiter can share.
    pub(crate) fn pass_on(&self) {
        self.ready.notify_one();
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        if let Some(o) = self.pool.lock().get_mut(&self.key) {
            o.waiting -= 1;
        }
    }
}

/// One of an origin's connect slots; dropping it frees the slot.
pub(crate) struct ConnectPermit {
    pool: Arc<Pool>,
    key: Arc<str>,
}

impl Drop for ConnectPermit {
    fn drop(&mut self) {
        let mut map = self.pool.lock();
        if let Some(o) = map.get_mut(&self.key) {
            o.connecting -= 1;
            if o.waiting > 0 {
                o.ready.notify_one();
            }
        }
    }
}

impl Pool {
    pub(crate) fn new(timeout: Duration, max_per_host: usize, max_connecting: usize) -> Pool {
        Pool {
            origins: Mutex::new(OriginMap::default()),
            timeout,
            max_per_host,
            max_connecting,
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OriginMap> {
        self.origins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used live connection to `key`; else a connect slot; else a wait.
    pub(crate) fn checkout(self: &Arc<Self>, key: &str) -> Checkout {
        let now = Instant::now();
        let mut map = self.lock();
        // One hash of the key when the origin is known.
        let origin = match map.get_mut(key) {
            Some(o) => o,
            None => {
                let key: Arc<str> = Arc::from(key);
                map.entry(key.clone()).or_insert_with(|| Origin::new(key))
            }
        };
        while let Some(mut conn) = origin.idle.pop() {
            if now.duration_since(conn.used) >= self.timeout {
                // Those below came back earlier: closed too (at worst a little early).
                origin.idle.clear();
                break;
            }
            if conn.idle_ok() {
                conn.used = now;
                return Checkout::Idle(conn);
            }
        }
        let take = origin.connecting < self.max_connecting;
        if take {
            origin.connecting += 1;
        } else {
            origin.waiting += 1;
        }
        let (ready, key) = (origin.ready.clone(), origin.key.clone());
        drop(map);
        let pool = self.clone();
        if take {
            Checkout::Connect(ConnectPermit { pool, key })
        } else {
            Checkout::Wait(WaitTicket { pool, key, ready })
        }
    }

    /// The generation a new connection belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Closes every idle connection, and those in use as they come back (the settings they were
    /// opened with changed).
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.lock().values_mut().for_each(|o| o.idle.clear());
    }

    /// Takes back a connection whose answer was read to its end.
    pub(crate) fn put(&self, conn: Box<UpstreamConn>) {
        if conn.generation != self.generation() {
            return;
        }
        let mut map = self.lock();
        let origin = match map.get_mut(&*conn.key) {
            Some(o) => o,
            None => map.entry(conn.key.clone()).or_insert_with(|| Origin::new(conn.key.clone())),
        };
        if origin.idle.len() < self.max_per_host {
            origin.idle.push(conn);
            if origin.waiting > 0 {
                origin.ready.notify_one();
            }
        }
    }

    /// Closes connections idle for longer than the timeout.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, o| {
            o.idle.retain(|c| now.duration_since(c.used) < self.timeout);
            !o.idle.is_empty() || o.connecting > 0 || o.waiting > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_to_one_origin_are_paced() {
        let pool = Arc::new(Pool::new(Duration::from_secs(60), 16, 2));
        let (a, b) = (pool.checkout("http://o"), pool.checkout("http://o"));
        assert!(matches!((&a, &b), (Checkout::Connect(_), Checkout::Connect(_))));
        let Checkout::Wait(ticket) = pool.checkout("http://o") else { panic!("a third connect at once") };
        assert!(matches!(pool.checkout("http://other"), Checkout::Connect(_)), "per origin");
        let waiting = || pool.lock().get("http://o").map(|o| (o.connecting, o.waiting));
        assert_eq!(waiting(), Some((2, 1)));
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), ticket.ready()).await.expect("woken by the freed slot");
        drop(ticket);
        assert_eq!(waiting(), Some((1, 0)));
        assert!(matches!(pool.checkout("http://o"), Checkout::Connect(_)));
        drop(b);
    }
}
