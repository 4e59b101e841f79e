//! The payment domain's values: ids, amounts, statuses, payments and refunds.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Unix time in milliseconds.
pub type Millis = i64;

/// Now, in Unix milliseconds.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|since| since.as_millis() as i64).unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, as the API writes timestamps.
pub fn rfc3339(ms: Millis) -> String {
    posbridge_plugin_helpers::time::format_rfc3339_ms(ms)
}

/// Parses the API's RFC 3339 timestamps (UTC `Z` or an offset) for list filters.
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    posbridge_plugin_helpers::time::parse_rfc3339_ms(text)
}

/// Money in minor units (cents). Never negative; arithmetic is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Amount(pub u64);

impl Amount {
    /// Nothing (a stored zero is left out).
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// `self - other`, or zero.
    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An ISO 4217 currency code (three uppercase letters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    /// Accepts three uppercase ASCII letters.
    pub fn parse(text: &str) -> Option<Currency> {
        (text.len() == 3 && text.bytes().all(|byte| byte.is_ascii_uppercase())).then(|| Currency(text.to_string()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id's prefix.
            pub const PREFIX: &'static str = $prefix;

            /// A new id: the creation time then a counter, both fixed-width base62, so ids
            /// sort in creation order and never repeat (the counter is sled's, which
            /// survives crashes).
            pub fn new(at: Millis, unique: u64) -> Self {
                $name(format!("{}{}{}", $prefix, base62(at.max(0) as u64, 8), base62(unique, 8)))
            }

            /// The smallest id created at `at` or later: bounds a time window over
            /// anything keyed by these ids.
            pub fn first_at(at: Millis) -> Self {
                $name::new(at, 0)
            }

            /// Accepts a well-formed id of this kind.
            pub fn parse(text: &str) -> Option<Self> {
                let rest = text.strip_prefix($prefix)?;
                (rest.len() == 16 && rest.bytes().all(|byte| byte.is_ascii_alphanumeric())).then(|| $name(text.to_string()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A payment's id, `pay_…`.
    PaymentId,
    "pay_"
);
prefixed_id!(
    /// A refund's id, `re_…`.
    RefundId,
    "re_"
);

/// Fixed-width base62 in ASCII order, so text order is numeric order.
fn base62(mut value: u64, width: usize) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Where a payment stands. Transitions are in [`PaymentStatus::can_become`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Waiting for the customer's receipt to be scanned or entered.
    AwaitingScan,
    /// A card plugin waits for the customer's card or phone.
    AwaitingCard,
    /// The provider is being asked (write-ahead recorded; resolved by lookup after a crash).
    Processing,
    /// Paid: `captured_amount` was taken.
    Succeeded,
    /// The last attempt failed (see `failure`); a new scan may still pay it.
    Failed,
    /// Cancelled by the POS before anything was taken.
    Canceled,
    /// Nobody scanned in time.
    Expired,
}

impl PaymentStatus {
    /// The allowed transitions of the payment state machine.
    pub fn can_become(self, next: PaymentStatus) -> bool {
        use PaymentStatus::*;
        matches!(
            (self, next),
            (AwaitingScan, Processing | AwaitingCard | Succeeded | Failed | Canceled | Expired)
                | (Failed, Processing | AwaitingCard | Succeeded | Canceled | Expired)
                | (Processing, Succeeded | Failed | AwaitingCard)
                | (AwaitingCard, Processing | Succeeded | Failed | Canceled | Expired)
        )
    }

    /// A scan or manual entry may pay the payment now.
    pub fn accepts_scan(self) -> bool {
        matches!(self, PaymentStatus::AwaitingScan | PaymentStatus::Failed)
    }

    /// Nothing more will happen to the payment (refunds aside).
    pub fn is_final(self) -> bool {
        matches!(self, PaymentStatus::Succeeded | PaymentStatus::Canceled | PaymentStatus::Expired)
    }

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::AwaitingScan => "awaiting_scan",
            PaymentStatus::AwaitingCard => "awaiting_card",
            PaymentStatus::Processing => "processing",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Canceled => "canceled",
            PaymentStatus::Expired => "expired",
        }
    }

    /// Parses the API's name.
    pub fn parse(text: &str) -> Option<PaymentStatus> {
        PaymentStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Every status.
    pub const ALL: [PaymentStatus; 7] = {
        use PaymentStatus::*;
        [AwaitingScan, AwaitingCard, Processing, Succeeded, Failed, Canceled, Expired]
    };
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt failed, as the POS shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
    /// A retry of the same thing may succeed (provider down).
    #[serde(default)]
    pub retryable: bool,
}

/// A cart line, as the POS sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub name: String,
    pub amount: Amount,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// What kind of attempt is under way (write-ahead record): everything `lookup` is
/// handed after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Attempt {
    /// The attempt's number within its payment (1, 2, … after failed ones): with the
    /// payment id, the attempt id plugins use as their idempotency key.
    #[serde(default)]
    pub number: u32,
    /// The code as scanned.
    pub code: String,
    /// What makes the code single-use: reserved in the store while the attempt is open
    /// (stores written before attempts had numbers call it `transaction_id`).
    #[serde(alias = "transaction_id")]
    pub key: String,
    /// The provider transaction the code names, if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    /// The amount the code states, when signed.
    pub amount: Option<Amount>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signature_verified: bool,
    /// The plugin's opaque data from `inspect_code`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plugin_data: String,
    pub started_at: Millis,
    /// The deadline the attempt's provider calls carried (0 in older stores).
    #[serde(default, skip_serializing_if = "is_zero_millis")]
    pub deadline_at: Millis,
    /// When the provider issued the code (its signed `iat`), if the code says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Millis>,
}

impl Attempt {
    /// What `inspect_code` answered for this attempt's code, for `redeem` and `lookup`.
    pub fn inspected(&self) -> super::provider::Inspected {
        super::provider::Inspected {
            receipt_key: self.key.clone(),
            transaction_id: self.transaction.clone(),
            amount: self.amount.map(|amount| amount.0),
            signature_verified: self.signature_verified,
            plugin_data: self.plugin_data.clone(),
            issued_at_unix_ms: self.issued_at,
            signature_deferred: false,
        }
    }
}

fn is_zero_millis(value: &Millis) -> bool {
    *value == 0
}

fn is_zero_count(value: &u32) -> bool {
    *value == 0
}

/// The id of attempt `number` of payment `payment`, as plugins see it.
pub fn attempt_id(payment: &PaymentId, number: u32) -> String {
    format!("{payment}-{number}")
}

/// A payment as stored. Empty and zero fields are left out of the stored form (they
/// read back as their defaults): a third less to store for a typical payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    pub status: PaymentStatus,
    pub method: String,
    pub register: String,
    /// The API client that created it.
    pub client: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub amount: Amount,
    pub currency: Currency,
    pub eligible_amount: Amount,
    pub captured_amount: Amount,
    /// Captured by later payments of the same purchase (`split_of` this one).
    #[serde(default, skip_serializing_if = "Amount::is_zero")]
    pub split_captured_amount: Amount,
    /// Held by later payments of the same purchase that are still under way, so legs
    /// never sum above the purchase.
    #[serde(default, skip_serializing_if = "Amount::is_zero")]
    pub split_reserved_amount: Amount,
    #[serde(default, skip_serializing_if = "Amount::is_zero")]
    pub refunded_amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// The code's receipt key when it is not the transaction id (a voucher number): it
    /// stays reserved with the settled payment, and retention frees it with the payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benefit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_of: Option<PaymentId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<Line>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_at: Option<Millis>,
    pub version: u64,
    /// Write-ahead record of the attempt in flight, while `processing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<Attempt>,
    /// How many scanned-code attempts were started (the next one is numbered one more).
    #[serde(default, skip_serializing_if = "is_zero_count")]
    pub attempts: u32,
    /// The plugin's opaque data from the settlement, for refunds and lookups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_data: Option<String>,
    /// What the POS should show the customer (a payment page as a QR code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_action: Option<NextAction>,
    /// When a POS asked to cancel this waiting card payment: whichever daemon runs its
    /// card job (on a shared store, perhaps another till's) cancels it at the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<Millis>,
    /// Set when canceling this leg abandoned its purchase: the saga that refunds the
    /// purchase's other legs, persisted so it finishes after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Compensation>,
    /// Set when the receipt was taken offline (the provider unreachable): the check the
    /// payment still owes the provider, and how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<OfflineCheck>,
}

/// Where the deferred online check of a receipt taken offline stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OfflineState {
    /// Not confirmed yet: the payment's job checks it when the provider answers again.
    Pending,
    /// The provider confirmed the receipt: the payment is as good as one made online.
    Confirmed,
    /// The provider refused the receipt (used elsewhere, refunded, unknown): the payment
    /// stays `succeeded` (the goods are gone) and is listed as an exception.
    Refused,
    /// A full refund came before the check was ever sent: nothing is owed either way.
    Canceled,
}

/// The check a receipt taken offline owes the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineCheck {
    pub state: OfflineState,
    /// The attempt as inspected (the receipt, its amount, the plugin's data): the
    /// deferred check sends it with the same attempt id.
    pub attempt: Attempt,
    /// When the receipt was taken at the till.
    pub accepted_at: Millis,
    /// `true` once a check may have reached the provider (an attempt whose answer was
    /// lost, or a deferred check sent): a refund must then wait for the answer.
    #[serde(default)]
    pub sent: bool,
    /// How many times the deferred check was tried.
    #[serde(default)]
    pub tries: u32,
    /// When it was confirmed, refused or canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<Millis>,
    /// The provider's reason, when it refused the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Failure>,
}

impl OfflineCheck {
    /// The amount still owed a confirmation (what counts against `offline.max_total`).
    pub fn open_amount(&self) -> Amount {
        match self.state {
            OfflineState::Pending => self.attempt.amount.unwrap_or(Amount(0)),
            _ => Amount(0),
        }
    }
}

/// Where the compensation of a canceled purchase stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compensation {
    /// The purchase's succeeded legs are being refunded.
    Pending,
    /// Every succeeded leg was refunded (or its refund is pending at the provider).
    Done,
}

/// Something for the POS to show the customer while a card payment waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NextAction {
    /// `show_qr`: show `url` as a QR code for the customer's phone.
    pub kind: String,
    pub url: String,
}

impl Payment {
    /// The attempt calls are about now: the open one, else the next to start (a card
    /// payment's one attempt is number 1).
    pub fn attempt_id(&self) -> String {
        attempt_id(&self.id, self.attempt.as_ref().map_or(self.attempts + 1, |attempt| attempt.number))
    }

    /// What the purchase still needs: the amount less what this and later split
    /// payments took.
    pub fn remaining_amount(&self) -> Amount {
        self.amount.saturating_sub(self.captured_amount).saturating_sub(self.split_captured_amount)
    }

    /// What a new leg of the purchase may still take: the remainder less what legs
    /// under way hold.
    pub fn open_for_split(&self) -> Amount {
        self.remaining_amount().saturating_sub(self.split_reserved_amount)
    }

    /// A leg holds its amount on the parent while it may still take money.
    pub fn holds_split_reservation(&self) -> bool {
        self.split_of.is_some()
            && matches!(self.status, PaymentStatus::AwaitingScan | PaymentStatus::AwaitingCard | PaymentStatus::Processing)
    }

    /// What may still be refunded.
    pub fn refundable_amount(&self) -> Amount {
        self.captured_amount.saturating_sub(self.refunded_amount)
    }

    /// What this method may still take: eligible and due.
    pub fn eligible_due(&self) -> Amount {
        self.eligible_amount.saturating_sub(self.captured_amount).min(self.remaining_amount())
    }
}

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Succeeded,
    /// Sent, or to be sent again (provider unreachable); the amount stays reserved.
    Pending,
    Failed,
}

impl RefundStatus {
    /// The API's name (also the stored one).
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Pending => "pending",
            RefundStatus::Failed => "failed",
        }
    }
}

/// A refund as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: RefundId,
    pub status: RefundStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentId>,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    pub amount: Amount,
    pub currency: Currency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_refund_id: Option<String>,
    pub client: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A 45.00 Smartum payment of register `till-1` created at `at`, for unit tests to
/// adjust.
#[cfg(test)]
pub(crate) fn example_payment(at: Millis, unique: u64, status: PaymentStatus) -> Payment {
    Payment {
        id: PaymentId::new(at, unique),
        status,
        method: "smartum".into(),
        register: "till-1".into(),
        client: "till-1".into(),
        reference: None,
        amount: Amount(4500),
        currency: Currency::parse("EUR").expect("EUR is a currency"),
        eligible_amount: Amount(4500),
        captured_amount: Amount(0),
        split_captured_amount: Amount(0),
        split_reserved_amount: Amount(0),
        refunded_amount: Amount(0),
        transaction_id: None,
        receipt_key: None,
        verified: None,
        benefit: None,
        failure: None,
        split_of: None,
        lines: Vec::new(),
        created_at: at,
        updated_at: at,
        expires_at: at + 60_000,
        captured_at: None,
        version: 1,
        attempt: None,
        attempts: 0,
        plugin_data: None,
        next_action: None,
        cancel_requested_at: None,
        compensation: None,
        offline: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payment stored mid-attempt before attempts had numbers and receipt keys still
    /// loads, its reserved receipt under `key`, as attempt 0 (what its lookup names).
    #[test]
    fn an_attempt_stored_before_attempt_ids_still_loads() {
        let mut stored = serde_json::to_value(example_payment(1_700_000_000_000, 7, PaymentStatus::Processing)).unwrap();
        stored["attempt"] = serde_json::json!({"code": "eyJ…", "transaction_id": "tx_0123456789abcdef", "amount": 3000, "started_at": 1_700_000_000_500i64});
        let payment: Payment = serde_json::from_value(stored).expect("an older record loads");
        let attempt = payment.attempt.clone().expect("the attempt");
        assert_eq!((attempt.key.as_str(), attempt.number, attempt.deadline_at), ("tx_0123456789abcdef", 0, 0));
        assert_eq!(payment.attempt_id(), format!("{}-0", payment.id));
    }

    #[test]
    fn ids_sort_in_creation_order_and_parse() {
        let first = PaymentId::new(1_795_000_000_000, 7);
        let second = PaymentId::new(1_795_000_000_001, 1);
        assert!(first < second);
        assert_eq!(PaymentId::parse(first.as_str()), Some(first.clone()));
        assert_eq!(first.as_str().len(), 20);
        assert_eq!(PaymentId::parse("pay_x"), None);
        assert_eq!(PaymentId::parse(RefundId::new(1, 1).as_str()), None);
    }

    #[test]
    fn timestamps_round_trip() {
        let at = 1_795_342_500_250;
        assert_eq!(rfc3339(at), "2026-11-22T10:15:00.250Z");
        assert_eq!(parse_rfc3339(&rfc3339(at)), Some(at));
        assert_eq!(parse_rfc3339("2026-11-22T12:15:00+02:00"), Some(at - 250));
    }

    #[test]
    fn state_machine() {
        use PaymentStatus::*;
        assert!(AwaitingScan.can_become(Processing));
        assert!(Failed.can_become(Processing));
        assert!(!Succeeded.can_become(Canceled));
        assert!(!Processing.can_become(Canceled));
        assert!(!Canceled.can_become(Processing));
        assert!(!Expired.can_become(AwaitingScan));
        assert!(Failed.accepts_scan() && !Processing.accepts_scan());
        assert!(AwaitingScan.can_become(Failed), "a refused code fails the payment at once");
    }
}
