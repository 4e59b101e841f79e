//! A posbridge payment-method plugin: vouchers (`V-…`) scanned at the till and redeemed
//! once at the provider; refunds; lookups after a crash.
//!
//! Made from posbridge's plugin template. Module map: `settings` (the config keys),
//! `wire` (the provider's HTTP API), `fake` (a fake provider for tests, behind the
//! `fake` feature). Read `docs/writing-a-plugin.md` and `docs/plugin-failures.md` in the
//! posbridge repository before changing how failures are reported.

mod settings;
mod wire;

#[cfg(feature = "fake")]
pub mod fake;

use posbridge_plugin_api::{
    export_plugin, Capabilities, InspectedCode, LookupRequest, Manifest, MethodError, MethodInfo, MethodSetup, PaymentContext,
    PaymentMethod, Plugin, ProviderStatus, ROption, RString, RVec, RefundOutcome, RefundRequest, RefundState, Settlement,
};
use serde_json::{json, Value};

pub use settings::VoucherSettings;
use wire::{error_code, Answer, VoucherApi};

/// How long after an attempt's deadline the provider may still commit a request it
/// received just before; until then "not found" is not yet "not taken".
const COMMIT_MARGIN_MS: i64 = 2_000;

/// What this method does. Promise only what is implemented: `posbridge plugin test`
/// fails a capability that answers `unsupported`.
pub const CAPABILITIES: Capabilities = Capabilities(Capabilities::SCAN.0 | Capabilities::REFUND.0 | Capabilities::STATUS_LOOKUP.0);

/// The plugin as posbridge loads it.
pub struct VoucherPlugin;

/// One configured method.
pub struct VoucherMethod {
    api: VoucherApi,
}

impl Plugin for VoucherPlugin {
    type Method = VoucherMethod;

    fn manifest() -> Manifest {
        Manifest {
            id: RString::from("{{project-name}}"),
            version: RString::from(env!("CARGO_PKG_VERSION")),
            methods: RVec::from(vec![MethodInfo {
                kind: RString::from("{{project-name}}"),
                capabilities: CAPABILITIES,
                description: RString::from("Vouchers scanned at the till, redeemed once at the provider"),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn create(setup: MethodSetup) -> Result<VoucherMethod, Vec<MethodError>> {
        let settings = VoucherSettings::parse(setup.config_json.as_str())?;
        Ok(VoucherMethod { api: VoucherApi::new(setup.host, settings) })
    }
}

/// A redemption as the provider answers it, as the settlement posbridge stores.
fn settlement(answer: &Value) -> Result<Settlement, MethodError> {
    let id = answer["redemption_id"].as_str().ok_or_else(|| MethodError::new("provider_error", "the redemption has no id"))?;
    Ok(Settlement {
        transaction_id: ROption::RSome(RString::from(id)),
        captured_amount: answer["amount"].as_u64().unwrap_or(0),
        verified: true,
        benefit: ROption::RSome(RString::from("voucher")),
        plugin_data: RString::from(json!({"redemption_id": id}).to_string()),
        ..Default::default()
    })
}

impl PaymentMethod for VoucherMethod {
    fn inspect_code(&self, _payment: &PaymentContext, code: &str) -> Result<InspectedCode, MethodError> {
        let code = code.trim();
        let well_formed = code.strip_prefix("V-").is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()));
        if !well_formed {
            return Err(MethodError::new("invalid_code", "a voucher code is V- followed by letters and digits"));
        }
        // The voucher number is what makes the code single-use; its value is known only
        // online, and there is no provider transaction before redemption.
        Ok(InspectedCode { receipt_key: RString::from(code), ..Default::default() })
    }

    fn redeem(&self, payment: &PaymentContext, code: &str, _inspected: &InspectedCode) -> Result<Settlement, MethodError> {
        let body = json!({
            "max_amount": payment.amount_due.min(payment.eligible_amount),
            "currency": payment.currency.as_str(),
            "reference": payment.attempt_id.as_str(),
        });
        let path = format!("/vouchers/{}/redeem", code.trim());
        let answer = self.api.post(&path, &body, payment.attempt_id.as_str(), payment.deadline_unix_ms)?;
        match (answer.status, error_code(&answer)) {
            // An answer that says it worked but cannot be read: the money may be taken.
            (200 | 201, _) => settlement(&answer.body).map_err(|error| MethodError::outcome_unknown(error.message.to_string())),
            (404, _) => Err(MethodError::new("invalid_code", "the provider does not know this voucher")),
            (409, _) => Err(MethodError::new("receipt_already_used", "this voucher was already redeemed")),
            (422, "amount_exceeds_due") => Err(MethodError::new("amount_exceeds_due", "the voucher is worth more than may be paid with it")),
            (status, code) => Err(unexpected(status, code)),
        }
    }

    fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, MethodError> {
        let from_data = request.plugin_data.as_ref().into_option().and_then(|data| {
            serde_json::from_str::<Value>(data.as_str()).ok().and_then(|data| data["redemption_id"].as_str().map(str::to_string))
        });
        let Some(redemption) = from_data.or_else(|| request.transaction_id.as_ref().into_option().map(|id| id.to_string())) else {
            return Err(MethodError::new("transaction_id_required", "give the redemption id").with_field("transaction_id"));
        };
        let body = json!({"amount": request.amount});
        let path = format!("/redemptions/{redemption}/refunds");
        let answer = self.api.post(&path, &body, request.refund_id.as_str(), request.deadline_unix_ms)?;
        match (answer.status, error_code(&answer)) {
            (200 | 201, _) => Ok(RefundOutcome {
                state: RefundState::SUCCEEDED,
                provider_refund_id: answer.body["refund_id"].as_str().map(RString::from).into(),
                ..Default::default()
            }),
            (404, _) => Err(MethodError::new("invalid_code", "the provider does not know this redemption").with_field("transaction_id")),
            (422, "amount_exceeds_refundable") => {
                Err(MethodError::new("refund_exceeds_payment", "more than is left to refund").with_field("amount"))
            }
            (status, code) => Err(unexpected(status, code)),
        }
    }

    fn lookup(&self, request: &LookupRequest) -> Result<ProviderStatus, MethodError> {
        let path = format!("/redemptions?reference={}", request.payment.attempt_id);
        let answer: Answer = self.api.get(&path, request.payment.deadline_unix_ms)?;
        if answer.status != 200 {
            return Err(unexpected(answer.status, error_code(&answer)));
        }
        match answer.body["redemptions"].as_array().and_then(|found| found.first()) {
            Some(redemption) => Ok(ProviderStatus::taken(settlement(redemption)?)),
            // Not found: final only once nothing of the attempt can still land.
            None if self.api.now_ms() > request.attempt_deadline_unix_ms + COMMIT_MARGIN_MS => Ok(ProviderStatus::not_taken()),
            None => Ok(ProviderStatus::in_progress(None)),
        }
    }

    fn check_connection(&self, deadline_unix_ms: i64) -> Result<RString, MethodError> {
        let answer = self.api.get("/health", deadline_unix_ms)?;
        match answer.status {
            200 => Ok(RString::from("the provider accepted the API key")),
            401 | 403 => Err(MethodError::new("invalid_config", "the provider refused the API key").with_field("api_key")),
            status => Err(unexpected(status, error_code(&answer))),
        }
    }
}

fn unexpected(status: u16, code: &str) -> MethodError {
    MethodError::new("provider_error", format!("the provider answered {status} ({code})"))
}

export_plugin!(VoucherPlugin);
