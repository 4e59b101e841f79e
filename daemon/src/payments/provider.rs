//! The provider port: what the payment engine needs from a payment method, in plain
//! Rust. The engine never sees the plugin ABI; `plugins/adapter.rs` implements this
//! trait for a loaded plugin method, so the ABI layer can change without touching the
//! payment logic (a test keeps ABI types out of this module's tree).

use std::future::Future;
use std::time::Duration;

use super::model::NextAction;

/// What a method can do, as the engine asks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Abilities {
    pub scan: bool,
    pub manual_entry: bool,
    pub card: bool,
    pub refund: bool,
    pub refund_without_cache: bool,
    pub lookup: bool,
}

impl Abilities {
    /// A card method waits for a customer's card instead of a scanned code.
    pub fn is_card_only(&self) -> bool {
        self.card && !self.scan
    }
}

/// The payment a provider call is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub payment_id: String,
    pub register: String,
    pub reference: Option<String>,
    pub currency: String,
    pub amount_due: u64,
    pub eligible_amount: u64,
    /// When the plugin must have given up, so it can say why before the host stops
    /// waiting.
    pub deadline_unix_ms: i64,
}

/// A cart line for eligibility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartItem {
    pub sku: String,
    pub name: String,
    pub amount: u64,
    pub labels: Vec<String>,
}

/// What a code says before the provider is asked (checked offline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The provider transaction the code refers to: the receipt's reservation key.
    pub transaction_id: String,
    pub amount: Option<u64>,
    pub signature_verified: bool,
}

/// What the provider took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub transaction_id: Option<String>,
    pub captured_amount: u64,
    pub verified: bool,
    pub benefit: Option<String>,
    /// Opaque to the engine; handed back for refunds and lookups.
    pub plugin_data: String,
}

/// Where a card payment stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardState {
    AwaitingCard,
    Processing,
    Succeeded,
    Failed,
}

/// A card payment's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardProgress {
    pub state: CardState,
    pub settlement: Option<Settlement>,
    pub failure: Option<Refusal>,
    pub next_action: Option<NextAction>,
    pub plugin_data: String,
}

/// A cashier's manual entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualEntry {
    pub amount: u64,
    pub transaction_id: Option<String>,
}

/// A refund to send (again, with the same id, after a lost answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOrder {
    pub refund_id: String,
    pub payment_id: Option<String>,
    pub transaction_id: Option<String>,
    pub amount: u64,
    pub currency: String,
    pub captured_at_unix_ms: Option<i64>,
    pub plugin_data: Option<String>,
    pub deadline_unix_ms: i64,
}

/// The provider's answer to a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOutcome {
    /// `false`: accepted but not yet done; the refund stays `pending`.
    pub completed: bool,
    pub provider_refund_id: Option<String>,
}

/// A lookup of an attempt whose outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupOrder {
    pub payment: CallContext,
    pub transaction_id: Option<String>,
    pub plugin_data: Option<String>,
}

/// What the provider knows of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    NotTaken,
    InProgress(CardProgress),
    Taken(Settlement),
    Refused(Refusal),
}

/// The provider (or plugin) refused or failed, with a posbridge failure code (see
/// `failure.rs` for what each code means to the engine).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    /// The plugin says the same request may succeed later.
    pub retryable: bool,
}

/// Why a provider call produced no answer from the provider's logic.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The plugin answered with a failure (a panic inside it arrives here too, as
    /// code `plugin_panicked`).
    #[error("{0}")]
    Failed(Refusal),
    /// The plugin did not answer within the method's timeout.
    #[error("method {method:?}: {operation} took longer than {after:?}")]
    TimedOut { method: String, operation: &'static str, after: Duration },
    /// The call died without an answer.
    #[error("method {method:?}: {operation} did not complete: {reason}")]
    Aborted { method: String, operation: &'static str, reason: String },
}

impl ProviderError {
    /// The failure code the engine classifies (`failure::class_of`).
    pub fn code(&self) -> &str {
        match self {
            ProviderError::Failed(refusal) => &refusal.code,
            ProviderError::TimedOut { .. } => "plugin_timeout",
            ProviderError::Aborted { .. } => "plugin_error",
        }
    }

    /// The plugin's own "try again" flag, or the table's for host-side failures.
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Failed(refusal) => refusal.retryable || super::failure::class_of(&refusal.code).retryable,
            _ => super::failure::class_of(self.code()).retryable,
        }
    }
}

/// The result of a provider call.
pub type Answer<T> = Result<T, ProviderError>;

/// A payment method as the engine uses it. Every call is bounded by the method's
/// timeout and never runs on an async worker thread.
pub trait Provider: Send + Sync {
    fn eligible_amount(&self, lines: Vec<CartItem>) -> impl Future<Output = Answer<u64>> + Send;
    fn inspect_code(&self, payment: CallContext, code: String) -> impl Future<Output = Answer<Inspected>> + Send;
    fn redeem(&self, payment: CallContext, code: String, inspected: Inspected) -> impl Future<Output = Answer<Settlement>> + Send;
    fn accept_manual(&self, payment: CallContext, entry: ManualEntry) -> impl Future<Output = Answer<Settlement>> + Send;
    fn start_card(&self, payment: CallContext) -> impl Future<Output = Answer<CardProgress>> + Send;
    fn poll_card(&self, payment: CallContext, plugin_data: String) -> impl Future<Output = Answer<CardProgress>> + Send;
    fn cancel_card(&self, payment: CallContext, plugin_data: String) -> impl Future<Output = Answer<CardProgress>> + Send;
    fn refund(&self, order: RefundOrder) -> impl Future<Output = Answer<RefundOutcome>> + Send;
    fn lookup(&self, order: LookupOrder) -> impl Future<Output = Answer<Found>> + Send;
}
