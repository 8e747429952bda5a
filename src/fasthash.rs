//! A fast, unkeyed hash for the maps the data plane reads on every request (router hosts and
//! segments, tokens, invoke names). Their keys come from the configuration and the control plane,
//! never inserted from request input, so hash flooding does not apply; SipHash cost more than the
//! lookups themselves. Maps a request can insert into (the upstream pool's origins, whose host a
//! context value may choose) use a keyed hash (foldhash, seeded at random per process).
//!
//! The mixing is the multiply-rotate of rustc's FxHasher, with one final multiply per value.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Spread the low bits hashbrown uses for buckets and the high bits of its tags.
        (self.hash ^ (self.hash >> 29)).wrapping_mul(SEED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_mostly_land_apart() {
        let mut buckets = [0u32; 1024];
        for i in 0..10_000 {
            let mut h = FastHasher::default();
            h.write(format!("api{i}.example.com").as_bytes());
            h.write_u8(0xff);
            buckets[(h.finish() % 1024) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n < 40), "{:?}", buckets.iter().max());
        let mut m: FastMap<String, u32> = FastMap::default();
        m.insert("a".into(), 1);
        assert_eq!(m.get("a"), Some(&1));
    }
}
