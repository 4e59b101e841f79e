//! Card payments: started at the provider after the payment is stored (write-ahead),
//! then followed by a watcher that polls the provider until the payment settles, and
//! cancels it at the provider when the customer takes too long. After a restart the
//! watcher resumes from the stored `plugin_data`; a start whose answer was lost is
//! repeated with the same idempotency keys, so it never charges twice.

use std::time::Duration;

use posbridge_plugin_api::{CardProgress, CardState, RString};

use super::model::{now_ms, Failure, NextAction, Payment, PaymentId, PaymentStatus};
use super::{failure_of, PaymentError, Payments};
use crate::plugins::{CallError, Method};

/// How often a waiting card payment is asked about.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// Starts the card payment at the provider and its watcher.
pub(super) async fn start(payments: &Payments, method: &Method, payment: Payment) -> Result<Payment, PaymentError> {
    let context = Payments::context(&payment, method);
    let started = method.call("start_card", move |plugin| plugin.start_card(&context)).await;
    let result = match started {
        Ok(progress) => apply(payments, &payment.id, progress, None).await,
        Err(error) if super::outcome_unknown(&error) => payments.get(payment.id.as_str()),
        Err(error) => payments.fail_attempt(&payment.id, super::call_failure(&error), None).await,
    };
    watch(payments, payment.id.clone());
    result
}

/// Follows a card payment until it settles (in the background).
pub(super) fn watch(payments: &Payments, id: PaymentId) {
    let me = payments.me.clone();
    tokio::spawn(async move {
        loop {
            let Some(payments) = me.upgrade() else { return };
            match step(&payments, &id).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(payment = %id, %error, "card payment check failed; trying again"),
            }
            drop(payments);
            tokio::time::sleep(POLL_EVERY).await;
        }
    });
}

/// One look at the provider. `Ok(true)` once the payment is settled.
async fn step(payments: &Payments, id: &PaymentId) -> Result<bool, PaymentError> {
    let payment = payments.get(id.as_str())?;
    if !matches!(payment.status, PaymentStatus::AwaitingCard | PaymentStatus::Processing) {
        return Ok(true);
    }
    let method = payments.method(&payment.method)?;
    let context = Payments::context(&payment, &method);
    let timed_out = now_ms() >= payment.expires_at;
    let progress = match (payment.plugin_data.clone(), timed_out) {
        // The start's answer was lost: repeat it (same idempotency keys, same objects).
        (None, false) => method.call("start_card", move |plugin| plugin.start_card(&context)).await,
        (None, true) => {
            payments
                .fail_attempt(
                    id,
                    Failure {
                        code: "reader_timeout".into(),
                        message: "the card payment could not be started in time".into(),
                        retryable: true,
                    },
                    None,
                )
                .await?;
            return Ok(true);
        }
        (Some(data), false) => method.call("poll_card", move |plugin| plugin.poll_card(&context, data.as_str().into())).await,
        (Some(data), true) => {
            tracing::info!(payment = %id, "card payment timed out; canceling it at the provider");
            let progress = method.call("cancel_card", move |plugin| plugin.cancel_card(&context, data.as_str().into())).await;
            let timeout = Failure {
                code: "reader_timeout".into(),
                message: "the customer did not pay in time; the card payment was canceled".into(),
                retryable: true,
            };
            return match progress {
                Ok(progress) => apply(payments, id, progress, Some(timeout))
                    .await
                    .map(|payment| payment.status.is_final() || payment.status == PaymentStatus::Failed),
                Err(error) => Err(error.into()),
            };
        }
    };
    match progress {
        Ok(progress) => {
            let payment = apply(payments, id, progress, None).await?;
            Ok(!matches!(payment.status, PaymentStatus::AwaitingCard | PaymentStatus::Processing))
        }
        Err(error) if is_transient(&error) => Ok(false),
        Err(error) => {
            payments.fail_attempt(id, super::call_failure(&error), None).await?;
            Ok(true)
        }
    }
}

fn is_transient(error: &CallError) -> bool {
    match error {
        CallError::Failed(failure) => failure.retryable,
        CallError::TimedOut { .. } | CallError::Aborted { .. } => true,
    }
}

/// Records what the provider said; `failure_override` replaces a failure's reason (a
/// timeout we caused is a timeout, not the provider's "canceled").
async fn apply(
    payments: &Payments,
    id: &PaymentId,
    progress: CardProgress,
    failure_override: Option<Failure>,
) -> Result<Payment, PaymentError> {
    match progress.state {
        CardState::Succeeded => match progress.settlement.into_option() {
            Some(settlement) => payments.succeed(id, settlement).await,
            None => payments.get(id.as_str()),
        },
        CardState::Failed => {
            let failure = failure_override.or_else(|| progress.failure.as_ref().into_option().map(failure_of)).unwrap_or(Failure {
                code: "card_declined".into(),
                message: "the card payment failed".into(),
                retryable: false,
            });
            payments.fail_card(id, failure, progress.plugin_data).await
        }
        CardState::AwaitingCard | CardState::Processing => {
            let status = if progress.state == CardState::Processing { PaymentStatus::Processing } else { PaymentStatus::AwaitingCard };
            let next_action =
                progress.next_action.into_option().map(|action| NextAction { kind: action.kind.to_string(), url: action.url.to_string() });
            payments.update_card(id, status, progress.plugin_data, next_action).await
        }
    }
}

impl Payments {
    /// Stores a waiting card payment's state; a change bumps the version.
    async fn update_card(
        &self,
        id: &PaymentId,
        status: PaymentStatus,
        plugin_data: RString,
        next_action: Option<NextAction>,
    ) -> Result<Payment, PaymentError> {
        let _guard = self.write_lock.lock().await;
        let mut payment = self.store.payment(id)?.ok_or_else(|| PaymentError::NotFound(id.to_string()))?;
        let plugin_data = Some(plugin_data.to_string());
        if payment.status == status && payment.plugin_data == plugin_data && payment.next_action == next_action {
            return Ok(payment);
        }
        if !matches!(payment.status, PaymentStatus::AwaitingCard | PaymentStatus::Processing) {
            return Ok(payment); // settled meanwhile (cancel, or a concurrent poll)
        }
        Self::advance(&mut payment, status, "updated")?;
        payment.plugin_data = plugin_data;
        payment.next_action = next_action;
        self.save(Self::commit_of(&payment)).await?;
        Ok(payment)
    }

    /// Marks a card payment failed, keeping the provider's data for the record.
    async fn fail_card(&self, id: &PaymentId, failure: Failure, plugin_data: RString) -> Result<Payment, PaymentError> {
        let _guard = self.write_lock.lock().await;
        let mut payment = self.store.payment(id)?.ok_or_else(|| PaymentError::NotFound(id.to_string()))?;
        if !matches!(payment.status, PaymentStatus::AwaitingCard | PaymentStatus::Processing) {
            return Ok(payment);
        }
        Self::advance(&mut payment, PaymentStatus::Failed, "failed")?;
        payment.failure = Some(failure);
        payment.plugin_data = Some(plugin_data.to_string());
        payment.next_action = None;
        self.save(Self::commit_of(&payment)).await?;
        Ok(payment)
    }

    /// Cancels a card payment at the provider first; answers the provider's last word
    /// (a card that succeeded meanwhile stays succeeded).
    pub(super) async fn cancel_card_at_provider(&self, payment: &Payment) -> Result<Payment, PaymentError> {
        let method = self.method(&payment.method)?;
        let Some(data) = payment.plugin_data.clone() else { return Ok(payment.clone()) };
        let context = Self::context(payment, &method);
        let progress = method.call("cancel_card", move |plugin| plugin.cancel_card(&context, data.as_str().into())).await?;
        apply(self, &payment.id, progress, None).await
    }
}
