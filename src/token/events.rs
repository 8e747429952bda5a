//! The latest token events (refreshes, authorizations, puts, deletions, failures), kept in
//! memory for the admin page. Never a token: what happened to which key, and a short detail.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::TokenKey;

/// How many events are kept.
const KEPT: usize = 50;

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Unix seconds.
    pub at: u64,
    pub key: TokenKey,
    /// `refreshed`, `refresh failed`, `needs authorization`, `authorized`, `authorization failed`,
    /// `stored`, `deleted`.
    pub what: &'static str,
    /// Why it failed, when it did (a provider's error code, a timeout; never a token).
    pub detail: Option<String>,
}

/// The latest [`KEPT`] events.
#[derive(Debug, Default)]
pub struct Events(Mutex<VecDeque<Event>>);

impl Events {
    pub(crate) fn push(&self, key: &TokenKey, what: &'static str, detail: Option<String>) {
        let mut events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == KEPT {
            events.pop_front();
        }
        events.push_back(Event { at: super::unix_now(), key: key.clone(), what, detail });
    }

    /// The events, newest first.
    pub fn recent(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().cloned().collect()
    }
}
