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

use flows::Readers;
pub use flows::Started;
pub use settings::{ChargeType, StripeSettings};
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
            self.api.read("/v1/balance", deadline_unix_ms)?;
            seen.push("the account balance".to_string());
        }
        for reader in readers {
            let answer = self.api.read(&format!("/v1/terminal/readers/{reader}"), deadline_unix_ms)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use posbridge_plugin_api::{CardState, Header, HttpResponse};
    use posbridge_plugin_testkit::{build, FakeHost};
    use serde_json::json;

    fn answer(body: Value) -> HttpResponse {
        let headers = RVec::from(vec![Header::new("content-type", "application/json")]);
        HttpResponse { status: 200, headers, body: RVec::from(body.to_string().into_bytes()), ..Default::default() }
    }

    /// The request's path on the test host's Stripe.
    fn path(request: &posbridge_plugin_api::HttpRequest) -> &str {
        request.url.split_once("127.0.0.1:9").map_or("", |(_, path)| path)
    }

    /// A card method with `settings` (beside the test host's URL and key) on `host`.
    fn method(settings: &str, host: &FakeHost) -> StripeMethod {
        let settings = format!(r#"{{"api_url": "http://127.0.0.1:9", "secret_key": "sk_test_1", {settings}}}"#);
        StripeSplitPlugin::create(build::setup("card", "card", &settings, host)).unwrap_or_else(|problems| panic!("{problems:?}"))
    }

    fn waiting_on(reader: &str, intent: &str) -> Value {
        json!({"id": reader, "object": "terminal.reader", "action": {"type": "process_payment_intent", "status": "in_progress",
            "process_payment_intent": {"payment_intent": intent}}})
    }

    /// A card tapped just before the cancel: Stripe refuses to cancel its PaymentIntent,
    /// which has succeeded; the payment is kept, whatever the reader shows.
    #[test]
    fn a_cancel_keeps_a_payment_the_paymentintent_says_succeeded() {
        let host = FakeHost::new(|request| {
            Ok(match path(request) {
                "/v1/payment_intents/pi_One/cancel" => HttpResponse {
                    status: 400,
                    body: RVec::from(
                        json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state", "message": "succeeded"}})
                            .to_string()
                            .into_bytes(),
                    ),
                    ..answer(json!({}))
                },
                "/v1/payment_intents/pi_One" => answer(
                    json!({"id": "pi_One", "object": "payment_intent", "status": "succeeded", "amount_received": 1200, "latest_charge": "ch_1"}),
                ),
                // The reader still shows the action: only the PaymentIntent is believed.
                _ => answer(waiting_on("tmr_One", "pi_One")),
            })
        });
        let method = method(r#""reader": "tmr_One""#, &host);
        let data = Started::Terminal { payment_intent: "pi_One".into(), reader: "tmr_One".into() }.to_data();
        let kept = method.cancel_card(&build::payment(&host, 1200), &data).unwrap_or_else(|error| panic!("{error:?}"));
        assert_eq!(kept.state, CardState::SUCCEEDED, "{kept:?}");
        assert_eq!(kept.settlement.into_option().map(|settlement| settlement.captured_amount), Some(1200));
    }

    /// A list of readers fetched just before a payment started shows its reader as it
    /// was (no action): that must not end the payment, which the reader still shows.
    #[test]
    fn a_shared_list_older_than_the_payment_never_ends_it() {
        let host = FakeHost::new(|request| {
            Ok(answer(match path(request) {
                "/v1/terminal/readers?limit=100" => json!({"object": "list", "has_more": false, "data": [
                    {"id": "tmr_One", "object": "terminal.reader", "action": null},
                    waiting_on("tmr_Two", "pi_Two")]}),
                "/v1/terminal/readers/tmr_One" => waiting_on("tmr_One", "pi_One"),
                "/v1/terminal/readers/tmr_Two" => waiting_on("tmr_Two", "pi_Two"),
                _ => json!({"id": "pi_One", "object": "payment_intent", "status": "requires_payment_method"}),
            }))
        });
        let method = method(r#""readers": {"till-1": "tmr_One", "till-2": "tmr_Two"}"#, &host);
        let one = build::payment(&host, 1200);
        let two = PaymentContext { register: "till-2".into(), ..build::payment(&host, 3400) };
        let data = |intent: &str, reader: &str| Started::Terminal { payment_intent: intent.into(), reader: reader.into() }.to_data();
        // Both are followed (each claims its reader), then till 1 looks through the list.
        for _ in 0..2 {
            assert_eq!(method.poll_card(&two, &data("pi_Two", "tmr_Two")).map(|progress| progress.state), Ok(CardState::AWAITING_CARD));
            let progress = method.poll_card(&one, &data("pi_One", "tmr_One")).unwrap_or_else(|error| panic!("{error:?}"));
            assert_eq!(progress.state, CardState::AWAITING_CARD, "{progress:?}");
        }
        assert!(host.requests().iter().any(|request| request.path() == "/v1/terminal/readers?limit=100"), "the list was used");
        assert!(!host.requests().iter().any(|request| request.path().starts_with("/v1/payment_intents")), "nothing changed");
    }
}
