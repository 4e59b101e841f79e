//! The account's request budget: every request of a method (all tills' card payments,
//! refunds, checks) draws from one token bucket, so a shop with many tills stays under
//! Stripe's per-account rate limit instead of meeting it as `429`s. A `429` Stripe sends
//! anyway (another program on the same account, a lowered limit) holds every request
//! for the time it asks and halves the rate, which then recovers over
//! [`RECOVERY_MS`].
//!
//! The bucket is kept as the time the next request may leave (generic cell rate
//! algorithm): each request reserves the next slot, so waiting requests leave in the order
//! they asked, evenly spaced, and the lock is never held while sleeping. A burst of a
//! fifth of a second's requests may leave at once (tills starting together), so no
//! second ever carries more than 1.2 times the rate: the defaults, 20 and 80 a second,
//! stay under Stripe's 25 and 100 however the requests fall.

use std::sync::Mutex;

/// How long a halved rate takes to grow back to the configured one.
pub const RECOVERY_MS: i64 = 10_000;
/// How long a `429` without a `Retry-After` holds every request.
pub const DEFAULT_HOLD_MS: u64 = 1_000;
/// The rate never drops below this share of the configured one.
const SLOWEST_SHARE: f64 = 1.0 / 8.0;

/// Whether a request may use the budget's burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Someone waits on it (a start, a cancel, the read that settles a payment, a refund):
    /// it may leave ahead of its slot, within the burst.
    Prompt,
    /// A routine look for change (a waiting payment's reader): it leaves at its slot, so
    /// a crowd of them never takes the burst from a prompt request.
    Routine,
}

/// One method's shared request budget.
#[derive(Debug)]
pub struct RequestBudget {
    per_second: f64,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// When the bucket would be empty again had every reserved request left at its slot
    /// (ms; the algorithm's "theoretical arrival time").
    full_at_ms: f64,
    /// No request leaves before this (a `429`'s hold).
    held_until_ms: i64,
    /// The share of the configured rate right after the last `429`, and when it came.
    share_after_limit: f64,
    limited_at_ms: i64,
}

impl RequestBudget {
    /// A bucket of `per_second` requests a second, a fifth of which may leave at once.
    pub fn new(per_second: u32) -> RequestBudget {
        RequestBudget {
            per_second: f64::from(per_second.max(1)),
            state: Mutex::new(State { full_at_ms: f64::MIN, held_until_ms: i64::MIN, share_after_limit: 1.0, limited_at_ms: i64::MIN }),
        }
    }

    /// The configured rate.
    pub fn per_second(&self) -> u32 {
        self.per_second as u32
    }

    /// Reserves a slot for one request asked at `now_ms` and answers when it may leave,
    /// or `None` (nothing reserved) when that would be at or after `deadline_ms`. Only a
    /// [`Priority::Prompt`] request may leave ahead of its slot.
    pub fn reserve(&self, now_ms: i64, deadline_ms: i64, priority: Priority) -> Option<i64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (interval, burst) = self.spacing(state.share(now_ms));
        let burst = if priority == Priority::Prompt { burst } else { 0.0 };
        let now = now_ms as f64;
        let full_at = state.full_at_ms.max(now);
        let leave_at = (full_at - burst).max(now).max(state.held_until_ms as f64).ceil();
        if leave_at as i64 >= deadline_ms {
            return None;
        }
        state.full_at_ms = full_at.max(leave_at) + interval;
        Some(leave_at as i64)
    }

    /// Stripe answered `429`: hold every request for `retry_after_ms` (or a second),
    /// halve the rate, and let no burst through when the hold ends.
    pub fn limited(&self, now_ms: i64, retry_after_ms: Option<u64>) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let hold = retry_after_ms.unwrap_or(DEFAULT_HOLD_MS).min(60_000) as i64;
        state.held_until_ms = state.held_until_ms.max(now_ms + hold);
        state.share_after_limit = (state.share(now_ms) / 2.0).max(SLOWEST_SHARE);
        state.limited_at_ms = now_ms;
        let (_, burst) = self.spacing(state.share_after_limit);
        state.full_at_ms = state.full_at_ms.max(state.held_until_ms as f64 + burst);
    }

    /// The share of the configured rate in force at `now_ms` (1.0 unless a `429` came
    /// within [`RECOVERY_MS`]).
    pub fn share(&self, now_ms: i64) -> f64 {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).share(now_ms)
    }

    /// The time between requests at `share` of the rate, and how far ahead of its slot a
    /// request may leave (so that a fifth of a second's requests may leave at once).
    fn spacing(&self, share: f64) -> (f64, f64) {
        let rate = self.per_second * share;
        let interval = 1000.0 / rate;
        let burst = (rate / 5.0).floor().max(1.0);
        (interval, (burst - 1.0) * interval)
    }
}

impl State {
    fn share(&self, now_ms: i64) -> f64 {
        if self.limited_at_ms == i64::MIN {
            return 1.0;
        }
        let recovered = (now_ms - self.limited_at_ms).max(0) as f64 / RECOVERY_MS as f64;
        (self.share_after_limit + recovered * (1.0 - self.share_after_limit)).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The times requests asked together at `now` may leave.
    fn departures(budget: &RequestBudget, now: i64, count: usize) -> Vec<i64> {
        (0..count).map(|_| budget.reserve(now, i64::MAX, Priority::Prompt).unwrap()).collect()
    }

    #[test]
    fn a_fifth_of_a_second_of_requests_leaves_at_once_then_they_are_spaced() {
        let budget = RequestBudget::new(20);
        let times = departures(&budget, 0, 7);
        assert_eq!(times, vec![0, 0, 0, 0, 50, 100, 150]);
        // However requests fall, no second carries more than 1.2 times the rate.
        let later = departures(&budget, 150, 200);
        let all: Vec<i64> = times.into_iter().chain(later).collect();
        let busiest = all.iter().map(|start| all.iter().filter(|at| **at >= *start && **at < start + 1000).count()).max().unwrap();
        assert!(busiest <= 24, "{busiest} requests in one second");
        assert_eq!(*all.last().unwrap(), 200 * 50 + 150);
    }

    #[test]
    fn an_idle_bucket_refills_to_its_burst_only() {
        let budget = RequestBudget::new(20);
        departures(&budget, 0, 10);
        let times = departures(&budget, 60_000, 6);
        assert_eq!(times, vec![60_000, 60_000, 60_000, 60_000, 60_050, 60_100]);
    }

    #[test]
    fn nothing_is_reserved_past_the_deadline() {
        let budget = RequestBudget::new(1);
        assert_eq!(budget.reserve(0, 10, Priority::Prompt), Some(0));
        assert_eq!(budget.reserve(0, 500, Priority::Prompt), None, "the next slot is at 1000");
        assert_eq!(budget.reserve(0, 2_000, Priority::Prompt), Some(1_000), "the refused try reserved nothing");
    }

    #[test]
    fn routine_requests_leave_the_burst_to_prompt_ones() {
        let budget = RequestBudget::new(20);
        let routine: Vec<i64> = (0..3).map(|_| budget.reserve(0, i64::MAX, Priority::Routine).unwrap()).collect();
        assert_eq!(routine, vec![0, 50, 100], "routine looks are spaced even in an idle bucket");
        assert_eq!(budget.reserve(0, i64::MAX, Priority::Prompt), Some(0), "a prompt request does not queue behind them");
    }

    #[test]
    fn a_429_holds_everyone_and_halves_the_rate_until_it_recovers() {
        let budget = RequestBudget::new(10);
        departures(&budget, 0, 10);
        budget.limited(0, Some(2_000));
        assert_eq!(budget.share(0), 0.5);
        let held = budget.reserve(100, i64::MAX, Priority::Prompt).unwrap();
        assert_eq!(held, 2_000, "Retry-After holds the next request");
        let next = budget.reserve(100, i64::MAX, Priority::Prompt).unwrap();
        assert!(next - held >= 150, "half the rate: about 200 ms apart, got {}", next - held);
        budget.limited(2_100, None);
        assert!((budget.share(2_100) - (0.5 + 0.21 * 0.5) / 2.0).abs() < 1e-9, "halved again from where it had recovered to");
        assert!(budget.reserve(2_100, i64::MAX, Priority::Prompt).unwrap() >= 3_100, "a 429 without Retry-After holds a second");
        assert_eq!(budget.share(2_100 + RECOVERY_MS), 1.0);
        for _ in 0..10 {
            budget.limited(50_000, None);
        }
        assert_eq!(budget.share(50_000), SLOWEST_SHARE);
    }
}
