//! Per-thread reuse of the two buffers every request fills: its header map and its upstream
//! URL. glibc keeps only a few freed blocks of each size per thread for quick reuse, and a
//! worker handles requests in batches of hundreds, so most of these allocations (and frees) took
//! its slow path. A buffer given back here is cleared and handed to the next request on the
//! same thread; large ones, and any beyond [`KEEP`], are freed as usual.

use std::cell::RefCell;
use std::thread::LocalKey;

use http::HeaderMap;

/// Buffers of each kind kept per thread: about one batch of requests.
const KEEP: usize = 512;

/// A kind of buffer kept here.
pub(crate) trait Buffer: Sized + 'static {
    /// Buffers that grew beyond this capacity are not kept.
    const MAX_CAPACITY: usize;
    fn kept() -> &'static LocalKey<RefCell<Vec<Self>>>;
    fn with_capacity(n: usize) -> Self;
    fn reserve(&mut self, n: usize);
    fn capacity(&self) -> usize;
    fn clear(&mut self);
}

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    static STRINGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// [`Buffer`] for a type whose inherent methods have these names.
macro_rules! buffer {
    ($t:ty, $kept:ident, $max:expr) => {
        impl Buffer for $t {
            const MAX_CAPACITY: usize = $max;
            fn kept() -> &'static LocalKey<RefCell<Vec<Self>>> {
                &$kept
            }
            fn with_capacity(n: usize) -> Self {
                <$t>::with_capacity(n)
            }
            fn reserve(&mut self, n: usize) {
                <$t>::reserve(self, n);
            }
            fn capacity(&self) -> usize {
                <$t>::capacity(self)
            }
            fn clear(&mut self) {
                <$t>::clear(self);
            }
        }
    };
}

buffer!(HeaderMap, MAPS, 48);
buffer!(String, STRINGS, 2048);

/// An empty buffer with room for `n` (headers, bytes).
pub(crate) fn take<B: Buffer>(n: usize) -> B {
    match B::kept().with_borrow_mut(Vec::pop) {
        Some(mut b) => {
            b.reserve(n);
            b
        }
        None => B::with_capacity(n),
    }
}

/// Gives a buffer back for another request.
pub(crate) fn give_back<B: Buffer>(mut b: B) {
    if b.capacity() > B::MAX_CAPACITY {
        return;
    }
    b.clear();
    B::kept().with_borrow_mut(|kept| {
        if kept.len() < KEEP {
            kept.push(b);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_large_ones_are_not_kept() {
        let mut map: HeaderMap = take(4);
        map.insert(http::header::HOST, "a".parse().unwrap());
        give_back(map);
        let map: HeaderMap = take(2);
        assert!(map.is_empty() && map.capacity() >= 2);
        let mut big = HeaderMap::with_capacity(1000);
        big.insert(http::header::HOST, "a".parse().unwrap());
        give_back(big);
        assert!(take::<HeaderMap>(1).capacity() <= <HeaderMap as Buffer>::MAX_CAPACITY);

        let mut s: String = take(10);
        s.push_str("http://x/");
        give_back(s);
        let s: String = take(4);
        assert!(s.is_empty() && s.capacity() >= 4);
        give_back("y".repeat(10_000));
        assert!(take::<String>(1).capacity() <= <String as Buffer>::MAX_CAPACITY);
    }
}
