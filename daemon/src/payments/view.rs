//! The API's JSON shape of payments and refunds (docs/api.md), used by responses and events
//! alike, so what the POS reads and what it is told are the same thing. The OpenAPI
//! document's schemas are derived from these types.

use schemars::JsonSchema;
use serde::Serialize;

use super::model::{
    rfc3339, Amount, Currency, Failure, NextAction, OfflineState, Payment, PaymentId, PaymentStatus, Refund, RefundId, RefundStatus,
};

/// Why the last attempt failed.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FailureView {
    /// A failure code: `invalid_code`, `bad_signature`, `wrong_venue`, `wrong_benefit`,
    /// `receipt_already_used`, `amount_exceeds_due`, `provider_unavailable`, `provider_error`…
    pub code: String,
    /// A sentence to show the cashier.
    pub message: String,
}

impl From<&Failure> for FailureView {
    fn from(failure: &Failure) -> Self {
        FailureView { code: failure.code.clone(), message: failure.message.clone() }
    }
}

/// A payment.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PaymentView {
    pub id: PaymentId,
    pub status: PaymentStatus,
    pub method: String,
    pub register: String,
    pub reference: Option<String>,
    pub amount: Amount,
    pub currency: Currency,
    /// The part of `amount` this method may pay (e.g. lines with the Smartum label).
    pub eligible_amount: Amount,
    pub captured_amount: Amount,
    /// What the purchase still needs, after this payment and later `split_of` payments.
    pub remaining_amount: Amount,
    pub refunded_amount: Amount,
    /// The provider's transaction id (`tx_…` for Smartum).
    pub transaction_id: Option<String>,
    /// `true` when the provider confirmed it; `false` for a manual entry, or a receipt
    /// taken offline and not confirmed yet.
    pub verified: Option<bool>,
    /// How the receipt was verified, for the POS to print: `online` (the provider
    /// confirmed it), `offline` (its signature was checked at the till while the provider
    /// could not be reached; see `offline`), `manual` (entered by hand, unverified).
    pub verification: Option<Verification>,
    /// For a receipt taken offline: where its deferred check with the provider stands.
    pub offline: Option<OfflineView>,
    pub benefit: Option<String>,
    pub failure: Option<FailureView>,
    pub split_of: Option<PaymentId>,
    /// For card payments: what to show the customer (a payment page's URL as a QR code).
    pub next_action: Option<NextAction>,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub updated_at: String,
    /// When a payment still awaiting a scan expires.
    pub expires_at: String,
    /// Increases with every change; use with `?wait=S&version=V`.
    pub version: u64,
}

/// How a payment's receipt was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    Online,
    Offline,
    Manual,
}

/// The deferred check of a receipt taken offline.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OfflineView {
    /// `pending` (the provider not asked or not answered yet), `confirmed`, `refused`
    /// (an exception: see `reason`), `canceled` (refunded before it was sent).
    pub state: OfflineState,
    /// When the receipt was taken at the till (RFC 3339).
    pub accepted_at: String,
    /// When the provider confirmed or refused it, or the refund canceled it.
    pub settled_at: Option<String>,
    /// The provider's reason for refusing it.
    pub reason: Option<FailureView>,
}

/// How `payment`'s receipt was verified, as the POS prints it.
pub fn verification(payment: &Payment) -> Option<Verification> {
    match (&payment.offline, payment.verified) {
        (Some(check), _) if check.state != OfflineState::Confirmed => Some(Verification::Offline),
        (_, Some(true)) => Some(Verification::Online),
        (_, Some(false)) => Some(Verification::Manual),
        (_, None) => None,
    }
}

/// A refund.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RefundView {
    pub id: RefundId,
    pub status: RefundStatus,
    pub payment: Option<PaymentId>,
    pub method: String,
    pub transaction_id: Option<String>,
    pub amount: Amount,
    pub currency: Currency,
    pub reason: Option<String>,
    pub failure: Option<FailureView>,
    pub created_at: String,
}

/// A payment as the API shows it.
pub fn payment_view(payment: &Payment) -> PaymentView {
    PaymentView {
        id: payment.id.clone(),
        status: payment.status,
        method: payment.method.clone(),
        register: payment.register.clone(),
        reference: payment.reference.clone(),
        amount: payment.amount,
        currency: payment.currency.clone(),
        eligible_amount: payment.eligible_amount,
        captured_amount: payment.captured_amount,
        remaining_amount: payment.remaining_amount(),
        refunded_amount: payment.refunded_amount,
        transaction_id: payment.transaction_id.clone(),
        verified: payment.verified,
        verification: verification(payment),
        offline: payment.offline.as_ref().map(|check| OfflineView {
            state: check.state,
            accepted_at: rfc3339(check.accepted_at),
            settled_at: check.settled_at.map(rfc3339),
            reason: check.reason.as_ref().map(FailureView::from),
        }),
        benefit: payment.benefit.clone(),
        failure: payment.failure.as_ref().map(FailureView::from),
        split_of: payment.split_of.clone(),
        next_action: payment.next_action.clone(),
        created_at: rfc3339(payment.created_at),
        updated_at: rfc3339(payment.updated_at),
        expires_at: rfc3339(payment.expires_at),
        version: payment.version,
    }
}

/// A refund as the API shows it.
pub fn refund_view(refund: &Refund) -> RefundView {
    RefundView {
        id: refund.id.clone(),
        status: refund.status,
        payment: refund.payment.clone(),
        method: refund.method.clone(),
        transaction_id: refund.transaction_id.clone(),
        amount: refund.amount,
        currency: refund.currency.clone(),
        reason: refund.reason.clone(),
        failure: refund.failure.as_ref().map(FailureView::from),
        created_at: rfc3339(refund.created_at),
    }
}

/// A receipt taken offline that the provider refused: what the shop follows up.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExceptionView {
    /// The payment (it stays `succeeded`: the goods were handed over).
    pub payment: PaymentId,
    pub method: String,
    pub register: String,
    pub reference: Option<String>,
    pub transaction_id: Option<String>,
    /// What the receipt paid and the provider did not confirm.
    pub amount: Amount,
    pub currency: Currency,
    /// The provider's reason (`receipt_already_used`, `invalid_code`, …).
    pub reason: Option<FailureView>,
    /// When the receipt was taken at the till (RFC 3339).
    pub accepted_at: String,
    /// When the provider refused it.
    pub refused_at: Option<String>,
}

/// The exception a payment is, if the provider refused its receipt taken offline.
pub fn exception_view(payment: &Payment) -> Option<ExceptionView> {
    let check = payment.offline.as_ref().filter(|check| check.state == OfflineState::Refused)?;
    Some(ExceptionView {
        payment: payment.id.clone(),
        method: payment.method.clone(),
        register: payment.register.clone(),
        reference: payment.reference.clone(),
        transaction_id: payment.transaction_id.clone(),
        amount: payment.captured_amount,
        currency: payment.currency.clone(),
        reason: check.reason.as_ref().map(FailureView::from),
        accepted_at: rfc3339(check.accepted_at),
        refused_at: check.settled_at.map(rfc3339),
    })
}

/// An exception as event data.
pub fn exception(payment: &Payment) -> serde_json::Value {
    serde_json::to_value(exception_view(payment)).unwrap_or_default()
}

/// A payment as event data.
pub fn payment(payment: &Payment) -> serde_json::Value {
    serde_json::to_value(payment_view(payment)).unwrap_or_default()
}

/// A refund as event data.
pub fn refund(refund: &Refund) -> serde_json::Value {
    serde_json::to_value(refund_view(refund)).unwrap_or_default()
}
