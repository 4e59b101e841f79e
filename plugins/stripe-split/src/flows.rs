//! The two card flows, as `CardProgress` for the host: a Terminal reader driven from the
//! server, or a Checkout Session whose URL the POS shows as a QR code. Every outcome is
//! decided from a fresh read of the PaymentIntent (or session), never from a lost answer.

use posbridge_plugin_api::{CardProgress, CardState, MethodError, NextAction, PaymentContext, ROption, RString, Settlement};
use serde_json::{json, Value};

use crate::settings::ChargeType;
use crate::wire::{Form, StripeApi};

/// What the host stores between calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    Terminal { payment_intent: String, reader: String },
    Checkout { session: String, url: String },
}

impl Started {
    /// As `plugin_data`.
    pub fn to_data(&self) -> String {
        match self {
            Started::Terminal { payment_intent, reader } => json!({"flow": "terminal", "payment_intent": payment_intent, "reader": reader}),
            Started::Checkout { session, url } => json!({"flow": "checkout", "session": session, "url": url}),
        }
        .to_string()
    }

    /// From `plugin_data`.
    pub fn from_data(data: &str) -> Option<Started> {
        let value: Value = serde_json::from_str(data).ok()?;
        let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
        match text("flow")?.as_str() {
            "terminal" => Some(Started::Terminal { payment_intent: text("payment_intent")?, reader: text("reader")? }),
            "checkout" => Some(Started::Checkout { session: text("session")?, url: text("url")? }),
            _ => None,
        }
    }
}

fn progress(state: CardState, started: &Started) -> CardProgress {
    let next_action = match started {
        Started::Checkout { url, .. } if state == CardState::AWAITING_CARD => {
            ROption::RSome(NextAction { kind: RString::from("show_qr"), url: RString::from(url.as_str()), ..Default::default() })
        }
        _ => ROption::RNone,
    };
    CardProgress { state, next_action, plugin_data: RString::from(started.to_data()), ..Default::default() }
}

fn failed(error: MethodError, started: &Started) -> CardProgress {
    CardProgress { failure: ROption::RSome(error), ..progress(CardState::FAILED, started) }
}

/// A succeeded PaymentIntent as a settlement.
fn succeeded(intent: &Value, started: &Started) -> CardProgress {
    let data = json!({"flow": match started { Started::Terminal { .. } => "terminal", Started::Checkout { .. } => "checkout" },
        "payment_intent": intent["id"], "charge": intent["latest_charge"], "amount": intent["amount_received"]});
    let settlement = Settlement {
        transaction_id: ROption::RSome(RString::from(intent["id"].as_str().unwrap_or_default())),
        captured_amount: intent["amount_received"].as_u64().unwrap_or(0),
        verified: true,
        benefit: ROption::RSome(RString::from("card")),
        plugin_data: RString::from(data.to_string()),
        ..Default::default()
    };
    CardProgress { settlement: ROption::RSome(settlement), ..progress(CardState::SUCCEEDED, started) }
}

/// The idempotency key of one step of one attempt: a retry of the step never repeats it.
/// A card payment has one attempt; its first keeps the payment-id keys used before
/// attempts had ids, so a payment in flight across an upgrade is not started twice.
fn key(payment: &PaymentContext, step: &str) -> String {
    let first_attempt = format!("{}-1", payment.payment_id);
    let owner = if payment.attempt_id == first_attempt.as_str() { payment.payment_id.as_str() } else { payment.attempt_id.as_str() };
    format!("posbridge-{owner}-{step}")
}

fn metadata(form: Form, prefix: &str, payment: &PaymentContext) -> Form {
    let form = form
        .field(format!("{prefix}[posbridge_payment]"), payment.payment_id.as_str())
        .field(format!("{prefix}[register]"), payment.register.as_str());
    match payment.reference.as_ref().into_option() {
        Some(reference) => form.field(format!("{prefix}[reference]"), reference.as_str()),
        None => form,
    }
}

/// Starts the card payment for what is due.
pub fn start(api: &StripeApi, payment: &PaymentContext) -> Result<CardProgress, MethodError> {
    match api.settings().reader.clone() {
        Some(reader) => start_terminal(api, payment, &reader),
        None => start_checkout(api, payment),
    }
}

fn start_terminal(api: &StripeApi, payment: &PaymentContext, reader: &str) -> Result<CardProgress, MethodError> {
    let settings = api.settings();
    let mut form = Form::new()
        .field("amount", payment.amount_due)
        .field("currency", payment.currency.to_ascii_lowercase())
        .field("payment_method_types[]", "card_present")
        .field("capture_method", "automatic")
        .field("description", settings.description.as_str());
    form = metadata(form, "metadata", payment);
    if let (ChargeType::Destination, Some(account)) = (settings.charge_type, &settings.connected_account) {
        form = form.field("transfer_data[destination]", account.as_str());
    }
    let intent = api
        .post("/v1/payment_intents", &form, &key(payment, "payment-intent"), payment.deadline_unix_ms)?
        .map_err(|error| error.to_method_error())?;
    let payment_intent = intent["id"].as_str().unwrap_or_default().to_string();
    let started = Started::Terminal { payment_intent: payment_intent.clone(), reader: reader.to_string() };
    let process = Form::new().field("payment_intent", payment_intent.as_str());
    let path = format!("/v1/terminal/readers/{reader}/process_payment_intent");
    match api.post(&path, &process, &key(payment, "process"), payment.deadline_unix_ms) {
        Ok(Ok(_)) => Ok(progress(CardState::AWAITING_CARD, &started)),
        Ok(Err(error)) => {
            let failure = error.to_method_error();
            let _ = cancel_intent(api, payment, &payment_intent);
            Ok(failed(failure, &started))
        }
        // The reader may have the payment although the answer was lost: the host polls,
        // and the PaymentIntent and reader say what happened. Never guessed.
        Err(error) if error.code.as_str() == "outcome_unknown" => Ok(progress(CardState::AWAITING_CARD, &started)),
        Err(error) => Err(error),
    }
}

fn start_checkout(api: &StripeApi, payment: &PaymentContext) -> Result<CardProgress, MethodError> {
    let settings = api.settings();
    let mut form = Form::new()
        .field("mode", "payment")
        .field("line_items[0][price_data][currency]", payment.currency.to_ascii_lowercase())
        .field("line_items[0][price_data][unit_amount]", payment.amount_due)
        .field("line_items[0][price_data][product_data][name]", settings.description.as_str())
        .field("line_items[0][quantity]", 1)
        .field("success_url", settings.success_url.as_str())
        .field("client_reference_id", payment.payment_id.as_str());
    form = metadata(form, "metadata", payment);
    form = metadata(form, "payment_intent_data[metadata]", payment);
    if let (ChargeType::Destination, Some(account)) = (settings.charge_type, &settings.connected_account) {
        form = form.field("payment_intent_data[transfer_data][destination]", account.as_str());
    }
    let session = api
        .post("/v1/checkout/sessions", &form, &key(payment, "checkout"), payment.deadline_unix_ms)?
        .map_err(|error| error.to_method_error())?;
    let started = Started::Checkout {
        session: session["id"].as_str().unwrap_or_default().to_string(),
        url: session["url"].as_str().unwrap_or_default().to_string(),
    };
    Ok(progress(CardState::AWAITING_CARD, &started))
}

fn read(api: &StripeApi, path: &str, deadline_ms: i64) -> Result<Value, MethodError> {
    api.get(path, deadline_ms)?.map_err(|error| error.to_method_error())
}

/// Where the payment stands, read from Stripe.
pub fn poll(api: &StripeApi, payment: &PaymentContext, started: &Started) -> Result<CardProgress, MethodError> {
    match started {
        Started::Terminal { payment_intent, reader } => {
            let intent = read(api, &format!("/v1/payment_intents/{payment_intent}"), payment.deadline_unix_ms)?;
            match intent["status"].as_str().unwrap_or("") {
                "succeeded" => Ok(succeeded(&intent, started)),
                "canceled" => Ok(failed(MethodError::new("card_canceled", "the card payment was canceled"), started)),
                "processing" | "requires_capture" => Ok(progress(CardState::PROCESSING, started)),
                _ => {
                    let reader_now = read(api, &format!("/v1/terminal/readers/{reader}"), payment.deadline_unix_ms)?;
                    let verdict = from_reader_action(&reader_now["action"], &intent, started);
                    if verdict.state != CardState::FAILED {
                        return Ok(verdict);
                    }
                    // The reader moved on between the two reads (a card presented just
                    // now): the PaymentIntent decides, read again.
                    let again = read(api, &format!("/v1/payment_intents/{payment_intent}"), payment.deadline_unix_ms)?;
                    Ok(if again["status"] == "succeeded" { succeeded(&again, started) } else { verdict })
                }
            }
        }
        Started::Checkout { session, .. } => {
            let session_now = read(api, &format!("/v1/checkout/sessions/{session}"), payment.deadline_unix_ms)?;
            match (session_now["status"].as_str(), session_now["payment_intent"].as_str()) {
                (Some("complete"), Some(intent_id)) => {
                    let intent = read(api, &format!("/v1/payment_intents/{intent_id}"), payment.deadline_unix_ms)?;
                    Ok(if intent["status"] == "succeeded" { succeeded(&intent, started) } else { progress(CardState::PROCESSING, started) })
                }
                (Some("expired"), _) => Ok(failed(MethodError::new("card_canceled", "the payment page expired unpaid"), started)),
                _ => Ok(progress(CardState::AWAITING_CARD, started)),
            }
        }
    }
}

/// The reader's action tells a declined card from one still awaited.
fn from_reader_action(action: &Value, intent: &Value, started: &Started) -> CardProgress {
    let ours = action.pointer("/process_payment_intent/payment_intent") == Some(&intent["id"]);
    match (ours, action["status"].as_str()) {
        (true, Some("in_progress")) => progress(CardState::AWAITING_CARD, started),
        // The card went through after the PaymentIntent was read: read it again next time.
        (true, Some("succeeded")) => progress(CardState::PROCESSING, started),
        (true, Some("failed")) => {
            let decline = intent.pointer("/last_payment_error/decline_code").and_then(Value::as_str).unwrap_or("generic_decline");
            let message = action["failure_message"].as_str().unwrap_or("the card was declined");
            let code = match action["failure_code"].as_str() {
                Some("card_declined") | None => "card_declined",
                Some("terminal_reader_timeout") => "reader_timeout",
                Some(_) => "card_declined",
            };
            failed(MethodError::new(code, format!("{message} ({decline})")), started)
        }
        _ => failed(MethodError::new("reader_timeout", "the reader no longer waits for this payment"), started),
    }
}

fn cancel_intent(api: &StripeApi, payment: &PaymentContext, payment_intent: &str) -> Result<(), MethodError> {
    api.post(
        &format!("/v1/payment_intents/{payment_intent}/cancel"),
        &Form::new(),
        &key(payment, "cancel-intent"),
        payment.deadline_unix_ms,
    )?
    .map(|_| ())
    .map_err(|error| error.to_method_error())
}

/// Abandons the payment (cancel pressed, or the host's deadline): stops the reader or
/// expires the page, then re-reads, so a payment that succeeded meanwhile is reported as
/// succeeded.
pub fn cancel(api: &StripeApi, payment: &PaymentContext, started: &Started) -> Result<CardProgress, MethodError> {
    match started {
        Started::Terminal { payment_intent, reader } => {
            // The reader may have finished meanwhile ("no action"): that is not an error here.
            let _ = api.post(
                &format!("/v1/terminal/readers/{reader}/cancel_action"),
                &Form::new(),
                &key(payment, "cancel-action"),
                payment.deadline_unix_ms,
            )?;
            let now = poll(api, payment, started)?;
            if now.state == CardState::SUCCEEDED {
                return Ok(now);
            }
            let _ = cancel_intent(api, payment, payment_intent);
            Ok(failed(MethodError::new("card_canceled", "the card payment was canceled"), started))
        }
        Started::Checkout { session, .. } => {
            let _ = api.post(
                &format!("/v1/checkout/sessions/{session}/expire"),
                &Form::new(),
                &key(payment, "expire"),
                payment.deadline_unix_ms,
            )?;
            let now = poll(api, payment, started)?;
            if now.state == CardState::SUCCEEDED {
                return Ok(now);
            }
            Ok(failed(MethodError::new("card_canceled", "the payment page was closed unpaid"), started))
        }
    }
}
