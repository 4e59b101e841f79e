//! Card payments: stored before the provider hears of them (write-ahead), then carried
//! by one job that starts them at the provider, follows them until they settle, and
//! cancels them at the provider when the customer takes too long or the POS cancels.
//! After a restart the job resumes from the stored `plugin_data`; a start whose answer
//! was lost is repeated with the same idempotency keys, so it never charges twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::machine::PaymentEvent;
use super::model::{now_ms, Failure, Payment, PaymentId, PaymentStatus};
use super::provider::{CardProgress, CardState, Provider, ProviderError};
use super::supervisor::{JobControl, JobHandle, JobKey};
use super::{await_answer, failure_of, outcome_unknown, Asked, PaymentError, Payments, Record, Ticket};
use crate::plugins::Method;

/// How often a waiting card payment is asked about, unless its plugin says when (its
/// `poll_after`: it knows the provider's request budget and when news is likely).
const POLL_EVERY: Duration = Duration::from_millis(250);

type Reply = oneshot::Sender<Result<Payment, PaymentError>>;

fn waiting(payment: &Payment) -> bool {
    matches!(payment.status, PaymentStatus::AwaitingCard | PaymentStatus::Processing)
}

/// Starts the card job of a just-created payment and answers its first progress (or
/// the stored payment when the POS stops waiting first).
pub(super) async fn begin(payments: &Payments, method: Method, payment: Payment, asked: Asked) -> Result<Payment, PaymentError> {
    let (reply, answer) = oneshot::channel();
    let _ = start(payments, method, payment.id.clone(), asked.ticket.clone(), Some(reply));
    match await_answer(answer, asked.patience).await {
        Some(result) => result,
        None => payments.load(&payment.id).await,
    }
}

/// Starts the job of a card payment still waiting after a restart.
pub(super) fn resume(payments: &Payments, method: Method, id: PaymentId) {
    let _ = start(payments, method, id, None, None);
}

/// The payment's card job: the live one, or a new one.
fn start(payments: &Payments, method: Method, id: PaymentId, ticket: Option<Ticket>, reply: Option<Reply>) -> JobHandle {
    let me = payments.owned();
    let job_id = id.clone();
    payments
        .jobs
        .start(JobKey::Payment(id), move |control| async move { me.card_job(method, job_id, ticket, reply, control).await })
        .unwrap_or_else(|live| live)
}

impl Payments {
    async fn card_job(
        self: Arc<Self>,
        method: Method,
        id: PaymentId,
        mut ticket: Option<Ticket>,
        mut reply: Option<Reply>,
        control: JobControl,
    ) {
        loop {
            let (result, poll_after) = self.card_step(&method, &id, ticket.take().as_ref(), &control).await;
            let settled = matches!(&result, Ok(payment) if !waiting(payment));
            match reply.take() {
                Some(reply) => {
                    let _ = reply.send(result);
                }
                None => {
                    if let Err(error) = result {
                        tracing::warn!(payment = %id, %error, "card payment check failed; trying again");
                    }
                }
            }
            if settled || !control.pause(poll_after.unwrap_or(POLL_EVERY)).await {
                return;
            }
        }
    }

    /// One look at the provider: start, poll, or cancel (time is up, or the POS asked).
    /// Answers the payment after it, and when the plugin wants to be asked again.
    async fn card_step(
        &self,
        method: &Method,
        id: &PaymentId,
        ticket: Option<&Ticket>,
        control: &JobControl,
    ) -> (Result<Payment, PaymentError>, Option<Duration>) {
        let payment = match self.load(id).await {
            Ok(payment) if waiting(&payment) => payment,
            other => return (other, None),
        };
        let context = Self::context(&payment, method);
        let stop = if control.cancel_requested() || payment.cancel_requested_at.is_some() {
            Some(Failure { code: "canceled".into(), message: "the POS canceled the card payment".into(), retryable: false })
        } else if now_ms() >= payment.expires_at {
            Some(Failure {
                code: "reader_timeout".into(),
                message: "the customer did not pay in time; the card payment was canceled".into(),
                retryable: true,
            })
        } else {
            None
        };
        let answer = Record::answer(ticket, 201);
        let (progress, failure_override) = match (payment.plugin_data.clone(), stop) {
            // The start's answer was lost: repeat it (same idempotency keys, same objects).
            (None, None) => (method.start_card(context).await, None),
            (None, Some(failure)) => return (self.transition(id, PaymentEvent::AttemptFailed(failure), answer).await, None),
            (Some(data), None) => (method.poll_card(context, data).await, None),
            // A method that cannot cancel is followed until the provider ends the payment.
            (Some(data), Some(_)) if !method.abilities.cancel => (method.poll_card(context, data).await, None),
            (Some(data), Some(failure)) => {
                tracing::info!(payment = %id, reason = %failure.code, "canceling the card payment at the provider");
                match method.cancel_card(context, data).await {
                    Ok(progress) => (Ok(progress), Some(failure)),
                    Err(error) => return (Err(error.into()), None),
                }
            }
        };
        match progress {
            Ok(progress) => {
                let poll_after = progress.poll_after;
                (self.apply_card(id, progress, failure_override, answer).await, poll_after)
            }
            Err(error) if is_transient(&error) => (self.load(id).await, None),
            Err(error) => (self.transition(id, PaymentEvent::AttemptFailed(failure_of(&error)), answer).await, None),
        }
    }

    /// Records what the provider said; `failure_override` replaces a failure's reason (a
    /// timeout we caused is a timeout, not the provider's "canceled").
    async fn apply_card(
        &self,
        id: &PaymentId,
        progress: CardProgress,
        failure_override: Option<Failure>,
        record: Record<'_>,
    ) -> Result<Payment, PaymentError> {
        let event = match progress.state {
            CardState::Succeeded => match progress.settlement {
                Some(settlement) => PaymentEvent::Settled(settlement),
                None => return self.load(id).await,
            },
            CardState::Failed => {
                let failure = failure_override
                    .or_else(|| progress.failure.map(|refusal| failure_of(&ProviderError::Failed(refusal))))
                    .unwrap_or(Failure { code: "card_declined".into(), message: "the card payment failed".into(), retryable: false });
                PaymentEvent::CardFailed { failure, plugin_data: progress.plugin_data }
            }
            CardState::AwaitingCard | CardState::Processing => PaymentEvent::CardWaiting {
                processing: progress.state == CardState::Processing,
                plugin_data: progress.plugin_data,
                next_action: progress.next_action,
            },
        };
        self.transition(id, event, record).await
    }

    /// Hands a POS cancel to the payment's card job and waits until the provider has
    /// settled it (canceled, or paid meanwhile). Refused while the provider cannot be
    /// reached: the job keeps trying.
    pub(super) async fn cancel_card_at_provider(&self, payment: &Payment) -> Result<Payment, PaymentError> {
        let method = self.method(&payment.method)?;
        // Recorded first: on a shared store the card job may run at another daemon,
        // which sees the request at its next look.
        let mut current = self.transition(&payment.id, PaymentEvent::CancelRequested, Record::Nothing).await?;
        let job = start(self, method.clone(), payment.id.clone(), None, None);
        job.request_cancel();
        let deadline = tokio::time::Instant::now() + method.timeout * 2 + POLL_EVERY * 4;
        while waiting(&current) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            current = self.wait(current.id.as_str(), current.version, left).await?;
        }
        if waiting(&current) {
            return Err(PaymentError::Provider {
                code: "provider_unavailable".into(),
                message: "the card payment could not be canceled at the provider yet; posbridge keeps trying".into(),
                field: None,
            });
        }
        Ok(current)
    }
}

/// A failure worth polling again for.
fn is_transient(error: &ProviderError) -> bool {
    error.retryable() || outcome_unknown(error)
}
