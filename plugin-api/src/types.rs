//! Data that crosses the ABI boundary in calls to a [`PaymentMethod`](crate::PaymentMethod).
//!
//! Amounts are integer minor units (cents) in a `u64`; currencies are ISO 4217 codes;
//! times are Unix milliseconds. `plugin_data` is an opaque string (JSON by convention)
//! that a plugin returns with an outcome; the host stores it durably with the payment
//! and hands it back on later calls (redeem, refund, lookup, poll), so a plugin keeps no
//! state of its own between calls.
//!
//! ## How these types grow within ABI v1
//!
//! The fields below are frozen: ABI v1 never adds, removes or reorders them, because
//! both sides of the boundary lay them out the same way and abi_stable refuses a library
//! whose layout differs. Each value that may need to say more later ends in an
//! [`Extensions`] field: named values added by a later v1.x, which an older side simply
//! does not read. A field added that way gets a typed accessor here in the version that
//! introduces it. States are open enumerations ([`CardState`], [`RefundState`],
//! [`LookupState`]): a `#[repr(transparent)]` number with named constants, so a newer
//! plugin's state reaches an older host as "unknown", which the host treats cautiously,
//! instead of as undefined behaviour. Build values with `..Default::default()` so new
//! fields never break your code.

use abi_stable::std_types::{ROption, RString, RVec};
use abi_stable::StableAbi;

/// Named values added to a type after v1.0, each a JSON text. An older reader ignores
/// the names it does not know; a newer reader finds nothing under a name an older
/// writer never set, and falls back to that field's documented default.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct Extensions {
    entries: RVec<Extension>,
}

/// One named value of [`Extensions`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The field's name, snake_case.
    pub name: RString,
    /// The field's value as JSON text.
    pub json: RString,
}

impl Extensions {
    /// The JSON text stored under `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|entry| entry.name == name).map(|entry| entry.json.as_str())
    }

    /// Stores `json` under `name`, replacing an earlier value.
    pub fn set(&mut self, name: &str, json: impl Into<String>) {
        let json = RString::from(json.into());
        match self.entries.iter_mut().find(|entry| entry.name == name) {
            Some(entry) => entry.json = json,
            None => self.entries.push(Extension { name: RString::from(name), json }),
        }
    }

    /// Every stored name, in insertion order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|entry| entry.name.as_str())
    }
}

/// Failure codes the host treats specially. Any other snake_case code is passed to the
/// POS as the reason a payment failed (see `docs/plugin-failures.md` for the full table).
pub mod codes {
    /// The request may have reached the provider but no answer came back: the host keeps
    /// the payment `processing` and resolves it with `lookup`. Answer this, never
    /// `provider_unavailable`, once a request that could take money may have been sent.
    pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";
    /// The provider could not be reached, so nothing was sent: the attempt failed and
    /// took nothing; the cashier may try again.
    pub const PROVIDER_UNAVAILABLE: &str = "provider_unavailable";
    /// The provider answered something the plugin cannot read.
    pub const PROVIDER_ERROR: &str = "provider_error";
    /// The operation is not provided by this method.
    pub const UNSUPPORTED: &str = "unsupported";
    /// A setting is wrong (from [`Plugin::create`](crate::Plugin::create)).
    pub const INVALID_CONFIG: &str = "invalid_config";
    /// The code is not one this method can read.
    pub const INVALID_CODE: &str = "invalid_code";
    /// The receipt was already redeemed (by another payment, here or elsewhere).
    pub const RECEIPT_ALREADY_USED: &str = "receipt_already_used";
}

/// A failure a plugin reports, with a code the cash register can act on.
///
/// `code` is a snake_case failure code from posbridge's API (`invalid_code`,
/// `bad_signature`, `wrong_venue`, `wrong_benefit`, `receipt_already_used`,
/// `amount_exceeds_due`, `card_declined`, `refund_window_closed`,
/// `refund_exceeds_payment`, `transaction_id_required`, `provider_unavailable`,
/// `outcome_unknown`, `provider_error`, `invalid_config`, `unsupported`…). The host
/// passes it through to the POS, so the cashier sees what went wrong; see [`codes`] for
/// the ones the host acts on.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct MethodError {
    /// Snake_case failure code.
    pub code: RString,
    /// A sentence a cashier or technician can read. Never include secrets.
    pub message: RString,
    /// The input field (or config key) the failure is about, if any.
    pub field: ROption<RString>,
    /// `true` when the *same call* may succeed if made again later (provider down, rate
    /// limited). What the host then does depends on the operation (a failed redeem lets
    /// the cashier scan again; a refund is resent with the same refund id): see
    /// `docs/plugin-failures.md`.
    pub retryable: bool,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

impl MethodError {
    /// A non-retryable failure with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        MethodError { code: RString::from(code.into()), message: RString::from(message.into()), ..Default::default() }
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
        MethodError::new(codes::UNSUPPORTED, format!("this payment method does not support {operation}"))
    }

    /// A request that could take or return money may have reached the provider, and no
    /// answer came back: the host will `lookup` the attempt instead of guessing.
    pub fn outcome_unknown(message: impl Into<String>) -> Self {
        MethodError::new(codes::OUTCOME_UNKNOWN, message).retryable()
    }

    /// `true` for [`codes::OUTCOME_UNKNOWN`].
    pub fn is_outcome_unknown(&self) -> bool {
        self.code == codes::OUTCOME_UNKNOWN
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
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct CartLine {
    /// The POS's product code.
    pub sku: RString,
    /// Product name as shown on the receipt.
    pub name: RString,
    /// Line total in minor units.
    pub amount: u64,
    /// Product labels (e.g. `smartum`), which eligibility rules match on.
    pub labels: RVec<RString>,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

/// What the host knows of the payment, and of the attempt, a call is about.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct PaymentContext {
    /// posbridge's id (`pay_…`), for references the shop reads (a description, metadata).
    /// Not an idempotency key: a failed payment may be tried again with another code.
    pub payment_id: RString,
    /// This attempt's id (`pay_…-N`): the same for every call about one attempt
    /// (inspect, redeem, its retries after a lost answer, its lookup after a restart),
    /// and different for the next attempt at the same payment. **Use it as the
    /// idempotency key towards the provider.**
    pub attempt_id: RString,
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
    /// Past this instant the host has given up waiting for this call: no request of
    /// yours may still be in flight after it (give each request a timeout that ends
    /// before it).
    pub deadline_unix_ms: i64,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

impl PaymentContext {
    /// Extension name of [`PaymentContext::defers_signature`] (added in 1.1).
    pub const DEFER_SIGNATURE: &'static str = "defer_signature";

    /// Set on an `inspect_code` call when the host only needs to *read* the code
    /// first: it records the answer in the attempt's write-ahead and calls
    /// `inspect_code` again, without this, beside that write. A plugin may then skip
    /// its costly check (the signature) and say so with
    /// [`InspectedCode::set_signature_deferred`]; every other field must be what the
    /// full inspection answers (the host refuses the attempt when they differ). A plugin
    /// that ignores this answers in full, as before, and is not called again.
    pub fn defers_signature(&self) -> bool {
        self.extensions.get(Self::DEFER_SIGNATURE) == Some("true")
    }

    /// Sets [`PaymentContext::defers_signature`].
    pub fn set_defer_signature(&mut self) {
        self.extensions.set(Self::DEFER_SIGNATURE, "true");
    }
}

/// What a scanned code says before anything is asked online (parsed, signature checked).
///
/// The host records this (write-ahead) before calling [`redeem`](crate::PaymentMethod::redeem),
/// reserves `receipt_key` so no other payment can redeem the same code, and hands the
/// whole record back to `redeem` and, after a crash, to `lookup`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct InspectedCode {
    /// What makes this code single-use, as a stable string: the provider's transaction id
    /// for a receipt that names one (`tx_…`), a voucher's number, or a hash of the code.
    /// Two scans of the same code must give the same key.
    pub receipt_key: RString,
    /// The provider's transaction id, when the code names one before redemption (it is
    /// logged and shown; a voucher has none until it is redeemed).
    pub transaction_id: ROption<RString>,
    /// The amount the code states, when it states one (a signed receipt does).
    pub amount: ROption<u64>,
    /// `true` when the code's authenticity was proven offline (a valid signature).
    pub signature_verified: bool,
    /// Opaque data for `redeem` and `lookup` (what the plugin parsed, so it need not
    /// parse again), stored with the write-ahead record.
    pub plugin_data: RString,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

impl InspectedCode {
    /// Extension (on an `InspectedCode`, or on the `MethodError` of a refused code) where
    /// a plugin describes, as a JSON object, what it understood of the code: shown by
    /// `posbridge inspect` (keys such as `form`, `header`, `claims`, `signature`,
    /// `checks`, `online`, `result`; never a secret).
    pub const EXPLANATION: &'static str = "explanation";

    /// Extension name of [`InspectedCode::issued_at_unix_ms`] (added in 1.0).
    pub const ISSUED_AT_UNIX_MS: &'static str = "issued_at_unix_ms";

    /// When the provider issued the code, as the signed code itself proves (a JWS
    /// receipt's `iat`). The host accepts a signed code offline only with it, so it can
    /// refuse receipts older than the method's `offline.max_age`; `None` when the code
    /// carries no signed issue time.
    pub fn issued_at_unix_ms(&self) -> Option<i64> {
        self.extensions.get(Self::ISSUED_AT_UNIX_MS).and_then(|json| json.parse().ok())
    }

    /// Sets [`InspectedCode::issued_at_unix_ms`].
    pub fn set_issued_at_unix_ms(&mut self, unix_ms: i64) {
        self.extensions.set(Self::ISSUED_AT_UNIX_MS, unix_ms.to_string());
    }

    /// Extension name of [`InspectedCode::signature_deferred`] (added in 1.1).
    pub const SIGNATURE_DEFERRED: &'static str = "signature_deferred";

    /// The plugin left the signature unchecked because the host asked only to read
    /// the code ([`PaymentContext::defers_signature`]); the host then inspects it in
    /// full beside the write-ahead, before anything is redeemed.
    pub fn signature_deferred(&self) -> bool {
        self.extensions.get(Self::SIGNATURE_DEFERRED) == Some("true")
    }

    /// Sets [`InspectedCode::signature_deferred`].
    pub fn set_signature_deferred(&mut self) {
        self.extensions.set(Self::SIGNATURE_DEFERRED, "true");
    }
}

/// A settled payment leg: what the provider took, and what to remember about it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
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
    /// Values added after v1.0.
    pub extensions: Extensions,
}

/// Where a card (or other asynchronous) payment stands: an open enumeration, so a later
/// v1.x may add states (an older host treats an unknown state like `PROCESSING`).
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CardState(pub u8);

/// The cautious state: still deciding (never read as an outcome).
impl Default for CardState {
    fn default() -> Self {
        CardState::PROCESSING
    }
}

impl CardState {
    /// The reader or payment page waits for the customer.
    pub const AWAITING_CARD: CardState = CardState(0);
    /// The customer acted; the provider is deciding.
    pub const PROCESSING: CardState = CardState(1);
    /// The payment succeeded; see `settlement`.
    pub const SUCCEEDED: CardState = CardState(2);
    /// The payment failed or was abandoned; see `failure`.
    pub const FAILED: CardState = CardState(3);
}

/// Something the POS should show the customer (a payment page URL as a QR code).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct NextAction {
    /// Kind of action, e.g. `show_qr` or `redirect`.
    pub kind: RString,
    /// The URL to show or open.
    pub url: RString,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

/// Where a card (or other asynchronous) payment stands.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct CardProgress {
    /// The current state.
    pub state: CardState,
    /// Set when `state` is `SUCCEEDED`.
    pub settlement: ROption<Settlement>,
    /// Set when `state` is `FAILED`.
    pub failure: ROption<MethodError>,
    /// Something for the POS to show, while awaiting the customer.
    pub next_action: ROption<NextAction>,
    /// Opaque data the host stores and passes to the next poll, cancel or lookup.
    pub plugin_data: RString,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

impl CardProgress {
    /// Extension name of [`CardProgress::poll_after_ms`] (added in 1.0).
    pub const POLL_AFTER_MS: &'static str = "poll_after_ms";

    /// How long the host should wait before the next `poll_card` (milliseconds): the
    /// plugin knows when the provider is likely to have news and what its request budget
    /// allows. The host keeps it within 100 ms–10 s; `None` means the host's default
    /// (every 250 ms).
    pub fn poll_after_ms(&self) -> Option<u64> {
        self.extensions.get(Self::POLL_AFTER_MS).and_then(|json| json.parse().ok())
    }

    /// Sets [`CardProgress::poll_after_ms`].
    pub fn set_poll_after_ms(&mut self, milliseconds: u64) {
        self.extensions.set(Self::POLL_AFTER_MS, milliseconds.to_string());
    }
}

/// A cashier's manual entry of a payment seen on the customer's screen.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct ManualEntry {
    /// Minor units the cashier read off the receipt.
    pub amount: u64,
    /// The transaction id, when the cashier typed it.
    pub transaction_id: ROption<RString>,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

/// A request to give money back.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct RefundRequest {
    /// posbridge's refund id (`re_…`): the idempotency key towards the provider. The
    /// host sends a refund again with the same id until it gets an answer.
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
    /// Values added after v1.0.
    pub extensions: Extensions,
}

impl RefundRequest {
    /// Extension name of [`RefundRequest::requested_at_unix_ms`] (added in 1.0).
    pub const REQUESTED_AT: &'static str = "requested_at_unix_ms";

    /// When the POS asked for this refund (Unix ms): a resend after a lost answer
    /// carries the first request's time, so a rule such as "refunds on the day of the
    /// payment" is judged at the request, not at the resend. `None` from a host that
    /// does not say.
    pub fn requested_at_unix_ms(&self) -> Option<i64> {
        self.extensions.get(Self::REQUESTED_AT).and_then(|json| json.parse().ok())
    }

    /// Sets [`RefundRequest::requested_at_unix_ms`] (the host does).
    pub fn set_requested_at_unix_ms(&mut self, at: i64) {
        self.extensions.set(Self::REQUESTED_AT, at.to_string());
    }
}

/// How a refund stands at the provider: an open enumeration (an older host treats an
/// unknown state like `PENDING`).
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefundState(pub u8);

/// The cautious state: not done yet (a forgotten state never marks money returned).
impl Default for RefundState {
    fn default() -> Self {
        RefundState::PENDING
    }
}

impl RefundState {
    /// The money is on its way back.
    pub const SUCCEEDED: RefundState = RefundState(0);
    /// The provider accepted the refund but has not settled it.
    pub const PENDING: RefundState = RefundState(1);
}

/// The provider's answer to a refund.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct RefundOutcome {
    /// Where the refund stands.
    pub state: RefundState,
    /// The provider's refund id. Repeating a refund with the same `refund_id` must
    /// answer the same one.
    pub provider_refund_id: ROption<RString>,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

/// What the provider's records say of an attempt: an open enumeration (an older host
/// treats an unknown state as "no answer yet" and looks again).
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LookupState(pub u8);

/// The cautious state: ask again (a forgotten state never says "nothing was taken").
impl Default for LookupState {
    fn default() -> Self {
        LookupState::IN_PROGRESS
    }
}

impl LookupState {
    /// Nothing was taken and nothing can be any more: the provider has no trace of the
    /// attempt **and** no request of it can still land (its deadline has passed, or the
    /// plugin fenced it at the provider). Anything less certain is `IN_PROGRESS`.
    pub const NOT_TAKEN: LookupState = LookupState(0);
    /// The provider is still deciding, or the attempt may still land: ask again later.
    pub const IN_PROGRESS: LookupState = LookupState(1);
    /// The attempt succeeded; see `settlement`.
    pub const TAKEN: LookupState = LookupState(2);
    /// The attempt failed and took nothing; see `failure`.
    pub const REFUSED: LookupState = LookupState(3);
}

/// What the provider's records say of an attempt the host lost track of (crash while
/// `processing`, lost answer), so recovery never guesses and never charges again.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderStatus {
    /// Where the attempt stands.
    pub state: LookupState,
    /// Set when `state` is `IN_PROGRESS` and a card payment is being read.
    pub progress: ROption<CardProgress>,
    /// Set when `state` is `TAKEN`.
    pub settlement: ROption<Settlement>,
    /// Set when `state` is `REFUSED`.
    pub failure: ROption<MethodError>,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

impl ProviderStatus {
    /// Nothing was taken, and the attempt can no longer land (see [`LookupState::NOT_TAKEN`]).
    pub fn not_taken() -> Self {
        ProviderStatus { state: LookupState::NOT_TAKEN, ..Default::default() }
    }

    /// Not decided yet, or the attempt may still land.
    pub fn in_progress(progress: Option<CardProgress>) -> Self {
        ProviderStatus { state: LookupState::IN_PROGRESS, progress: progress.into(), ..Default::default() }
    }

    /// The attempt took this.
    pub fn taken(settlement: Settlement) -> Self {
        ProviderStatus { state: LookupState::TAKEN, settlement: ROption::RSome(settlement), ..Default::default() }
    }

    /// The attempt failed for this reason and took nothing.
    pub fn refused(failure: MethodError) -> Self {
        ProviderStatus { state: LookupState::REFUSED, failure: ROption::RSome(failure), ..Default::default() }
    }
}

/// A request to look up an attempt at the provider after a crash or a lost answer.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct LookupRequest {
    /// The payment as the host knows it; `payment.attempt_id` is the attempt looked up
    /// (the id its `inspect_code`/`redeem` or card calls carried).
    pub payment: PaymentContext,
    /// What `inspect_code` said of the attempt's code (the write-ahead record), for a
    /// scanned code.
    pub inspected: ROption<InspectedCode>,
    /// The latest `plugin_data` stored for the payment (a card payment's), if any.
    pub plugin_data: ROption<RString>,
    /// The deadline the attempt's calls carried: until then (plus the provider's own
    /// processing time) a request of the attempt may still land, so "no trace" is not
    /// yet `NOT_TAKEN`.
    pub attempt_deadline_unix_ms: i64,
    /// Values added after v1.0.
    pub extensions: Extensions,
}
