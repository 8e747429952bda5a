//! When a request is sent again: the retry and replay policy as a pure function of what the last
//! send gave, what the template allows and what the request has already used.
//!
//! - A pooled connection the upstream had closed while idle: an idempotent request is sent once
//!   more at once, and that send does not count against `maxAttempts`.
//! - A status in `refresh.on_status`, for a request with a token: one forced refresh and one
//!   replay, which does not count against `maxAttempts` either.
//! - Connect errors, 429 and 5xx: retried after `retryDelay` (or a longer `Retry-After`) while
//!   `maxAttempts` allows and the wait ends before the deadline.
//!
//! Every further send needs the body kept ([`Policy::keep_body`]); a body too large to keep is
//! sent once, and its answer is the answer.

use std::time::Duration;

use http::StatusCode;

/// What a template and the configuration allow a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy<'a> {
    /// `maxAttempts`: sends that count (1-5).
    pub(crate) max_attempts: u32,
    /// `retryDelay`.
    pub(crate) retry_delay: Duration,
    /// `refresh.on_status`.
    pub(crate) on_status: &'a [u16],
    /// The template's method is idempotent (GET, PUT, DELETE).
    pub(crate) idempotent: bool,
    /// The request carries a token, which a rejection may refresh.
    pub(crate) has_token: bool,
}

/// What a request has used so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Every send (`x-bearerd-attempts`).
    pub(crate) sends: u32,
    /// Sends that did not count against `maxAttempts` (a stale connection's resend, the replay).
    free: u32,
    replayed: bool,
    resent_stale: bool,
}

impl Tally {
    /// Counts a send that is about to happen.
    pub(crate) fn start(&mut self) {
        self.sends += 1;
    }

    fn counted(&self) -> u32 {
        self.sends - self.free
    }
}

/// What one send gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// An answer; for 429 and 5xx, its `Retry-After`.
    Answer(StatusCode, Option<Duration>),
    /// A pooled connection was closed by the upstream before any answer.
    Closed,
    /// No connection could be opened.
    ConnectFailed,
    /// Anything else (TLS, protocol, timeout, address): final.
    Failed,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The last send's result is the request's.
    Return,
    /// Send again at once.
    Resend,
    /// Refresh the token (after its rejection), then send again.
    RefreshAndReplay,
    /// Send again after this wait.
    Retry(Duration),
}

impl Policy<'_> {
    /// Whether the body must be kept for a send after the one that `tally` just started.
    #[inline]
    pub(crate) fn keep_body(&self, tally: &Tally) -> bool {
        tally.counted() < self.max_attempts
            || (self.has_token && !tally.replayed && !self.on_status.is_empty())
            || (self.idempotent && !tally.resent_stale)
    }

    /// The decision after a send. `replayable`: the body was kept; `time_left`: until the
    /// request's deadline (asked for only when a retry would wait).
    #[inline]
    pub(crate) fn next(
        &self,
        tally: &mut Tally,
        sent: Sent,
        replayable: bool,
        time_left: impl FnOnce() -> Duration,
    ) -> Next {
        match sent {
            Sent::Closed if replayable && self.idempotent && !tally.resent_stale => {
                tally.resent_stale = true;
                tally.free += 1;
                return Next::Resend;
            }
            Sent::Answer(status, _)
                if self.has_token && !tally.replayed && self.on_status.contains(&status.as_u16()) =>
            {
                tally.replayed = true;
                if replayable {
                    tally.free += 1;
                    return Next::RefreshAndReplay;
                }
            }
            _ => {}
        }
        let wait = match sent {
            Sent::Answer(status, retry_after)
                if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() =>
            {
                retry_after.unwrap_or(self.retry_delay).max(self.retry_delay)
            }
            Sent::ConnectFailed => self.retry_delay,
            _ => return Next::Return,
        };
        if replayable && tally.counted() < self.max_attempts && wait < time_left() {
            Next::Retry(wait)
        } else {
            Next::Return
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const LONG: Duration = Duration::from_secs(15);

    fn policy(max_attempts: u32) -> Policy<'static> {
        Policy { max_attempts, retry_delay: 100 * MS, on_status: &[401], idempotent: true, has_token: true }
    }

    fn answer(code: u16) -> Sent {
        Sent::Answer(StatusCode::from_u16(code).unwrap(), None)
    }

    /// Runs sends with the given results; the decisions taken.
    fn run(p: Policy<'_>, results: &[Sent], replayable: bool) -> (Vec<Next>, Tally) {
        let mut t = Tally::default();
        let mut out = Vec::new();
        for &sent in results {
            t.start();
            let next = p.next(&mut t, sent, replayable, || LONG);
            out.push(next);
            if next == Next::Return {
                break;
            }
        }
        (out, t)
    }

    #[test]
    fn a_success_returns_at_once() {
        assert_eq!(run(policy(3), &[answer(200)], true).0, [Next::Return]);
        assert_eq!(run(policy(3), &[answer(404)], true).0, [Next::Return], "4xx other than 429 is final");
    }

    #[test]
    fn connect_errors_are_retried_after_the_delay_while_attempts_last() {
        let (next, t) = run(policy(3), &[Sent::ConnectFailed; 3], true);
        assert_eq!(next, [Next::Retry(100 * MS), Next::Retry(100 * MS), Next::Return]);
        assert_eq!(t.sends, 3);
        assert_eq!(run(policy(1), &[Sent::ConnectFailed], true).0, [Next::Return], "maxAttempts 1: no retry");
    }

    #[test]
    fn status_429_and_5xx_are_retried_honouring_a_longer_retry_after() {
        assert_eq!(run(policy(2), &[answer(429), answer(200)], true).0, [Next::Retry(100 * MS), Next::Return]);
        assert_eq!(run(policy(2), &[answer(503), answer(503)], true).0, [Next::Retry(100 * MS), Next::Return]);
        let later = Sent::Answer(StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(2)));
        assert_eq!(run(policy(2), &[later], true).0, [Next::Retry(Duration::from_secs(2))]);
        let sooner = Sent::Answer(StatusCode::TOO_MANY_REQUESTS, Some(Duration::ZERO));
        assert_eq!(run(policy(2), &[sooner], true).0, [Next::Retry(100 * MS)], "never under retryDelay");
    }

    #[test]
    fn a_retry_that_would_end_after_the_deadline_is_not_made() {
        let mut t = Tally::default();
        t.start();
        let late = Sent::Answer(StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(20)));
        assert_eq!(policy(3).next(&mut t, late, true, || LONG), Next::Return);
        assert_eq!(policy(3).next(&mut t, answer(503), true, || 50 * MS), Next::Return);
    }

    #[test]
    fn a_rejected_token_is_refreshed_and_replayed_once_without_using_an_attempt() {
        let (next, t) = run(policy(1), &[answer(401), answer(401)], true);
        assert_eq!(next, [Next::RefreshAndReplay, Next::Return], "the second rejection is returned");
        assert_eq!(t.sends, 2);
        let (next, _) = run(policy(2), &[answer(401), answer(503), answer(200)], true);
        assert_eq!(next, [Next::RefreshAndReplay, Next::Retry(100 * MS), Next::Return], "the replay used none");
        let no_token = Policy { has_token: false, ..policy(1) };
        assert_eq!(run(no_token, &[answer(401)], true).0, [Next::Return]);
        let off = Policy { on_status: &[], ..policy(1) };
        assert_eq!(run(off, &[answer(401)], true).0, [Next::Return]);
    }

    #[test]
    fn a_body_too_large_to_replay_is_sent_once() {
        assert_eq!(run(policy(3), &[answer(401)], false).0, [Next::Return]);
        assert_eq!(run(policy(3), &[Sent::ConnectFailed], false).0, [Next::Return]);
        assert_eq!(run(policy(3), &[Sent::Closed], false).0, [Next::Return]);
    }

    #[test]
    fn a_stale_pooled_connection_is_resent_once_for_idempotent_requests() {
        let (next, t) = run(policy(1), &[Sent::Closed, Sent::Closed], true);
        assert_eq!(next, [Next::Resend, Next::Return]);
        assert_eq!(t.sends, 2);
        let post = Policy { idempotent: false, ..policy(1) };
        assert_eq!(run(post, &[Sent::Closed], true).0, [Next::Return]);
        assert_eq!(run(policy(3), &[Sent::Failed], true).0, [Next::Return], "TLS, protocol, timeout: final");
    }

    #[test]
    fn the_body_is_kept_only_while_another_send_may_follow() {
        let mut t = Tally::default();
        t.start();
        assert!(policy(2).keep_body(&t), "a retry may follow");
        let once = Policy { idempotent: false, has_token: false, ..policy(1) };
        assert!(!once.keep_body(&t), "nothing can follow");
        assert!(Policy { idempotent: false, ..policy(1) }.keep_body(&t), "a replay may follow");
        assert!(Policy { has_token: false, ..policy(1) }.keep_body(&t), "a stale resend may follow");
    }
}
