//! The card remainder of a split purchase, charged through Stripe: a Terminal reader
//! driven from the server, or a payment page shown to the customer as a QR code.
//!
//! Module map: `settings` (the `[methods.<id>]` keys).

mod settings;

use posbridge_plugin_api::{
    export_plugin, Capabilities, HostBox, Manifest, MethodError, MethodInfo, MethodSetup, PaymentMethod, Plugin, RString, RVec,
};

pub use settings::StripeSettings;

/// The plugin as the host loads it.
pub struct StripeSplitPlugin;

/// One configured Stripe card method.
pub struct StripeMethod {
    #[allow(dead_code)] // used by the card operations
    settings: StripeSettings,
    #[allow(dead_code)] // used by the card operations
    host: HostBox,
}

/// What a Stripe card method can do.
pub const CAPABILITIES: Capabilities =
    Capabilities(Capabilities::CARD.0 | Capabilities::REFUND.0 | Capabilities::STATUS_LOOKUP.0 | Capabilities::CANCEL.0);

impl Plugin for StripeSplitPlugin {
    type Method = StripeMethod;

    fn manifest() -> Manifest {
        Manifest {
            id: RString::from("stripe-split"),
            version: RString::from(env!("CARGO_PKG_VERSION")),
            methods: RVec::from(vec![MethodInfo {
                kind: RString::from("card"),
                capabilities: CAPABILITIES,
                description: RString::from("Card payments through Stripe: a Terminal reader, or a payment page as a QR code"),
            }]),
        }
    }

    fn create(setup: MethodSetup) -> Result<StripeMethod, Vec<MethodError>> {
        let settings = StripeSettings::parse(setup.config_json.as_str())?;
        Ok(StripeMethod { settings, host: setup.host })
    }
}

impl PaymentMethod for StripeMethod {}

export_plugin!(StripeSplitPlugin);
