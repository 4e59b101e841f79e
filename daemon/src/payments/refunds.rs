//! Refunds: the refundable amount is reserved before the provider is asked
//! (write-ahead), then one job per refund sends it, and sends it again with the same id
//! while the provider cannot confirm it, so money goes back exactly once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::machine::{Next, PaymentEvent};
use super::model::{now_ms, Amount, Currency, Failure, OfflineState, Payment, PaymentId, Refund, RefundId, RefundStatus};
use super::provider::{Provider, ProviderError, RefundOrder};
use super::supervisor::{backoff, JobControl, JobKey};
use super::{await_answer, failure_of, view, Asked, PaymentError, Payments, Ticket};
use crate::plugins::Method;
use crate::store::{Commit, RefundIndex};

/// A request to give money back.
#[derive(Debug, Clone)]
pub struct NewRefund {
    pub payment: Option<String>,
    pub method: Option<String>,
    pub transaction_id: Option<String>,
    pub amount: Option<Amount>,
    pub currency: Option<Currency>,
    pub reason: Option<String>,
    pub client: String,
}

const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(60);

type Reply = oneshot::Sender<Result<Refund, PaymentError>>;

impl Payments {
    /// Creates and sends a refund. Answers the refund (`succeeded`, or `pending` while
    /// the provider cannot confirm it and its job sends it again), or the provider's
    /// reason for refusing it.
    pub async fn refund(&self, request: NewRefund, asked: Asked) -> Result<Refund, PaymentError> {
        let refund = self.reserve_refund(&request, asked.ticket.as_ref()).await?;
        let method = self.method(&refund.method)?;
        let (reply, answer) = oneshot::channel();
        start(self, method, refund.id.clone(), asked.ticket.clone(), Some(reply));
        match await_answer(answer, asked.patience).await {
            Some(result) => result,
            None => self.get_refund(refund.id.as_str()).await,
        }
    }

    /// Refunds newest first, optionally of one payment, only of `registers` when given
    /// (each register's own index, merged); `true` when more exist.
    pub async fn list_refunds(
        &self,
        limit: usize,
        payment: Option<&str>,
        registers: Option<&[String]>,
    ) -> Result<(Vec<Refund>, bool), PaymentError> {
        let payment = match payment.map(PaymentId::parse) {
            Some(None) => return Ok((Vec::new(), false)),
            Some(Some(id)) => Some(id),
            None => None,
        };
        let indexes: Vec<RefundIndex<'_>> = match (&payment, registers) {
            (Some(payment), Some(registers)) => {
                // A payment's refunds are its register's: all visible, or none.
                match self.store.payment(payment).await? {
                    Some(found) if registers.contains(&found.register) => vec![RefundIndex::OfPayment(payment)],
                    _ => return Ok((Vec::new(), false)),
                }
            }
            (Some(payment), None) => vec![RefundIndex::OfPayment(payment)],
            (None, Some(registers)) => registers.iter().map(|register| RefundIndex::OfRegister(register)).collect(),
            (None, None) => vec![RefundIndex::All],
        };
        let found = self.store.refunds(&indexes, None, limit.saturating_add(1)).await?;
        Ok(super::page(found, limit))
    }

    /// Reads a refund.
    pub async fn get_refund(&self, id: &str) -> Result<Refund, PaymentError> {
        let parsed = RefundId::parse(id).ok_or_else(|| PaymentError::RefundNotFound(id.to_string()))?;
        self.store.refund(&parsed).await?.ok_or_else(|| PaymentError::RefundNotFound(id.to_string()))
    }

    /// A refund belongs to its payment's register; one without a payment to no till
    /// (`registers` given: only those registers are visible).
    pub async fn refund_visible(&self, refund: &Refund, registers: Option<&[String]>) -> Result<bool, PaymentError> {
        let Some(registers) = registers else { return Ok(true) };
        let Some(id) = &refund.payment else { return Ok(false) };
        let Some(payment) = self.store.payment(id).await? else { return Ok(false) };
        Ok(registers.contains(&payment.register))
    }

    /// The payment a refund request is about: named, or found by its transaction id.
    pub async fn refunded_payment(&self, request: &NewRefund) -> Result<Option<Payment>, PaymentError> {
        if let Some(id) = &request.payment {
            return self.get(id).await.map(Some);
        }
        let Some(transaction_id) = &request.transaction_id else { return Ok(None) };
        match self.store.redeemed_by(transaction_id).await? {
            Some(holder) => Ok(self.store.payment(&holder).await?),
            None => Ok(None),
        }
    }

    /// Validates the request and records the refund as `pending` with its amount
    /// reserved on the payment, durably, before anything is sent; the request's
    /// idempotency record is opened in the same commit.
    async fn reserve_refund(&self, request: &NewRefund, ticket: Option<&Ticket>) -> Result<Refund, PaymentError> {
        let found = self.refunded_payment(request).await?;
        let method = match (&found, &request.method) {
            (Some(payment), _) => self.method(&payment.method)?,
            (None, Some(method)) => {
                self.live.load().methods.get_any(method).cloned().ok_or_else(|| PaymentError::UnknownMethod(method.clone()))?
            }
            (None, None) => {
                return Err(PaymentError::Incomplete {
                    field: "payment",
                    message: "give `payment`, or `method` and `transaction_id`".into(),
                })
            }
        };
        if found.is_some() {
            Self::require(&method, |able| able.refund, "refunds")?;
        } else {
            Self::require(&method, |able| able.refund_without_cache, "refunds")?;
        }
        if found.is_none() && request.transaction_id.is_none() {
            return Err(PaymentError::Provider {
                code: "transaction_id_required".into(),
                message: "a refund without a payment needs the receipt's transaction id (tx_…)".into(),
                field: Some("transaction_id".into()),
            });
        }
        if request.amount == Some(Amount(0)) {
            return Err(PaymentError::Invalid { field: "amount", message: "the amount must be more than zero".into() });
        }
        let _guard = match &found {
            Some(payment) => Some(self.lock_purchase(&payment.id).await?),
            None => None, // nothing stored is changed: the refund is new
        };
        let now = now_ms();
        let mut commit = Commit::default();
        let mut settled_here = false;
        let (amount, currency, payment) = match found {
            Some(payment) => {
                let mut payment = self.load(&payment.id).await?;
                self.agree_with_payment(request, &mut payment, &mut commit).await?;
                let amount = request.amount.unwrap_or(payment.refundable_amount());
                let Next::Changed(mut reserved) = super::machine::next(&payment, PaymentEvent::RefundReserved(amount), now)? else {
                    unreachable!("a reservation always changes the payment")
                };
                if Self::cancels_offline_check(&payment, amount)? {
                    // Never sent: nothing is owed the provider, and nothing to refund there.
                    if let Next::Changed(canceled) = super::machine::next(&reserved, PaymentEvent::OfflineCanceled, now)? {
                        reserved = canceled;
                    }
                    commit.release.extend(payment.receipt_key.iter().chain(payment.transaction_id.iter()).cloned());
                    settled_here = true;
                }
                commit.events.push(("payment.updated".into(), view::payment(&reserved)));
                commit.read_at(&payment);
                commit.payments.push((*reserved).clone());
                (amount, payment.currency.clone(), Some(*reserved))
            }
            None => {
                let amount = request
                    .amount
                    .ok_or(PaymentError::Incomplete { field: "amount", message: "a refund by transaction id needs its amount".into() })?;
                let currency = request.currency.clone().unwrap_or_else(|| Currency::parse("EUR").expect("EUR is a currency"));
                (amount, currency, None)
            }
        };
        let refund = Refund {
            id: RefundId::new(now, self.store.unique().await?),
            status: if settled_here { RefundStatus::Succeeded } else { RefundStatus::Pending },
            payment: payment.as_ref().map(|payment| payment.id.clone()),
            method: method.id.clone(),
            transaction_id: payment.as_ref().and_then(|payment| payment.transaction_id.clone()).or_else(|| request.transaction_id.clone()),
            amount,
            currency,
            reason: request.reason.clone(),
            failure: None,
            provider_refund_id: None,
            client: request.client.clone(),
            created_at: now,
            updated_at: now,
        };
        commit.events.push(("refund.updated".into(), view::refund(&refund)));
        if let Some(ticket) = ticket {
            commit.idempotency.push(super::stored_record(ticket, 201, None, refund.id.as_str()));
        }
        commit.refunds.push(refund.clone());
        self.save(commit).await?;
        if settled_here {
            tracing::info!(refund = %refund.id, payment = ?refund.payment, "refund of a receipt taken offline whose check was never sent: the check is canceled, its receipt freed");
            crate::metrics::record_offline_receipt(&method.id, "canceled");
        }
        Ok(refund)
    }

    /// Whether refunding `amount` of `payment` cancels its receipt's deferred check
    /// instead of asking the provider: a full refund before the check was ever sent.
    /// A check that may have been sent, or a part refund, waits for the provider's
    /// confirmation (`not_confirmed_yet`); a refused receipt has nothing to refund there.
    fn cancels_offline_check(payment: &Payment, amount: Amount) -> Result<bool, PaymentError> {
        let Some(check) = &payment.offline else { return Ok(false) };
        match check.state {
            OfflineState::Pending if !check.sent && amount == payment.refundable_amount() => Ok(true),
            OfflineState::Pending => {
                Err(PaymentError::NotConfirmedYet { payment: payment.id.clone(), retry_after: super::offline::REFUND_RETRY_AFTER })
            }
            OfflineState::Refused => Err(PaymentError::OfflineRefused {
                payment: payment.id.clone(),
                reason: check.reason.as_ref().map(|reason| reason.code.clone()).unwrap_or_default(),
            }),
            OfflineState::Confirmed | OfflineState::Canceled => Ok(false),
        }
    }

    /// Fields of a refund request must agree with the payment: its method, and its
    /// transaction (a payment entered without one takes the given one, if no other
    /// payment holds it, recorded in the refund's commit).
    async fn agree_with_payment(&self, request: &NewRefund, payment: &mut Payment, commit: &mut Commit) -> Result<(), PaymentError> {
        if request.method.as_ref().is_some_and(|method| method != &payment.method) {
            return Err(PaymentError::Mismatch {
                field: "method",
                message: format!("payment {} was paid with {:?}", payment.id, payment.method),
            });
        }
        let Some(transaction_id) = &request.transaction_id else { return Ok(()) };
        match &payment.transaction_id {
            Some(held) if held == transaction_id => Ok(()),
            Some(_) => Err(PaymentError::Mismatch {
                field: "transaction_id",
                message: format!("payment {} holds another transaction", payment.id),
            }),
            None => {
                if let Some(holder) = self.store.redeemed_by(transaction_id).await?.filter(|holder| holder != &payment.id) {
                    return Err(PaymentError::Mismatch {
                        field: "transaction_id",
                        message: format!("this transaction belongs to payment {holder}"),
                    });
                }
                payment.transaction_id = Some(transaction_id.clone());
                commit.reserve.push((transaction_id.clone(), payment.id.clone()));
                Ok(())
            }
        }
    }

    async fn refund_job(
        self: Arc<Self>,
        method: Method,
        id: RefundId,
        mut ticket: Option<Ticket>,
        mut reply: Option<Reply>,
        control: JobControl,
    ) {
        let mut delays = backoff(FIRST_DELAY, MAX_DELAY);
        loop {
            let result = self.send_refund(&method, &id, ticket.take().as_ref()).await;
            let pending = matches!(&result, Ok(refund) if refund.status == RefundStatus::Pending);
            if let Some(reply) = reply.take() {
                let _ = reply.send(result);
            } else if let Err(error) = result {
                tracing::warn!(refund = %id, %error, "refund could not be sent; trying again");
            }
            if !pending {
                return;
            }
            if !control.pause(delays.next().unwrap_or(MAX_DELAY)).await {
                return;
            }
        }
    }

    /// Asks the provider once and records the outcome; a refund the provider could not
    /// confirm stays `pending`.
    async fn send_refund(&self, method: &Method, id: &RefundId, ticket: Option<&Ticket>) -> Result<Refund, PaymentError> {
        let refund = self.store.refund(id).await?.ok_or_else(|| PaymentError::RefundNotFound(id.to_string()))?;
        if refund.status != RefundStatus::Pending {
            return Ok(refund);
        }
        let payment = match &refund.payment {
            Some(payment_id) => Some(self.load(payment_id).await?),
            None => None,
        };
        let order = RefundOrder {
            refund_id: refund.id.to_string(),
            payment_id: refund.payment.as_ref().map(|id| id.to_string()),
            transaction_id: refund.transaction_id.clone(),
            amount: refund.amount.0,
            currency: refund.currency.as_str().to_string(),
            captured_at_unix_ms: payment.as_ref().and_then(|payment| payment.captured_at),
            plugin_data: payment.as_ref().and_then(|payment| payment.plugin_data.clone()),
            deadline_unix_ms: now_ms() + Payments::plugin_budget(method),
            requested_at_unix_ms: refund.created_at,
        };
        match method.refund(order).await {
            Ok(outcome) => {
                let status = if outcome.completed { RefundStatus::Succeeded } else { RefundStatus::Pending };
                self.settle_refund(id, status, None, outcome.provider_refund_id, ticket).await
            }
            Err(error) if error.retryable() || super::outcome_unknown(&error) => {
                tracing::warn!(refund = %id, %error, "refund not confirmed; it will be sent again");
                Ok(refund)
            }
            Err(ProviderError::Failed(refusal)) => {
                let failure = Failure { code: refusal.code.clone(), message: refusal.message.clone(), retryable: false };
                self.settle_refund(id, RefundStatus::Failed, Some(failure), None, ticket).await?;
                Err(PaymentError::Provider { code: refusal.code, message: refusal.message, field: refusal.field })
            }
            Err(other) => Err(failure_error(&other)),
        }
    }

    /// Records a refund's outcome; a failed refund gives its amount back to the payment.
    async fn settle_refund(
        &self,
        id: &RefundId,
        status: RefundStatus,
        failure: Option<Failure>,
        provider_id: Option<String>,
        ticket: Option<&Ticket>,
    ) -> Result<Refund, PaymentError> {
        let mut refund = self.store.refund(id).await?.ok_or_else(|| PaymentError::RefundNotFound(id.to_string()))?;
        let _guard = match &refund.payment {
            Some(payment) => self.lock_purchase(payment).await?,
            None => self.locks.lock(id.as_str()).await,
        };
        // Read again under the lock: the refund's own job is the only writer, but a
        // payment change may have happened meanwhile.
        refund = self.store.refund(id).await?.ok_or_else(|| PaymentError::RefundNotFound(id.to_string()))?;
        if refund.status != RefundStatus::Pending {
            return Ok(refund);
        }
        let changed = refund.status != status || provider_id.is_some();
        refund.status = status;
        refund.failure = failure;
        refund.provider_refund_id = provider_id.or(refund.provider_refund_id);
        refund.updated_at = now_ms();
        let mut commit = Commit::default();
        if status == RefundStatus::Failed {
            let payment = match &refund.payment {
                Some(payment_id) => Some(self.load(payment_id).await?),
                None => None,
            };
            if let Some(stored) = payment {
                if let Next::Changed(payment) =
                    super::machine::next(&stored, PaymentEvent::RefundReleased(refund.amount), refund.updated_at)?
                {
                    commit.events.push(("payment.updated".into(), view::payment(&payment)));
                    commit.read_at(&stored);
                    commit.payments.push(*payment);
                }
            }
        }
        if let Some(ticket) = ticket {
            // A refused refund's error answer is stored by the API after the fact: no
            // effect of it can be repeated (the amount is given back, nothing was sent).
            commit.idempotency.push(match status {
                RefundStatus::Failed => (ticket.key.clone(), None),
                _ => super::stored_record(ticket, 201, Some(view::refund(&refund).to_string()), refund.id.as_str()),
            });
        }
        if changed {
            commit.events.push(("refund.updated".into(), view::refund(&refund)));
            commit.refunds.push(refund.clone());
        }
        if !commit.is_empty() {
            self.save(commit).await?;
        }
        Ok(refund)
    }
}

fn failure_error(error: &ProviderError) -> PaymentError {
    let failure = failure_of(error);
    PaymentError::Provider { code: failure.code, message: failure.message, field: None }
}

/// Starts the job of a refund (or joins the live one).
fn start(payments: &Payments, method: Method, id: RefundId, ticket: Option<Ticket>, reply: Option<Reply>) {
    let me = payments.owned();
    let job_id = id.clone();
    let _ =
        payments.jobs.start(JobKey::Refund(id), move |control| async move { me.refund_job(method, job_id, ticket, reply, control).await });
}

/// Starts the job of a refund left `pending` (after a restart).
pub(super) fn resume(payments: &Payments, method: Method, id: RefundId) {
    start(payments, method, id, None, None);
}
