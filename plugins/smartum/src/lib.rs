//! Smartum benefit payments for posbridge: receipts scanned or entered by hand,
//! redeemed once at Smartum, refunded the same day.
//!
//! Module map: `settings` (the `[methods.<id>]` keys), `eligibility` (which cart lines
//! Smartum may pay). The wire contract with Smartum (SMARTUM-API.md) will live in one
//! module, `wire`, so a correction touches one file.

mod eligibility;
mod settings;

use posbridge_plugin_api::{
    export_plugin, Capabilities, CartLine, HostBox, Manifest, MethodError, MethodInfo, MethodSetup, PaymentMethod, Plugin, RString, RVec,
};

pub use settings::{Benefit, SmartumSettings};

/// The plugin as the host loads it.
pub struct SmartumPlugin;

/// One configured Smartum method (one venue and benefit).
pub struct SmartumMethod {
    settings: SmartumSettings,
    #[allow(dead_code)] // used by the online operations
    host: HostBox,
}

/// What a Smartum method can do.
pub const CAPABILITIES: Capabilities = Capabilities(
    Capabilities::SCAN.0
        | Capabilities::MANUAL_ENTRY.0
        | Capabilities::REFUND.0
        | Capabilities::REFUND_WITHOUT_CACHE.0
        | Capabilities::STATUS_LOOKUP.0
        | Capabilities::CANCEL.0,
);

impl Plugin for SmartumPlugin {
    type Method = SmartumMethod;

    fn manifest() -> Manifest {
        Manifest {
            id: RString::from("smartum"),
            version: RString::from(env!("CARGO_PKG_VERSION")),
            methods: RVec::from(vec![MethodInfo {
                kind: RString::from("smartum"),
                capabilities: CAPABILITIES,
                description: RString::from("Smartum benefit payments: SmartumPay receipts scanned or entered by hand"),
            }]),
        }
    }

    fn create(setup: MethodSetup) -> Result<SmartumMethod, Vec<MethodError>> {
        let settings = SmartumSettings::parse(setup.config_json.as_str())?;
        Ok(SmartumMethod { settings, host: setup.host })
    }
}

impl PaymentMethod for SmartumMethod {
    fn eligible_amount(&self, lines: &[CartLine]) -> Result<u64, MethodError> {
        eligibility::eligible_amount(lines, &self.settings.eligible_label)
    }
}

export_plugin!(SmartumPlugin);
