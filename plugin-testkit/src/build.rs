//! Values a host hands a plugin, with the defaults posbridge uses, for tests to adjust
//! (`PaymentContext { amount_due: 500, ..build::payment(&host, 1000) }`).

use posbridge_plugin_api::{
    CartLine, Extensions, InspectedCode, LookupRequest, MethodSetup, PaymentContext, ROption, RString, RefundRequest, Settlement,
};

use crate::host::FakeHost;

/// How long posbridge gives a call by default (a method's `timeout` of 10 s, less 1 s).
pub const CALL_BUDGET_MS: i64 = 9_000;

/// The setup of method `method_id` (kind `kind`) from its settings as JSON, on `host`.
pub fn setup(method_id: &str, kind: &str, config_json: &str, host: &FakeHost) -> MethodSetup {
    MethodSetup {
        method_id: RString::from(method_id),
        kind: RString::from(kind),
        config_json: RString::from(config_json),
        host: host.boxed(),
        extensions: Extensions::default(),
    }
}

/// Attempt `attempt` of payment `payment_id`, as posbridge names it.
pub fn attempt_id(payment_id: &str, attempt: u32) -> String {
    format!("{payment_id}-{attempt}")
}

/// The first attempt at a fresh payment of `amount` euro cents at `till-1`, all of it
/// eligible, with the default deadline from the host's clock. Each call names a new
/// payment.
pub fn payment(host: &FakeHost, amount: u64) -> PaymentContext {
    let payment_id = format!("pay_test{:012}", next_serial());
    PaymentContext {
        attempt_id: RString::from(attempt_id(&payment_id, 1)),
        payment_id: RString::from(payment_id),
        register: RString::from("till-1"),
        reference: ROption::RNone,
        currency: RString::from("EUR"),
        amount_due: amount,
        eligible_amount: amount,
        deadline_unix_ms: host.clock().now_unix_ms() + CALL_BUDGET_MS,
        extensions: Extensions::default(),
    }
}

/// The same payment's next attempt (after a failed one), with a fresh deadline.
pub fn next_attempt(host: &FakeHost, payment: &PaymentContext) -> PaymentContext {
    let number = payment.attempt_id.rsplit('-').next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(1);
    PaymentContext {
        attempt_id: RString::from(attempt_id(&payment.payment_id, number + 1)),
        deadline_unix_ms: host.clock().now_unix_ms() + CALL_BUDGET_MS,
        ..payment.clone()
    }
}

/// The same context with a fresh deadline (a later call of the same attempt).
pub fn again(host: &FakeHost, payment: &PaymentContext) -> PaymentContext {
    PaymentContext { deadline_unix_ms: host.clock().now_unix_ms() + CALL_BUDGET_MS, ..payment.clone() }
}

/// A refund of `amount` of a settled payment, with a fresh refund id.
pub fn refund(host: &FakeHost, payment: &PaymentContext, settlement: &Settlement, amount: u64) -> RefundRequest {
    RefundRequest {
        refund_id: RString::from(format!("re_test{:012}", next_serial())),
        payment_id: ROption::RSome(payment.payment_id.clone()),
        transaction_id: settlement.transaction_id.clone(),
        amount,
        currency: payment.currency.clone(),
        captured_at_unix_ms: ROption::RSome(host.clock().now_unix_ms()),
        plugin_data: ROption::RSome(settlement.plugin_data.clone()),
        deadline_unix_ms: host.clock().now_unix_ms() + CALL_BUDGET_MS,
        extensions: Extensions::default(),
    }
}

/// The lookup posbridge makes after a crash during a scanned code's attempt: the
/// write-ahead record, no settlement data, the attempt's deadline.
pub fn lookup(host: &FakeHost, payment: &PaymentContext, inspected: &InspectedCode, attempt_deadline_unix_ms: i64) -> LookupRequest {
    LookupRequest {
        payment: again(host, payment),
        inspected: ROption::RSome(inspected.clone()),
        plugin_data: ROption::RNone,
        attempt_deadline_unix_ms,
        extensions: Extensions::default(),
    }
}

/// A cart line.
pub fn cart_line(sku: &str, amount: u64, labels: &[&str]) -> CartLine {
    CartLine {
        sku: RString::from(sku),
        name: RString::from(sku),
        amount,
        labels: labels.iter().map(|label| RString::from(*label)).collect(),
        extensions: Extensions::default(),
    }
}

/// A process-wide serial plus the start time, so ids differ between runs against the
/// same fake provider.
fn next_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static START: OnceLock<u64> = OnceLock::new();
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64 % 1_000_000_000)
    });
    start * 1000 + SERIAL.fetch_add(1, Ordering::SeqCst)
}
