//! Refunds: refundable amounts reserved before the provider is asked (write-ahead), sent
//! again after a crash or an outage with the same id, so money goes back exactly once.

use std::time::Duration;

use posbridge_plugin_api::{Capabilities, MethodError, RString, RefundRequest, RefundState};

use super::model::{now_ms, Amount, Currency, Failure, Payment, PaymentId, PaymentStatus, Refund, RefundId, RefundStatus};
use super::{view, PaymentError, Payments};
use crate::plugins::CallError;
use crate::store::Commit;

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

impl Payments {
    /// Creates and sends a refund. Answers the refund (`succeeded`, or `pending` when
    /// the provider is unreachable and it will be sent again), or the provider's reason
    /// for refusing it.
    pub async fn refund(&self, request: NewRefund) -> Result<Refund, PaymentError> {
        let (refund, payment) = self.reserve_refund(&request).await?;
        let (refund, send_again) = self.send_refund(refund, payment.as_ref()).await?;
        if send_again {
            schedule_resend(self, refund.id.clone());
        }
        Ok(refund)
    }

    /// Refunds newest first, optionally of one payment; `true` when more exist.
    pub fn list_refunds(&self, limit: usize, payment: Option<&str>) -> Result<(Vec<Refund>, bool), PaymentError> {
        let mut found = Vec::new();
        for refund in self.store.refunds_newest_first() {
            let refund = refund?;
            if payment.is_some_and(|payment| refund.payment.as_ref().map(|id| id.as_str()) != Some(payment)) {
                continue;
            }
            if found.len() == limit {
                return Ok((found, true));
            }
            found.push(refund);
        }
        Ok((found, false))
    }

    /// Reads a refund.
    pub fn get_refund(&self, id: &str) -> Result<Refund, PaymentError> {
        let parsed = RefundId::parse(id).ok_or_else(|| PaymentError::RefundNotFound(id.to_string()))?;
        self.store.refund(&parsed)?.ok_or_else(|| PaymentError::RefundNotFound(id.to_string()))
    }

    /// The payment a refund request is about: named, or found by its transaction id.
    fn refunded_payment(&self, request: &NewRefund) -> Result<Option<Payment>, PaymentError> {
        if let Some(id) = &request.payment {
            return self.get(id).map(Some);
        }
        let Some(transaction_id) = &request.transaction_id else { return Ok(None) };
        match self.store.redeemed_by(transaction_id)? {
            Some(holder) => Ok(self.store.payment(&holder)?),
            None => Ok(None),
        }
    }

    /// Validates the request and records the refund as `pending` with its amount
    /// reserved on the payment, durably, before anything is sent.
    async fn reserve_refund(&self, request: &NewRefund) -> Result<(Refund, Option<Payment>), PaymentError> {
        let found = self.refunded_payment(request)?;
        let method_id = match (&found, &request.method) {
            (Some(payment), _) => payment.method.clone(),
            (None, Some(method)) => method.clone(),
            (None, None) => {
                return Err(PaymentError::Invalid { field: "payment", message: "give `payment`, or `method` and `transaction_id`".into() })
            }
        };
        let method = self.method(&method_id)?;
        let needed = if found.is_some() { Capabilities::REFUND } else { Capabilities::REFUND_WITHOUT_CACHE };
        Self::require(&method, needed, "refunds")?;
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
        let _guard = self.write_lock.lock().await;
        let now = now_ms();
        let mut commit = Commit::default();
        let (amount, currency, payment) = match found {
            Some(payment) => {
                let mut payment = self.store.payment(&payment.id)?.ok_or_else(|| PaymentError::NotFound(payment.id.to_string()))?;
                if payment.status != PaymentStatus::Succeeded {
                    return Err(PaymentError::InvalidState { status: payment.status, action: "refunded" });
                }
                let refundable = payment.refundable_amount();
                let amount = request.amount.unwrap_or(refundable);
                if amount > refundable || amount.0 == 0 {
                    return Err(PaymentError::RefundExceedsPayment { refundable });
                }
                payment.refunded_amount = payment.refunded_amount.checked_add(amount).unwrap_or(payment.captured_amount);
                payment.version += 1;
                payment.updated_at = now;
                commit.events.push(("payment.updated".into(), view::payment(&payment)));
                commit.payments.push(payment.clone());
                (amount, payment.currency.clone(), Some(payment))
            }
            None => {
                let amount = request
                    .amount
                    .ok_or(PaymentError::Invalid { field: "amount", message: "a refund by transaction id needs its amount".into() })?;
                let currency = request.currency.clone().unwrap_or_else(|| Currency::parse("EUR").expect("EUR is a currency"));
                (amount, currency, None)
            }
        };
        let refund = Refund {
            id: RefundId::new(now, self.store.unique()?),
            status: RefundStatus::Pending,
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
        commit.refunds.push(refund.clone());
        self.save(commit).await?;
        Ok((refund, payment))
    }

    /// Asks the provider and records the outcome; `true` when the provider could not be
    /// reached and the refund (still `pending`) must be sent again.
    async fn send_refund(&self, refund: Refund, payment: Option<&Payment>) -> Result<(Refund, bool), PaymentError> {
        let method = self.method(&refund.method)?;
        let request = RefundRequest {
            refund_id: RString::from(refund.id.as_str()),
            payment_id: refund.payment.as_ref().map(|id| RString::from(id.as_str())).into(),
            transaction_id: refund.transaction_id.clone().map(RString::from).into(),
            amount: refund.amount.0,
            currency: RString::from(refund.currency.as_str()),
            captured_at_unix_ms: payment.and_then(|payment| payment.captured_at).into(),
            plugin_data: payment.and_then(|payment| payment.plugin_data.clone()).map(RString::from).into(),
            deadline_unix_ms: now_ms() + Payments::plugin_budget(&method),
        };
        match method.call("refund", move |plugin| plugin.refund(&request)).await {
            Ok(outcome) => {
                let status = if outcome.state == RefundState::Succeeded { RefundStatus::Succeeded } else { RefundStatus::Pending };
                let provider_id = outcome.provider_refund_id.into_option().map(|id| id.to_string());
                Ok((self.settle_refund(&refund.id, status, None, provider_id).await?, false))
            }
            Err(error) if is_retryable(&error) => {
                tracing::warn!(refund = %refund.id, %error, "refund not confirmed; it will be sent again");
                Ok((refund, true))
            }
            Err(CallError::Failed(error)) => {
                let failure = Failure { code: error.code.to_string(), message: error.message.to_string(), retryable: false };
                self.settle_refund(&refund.id, RefundStatus::Failed, Some(failure), None).await?;
                Err(provider_refusal(error))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Records a refund's outcome; a failed refund gives its amount back to the payment.
    async fn settle_refund(
        &self,
        id: &RefundId,
        status: RefundStatus,
        failure: Option<Failure>,
        provider_id: Option<String>,
    ) -> Result<Refund, PaymentError> {
        let _guard = self.write_lock.lock().await;
        let mut refund = self.store.refund(id)?.ok_or_else(|| PaymentError::RefundNotFound(id.to_string()))?;
        if refund.status != RefundStatus::Pending {
            return Ok(refund);
        }
        refund.status = status;
        refund.failure = failure;
        refund.provider_refund_id = provider_id.or(refund.provider_refund_id);
        refund.updated_at = now_ms();
        let mut commit = Commit::default();
        if status == RefundStatus::Failed {
            if let Some(mut payment) = refund.payment.as_ref().map(|id| self.store.payment(id)).transpose()?.flatten() {
                payment.refunded_amount = payment.refunded_amount.saturating_sub(refund.amount);
                payment.version += 1;
                payment.updated_at = refund.updated_at;
                commit.events.push(("payment.updated".into(), view::payment(&payment)));
                commit.payments.push(payment);
            }
        }
        commit.events.push(("refund.updated".into(), view::refund(&refund)));
        commit.refunds.push(refund.clone());
        self.save(commit).await?;
        Ok(refund)
    }
}

fn is_retryable(error: &CallError) -> bool {
    match error {
        CallError::Failed(error) => error.retryable,
        CallError::TimedOut { .. } | CallError::Aborted { .. } => true,
    }
}

fn provider_refusal(error: MethodError) -> PaymentError {
    PaymentError::Provider {
        code: error.code.to_string(),
        message: error.message.to_string(),
        field: error.field.into_option().map(|field| field.to_string()),
    }
}

/// Sends a pending refund again (same id, so the provider does it once) until the
/// provider gives a final answer.
pub(super) fn schedule_resend(payments: &Payments, id: RefundId) {
    let me = payments.me.clone();
    tokio::spawn(async move {
        let mut delay = FIRST_DELAY;
        loop {
            tokio::time::sleep(delay).await;
            let Some(payments) = me.upgrade() else { return };
            let Ok(refund) = payments.get_refund(id.as_str()) else { return };
            if refund.status != RefundStatus::Pending {
                return;
            }
            let payment = refund.payment.as_ref().and_then(|payment_id: &PaymentId| payments.store.payment(payment_id).ok().flatten());
            match payments.send_refund(refund, payment.as_ref()).await {
                Ok((_, true)) => {}
                Ok((_, false)) | Err(_) => return,
            }
            delay = (delay * 2).min(MAX_DELAY);
        }
    });
}
