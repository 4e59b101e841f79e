//! Resolving attempts whose outcome is unknown (a lost answer, a timeout, a crash while
//! `processing`) by asking the provider, never by guessing or charging again.
//!
//! Lookup fencing: a "nothing was taken" answer is final only once the attempt's
//! deadline (start + the method's timeout + a margin) has passed; before that, the
//! request we sent may still be committed by the provider, so the job looks again.

use std::time::Duration;

use super::machine::PaymentEvent;
use super::model::{now_ms, Attempt, Failure, Millis, Payment, PaymentId, PaymentStatus};
use super::provider::{Found, LookupOrder, Provider};
use super::supervisor::{backoff, JobControl, JobKey};
use super::{failure_of, PaymentError, Payments, Record, Ticket};
use crate::plugins::Method;

/// Added to the method's timeout before "not taken" is believed.
const FENCE_MARGIN: Duration = Duration::from_secs(2);
/// Lookups start quickly and settle at one a second, so a payment resolves within
/// about a second of the provider's return.
const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Starts the lookup job of a payment left `processing` (after a restart).
pub(super) fn resume(payments: &Payments, method: Method, id: PaymentId) {
    let me = payments.owned();
    let job_id = id.clone();
    let _ = payments.jobs.start(JobKey::Payment(id), move |control| async move { follow(&me, &method, &job_id, None, &control).await });
}

/// Looks the payment up until the provider gives a final answer (or shutdown).
pub(super) async fn follow(payments: &Payments, method: &Method, id: &PaymentId, ticket: Option<&Ticket>, control: &JobControl) {
    for delay in backoff(FIRST_DELAY, MAX_DELAY) {
        if !control.pause(delay).await {
            return;
        }
        match look_up(payments, method, id, ticket).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => tracing::warn!(payment = %id, %error, "recovery lookup failed; looking again"),
        }
    }
}

/// When a "not taken" answer about `payment`'s attempt may be believed.
fn fence(payment: &Payment, method: &Method) -> Millis {
    let started = payment.attempt.as_ref().map(|attempt| attempt.started_at).unwrap_or(payment.updated_at);
    started + (method.timeout + FENCE_MARGIN).as_millis() as i64
}

/// One lookup. `Ok(true)` once the payment is no longer `processing`.
async fn look_up(payments: &Payments, method: &Method, id: &PaymentId, ticket: Option<&Ticket>) -> Result<bool, PaymentError> {
    let payment = payments.load(id).await?;
    if payment.status != PaymentStatus::Processing {
        return Ok(true);
    }
    let attempt = payment.attempt.as_ref();
    let order = LookupOrder {
        payment: Payments::context(&payment, method),
        inspected: attempt.map(Attempt::inspected),
        plugin_data: payment.plugin_data.clone(),
        attempt_deadline_unix_ms: attempt
            .filter(|attempt| attempt.deadline_at > 0)
            .map_or_else(|| fence(&payment, method) - FENCE_MARGIN.as_millis() as i64, |attempt| attempt.deadline_at),
    };
    let answer = Record::answer(ticket, 200);
    let event = match method.lookup(order).await {
        Ok(Found::Taken(settlement)) => {
            tracing::info!(payment = %id, "recovered: the provider took the payment");
            PaymentEvent::Settled(settlement)
        }
        Ok(Found::NotTaken) if now_ms() < fence(&payment, method) => return Ok(false),
        Ok(Found::NotTaken) => PaymentEvent::AttemptFailed(Failure {
            code: "attempt_interrupted".into(),
            message: "the attempt was interrupted and nothing was taken; scan the receipt again".into(),
            retryable: true,
        }),
        Ok(Found::Refused(refusal)) => PaymentEvent::AttemptFailed(failure_of(&super::provider::ProviderError::Failed(refusal))),
        Ok(Found::InProgress(_)) => return Ok(false),
        Err(error) => {
            tracing::info!(payment = %id, %error, "the provider could not answer the lookup yet");
            return Ok(false);
        }
    };
    payments.transition(id, event, answer).await?;
    Ok(true)
}
