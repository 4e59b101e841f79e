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
    /// Abandons a started card payment at the provider.
    pub cancel: bool,
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
    /// The attempt the call belongs to (`pay_…-N`): the plugin's idempotency key.
    pub attempt_id: String,
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inspected {
    /// What makes the code single-use: reserved in the store so it pays once.
    pub receipt_key: String,
    /// The provider transaction the code names, when it names one before redemption.
    pub transaction_id: Option<String>,
    pub amount: Option<u64>,
    pub signature_verified: bool,
    /// Opaque to the engine; handed back to `redeem` and `lookup`.
    pub plugin_data: String,
    /// When the provider issued the code, as its signature proves: needed to take it
    /// offline (`offline.max_age`).
    pub issued_at_unix_ms: Option<i64>,
    /// Read without its signature check (`read_code`): to be inspected in full before
    /// anything is redeemed. Never stored.
    pub signature_deferred: bool,
}

impl Inspected {
    /// Whether this (checked) answer says of the code what `read` (its reading before
    /// the check) said: what the write-ahead recorded is what is redeemed.
    pub fn agrees_with(&self, read: &Inspected) -> bool {
        let Inspected { receipt_key, transaction_id, amount, signature_verified: _, plugin_data, issued_at_unix_ms, signature_deferred: _ } =
            read;
        (&self.receipt_key, &self.transaction_id, &self.amount, &self.plugin_data, &self.issued_at_unix_ms)
            == (receipt_key, transaction_id, amount, plugin_data, issued_at_unix_ms)
    }
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
    /// When the plugin wants to be asked again; `None`: the host's default pace.
    pub poll_after: Option<Duration>,
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
    /// When the POS asked for the refund (its first send): a resend is judged by it.
    pub requested_at_unix_ms: i64,
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
    /// The write-ahead record of a scanned code's attempt.
    pub inspected: Option<Inspected>,
    pub plugin_data: Option<String>,
    /// The deadline the attempt's calls carried: until then it may still land.
    pub attempt_deadline_unix_ms: i64,
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
    /// `inspect_code` asked only to read the code for the write-ahead: a plugin that
    /// can leave its signature check for later says so (`signature_deferred`, and
    /// `inspect_code` is then called beside the write-ahead); any other answers in full.
    fn read_code(&self, payment: CallContext, code: String) -> impl Future<Output = Answer<Inspected>> + Send;
    fn redeem(&self, payment: CallContext, code: String, inspected: Inspected) -> impl Future<Output = Answer<Settlement>> + Send;
    fn accept_manual(&self, payment: CallContext, entry: ManualEntry) -> impl Future<Output = Answer<Settlement>> + Send;
    fn start_card(&self, payment: CallContext) -> impl Future<Output = Answer<CardProgress>> + Send;
    fn poll_card(&self, payment: CallContext, plugin_data: String) -> impl Future<Output = Answer<CardProgress>> + Send;
    fn cancel_card(&self, payment: CallContext, plugin_data: String) -> impl Future<Output = Answer<CardProgress>> + Send;
    fn refund(&self, order: RefundOrder) -> impl Future<Output = Answer<RefundOutcome>> + Send;
    fn lookup(&self, order: LookupOrder) -> impl Future<Output = Answer<Found>> + Send;
    /// Whether the provider answers with these credentials (a line of what was checked).
    fn check_connection(&self, deadline_unix_ms: i64) -> impl Future<Output = Answer<String>> + Send;
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Every Rust file under `dir`.
    fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("source dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }

    /// The ABI stays at the edge: outside `daemon/src/plugins/` nothing names
    /// abi_stable or the plugin API's FFI types (its plain `time` helpers are fine).
    #[test]
    fn abi_types_are_named_only_in_the_plugin_adapter() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        // Spelled in pieces so this test does not find itself.
        let forbidden: Vec<String> = [
            ("abi", "_stable"),
            ("RStr", "ing"),
            ("RStr", "<"),
            ("RV", "ec"),
            ("ROp", "tion"),
            ("RRe", "sult"),
            ("RSl", "ice"),
            ("Stable", "Abi"),
            ("sabi", "_trait"),
        ]
        .iter()
        .map(|(head, tail)| format!("{head}{tail}"))
        .collect();
        let api_path = format!("posbridge_plugin{}", "_api::");
        let time_path = format!("{api_path}time::");
        let mut offenders = Vec::new();
        for file in files.iter().filter(|file| !file.starts_with(root.join("plugins"))) {
            let text = std::fs::read_to_string(file).expect("readable source");
            for (number, line) in text.lines().enumerate() {
                let line = line.split("//").next().unwrap_or_default();
                let ffi_path = line.match_indices(api_path.as_str()).any(|(at, _)| !line[at..].starts_with(time_path.as_str()));
                if ffi_path || forbidden.iter().any(|name| line.contains(name)) {
                    offenders.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
                }
            }
        }
        assert!(files.len() > 20, "the walk found the sources");
        assert!(offenders.is_empty(), "ABI types outside daemon/src/plugins/:\n{}", offenders.join("\n"));
    }
}
