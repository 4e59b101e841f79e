//! Offline acceptance: a signed receipt taken while its provider cannot be reached, then
//! checked online when the provider answers again (store and forward).
//!
//! - **When.** Only for a method with `[methods.<id>.offline]` enabled, only when the
//!   provider could not be reached (`provider_unavailable`, `outcome_unknown`,
//!   `plugin_timeout`: refused connections, timeouts, 5xx after the plugin's retries),
//!   never when it answered with a refusal.
//! - **What.** A receipt whose signature the plugin verified, stating its amount and its
//!   signed issue time, within `max_amount`, `max_age`, and `max_total` with every other
//!   receipt still unconfirmed. Decisions are taken one at a time (`gate`), so two tills
//!   never both fit under the total. Its receipt key is reserved like any other.
//! - **The line.** Once a scan finds the provider unreachable, the method's line is
//!   down: later scans are taken offline at once, without waiting for the provider (a
//!   receipt outside the limits still tries online first). A prober asks the provider's
//!   connection check until it answers; then every waiting check is woken.
//! - **The check.** Each receipt taken offline is owed a check, run by the payment's
//!   supervised job with backoff and resumed after a restart: look it up if it may have
//!   been sent, mark it sent (durably), redeem with the attempt's own id. Confirmed → the
//!   payment is verified; refused → it stays `succeeded` and becomes an exception
//!   (`exception.created`, `GET /v1/exceptions`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::machine::PaymentEvent;
use super::model::{now_ms, Amount, Failure, Millis, OfflineState, Payment, PaymentId, PaymentStatus};
use super::provider::{CallContext, Found, Inspected, LookupOrder, Provider, ProviderError};
use super::supervisor::{backoff, JobControl, JobKey};
use super::{failure_of, PaymentError, Payments, Record, Ticket};
use crate::config::OfflinePolicy;
use crate::plugins::Method;
use crate::store::{Store, StoreError};

/// The deferred check is first tried this long after the receipt was taken, then with
/// backoff up to `CHECK_MAX_DELAY` (and at once when the provider answers again).
const CHECK_FIRST_DELAY: Duration = Duration::from_secs(2);
const CHECK_MAX_DELAY: Duration = Duration::from_secs(30);
/// How often the prober asks a down provider's connection check.
const PROBE_FIRST_DELAY: Duration = Duration::from_secs(1);
const PROBE_MAX_DELAY: Duration = Duration::from_secs(10);
/// How far in the future a receipt's issue time may be (clocks drift, the more so
/// during the outages this is for) before it is not taken offline.
const CLOCK_ALLOWANCE_MS: Millis = 5 * 60 * 1000;
/// What a refund waiting for a confirmation is told to wait.
pub const REFUND_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The failure codes that mean "the provider could not be reached" (nothing it said was
/// a refusal): only these let a receipt be taken offline.
const UNREACHABLE: [&str; 3] = ["provider_unavailable", "outcome_unknown", "plugin_timeout"];

/// Whether `error` says the provider could not be reached.
pub(super) fn unreachable(error: &ProviderError) -> bool {
    UNREACHABLE.contains(&error.code())
}

/// Which methods' providers are down, and the one-at-a-time offline decision.
#[derive(Default)]
pub(super) struct OfflineDesk {
    /// Method id → since when its provider could not be reached.
    down: Mutex<HashMap<String, Millis>>,
    /// Woken when a provider answers again: the waiting checks go at once.
    line_up: tokio::sync::Notify,
    /// Held from an offline decision to its commit, so the open total is exact.
    gate: tokio::sync::Mutex<()>,
    /// Receipts taken offline and not yet confirmed, as this daemon committed or found
    /// them at start-up: the open total without reading the store (on a store shared
    /// with other daemons, the store is read instead, as they take receipts too).
    open: Mutex<HashMap<PaymentId, OpenReceipt>>,
}

/// A receipt still owing its check, as the open total counts it.
struct OpenReceipt {
    method: String,
    amount: Amount,
    accepted_at: Millis,
}

impl OfflineDesk {
    /// Keeps the open receipts in step with a committed (or found) payment.
    pub(super) fn note(&self, payment: &Payment) {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match payment.offline.as_ref().filter(|_| owes_check(payment)) {
            Some(check) => {
                let receipt = OpenReceipt { method: payment.method.clone(), amount: check.open_amount(), accepted_at: check.accepted_at };
                open.insert(payment.id.clone(), receipt);
            }
            None => {
                open.remove(&payment.id);
            }
        }
    }

    /// What `method`'s open receipts risk, as this daemon knows them.
    fn exposure(&self, method: &str) -> OfflineExposure {
        let open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        exposure_of(method, open.values().filter(|receipt| receipt.method == method).map(|receipt| (receipt.amount, receipt.accepted_at)))
    }
}

/// The exposure of `method`'s open receipts, each as (amount still owed, taken at).
fn exposure_of(method: &str, receipts: impl Iterator<Item = (Amount, Millis)>) -> OfflineExposure {
    let (mut count, mut total, mut oldest) = (0, 0, None::<Millis>);
    for (amount, accepted_at) in receipts {
        count += 1;
        total += amount.0;
        oldest = Some(oldest.map_or(accepted_at, |oldest| oldest.min(accepted_at)));
    }
    OfflineExposure {
        method: method.to_string(),
        open_receipts: count,
        open_amount: Amount(total),
        oldest_accepted_at: oldest.map(super::model::rfc3339),
        ..OfflineExposure::default()
    }
}

/// A method's offline acceptance: its limits, and what its receipts taken offline still
/// risk, the open total against `max_total` and the oldest unconfirmed receipt (status
/// page, doctor).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct OfflineExposure {
    /// The method.
    pub method: String,
    /// The most one receipt may pay offline.
    pub max_amount: u64,
    /// The most all unconfirmed receipts may pay together.
    pub max_total: u64,
    /// Receipts issued longer ago are not taken offline (seconds).
    pub max_age_seconds: u64,
    /// Receipts taken offline and not yet confirmed.
    pub open_receipts: usize,
    /// What they paid together (minor units): counts against `max_total`.
    pub open_amount: Amount,
    /// When the oldest of them was taken (RFC 3339).
    pub oldest_accepted_at: Option<String>,
    /// Since when the provider could not be reached, while it cannot (RFC 3339).
    pub provider_down_since: Option<String>,
}

impl Payments {
    /// Whether `method`'s provider is known to be unreachable.
    pub(super) fn line_down(&self, method: &str) -> bool {
        self.offline.down.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains_key(method)
    }

    /// Since when `method`'s provider could not be reached, if it cannot.
    fn down_since(&self, method: &str) -> Option<Millis> {
        self.offline.down.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(method).copied()
    }

    /// Notes that `method`'s provider could not be reached; starts its prober.
    pub(super) fn mark_down(&self, method: &Method) {
        let newly = self.offline.down.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(method.id.clone(), now_ms()).is_none();
        if newly {
            tracing::warn!(method = %method.id, "the provider cannot be reached: signed receipts are taken offline within the method's limits");
            let me = self.me.clone();
            let method = method.clone();
            tokio::spawn(async move { probe(me, method).await });
        }
    }

    /// Notes that `method`'s provider answered: waiting checks go at once.
    pub(super) fn mark_up(&self, method: &str) {
        let was_down = self.offline.down.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(method).is_some();
        if was_down {
            tracing::info!(method, "the provider answers again: receipts taken offline are checked now");
            self.offline.line_up.notify_waiters();
        }
    }

    /// Holds the offline decision for this scan until the guard is dropped.
    pub(super) async fn offline_gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.offline.gate.lock().await
    }

    /// Whether `inspected` may be taken offline under `policy` now: `Ok(Err(failure))`
    /// names the limit it is outside of.
    pub(super) async fn offline_verdict(
        &self,
        method: &str,
        policy: &OfflinePolicy,
        inspected: &Inspected,
    ) -> Result<Result<(), Failure>, PaymentError> {
        let refuse = |code: &str, message: String| Ok(Err(Failure { code: code.into(), message, retryable: true }));
        let (Some(amount), Some(issued_at), true) = (inspected.amount, inspected.issued_at_unix_ms, inspected.signature_verified) else {
            return refuse(
                "offline_not_verifiable",
                "the provider cannot be reached, and only a signed receipt stating its amount and issue time can be taken offline".into(),
            );
        };
        if amount > policy.max_amount {
            return refuse(
                "offline_amount_exceeded",
                format!(
                    "the provider cannot be reached, and this receipt ({amount}) is over what one receipt may pay offline ({})",
                    policy.max_amount
                ),
            );
        }
        let age = now_ms() - issued_at;
        if age < -CLOCK_ALLOWANCE_MS {
            return refuse(
                "offline_not_verifiable",
                "the provider cannot be reached, and this receipt says it was issued in the future (check this machine's clock)".into(),
            );
        }
        if age > policy.max_age.as_millis() as Millis {
            return refuse(
                "offline_receipt_too_old",
                format!(
                    "the provider cannot be reached, and this receipt was issued {} minutes ago; offline only receipts younger than {} minutes are taken",
                    age / 60_000,
                    policy.max_age.as_secs() / 60
                ),
            );
        }
        let open = self.offline_exposure(method).await?.open_amount.0;
        if open + amount > policy.max_total {
            return refuse(
                "offline_limit_reached",
                format!(
                    "the provider cannot be reached, and receipts taken offline already wait for {open} of the {} allowed; this one ({amount}) does not fit",
                    policy.max_total
                ),
            );
        }
        Ok(Ok(()))
    }

    /// Every configured method with offline acceptance: its limits and what it risks.
    pub async fn offline_status(&self) -> Result<Vec<OfflineExposure>, PaymentError> {
        let snapshot = self.live.load_full();
        let mut statuses = Vec::new();
        for method in snapshot.methods.iter() {
            if let Some(policy) = method.offline {
                statuses.push(OfflineExposure {
                    max_amount: policy.max_amount,
                    max_total: policy.max_total,
                    max_age_seconds: policy.max_age.as_secs(),
                    ..self.offline_exposure(&method.id).await?
                });
            }
        }
        Ok(statuses)
    }

    /// What `method`'s receipts taken offline still risk (limits left at zero).
    pub async fn offline_exposure(&self, method: &str) -> Result<OfflineExposure, PaymentError> {
        let known = match self.store.is_shared() {
            true => exposure_in(&self.store, method).await?,
            false => self.offline.exposure(method),
        };
        Ok(OfflineExposure { provider_down_since: self.down_since(method).map(super::model::rfc3339), ..known })
    }

    /// Takes payment `id`'s attempt offline (`sent`: its check may have reached the
    /// provider), answering the request that scanned it.
    pub(super) async fn take_offline(
        &self,
        id: &PaymentId,
        sent: bool,
        verified: bool,
        ticket: Option<&Ticket>,
    ) -> Result<Payment, PaymentError> {
        let payment = self.transition(id, PaymentEvent::AcceptedOffline { sent, verified }, Record::answer(ticket, 200)).await?;
        tracing::warn!(payment = %id, amount = payment.captured_amount.0, sent, "receipt taken offline; it is checked when the provider answers again");
        crate::metrics::record_offline_receipt(&payment.method, "accepted");
        Ok(payment)
    }

    /// The job's part after a receipt was taken offline: check it until the provider
    /// confirms or refuses it (or shutdown; it is resumed at the next start).
    pub(super) async fn follow_offline_check(&self, method: &Method, id: &PaymentId, control: &JobControl) {
        let mut delays = backoff(CHECK_FIRST_DELAY, CHECK_MAX_DELAY);
        let mut delay = CHECK_FIRST_DELAY;
        loop {
            let line_up = self.offline.line_up.notified();
            tokio::select! {
                alive = control.pause(delay) => if !alive { return },
                _ = line_up => {}
            }
            if self.line_down(&method.id) {
                // The prober asks; this check goes once the provider answers again.
                delay = delays.next().unwrap_or(CHECK_MAX_DELAY);
                continue;
            }
            match self.check_offline_receipt(method, id).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(payment = %id, %error, "the deferred check could not run; trying again"),
            }
            delay = delays.next().unwrap_or(CHECK_MAX_DELAY);
        }
    }

    /// One try of the deferred check. `Ok(true)` once it is settled.
    async fn check_offline_receipt(&self, method: &Method, id: &PaymentId) -> Result<bool, PaymentError> {
        let payment = self.load(id).await?;
        let Some(check) = payment.offline.clone().filter(|check| check.state == OfflineState::Pending) else { return Ok(true) };
        // The attempt's own id (its idempotency key at the provider), and what it paid.
        let context = CallContext {
            attempt_id: super::model::attempt_id(&payment.id, check.attempt.number),
            amount_due: payment.captured_amount.0,
            eligible_amount: payment.captured_amount.0,
            ..Self::context(&payment, method)
        };
        if check.sent {
            let order = LookupOrder {
                payment: context.clone(),
                inspected: Some(check.attempt.inspected()),
                plugin_data: None,
                attempt_deadline_unix_ms: check.attempt.deadline_at,
            };
            match method.lookup(order).await {
                Ok(Found::Taken(settlement)) => return self.settle_offline(method, id, PaymentEvent::OfflineConfirmed(settlement)).await,
                Ok(Found::Refused(refusal)) => {
                    let failure = failure_of(&ProviderError::Failed(refusal));
                    return self.settle_offline(method, id, PaymentEvent::OfflineRefused(failure)).await;
                }
                Ok(Found::NotTaken) => self.mark_up(&method.id),
                Ok(Found::InProgress(_)) => return Ok(false),
                Err(error) => return Ok(self.unanswered(method, id, &error)),
            }
        }
        // Durable before it is sent: a refund must not cancel a check that may land.
        let marked = self.transition(id, PaymentEvent::OfflineCheckSent, Record::Nothing).await?;
        if marked.offline.as_ref().is_none_or(|check| check.state != OfflineState::Pending) {
            return Ok(true);
        }
        match method.redeem(context, check.attempt.code.clone(), check.attempt.inspected()).await {
            Ok(settlement) => self.settle_offline(method, id, PaymentEvent::OfflineConfirmed(settlement)).await,
            // The provider may have acted (a panic, a lost answer): looked up next time.
            Err(error) if unreachable(&error) || error.retryable() || super::outcome_unknown(&error) => {
                Ok(self.unanswered(method, id, &error))
            }
            Err(error) => self.settle_offline(method, id, PaymentEvent::OfflineRefused(failure_of(&error))).await,
        }
    }

    /// The provider did not answer the check: `false` (try again later).
    fn unanswered(&self, method: &Method, id: &PaymentId, error: &ProviderError) -> bool {
        if unreachable(error) {
            self.mark_down(method);
        }
        tracing::info!(payment = %id, %error, "the provider did not answer the deferred check; it is tried again");
        false
    }

    /// Records the provider's answer to a deferred check.
    async fn settle_offline(&self, method: &Method, id: &PaymentId, event: PaymentEvent) -> Result<bool, PaymentError> {
        self.mark_up(&method.id);
        let payment = self.transition(id, event, Record::Nothing).await?;
        if let Some(check) = &payment.offline {
            match check.state {
                OfflineState::Confirmed => {
                    tracing::info!(payment = %id, "receipt taken offline confirmed by the provider");
                    crate::metrics::record_offline_receipt(&payment.method, "confirmed");
                }
                OfflineState::Refused => {
                    let reason = check.reason.as_ref().map(|reason| format!("{}: {}", reason.code, reason.message)).unwrap_or_default();
                    tracing::error!(payment = %id, %reason, "the provider refused a receipt taken offline: an exception for the shop to follow up");
                    crate::metrics::record_offline_receipt(&payment.method, "refused");
                }
                _ => {}
            }
        }
        Ok(true)
    }

    /// Payments whose receipt, taken offline, the provider refused: newest first, a page
    /// of `limit` and whether more exist.
    pub async fn exceptions(&self, limit: usize, before: Option<&PaymentId>) -> Result<(Vec<Payment>, bool), PaymentError> {
        let window = crate::store::Window { before: before.map(|id| id.to_string()), ..Default::default() };
        let found = self.store.payments(&[crate::store::PaymentIndex::Exceptions], &window, limit.saturating_add(1)).await?;
        Ok(super::page(found, limit))
    }
}

/// What `method`'s receipts taken offline and still unconfirmed in `store` risk (the
/// open work is a short list: payments under way and receipts owing their check).
pub async fn exposure_in(store: &Store, method: &str) -> Result<OfflineExposure, StoreError> {
    let open = store.unfinished_payments().await?;
    let checks =
        open.iter().filter(|payment| payment.method == method && owes_check(payment)).filter_map(|payment| payment.offline.as_ref());
    Ok(exposure_of(method, checks.map(|check| (check.open_amount(), check.accepted_at))))
}

/// Starts the deferred check of a payment whose receipt was taken offline (after a
/// restart, or when adopted from another daemon).
pub(super) fn resume(payments: &Payments, method: Method, id: PaymentId) {
    let me = payments.owned();
    let job_id = id.clone();
    let _ =
        payments.jobs.start(JobKey::Payment(id), move |control| async move { me.follow_offline_check(&method, &job_id, &control).await });
}

/// Whether `payment` owes a deferred check.
pub(super) fn owes_check(payment: &Payment) -> bool {
    payment.status == PaymentStatus::Succeeded && payment.offline.as_ref().is_some_and(|check| check.state == OfflineState::Pending)
}

/// Asks a down provider's connection check until it answers, then marks it up. Ends
/// early when something else found it up, or when the service is gone.
async fn probe(payments: std::sync::Weak<Payments>, method: Method) {
    for delay in backoff(PROBE_FIRST_DELAY, PROBE_MAX_DELAY) {
        tokio::time::sleep(delay).await;
        let Some(payments) = payments.upgrade() else { return };
        if !payments.line_down(&method.id) {
            return;
        }
        let deadline = now_ms() + Payments::plugin_budget(&method);
        match method.check_connection(deadline).await {
            Ok(_) => return payments.mark_up(&method.id),
            Err(error) if unreachable(&error) => {}
            // Answered, though not with a yes (say, refused credentials): reachable.
            Err(error) => {
                tracing::warn!(method = %method.id, %error, "the provider answers its connection check with an error");
                return payments.mark_up(&method.id);
            }
        }
    }
}
