//! Retrying provider calls: exponential backoff bounded by the call's deadline, honouring
//! `Retry-After`. Shared so every plugin retries the same way.

use std::time::Duration;

use posbridge_plugin_api::HttpResponse;

/// The delays between tries of one call.
#[derive(Debug, Clone)]
pub struct Backoff {
    next_ms: u64,
    max_ms: u64,
}

impl Backoff {
    /// Starts at `first_ms`, doubling up to `max_ms`.
    pub fn new(first_ms: u64, max_ms: u64) -> Self {
        Backoff { next_ms: first_ms, max_ms }
    }

    /// Sleeps before the next try (at least `at_least_ms`, e.g. from `Retry-After`) and
    /// answers `true`; answers `false` without sleeping when the try could not start
    /// before `deadline_ms`.
    pub fn wait(&mut self, now_ms: i64, deadline_ms: i64, at_least_ms: Option<u64>) -> bool {
        let delay = at_least_ms.unwrap_or(0).max(self.next_ms);
        if now_ms.saturating_add(delay as i64) >= deadline_ms {
            return false;
        }
        std::thread::sleep(Duration::from_millis(delay));
        self.next_ms = (self.next_ms * 2).min(self.max_ms);
        true
    }
}

/// A `Retry-After: <seconds>` header, in milliseconds.
pub fn retry_after_ms(response: &HttpResponse) -> Option<u64> {
    response.header("retry-after").and_then(|value| value.trim().parse::<u64>().ok()).map(|seconds| seconds.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_when_the_deadline_is_near() {
        let mut backoff = Backoff::new(10, 40);
        assert!(!backoff.wait(1_000, 1_005, None), "10 ms would overrun");
        assert!(!backoff.wait(0, 1_000, Some(2_000)), "Retry-After beyond the deadline");
        assert!(backoff.wait(0, 1_000, None));
        assert_eq!(backoff.next_ms, 20);
        assert!(backoff.wait(0, 1_000, None));
        assert!(backoff.wait(0, 1_000, None));
        assert_eq!(backoff.next_ms, 40, "capped");
    }
}
