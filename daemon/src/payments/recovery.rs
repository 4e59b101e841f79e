//! Resolving attempts whose outcome is unknown (a crash while `processing`, a lost
//! answer, a timeout) by asking the provider, never by guessing or charging again.

use std::time::Duration;

use posbridge_plugin_api::{LookupRequest, ProviderStatus, RString};

use super::model::{Failure, PaymentId, PaymentStatus};
use super::{PaymentError, Payments};

/// The first retry delay after an unanswered lookup; doubled up to `MAX_DELAY`.
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Starts a background task that looks the payment up until the provider answers.
pub(super) fn schedule_lookup(payments: &Payments, id: PaymentId) {
    let me = payments.me.clone();
    tokio::spawn(async move {
        let mut delay = FIRST_DELAY;
        loop {
            let Some(payments) = me.upgrade() else { return };
            match resolve(&payments, &id).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(payment = %id, %error, "recovery lookup failed; will retry"),
            }
            drop(payments);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_DELAY);
        }
    });
}

/// One lookup. `Ok(true)` when the payment is no longer `processing`.
async fn resolve(payments: &Payments, id: &PaymentId) -> Result<bool, PaymentError> {
    let payment = payments.get(id.as_str())?;
    if payment.status != PaymentStatus::Processing {
        return Ok(true);
    }
    let method = payments.method(&payment.method)?;
    let request = LookupRequest {
        payment: Payments::context(&payment, &method),
        transaction_id: payment.attempt.as_ref().map(|attempt| RString::from(attempt.transaction_id.as_str())).into(),
        plugin_data: payment.plugin_data.clone().map(RString::from).into(),
    };
    let release = payment.attempt.as_ref().map(|attempt| attempt.transaction_id.clone());
    match method.call("lookup", move |plugin| plugin.lookup(&request)).await {
        Ok(ProviderStatus::Taken(settlement)) => {
            tracing::info!(payment = %id, "recovered: the provider took the payment");
            payments.succeed(id, settlement).await?;
            Ok(true)
        }
        Ok(ProviderStatus::NotTaken) => {
            let failure = Failure {
                code: "attempt_interrupted".into(),
                message: "the attempt was interrupted and nothing was taken; scan the receipt again".into(),
                retryable: true,
            };
            payments.fail_attempt(id, failure, release).await?;
            Ok(true)
        }
        Ok(ProviderStatus::Refused(error)) => {
            payments.fail_attempt(id, super::failure_of(&error), release).await?;
            Ok(true)
        }
        Ok(ProviderStatus::InProgress(_)) => Ok(false),
        Err(error) => {
            tracing::info!(payment = %id, %error, "the provider could not answer the lookup yet");
            Ok(false)
        }
    }
}
