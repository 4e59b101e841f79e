//! A payment method built against posbridge-plugin-api 1.0.0, needing no provider:
//! codes `COMPAT-<cents>` pay that amount once (the receipt key is the code), refunds
//! always succeed, and a lookup finds what a redeem took. It exercises every value type
//! crossing the boundary in both directions, so a layout change anywhere shows.

use posbridge_plugin_api::{
    export_plugin, Capabilities, InspectedCode, LookupRequest, Manifest, MethodError, MethodInfo, MethodSetup, PaymentContext,
    PaymentMethod, Plugin, ProviderStatus, ROption, RString, RVec, RefundOutcome, RefundRequest, RefundState, RString as Text, Settlement,
};

pub struct CompatPlugin;
pub struct CompatMethod;

impl Plugin for CompatPlugin {
    type Method = CompatMethod;

    fn manifest() -> Manifest {
        Manifest {
            id: RString::from("compat"),
            version: RString::from(env!("CARGO_PKG_VERSION")),
            methods: RVec::from(vec![MethodInfo {
                kind: RString::from("compat"),
                capabilities: Capabilities::SCAN | Capabilities::REFUND | Capabilities::STATUS_LOOKUP,
                description: RString::from("codes COMPAT-<cents>, built against plugin-api 1.0.0"),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn create(_setup: MethodSetup) -> Result<CompatMethod, Vec<MethodError>> {
        Ok(CompatMethod)
    }
}

fn settlement(inspected: &InspectedCode, attempt_id: &str) -> Settlement {
    Settlement {
        transaction_id: ROption::RSome(Text::from(format!("compat-{}", inspected.receipt_key))),
        captured_amount: inspected.amount.unwrap_or(0),
        verified: true,
        benefit: ROption::RSome(RString::from("compat")),
        plugin_data: RString::from(format!("{{\"attempt\":\"{attempt_id}\"}}")),
        ..Default::default()
    }
}

impl PaymentMethod for CompatMethod {
    fn inspect_code(&self, payment: &PaymentContext, code: &str) -> Result<InspectedCode, MethodError> {
        let amount = code.strip_prefix("COMPAT-").and_then(|cents| cents.parse::<u64>().ok());
        let amount = amount.ok_or_else(|| MethodError::new("invalid_code", "a compat code is COMPAT-<cents>"))?;
        if amount > payment.amount_due {
            return Err(MethodError::new("amount_exceeds_due", "the code is for more than is due"));
        }
        Ok(InspectedCode { receipt_key: RString::from(code), amount: ROption::RSome(amount), signature_verified: true, ..Default::default() })
    }

    fn redeem(&self, payment: &PaymentContext, _code: &str, inspected: &InspectedCode) -> Result<Settlement, MethodError> {
        Ok(settlement(inspected, payment.attempt_id.as_str()))
    }

    fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, MethodError> {
        Ok(RefundOutcome {
            state: RefundState::SUCCEEDED,
            provider_refund_id: ROption::RSome(RString::from(format!("compat-{}", request.refund_id))),
            ..Default::default()
        })
    }

    fn lookup(&self, request: &LookupRequest) -> Result<ProviderStatus, MethodError> {
        Ok(match request.inspected.as_ref().into_option() {
            Some(inspected) => ProviderStatus::taken(settlement(inspected, request.payment.attempt_id.as_str())),
            None => ProviderStatus::not_taken(),
        })
    }
}

export_plugin!(CompatPlugin);
