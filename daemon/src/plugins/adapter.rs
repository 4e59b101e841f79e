//! The ABI adapter: a loaded plugin method as the engine's plain-Rust
//! [`Provider`](crate::payments::provider::Provider). Every conversion between engine
//! values and ABI values happens here and nowhere else.

use posbridge_plugin_api as abi;
use posbridge_plugin_api::{Capabilities, RString};

use super::{refusal, Method};
use crate::payments::model::NextAction;
use crate::payments::provider::{
    Abilities, Answer, CallContext, CardProgress, CardState, CartItem, Found, Inspected, LookupOrder, ManualEntry, Provider, RefundOrder,
    RefundOutcome, Settlement,
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
        register: text(&payment.register),
        reference: optional(payment.reference.clone()),
        currency: text(&payment.currency),
        amount_due: payment.amount_due,
        eligible_amount: payment.eligible_amount,
        deadline_unix_ms: payment.deadline_unix_ms,
    }
}

fn inspected_to_abi(inspected: &Inspected) -> abi::InspectedCode {
    abi::InspectedCode {
        transaction_id: text(&inspected.transaction_id),
        amount: inspected.amount.into(),
        signature_verified: inspected.signature_verified,
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

fn progress(value: abi::CardProgress) -> CardProgress {
    CardProgress {
        state: match value.state {
            abi::CardState::AwaitingCard => CardState::AwaitingCard,
            abi::CardState::Processing => CardState::Processing,
            abi::CardState::Succeeded => CardState::Succeeded,
            abi::CardState::Failed => CardState::Failed,
        },
        settlement: value.settlement.into_option().map(settlement),
        failure: value.failure.into_option().map(refusal),
        next_action: value
            .next_action
            .into_option()
            .map(|action| NextAction { kind: action.kind.into_string(), url: action.url.into_string() }),
        plugin_data: value.plugin_data.into_string(),
    }
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
            })
            .collect();
        self.call("eligible_amount", move |plugin| plugin.eligible_amount(cart.as_rslice())).await
    }

    async fn inspect_code(&self, payment: CallContext, code: String) -> Answer<Inspected> {
        let payment = context(&payment);
        let inspected = self.call("inspect_code", move |plugin| plugin.inspect_code(&payment, code.as_str().into())).await?;
        Ok(Inspected {
            transaction_id: inspected.transaction_id.into_string(),
            amount: inspected.amount.into_option(),
            signature_verified: inspected.signature_verified,
        })
    }

    async fn redeem(&self, payment: CallContext, code: String, inspected: Inspected) -> Answer<Settlement> {
        let payment = context(&payment);
        let inspected = inspected_to_abi(&inspected);
        self.call("redeem", move |plugin| plugin.redeem(&payment, code.as_str().into(), &inspected)).await.map(settlement)
    }

    async fn accept_manual(&self, payment: CallContext, entry: ManualEntry) -> Answer<Settlement> {
        let payment = context(&payment);
        let entry = abi::ManualEntry { amount: entry.amount, transaction_id: optional(entry.transaction_id) };
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
        let request = abi::RefundRequest {
            refund_id: text(&order.refund_id),
            payment_id: optional(order.payment_id),
            transaction_id: optional(order.transaction_id),
            amount: order.amount,
            currency: text(&order.currency),
            captured_at_unix_ms: order.captured_at_unix_ms.into(),
            plugin_data: optional(order.plugin_data),
            deadline_unix_ms: order.deadline_unix_ms,
        };
        let outcome = self.call("refund", move |plugin| plugin.refund(&request)).await?;
        Ok(RefundOutcome {
            completed: outcome.state == abi::RefundState::Succeeded,
            provider_refund_id: outcome.provider_refund_id.into_option().map(RString::into_string),
        })
    }

    async fn lookup(&self, order: LookupOrder) -> Answer<Found> {
        let request = abi::LookupRequest {
            payment: context(&order.payment),
            transaction_id: optional(order.transaction_id),
            plugin_data: optional(order.plugin_data),
        };
        Ok(match self.call("lookup", move |plugin| plugin.lookup(&request)).await? {
            abi::ProviderStatus::NotTaken => Found::NotTaken,
            abi::ProviderStatus::InProgress(value) => Found::InProgress(progress(value)),
            abi::ProviderStatus::Taken(value) => Found::Taken(settlement(value)),
            abi::ProviderStatus::Refused(error) => Found::Refused(refusal(error)),
        })
    }
}
