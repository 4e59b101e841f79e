//! Data that crosses the ABI boundary in calls to a [`PaymentMethod`](crate::PaymentMethod).
//!
//! Amounts are integer minor units (cents) in a `u64`; currencies are ISO 4217 codes;
//! times are Unix milliseconds. `plugin_data` is an opaque string (JSON by convention)
//! that a plugin returns with an outcome; the host stores it durably with the payment
//! and hands it back on later calls (refund, lookup, poll), so a plugin keeps no state
//! of its own between calls.

use abi_stable::std_types::{ROption, RString, RVec};
use abi_stable::StableAbi;

/// A failure a plugin reports, with a code the cash register can act on.
///
/// `code` is a snake_case failure code from posbridge's API (`invalid_code`,
/// `bad_signature`, `wrong_venue`, `wrong_benefit`, `receipt_already_used`,
/// `amount_exceeds_due`, `card_declined`, `refund_window_closed`,
/// `refund_exceeds_payment`, `transaction_id_required`, `provider_unavailable`,
/// `provider_error`, `invalid_config`, `unsupported`…). The host passes it through to
/// the POS, so the cashier sees what went wrong.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct MethodError {
    /// Snake_case failure code.
    pub code: RString,
    /// A sentence a cashier or technician can read. Never include secrets.
    pub message: RString,
    /// The input field (or config key) the failure is about, if any.
    pub field: ROption<RString>,
    /// `true` when the same call may succeed later (provider down, rate limited).
    pub retryable: bool,
}

impl MethodError {
    /// A non-retryable failure with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        MethodError { code: RString::from(code.into()), message: RString::from(message.into()), field: ROption::RNone, retryable: false }
    }

    /// The same failure, about `field`.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = ROption::RSome(RString::from(field.into()));
        self
    }

    /// The same failure, marked as worth retrying later.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// The operation is not provided by this method (the host checks capabilities
    /// first, so this is a plugin bug or a manifest that over-promises).
    pub fn unsupported(operation: &str) -> Self {
        MethodError::new("unsupported", format!("this payment method does not support {operation}"))
    }
}

impl std::fmt::Display for MethodError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let ROption::RSome(field) = &self.field {
            write!(f, " (field `{field}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for MethodError {}

/// One line of the cart, as the POS sent it, for eligibility rules.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct CartLine {
    /// The POS's product code.
    pub sku: RString,
    /// Product name as shown on the receipt.
    pub name: RString,
    /// Line total in minor units.
    pub amount: u64,
    /// Product labels (e.g. `smartum`), which eligibility rules match on.
    pub labels: RVec<RString>,
}

/// What the host knows of the payment a call is about.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PaymentContext {
    /// posbridge's id (`pay_…`): use it as the idempotency key and reference towards the
    /// provider, so a repeated call is recognised.
    pub payment_id: RString,
    /// The register (client) that created the payment.
    pub register: RString,
    /// The POS's own reference for the purchase (receipt number), if any.
    pub reference: ROption<RString>,
    /// ISO 4217 currency of the payment.
    pub currency: RString,
    /// What this payment may still take: the payment's amount less what it captured.
    pub amount_due: u64,
    /// The part of `amount_due` this method may pay, after eligibility rules.
    pub eligible_amount: u64,
    /// Past this instant the host has given up waiting for the call.
    pub deadline_unix_ms: i64,
}

/// What a scanned code says before anything is asked online (parsed, signature checked).
///
/// The host records this (write-ahead) before calling [`redeem`](crate::PaymentMethod::redeem),
/// so after a crash it knows which provider transaction to look up.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct InspectedCode {
    /// The provider's transaction id the code refers to (`tx_…`).
    pub transaction_id: RString,
    /// The amount the code states, when it states one (a signed receipt does).
    pub amount: ROption<u64>,
    /// `true` when the code's authenticity was proven offline (a valid signature).
    pub signature_verified: bool,
}

/// A settled payment leg: what the provider took, and what to remember about it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The provider's transaction id, when there is one.
    pub transaction_id: ROption<RString>,
    /// Minor units taken.
    pub captured_amount: u64,
    /// `true` when the provider confirmed the payment; `false` for an unverified
    /// manual entry.
    pub verified: bool,
    /// The benefit type or card brand, for the POS to print.
    pub benefit: ROption<RString>,
    /// Opaque data the host stores and hands back on refund and lookup.
    pub plugin_data: RString,
}

/// A payment awaiting the customer's card or phone.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardState {
    /// The reader or payment page waits for the customer.
    AwaitingCard,
    /// The customer acted; the provider is deciding.
    Processing,
    /// The payment succeeded; see `settlement`.
    Succeeded,
    /// The payment failed or was abandoned; see `failure`.
    Failed,
}

/// Something the POS should show the customer (a payment page URL as a QR code).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct NextAction {
    /// Kind of action, e.g. `show_qr` or `redirect`.
    pub kind: RString,
    /// The URL to show or open.
    pub url: RString,
}

/// Where a card (or other asynchronous) payment stands.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct CardProgress {
    /// The current state.
    pub state: CardState,
    /// Set when `state` is `Succeeded`.
    pub settlement: ROption<Settlement>,
    /// Set when `state` is `Failed`.
    pub failure: ROption<MethodError>,
    /// Something for the POS to show, while awaiting the customer.
    pub next_action: ROption<NextAction>,
    /// Opaque data the host stores and passes to the next poll, cancel or lookup.
    pub plugin_data: RString,
}

/// A cashier's manual entry of a payment seen on the customer's screen.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ManualEntry {
    /// Minor units the cashier read off the receipt.
    pub amount: u64,
    /// The transaction id, when the cashier typed it.
    pub transaction_id: ROption<RString>,
}

/// A request to give money back.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// posbridge's refund id (`re_…`): the idempotency key towards the provider.
    pub refund_id: RString,
    /// The payment refunded, when posbridge has it.
    pub payment_id: ROption<RString>,
    /// The provider's transaction id (from the payment, or typed by the cashier).
    pub transaction_id: ROption<RString>,
    /// Minor units to refund.
    pub amount: u64,
    /// ISO 4217 currency.
    pub currency: RString,
    /// When the payment was captured, if known (for same-day refund windows).
    pub captured_at_unix_ms: ROption<i64>,
    /// The `plugin_data` stored with the payment's settlement, if posbridge has it.
    pub plugin_data: ROption<RString>,
    /// Past this instant the host has given up waiting for the call.
    pub deadline_unix_ms: i64,
}

/// How a refund ended at the provider.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundState {
    /// The money is on its way back.
    Succeeded,
    /// The provider accepted the refund but has not settled it.
    Pending,
}

/// The provider's answer to a refund.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RefundOutcome {
    /// Where the refund stands.
    pub state: RefundState,
    /// The provider's refund id.
    pub provider_refund_id: ROption<RString>,
}

/// What the provider's records say of a payment the host lost track of (crash while
/// `processing`), so recovery never guesses and never charges again.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // an ABI value passed once per lookup; boxing would only add an allocation
pub enum ProviderStatus {
    /// The provider has no trace of our attempt: nothing was taken.
    NotTaken,
    /// The provider is still deciding (card being read): ask again later.
    InProgress(CardProgress),
    /// Our attempt succeeded.
    Taken(Settlement),
    /// Our attempt failed for this reason; nothing was taken.
    Refused(MethodError),
}

/// A request to look up a payment at the provider after a crash or a lost answer.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    /// The payment as the host knows it.
    pub payment: PaymentContext,
    /// The transaction id recorded before the provider call (write-ahead), if any.
    pub transaction_id: ROption<RString>,
    /// The latest `plugin_data` stored for the payment, if any.
    pub plugin_data: ROption<RString>,
}
