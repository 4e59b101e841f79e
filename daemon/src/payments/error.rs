//! What can go wrong with a payment or refund request. The API maps these to HTTP
//! answers in one place (`api/error.rs`).

use super::model::{Amount, PaymentId, PaymentStatus};
use super::provider::ProviderError;
use crate::store::StoreError;

/// A payment or refund request that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("no payment method {0:?} is configured")]
    UnknownMethod(String),
    /// Work of a payment whose method is no longer configured (after a restart
    /// without it); it waits until the method is configured again.
    #[error("method {0:?} is not configured; configure it again to go on with this payment's work")]
    MethodNotConfigured(String),
    #[error("no register {0:?} is configured")]
    UnknownRegister(String),
    #[error("no line of the cart may be paid with {0:?}")]
    NothingEligible(String),
    #[error("the lines sum to {lines}, but the amount is {amount}")]
    LinesDoNotSum { lines: Amount, amount: Amount },
    #[error("payment {0} does not exist")]
    NotFound(String),
    #[error("refund {0} does not exist")]
    RefundNotFound(String),
    #[error("split_of {0}: no such payment")]
    SplitParentNotFound(String),
    #[error("split_of {parent}: {reason}")]
    SplitNotPossible { parent: PaymentId, reason: String },
    #[error("the payment is {status}; it cannot be {action}")]
    InvalidState { status: PaymentStatus, action: &'static str },
    #[error("method {method:?} does not support {operation}")]
    Unsupported { method: String, operation: &'static str },
    #[error("{refundable} is left to refund")]
    RefundExceedsPayment { refundable: Amount },
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    /// Well-formed, but missing a field this combination needs (a refund without a
    /// payment needs `method`, `transaction_id` and `amount`).
    #[error("{message}")]
    Incomplete { field: &'static str, message: String },
    /// A request field disagrees with what the payment holds (its method, its
    /// transaction): well-formed, but not this payment's.
    #[error("{message}")]
    Mismatch { field: &'static str, message: String },
    /// The plugin answered with a failure code the POS can act on (e.g.
    /// `amount_exceeds_due`, `refund_window_closed`, `transaction_id_required`).
    #[error("{message}")]
    Provider { code: String, message: String, field: Option<String> },
    /// A refund of a payment whose receipt was taken offline and may have reached the
    /// provider unconfirmed: it waits for the provider's answer (`Retry-After`).
    #[error("payment {payment}'s receipt was taken offline and the provider has not confirmed it yet; refund it once it is confirmed (the check is retried by itself)")]
    NotConfirmedYet { payment: PaymentId, retry_after: std::time::Duration },
    /// A refund of a payment whose receipt, taken offline, the provider refused: there is
    /// nothing at the provider to refund; the shop settles it by hand.
    #[error("payment {payment}'s receipt was taken offline and the provider refused it ({reason}); it is on the exceptions list: settle it with the customer by hand")]
    OfflineRefused { payment: PaymentId, reason: String },
    /// The receipt (provider transaction) already paid another payment.
    #[error("this receipt already paid {holder}")]
    ReceiptAlreadyUsed { holder: PaymentId },
    #[error("{0}")]
    Plugin(#[from] ProviderError),
    #[error("{0}")]
    Store(#[from] StoreError),
}
