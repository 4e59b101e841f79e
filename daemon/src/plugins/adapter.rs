//! The ABI adapter: a loaded plugin method as the engine's plain-Rust
//! [`Provider`](crate::payments::provider::Provider). Every conversion between engine
//! values and ABI values happens here and nowhere else.

use std::time::Duration;

use posbridge_plugin_api as abi;
use posbridge_plugin_api::{Capabilities, RString};

use super::{refusal, Method};
use crate::payments::model::NextAction;
use crate::payments::provider::{
    Abilities, Answer, CallContext, CardProgress, CardState, CartItem, Found, Inspected, LookupOrder, ManualEntry, Provider, ProviderError,
    RefundOrder, RefundOutcome, Refusal, Settlement,
};

/// The engine's view of a plugin's capability bits.
pub(super) fn abilities(capabilities: Capabilities) -> Abilities {
    Abilities {
        scan: capabilities.contains(Capabilities::SCAN),
        manual_entry: capabilities.contains(Capabilities::MANUAL_ENTRY),
        card: capabilities.contains(Capabilities::CARD),
        refund: capabilities.contains(Capabilities::REFUND),
        refund_without_cache: capabilities.contains(Capabilities::REFUND_WITHOUT_CACHE),
        lookup: capabilities.contains(Capabilities::STATUS_LOOKUP),
        cancel: capabilities.contains(Capabilities::CANCEL),
    }
}

fn text(value: &str) -> RString {
    RString::from(value)
}

fn optional(value: Option<String>) -> abi::ROption<RString> {
    value.map(RString::from).into()
}

fn context(payment: &CallContext) -> abi::PaymentContext {
    abi::PaymentContext {
        payment_id: text(&payment.payment_id),
        attempt_id: text(&payment.attempt_id),
        register: text(&payment.register),
        reference: optional(payment.reference.clone()),
        currency: text(&payment.currency),
        amount_due: payment.amount_due,
        eligible_amount: payment.eligible_amount,
        deadline_unix_ms: payment.deadline_unix_ms,
        ..Default::default()
    }
}

fn inspected_to_abi(inspected: &Inspected) -> abi::InspectedCode {
    let mut code = abi::InspectedCode {
        receipt_key: text(&inspected.receipt_key),
        transaction_id: optional(inspected.transaction_id.clone()),
        amount: inspected.amount.into(),
        signature_verified: inspected.signature_verified,
        plugin_data: text(&inspected.plugin_data),
        ..Default::default()
    };
    if let Some(issued_at) = inspected.issued_at_unix_ms {
        code.set_issued_at_unix_ms(issued_at);
    }
    code
}

fn inspected_from_abi(inspected: abi::InspectedCode) -> Inspected {
    Inspected {
        issued_at_unix_ms: inspected.issued_at_unix_ms(),
        signature_deferred: inspected.signature_deferred(),
        receipt_key: inspected.receipt_key.into_string(),
        transaction_id: inspected.transaction_id.into_option().map(RString::into_string),
        amount: inspected.amount.into_option(),
        signature_verified: inspected.signature_verified,
        plugin_data: inspected.plugin_data.into_string(),
    }
}

/// An inspected code as the engine takes it: one naming no receipt key could pay twice.
fn with_receipt_key(inspected: abi::InspectedCode) -> Answer<Inspected> {
    if inspected.receipt_key.trim().is_empty() {
        return Err(ProviderError::Failed(Refusal {
            code: "plugin_error".into(),
            message: "the plugin inspected the code but named no receipt key, so it could be redeemed twice".into(),
            field: None,
            retryable: false,
        }));
    }
    Ok(inspected_from_abi(inspected))
}

/// A card state; one this host does not know (a newer plugin's) is still undecided.
fn card_state(state: abi::CardState) -> CardState {
    match state {
        abi::CardState::AWAITING_CARD => CardState::AwaitingCard,
        abi::CardState::SUCCEEDED => CardState::Succeeded,
        abi::CardState::FAILED => CardState::Failed,
        _ => CardState::Processing,
    }
}

fn settlement(value: abi::Settlement) -> Settlement {
    Settlement {
        transaction_id: value.transaction_id.into_option().map(RString::into_string),
        captured_amount: value.captured_amount,
        verified: value.verified,
        benefit: value.benefit.into_option().map(RString::into_string),
        plugin_data: value.plugin_data.into_string(),
    }
}

/// The shortest and longest pause between polls a plugin may ask for: fast enough to
/// follow a customer, slow enough that a wrong value cannot stall a payment.
const POLL_AFTER_BOUNDS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));

fn progress(value: abi::CardProgress) -> CardProgress {
    let poll_after = value.poll_after_ms().map(|ms| Duration::from_millis(ms).clamp(POLL_AFTER_BOUNDS.0, POLL_AFTER_BOUNDS.1));
    CardProgress {
        poll_after,
        state: card_state(value.state),
        settlement: value.settlement.into_option().map(settlement),
        failure: value.failure.into_option().map(refusal),
        next_action: value
            .next_action
            .into_option()
            .map(|action| NextAction { kind: action.kind.into_string(), url: action.url.into_string() }),
        plugin_data: value.plugin_data.into_string(),
    }
}

/// A lookup answer as the engine reads it; `None` for one it cannot act on (a state
/// from a newer plugin, or `TAKEN` without its settlement), which is looked up again.
fn found(status: abi::ProviderStatus) -> Option<Found> {
    Some(match status.state {
        // "Nothing taken" alongside a settlement or a failure contradicts itself: ask again.
        abi::LookupState::NOT_TAKEN if status.settlement.is_some() || status.failure.is_some() => return None,
        abi::LookupState::NOT_TAKEN => Found::NotTaken,
        abi::LookupState::IN_PROGRESS => Found::InProgress(status.progress.into_option().map(progress).unwrap_or_else(|| CardProgress {
            state: CardState::Processing,
            settlement: None,
            failure: None,
            next_action: None,
            plugin_data: String::new(),
            poll_after: None,
        })),
        abi::LookupState::TAKEN => Found::Taken(settlement(status.settlement.into_option()?)),
        abi::LookupState::REFUSED => Found::Refused(refusal(status.failure.into_option()?)),
        _ => return None,
    })
}

impl Provider for Method {
    async fn eligible_amount(&self, lines: Vec<CartItem>) -> Answer<u64> {
        let cart: abi::RVec<abi::CartLine> = lines
            .iter()
            .map(|line| abi::CartLine {
                sku: text(&line.sku),
                name: text(&line.name),
                amount: line.amount,
                labels: line.labels.iter().map(|label| text(label)).collect(),
                ..Default::default()
            })
            .collect();
        self.call("eligible_amount", move |plugin| plugin.eligible_amount(cart.as_rslice())).await
    }

    async fn inspect_code(&self, payment: CallContext, code: String) -> Answer<Inspected> {
        let payment = context(&payment);
        let inspected = self.call("inspect_code", move |plugin| plugin.inspect_code(&payment, code.as_str().into())).await?;
        with_receipt_key(inspected)
    }

    async fn read_code(&self, payment: CallContext, code: String) -> Answer<Inspected> {
        let mut payment = context(&payment);
        payment.set_defer_signature();
        let read = self.call("read_code", move |plugin| plugin.inspect_code(&payment, code.as_str().into())).await?;
        with_receipt_key(read)
    }

    async fn redeem(&self, payment: CallContext, code: String, inspected: Inspected) -> Answer<Settlement> {
        let payment = context(&payment);
        let inspected = inspected_to_abi(&inspected);
        self.call("redeem", move |plugin| plugin.redeem(&payment, code.as_str().into(), &inspected)).await.map(settlement)
    }

    async fn accept_manual(&self, payment: CallContext, entry: ManualEntry) -> Answer<Settlement> {
        let payment = context(&payment);
        let entry = abi::ManualEntry { amount: entry.amount, transaction_id: optional(entry.transaction_id), ..Default::default() };
        self.call("accept_manual", move |plugin| plugin.accept_manual(&payment, &entry)).await.map(settlement)
    }

    async fn start_card(&self, payment: CallContext) -> Answer<CardProgress> {
        let payment = context(&payment);
        self.call("start_card", move |plugin| plugin.start_card(&payment)).await.map(progress)
    }

    async fn poll_card(&self, payment: CallContext, plugin_data: String) -> Answer<CardProgress> {
        let payment = context(&payment);
        self.call("poll_card", move |plugin| plugin.poll_card(&payment, plugin_data.as_str().into())).await.map(progress)
    }

    async fn cancel_card(&self, payment: CallContext, plugin_data: String) -> Answer<CardProgress> {
        let payment = context(&payment);
        self.call("cancel_card", move |plugin| plugin.cancel_card(&payment, plugin_data.as_str().into())).await.map(progress)
    }

    async fn refund(&self, order: RefundOrder) -> Answer<RefundOutcome> {
        let mut request = abi::RefundRequest {
            refund_id: text(&order.refund_id),
            payment_id: optional(order.payment_id),
            transaction_id: optional(order.transaction_id),
            amount: order.amount,
            currency: text(&order.currency),
            captured_at_unix_ms: order.captured_at_unix_ms.into(),
            plugin_data: optional(order.plugin_data),
            deadline_unix_ms: order.deadline_unix_ms,
            ..Default::default()
        };
        request.set_requested_at_unix_ms(order.requested_at_unix_ms);
        let outcome = self.call("refund", move |plugin| plugin.refund(&request)).await?;
        Ok(RefundOutcome {
            completed: outcome.state == abi::RefundState::SUCCEEDED,
            provider_refund_id: outcome.provider_refund_id.into_option().map(RString::into_string),
        })
    }

    async fn lookup(&self, order: LookupOrder) -> Answer<Found> {
        let request = abi::LookupRequest {
            payment: context(&order.payment),
            inspected: order.inspected.as_ref().map(inspected_to_abi).into(),
            plugin_data: optional(order.plugin_data),
            attempt_deadline_unix_ms: order.attempt_deadline_unix_ms,
            ..Default::default()
        };
        let status = self.call("lookup", move |plugin| plugin.lookup(&request)).await?;
        found(status).ok_or_else(|| {
            ProviderError::Failed(Refusal {
                code: "plugin_error".into(),
                message: "the plugin's lookup answer is incomplete or in a state this posbridge does not know; asking again".into(),
                field: None,
                retryable: true,
            })
        })
    }

    async fn check_connection(&self, deadline_unix_ms: i64) -> Answer<String> {
        self.call("check_connection", move |plugin| plugin.check_connection(deadline_unix_ms)).await.map(RString::into_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unknown state is never read as a final one: a newer plugin's lookup state is
    /// "ask again", its card state "still deciding", and a self-contradicting NOT_TAKEN
    /// (one carrying a settlement) is not believed.
    #[test]
    fn unknown_or_contradictory_states_are_never_final() {
        assert_eq!(found(abi::ProviderStatus { state: abi::LookupState(9), ..Default::default() }), None);
        let contradictory = abi::ProviderStatus { settlement: abi::ROption::RSome(Default::default()), ..abi::ProviderStatus::not_taken() };
        assert_eq!(found(contradictory), None);
        assert_eq!(found(abi::ProviderStatus::taken(abi::Settlement::default())).map(|found| matches!(found, Found::Taken(_))), Some(true));
        assert_eq!(
            found(abi::ProviderStatus { state: abi::LookupState::TAKEN, ..Default::default() }),
            None,
            "TAKEN without its settlement"
        );
        assert_eq!(card_state(abi::CardState(9)), CardState::Processing);
        assert_eq!(card_state(abi::CardState::FAILED), CardState::Failed);
    }

    /// A plugin sets its own pace, within bounds that keep a wrong value from spinning
    /// or stalling a payment.
    #[test]
    fn a_plugins_poll_pace_is_kept_within_bounds() {
        let paced = |ms: Option<u64>| {
            let mut value = abi::CardProgress::default();
            if let Some(ms) = ms {
                value.set_poll_after_ms(ms);
            }
            progress(value).poll_after
        };
        assert_eq!(paced(None), None, "the host's default pace");
        assert_eq!(paced(Some(1_000)), Some(Duration::from_secs(1)));
        assert_eq!(paced(Some(5)), Some(POLL_AFTER_BOUNDS.0));
        assert_eq!(paced(Some(3_600_000)), Some(POLL_AFTER_BOUNDS.1));
    }

    /// Values built with `..Default::default()` start in the cautious state.
    #[test]
    fn the_open_enumerations_default_to_the_cautious_state() {
        assert_eq!(abi::ProviderStatus::default().state, abi::LookupState::IN_PROGRESS);
        assert_eq!(abi::RefundOutcome::default().state, abi::RefundState::PENDING);
        assert_eq!(abi::CardProgress::default().state, abi::CardState::PROCESSING);
    }
}
