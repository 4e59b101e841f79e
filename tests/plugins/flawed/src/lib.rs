//! Test-only plugin `flawed`: the real Smartum method in three kinds, each with one
//! deliberate flaw of the sort an outside integrator's first plugin has
//! (`kind = "naive_lookup"`, `"unavailable_on_lost_answer"`, `"refund_unimplemented"`).
//! Each passes `posbridge check` and loads without a word; `posbridge plugin test` must
//! fail each, naming the rule it breaks (tests/plugin_conformance.rs).

use posbridge_plugin_api::{
    export_plugin, CartLine, InspectedCode, LookupRequest, Manifest, ManualEntry, MethodError, MethodInfo, MethodSetup, PaymentContext,
    PaymentMethod, Plugin, ProviderStatus, RString, RVec, RefundOutcome, RefundRequest, Settlement,
};
use posbridge_plugin_smartum::{SmartumMethod, SmartumPlugin};

/// The flaw a test plugin has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// `lookup` reads only the settlement data, and answers NOT_TAKEN when it has none
    /// (as after a crash mid-redeem): "not found" taken for "nothing was taken".
    NaiveLookup,
    /// `redeem` reports a lost answer as `provider_unavailable`: the cashier is told
    /// nothing was taken while Smartum took it.
    UnavailableOnLostAnswer,
    /// The manifest promises refunds that are not implemented.
    RefundUnimplemented,
}

/// The Smartum method with a flaw.
pub struct FlawedMethod {
    inner: SmartumMethod,
    flaw: Flaw,
}

impl Flaw {
    const ALL: [(Flaw, &'static str, &'static str); 3] = [
        (Flaw::NaiveLookup, "naive_lookup", "lookup answers NOT_TAKEN when it has no settlement data"),
        (Flaw::UnavailableOnLostAnswer, "unavailable_on_lost_answer", "redeem reports a lost answer as provider_unavailable"),
        (Flaw::RefundUnimplemented, "refund_unimplemented", "promises refunds it does not implement"),
    ];
}

/// The plugin as the host loads it.
pub struct FlawedPlugin;

impl Plugin for FlawedPlugin {
    type Method = FlawedMethod;

    fn manifest() -> Manifest {
        let methods = Flaw::ALL.iter().map(|(_, kind, flaw)| MethodInfo {
            kind: RString::from(*kind),
            capabilities: posbridge_plugin_smartum::CAPABILITIES,
            description: RString::from(format!("Smartum, except that it {flaw}")),
            ..Default::default()
        });
        Manifest {
            id: RString::from("flawed"),
            version: RString::from(env!("CARGO_PKG_VERSION")),
            methods: RVec::from_iter(methods),
            ..Default::default()
        }
    }

    fn create(setup: MethodSetup) -> Result<FlawedMethod, Vec<MethodError>> {
        let flaw = Flaw::ALL.iter().find(|(_, kind, _)| *kind == setup.kind.as_str()).map(|(flaw, _, _)| *flaw);
        let flaw = flaw.ok_or_else(|| vec![MethodError::new("invalid_config", "unknown kind").with_field("kind")])?;
        SmartumPlugin::create(setup).map(|inner| FlawedMethod { inner, flaw })
    }
}

impl PaymentMethod for FlawedMethod {
    fn eligible_amount(&self, lines: &[CartLine]) -> Result<u64, MethodError> {
        self.inner.eligible_amount(lines)
    }

    fn inspect_code(&self, payment: &PaymentContext, code: &str) -> Result<InspectedCode, MethodError> {
        self.inner.inspect_code(payment, code)
    }

    fn redeem(&self, payment: &PaymentContext, code: &str, inspected: &InspectedCode) -> Result<Settlement, MethodError> {
        match self.inner.redeem(payment, code, inspected) {
            Err(error) if self.flaw == Flaw::UnavailableOnLostAnswer && error.is_outcome_unknown() => {
                Err(MethodError::new("provider_unavailable", "Smartum did not answer; try again").retryable())
            }
            other => other,
        }
    }

    fn accept_manual(&self, payment: &PaymentContext, entry: &ManualEntry) -> Result<Settlement, MethodError> {
        self.inner.accept_manual(payment, entry)
    }

    fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, MethodError> {
        match self.flaw {
            Flaw::RefundUnimplemented => Err(MethodError::unsupported("refunds")),
            _ => self.inner.refund(request),
        }
    }

    fn lookup(&self, request: &LookupRequest) -> Result<ProviderStatus, MethodError> {
        match self.flaw {
            Flaw::NaiveLookup if request.plugin_data.is_none() => Ok(ProviderStatus::not_taken()),
            _ => self.inner.lookup(request),
        }
    }

    fn check_connection(&self, deadline_unix_ms: i64) -> Result<RString, MethodError> {
        self.inner.check_connection(deadline_unix_ms)
    }
}

export_plugin!(FlawedPlugin);
