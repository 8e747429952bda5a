//! Credentials that verified, by the header value that carried them: the next request with the
//! same one costs a keyed hash, a map lookup and a constant-time comparison instead of a SHA-256
//! or a signature check. Read without locks (the map is swapped whole on the rare insert);
//! bounded ([`MAX_ENTRIES`]); keyed by a hash seeded at random per process, so a request cannot
//! choose where its value lands, and the stored value is compared in constant time, so a lookup
//! tells nothing about the credentials it holds. Only what verified goes in: a flood of bad
//! credentials does not fill it.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{Admitted, Failure, LEEWAY, unix_now};
use crate::fasthash::FastMap;

/// The most credentials remembered; beyond it the expired ones are dropped, and if none has,
/// everything (each is verified again once).
pub(super) const MAX_ENTRIES: usize = 4096;

struct Entry {
    raw: Box<[u8]>,
    admitted: Admitted,
}

pub(super) struct Cache {
    /// Keyed by the keyed hash of the header value (already random: the map's own hash need not
    /// be).
    map: ArcSwap<FastMap<u64, Arc<Entry>>>,
    hasher: foldhash::fast::RandomState,
    writer: Mutex<()>,
}

impl Cache {
    pub(super) fn new() -> Cache {
        Cache { map: ArcSwap::from_pointee(HashMap::default()), hasher: Default::default(), writer: Mutex::new(()) }
    }

    /// The caller a header value verified as before; `Some(Err)` once its token has expired;
    /// `None` when it was not seen (or another value shares its hash).
    #[inline]
    pub(super) fn get(&self, raw: &[u8]) -> Option<Result<Admitted, Failure>> {
        let map = self.map.load();
        let entry = map.get(&self.hasher.hash_one(raw))?;
        if !crate::secret::ct_eq(&entry.raw, raw) {
            return None;
        }
        if let Some(exp) = entry.admitted.expires
            && exp + LEEWAY <= unix_now()
        {
            return Some(Err(Failure::Expired("the token has expired")));
        }
        Some(Ok(entry.admitted.clone()))
    }

    /// Remembers that `raw` verified as `admitted`.
    pub(super) fn put(&self, raw: &[u8], admitted: &Admitted) {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut map: FastMap<u64, Arc<Entry>> = (**self.map.load()).clone();
        if map.len() >= MAX_ENTRIES {
            let now = unix_now();
            map.retain(|_, e| e.admitted.expires.is_none_or(|exp| exp + LEEWAY > now));
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(self.hasher.hash_one(raw), Arc::new(Entry { raw: raw.into(), admitted: admitted.clone() }));
        self.map.store(Arc::new(map));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::User;

    fn admitted(caller: usize, expires: Option<u64>) -> Admitted {
        Admitted { caller, user: User::None, expires, account: None }
    }

    #[test]
    fn what_verified_is_found_by_its_exact_value() {
        let c = Cache::new();
        assert!(c.get(b"Basic abc").is_none());
        c.put(b"Basic abc", &admitted(1, None));
        assert_eq!(c.get(b"Basic abc"), Some(Ok(admitted(1, None))));
        assert!(c.get(b"Basic abd").is_none());
        assert!(c.get(b"Basic ab").is_none());
        let past = unix_now() - LEEWAY - 1;
        c.put(b"Bearer old", &admitted(2, Some(past)));
        assert!(matches!(c.get(b"Bearer old"), Some(Err(Failure::Expired(_)))));
    }

    #[test]
    fn it_stays_bounded() {
        let c = Cache::new();
        let past = unix_now() - LEEWAY - 1;
        for i in 0..MAX_ENTRIES {
            c.put(format!("Bearer {i}").as_bytes(), &admitted(0, Some(past)));
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        c.put(b"Bearer new", &admitted(0, None));
        assert_eq!(c.len(), 1, "the expired ones went");
        for i in 0..MAX_ENTRIES + 10 {
            c.put(format!("Basic {i}").as_bytes(), &admitted(0, None));
        }
        assert!(c.len() <= MAX_ENTRIES);
    }
}
