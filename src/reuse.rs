//! Per-thread reuse of the two buffers every request fills: its header map and its upstream
//! URL. glibc keeps only a few freed blocks of each size per thread for quick reuse, and a
//! worker handles requests in batches of hundreds, so most of these allocations (and frees) took
//! its slow path. A buffer given back here is cleared and handed to the next request on the
//! same thread; large ones, and any beyond [`KEEP`], are freed as usual.

use std::cell::RefCell;

use http::HeaderMap;

/// Buffers of each kind kept per thread: about one batch of requests.
const KEEP: usize = 512;
/// Header maps that grew beyond this many headers are not kept.
const MAX_MAP_CAPACITY: usize = 48;
/// Strings that grew beyond this many bytes are not kept.
const MAX_STRING_CAPACITY: usize = 2048;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    static STRINGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// An empty header map with room for `n` headers.
pub fn header_map(n: usize) -> HeaderMap {
    match MAPS.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            map.reserve(n);
            map
        }
        None => HeaderMap::with_capacity(n),
    }
}

/// Gives a header map back for another request.
pub fn give_back_map(mut map: HeaderMap) {
    if map.capacity() > MAX_MAP_CAPACITY {
        return;
    }
    map.clear();
    MAPS.with_borrow_mut(|kept| {
        if kept.len() < KEEP {
            kept.push(map);
        }
    });
}

/// An empty string with room for `n` bytes.
pub fn string(n: usize) -> String {
    match STRINGS.with_borrow_mut(Vec::pop) {
        Some(mut s) => {
            s.reserve(n);
            s
        }
        None => String::with_capacity(n),
    }
}

/// Gives a string back for another request.
pub fn give_back_string(mut s: String) {
    if s.capacity() > MAX_STRING_CAPACITY {
        return;
    }
    s.clear();
    STRINGS.with_borrow_mut(|kept| {
        if kept.len() < KEEP {
            kept.push(s);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_large_ones_are_not_kept() {
        let mut map = header_map(4);
        map.insert(http::header::HOST, "a".parse().unwrap());
        give_back_map(map);
        let map = header_map(2);
        assert!(map.is_empty() && map.capacity() >= 2);
        let mut big = HeaderMap::with_capacity(1000);
        big.insert(http::header::HOST, "a".parse().unwrap());
        give_back_map(big);
        assert!(header_map(1).capacity() <= MAX_MAP_CAPACITY);

        let mut s = string(10);
        s.push_str("http://x/");
        give_back_string(s);
        let s = string(4);
        assert!(s.is_empty() && s.capacity() >= 4);
        give_back_string("y".repeat(10_000));
        assert!(string(1).capacity() <= MAX_STRING_CAPACITY);
    }
}
