//! The card remainder of a split purchase, charged through Stripe: a Terminal reader
//! driven from the server, or a payment page shown to the customer as a QR code.
//!
//! Module map: `settings` (the `[methods.<id>]` keys), `wire` (Stripe's HTTP API: form
//! encoding, headers, idempotency keys, error mapping, retries), `flows` (the reader and
//! the payment page as card progress), refunds and lookups below.

mod budget;
mod flows;
mod settings;
mod watch;
mod wire;

use posbridge_plugin_api::{
    export_plugin, Capabilities, CardProgress, LookupRequest, Manifest, MethodError, MethodInfo, MethodSetup, PaymentContext,
    PaymentMethod, Plugin, ProviderStatus, ROption, RString, RVec, RefundOutcome, RefundRequest, RefundState,
};
use serde_json::Value;

pub use budget::RequestBudget;
pub use flows::{Pace, Readers, Started};
pub use settings::{ChargeType, StripeSettings};
pub use watch::look_every_ms;
use wire::{Form, StripeApi};

/// The plugin as the host loads it.
pub struct StripeSplitPlugin;

/// One configured Stripe card method.
pub struct StripeMethod {
    api: StripeApi,
    readers: Readers,
}

/// What a Stripe card method can do.
pub const CAPABILITIES: Capabilities = Capabilities(
    Capabilities::CARD.0
        | Capabilities::REFUND.0
        | Capabilities::REFUND_WITHOUT_CACHE.0
        | Capabilities::STATUS_LOOKUP.0
        | Capabilities::CANCEL.0,
);

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
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn create(setup: MethodSetup) -> Result<StripeMethod, Vec<MethodError>> {
        let settings = StripeSettings::parse(setup.config_json.as_str())?;
        Ok(StripeMethod { api: StripeApi::new(setup.host, settings), readers: Readers::default() })
    }
}

fn started(plugin_data: &str) -> Result<Started, MethodError> {
    Started::from_data(plugin_data).ok_or_else(|| MethodError::new("provider_error", "the stored card payment data is not understood"))
}

impl PaymentMethod for StripeMethod {
    fn start_card(&self, payment: &PaymentContext) -> Result<CardProgress, MethodError> {
        flows::start(&self.api, &self.readers, payment)
    }

    fn poll_card(&self, payment: &PaymentContext, plugin_data: &str) -> Result<CardProgress, MethodError> {
        flows::poll(&self.api, &self.readers, payment, &started(plugin_data)?)
    }

    fn cancel_card(&self, payment: &PaymentContext, plugin_data: &str) -> Result<CardProgress, MethodError> {
        flows::cancel(&self.api, &self.readers, payment, &started(plugin_data)?)
    }

    fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, MethodError> {
        let from_data = request
            .plugin_data
            .as_ref()
            .into_option()
            .and_then(|data| serde_json::from_str::<Value>(data.as_str()).ok())
            .and_then(|data| data["payment_intent"].as_str().map(str::to_string));
        let payment_intent = from_data
            .or_else(|| request.transaction_id.as_ref().into_option().map(|id| id.to_string()))
            .filter(|id| id.starts_with("pi_"))
            .ok_or_else(|| {
                MethodError::new("transaction_id_required", "a card refund needs the PaymentIntent id (pi_…)").with_field("transaction_id")
            })?;
        let mut form = Form::new()
            .field("payment_intent", payment_intent.as_str())
            .field("amount", request.amount)
            .field("metadata[posbridge_refund]", request.refund_id.as_str());
        if self.api.settings().charge_type == ChargeType::Destination {
            form = form.field("reverse_transfer", "true");
        }
        let refund = self.api.post("/v1/refunds", &form, &format!("posbridge-{}", request.refund_id), request.deadline_unix_ms)?.map_err(
            |error| {
                if error.param.as_deref() == Some("amount") || error.code.as_deref() == Some("charge_already_refunded") {
                    MethodError::new("refund_exceeds_payment", format!("Stripe refused: {}", error.message)).with_field("amount")
                } else {
                    error.to_method_error()
                }
            },
        )?;
        let state = if refund["status"] == "succeeded" { RefundState::SUCCEEDED } else { RefundState::PENDING };
        Ok(RefundOutcome { state, provider_refund_id: refund["id"].as_str().map(RString::from).into(), ..Default::default() })
    }

    fn check_connection(&self, deadline_unix_ms: i64) -> Result<RString, MethodError> {
        let settings = self.api.settings();
        let readers = settings.all_readers();
        let mut seen = Vec::new();
        if readers.is_empty() || settings.reader.is_none() {
            self.api.get("/v1/balance", deadline_unix_ms)?.map_err(|error| error.to_method_error())?;
            seen.push("the account balance".to_string());
        }
        for reader in readers {
            let answer =
                self.api.get(&format!("/v1/terminal/readers/{reader}"), deadline_unix_ms)?.map_err(|error| error.to_method_error())?;
            let status = answer["status"].as_str().map(|status| format!(" ({status})")).unwrap_or_default();
            seen.push(format!("reader {reader}{status}"));
        }
        Ok(RString::from(format!(
            "{} answered for {} with the configured key; requests are kept under {}/s",
            settings.api_url,
            seen.join(", "),
            settings.max_requests_per_second
        )))
    }

    fn lookup(&self, request: &LookupRequest) -> Result<ProviderStatus, MethodError> {
        let Some(data) = request.plugin_data.as_ref().into_option() else {
            // Nothing was recorded of a start: until the attempt's deadline a start may
            // still be on its way to Stripe.
            let settled = self.api.now_ms() > request.attempt_deadline_unix_ms;
            return Ok(if settled { ProviderStatus::not_taken() } else { ProviderStatus::in_progress(None) });
        };
        let progress = flows::poll(&self.api, &self.readers, &request.payment, &started(data.as_str())?)?;
        Ok(match progress.state {
            posbridge_plugin_api::CardState::SUCCEEDED => match progress.settlement {
                ROption::RSome(settlement) => ProviderStatus::taken(settlement),
                ROption::RNone => ProviderStatus::in_progress(Some(progress)),
            },
            posbridge_plugin_api::CardState::FAILED => ProviderStatus::not_taken(),
            _ => ProviderStatus::in_progress(Some(progress)),
        })
    }
}

export_plugin!(StripeSplitPlugin);
