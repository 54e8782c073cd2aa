//! LaunchDarkly payload ids: an SDK retries a failed post once, with the same
//! `X-LaunchDarkly-Payload-ID`. A payload already written is acknowledged again
//! without a second record; one still being written is answered 503 (the first
//! attempt decides). Kept for the last [`CAPACITY`] payloads, oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Payload ids remembered (per collector).
pub const CAPACITY: usize = 100_000;
/// Longest payload id kept (LaunchDarkly's are UUIDs); longer ones are not deduplicated.
pub const MAX_ID_BYTES: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// New: the caller writes it, then calls [`Payloads::written`] or [`Payloads::failed`].
    New,
    /// Being written by an earlier attempt.
    InFlight,
    /// Written already.
    Written,
}

#[derive(Debug, Default)]
pub struct Payloads {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: HashMap<(String, String), bool>,
    order: VecDeque<(String, String)>,
}

impl Payloads {
    /// Claims `(env, id)`.
    pub fn claim(&self, env: &str, id: &str) -> Seen {
        let Ok(mut inner) = self.inner.lock() else {
            return Seen::New;
        };
        let key = (env.to_owned(), id.to_owned());
        match inner.state.get(&key) {
            Some(true) => Seen::Written,
            Some(false) => Seen::InFlight,
            None => {
                if inner.order.len() >= CAPACITY
                    && let Some(old) = inner.order.pop_front()
                {
                    inner.state.remove(&old);
                }
                inner.state.insert(key.clone(), false);
                inner.order.push_back(key);
                Seen::New
            }
        }
    }

    pub fn written(&self, env: &str, id: &str) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(s) = inner.state.get_mut(&(env.to_owned(), id.to_owned()))
        {
            *s = true;
        }
    }

    /// The write failed: a retry is a new attempt.
    pub fn failed(&self, env: &str, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            let key = (env.to_owned(), id.to_owned());
            inner.state.remove(&key);
            if let Some(i) = inner.order.iter().rposition(|k| *k == key) {
                inner.order.remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_written_once_and_a_failure_frees_the_id() {
        let p = Payloads::default();
        assert_eq!(p.claim("prod", "a"), Seen::New);
        assert_eq!(p.claim("prod", "a"), Seen::InFlight);
        assert_eq!(p.claim("test", "a"), Seen::New, "per environment");
        p.written("prod", "a");
        assert_eq!(p.claim("prod", "a"), Seen::Written);
        p.failed("test", "a");
        assert_eq!(p.claim("test", "a"), Seen::New);
    }

    #[test]
    fn the_oldest_ids_are_forgotten_past_the_capacity() {
        let p = Payloads::default();
        for i in 0..=CAPACITY {
            assert_eq!(p.claim("e", &i.to_string()), Seen::New);
            p.written("e", &i.to_string());
        }
        assert_eq!(p.claim("e", "0"), Seen::New, "forgotten");
        assert_eq!(p.claim("e", &CAPACITY.to_string()), Seen::Written);
    }
}
