//! The two card flows, as `CardProgress` for the host: a Terminal reader driven from the
//! server, or a Checkout Session whose URL the POS shows as a QR code. Every outcome is
//! decided from a fresh read of the PaymentIntent (or session), never from a lost answer.
//!
//! Waiting costs at most one request a poll: while the reader's action for our
//! PaymentIntent is `in_progress` only the reader is looked at (read alone, or found in
//! the list of readers several waiting payments share, `watch.rs`); the PaymentIntent is
//! read when the action changes (the card was presented, declined, or the reader let
//! go). Each answer tells the host when to ask again ([`Pace`]): about once a second per
//! waiting till, four times a second once the card is being processed. (A faster first
//! look would cost a request per payment and catch nothing the start's own answer did
//! not: the reader refuses a payment it cannot show in its answer to
//! `process_payment_intent`.)

use std::collections::HashMap;
use std::sync::Mutex;

use posbridge_plugin_api::{CardProgress, CardState, MethodError, NextAction, PaymentContext, ROption, RString, Settlement};
use serde_json::{json, Value};

use crate::settings::ChargeType;
use crate::watch::{look_every_ms, read_reader, ReaderWatch};
use crate::wire::{Form, StripeApi};

/// When the host should ask again, by what the last look showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Waiting for the customer while `waiting` payments of the method wait on readers:
    /// about one request a second per waiting till (see [`look_every_ms`]).
    Idle { waiting: usize },
    /// The card was presented and the outcome is moments away.
    Active,
}

impl Pace {
    /// Milliseconds until the next poll.
    pub fn poll_after_ms(self) -> u64 {
        match self {
            Pace::Idle { waiting } => look_every_ms(waiting),
            Pace::Active => 250,
        }
    }
}

/// What the card flows share across every payment of a method: which payment holds
/// which reader, and the newest list of readers.
#[derive(Debug, Default)]
pub struct Readers {
    claims: ReaderClaims,
    watch: ReaderWatch,
}

impl Readers {
    /// Payments of the method waiting on a reader now.
    fn waiting(&self, now_ms: i64) -> usize {
        self.claims.active(now_ms)
    }
}

/// The shortest pause asked of the host, however long a look took.
const MIN_POLL_AFTER_MS: u64 = 100;

/// How long a reader stays claimed by a payment no poll has seen since.
const CLAIM_TTL_MS: i64 = 30_000;

/// A claim younger than this is a payment still starting on the reader: refused without
/// asking Stripe (its action may not show yet).
const STARTING_MS: i64 = 5_000;

/// Which payment each reader is working for, as far as this daemon knows: a second card
/// payment on a busy reader is refused at once, before a PaymentIntent is made for it.
#[derive(Debug, Default)]
struct ReaderClaims {
    /// Reader → (payment, claimed until, first claimed at).
    claims: Mutex<HashMap<String, (String, i64, i64)>>,
}

/// Another payment's live claim on a reader.
struct Held {
    holder: String,
    starting: bool,
}

impl ReaderClaims {
    /// Claims `reader` for `payment` until `now_ms` + the claim's lifetime; answers the
    /// other payment holding it, if one does.
    fn claim(&self, reader: &str, payment: &str, now_ms: i64) -> Result<(), Held> {
        let mut claims = self.claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let since = match claims.get(reader) {
            Some((holder, until, since)) if holder != payment && *until > now_ms => {
                return Err(Held { holder: holder.clone(), starting: now_ms - since < STARTING_MS });
            }
            Some((holder, _, since)) if holder == payment => *since,
            _ => now_ms,
        };
        claims.insert(reader.to_string(), (payment.to_string(), now_ms + CLAIM_TTL_MS, since));
        Ok(())
    }

    /// Lets go of `reader` if `payment` holds it.
    fn release(&self, reader: &str, payment: &str) {
        let mut claims = self.claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if claims.get(reader).is_some_and(|(holder, _, _)| holder == payment) {
            claims.remove(reader);
        }
    }

    /// How many readers are claimed at `now_ms`.
    fn active(&self, now_ms: i64) -> usize {
        self.claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).values().filter(|(_, until, _)| *until > now_ms).count()
    }

    /// Forgets a claim that Stripe shows to be over (the reader waits for nothing).
    fn forget(&self, reader: &str) {
        self.claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(reader);
    }
}

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

/// A payment still waiting, with when to look again.
fn waiting(state: CardState, started: &Started, pace: Pace) -> CardProgress {
    let mut progress = progress(state, started);
    progress.set_poll_after_ms(pace.poll_after_ms());
    progress
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

/// Starts the card payment for what is due, on the reader beside the payment's register
/// (or as a payment page where the register has none).
pub fn start(api: &StripeApi, readers: &Readers, payment: &PaymentContext) -> Result<CardProgress, MethodError> {
    let Some(reader) = api.settings().reader_for(payment.register.as_str()).map(str::to_string) else {
        return start_checkout(api, payment);
    };
    claim_reader(api, &readers.claims, payment, &reader)?;
    let started = start_terminal(api, payment, &reader, Pace::Idle { waiting: readers.waiting(api.now_ms()) });
    if !matches!(&started, Ok(progress) if progress.state == CardState::AWAITING_CARD) {
        readers.claims.release(&reader, payment.payment_id.as_str());
    }
    started
}

/// Claims the reader for the payment, or refuses at once with `reader_busy` while it works
/// for another one. A claim older than a start ([`STARTING_MS`]) is checked with the
/// reader first: its payment may have ended unseen.
fn claim_reader(api: &StripeApi, claims: &ReaderClaims, payment: &PaymentContext, reader: &str) -> Result<(), MethodError> {
    let payment_id = payment.payment_id.as_str();
    let Err(held) = claims.claim(reader, payment_id, api.now_ms()) else { return Ok(()) };
    let busy = || MethodError::new("reader_busy", format!("the card reader {reader} is busy with payment {}", held.holder));
    if held.starting {
        return Err(busy());
    }
    let reader_now = api.read(&format!("/v1/terminal/readers/{reader}"), payment.deadline_unix_ms)?;
    if reader_now["action"]["status"] == "in_progress" {
        return Err(busy());
    }
    claims.forget(reader);
    claims.claim(reader, payment_id, api.now_ms()).map_err(|_| busy())
}

fn start_terminal(api: &StripeApi, payment: &PaymentContext, reader: &str, pace: Pace) -> Result<CardProgress, MethodError> {
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
        Ok(Ok(_)) => Ok(waiting(CardState::AWAITING_CARD, &started, pace)),
        Ok(Err(error)) => {
            let failure = error.to_method_error();
            let _ = cancel_intent(api, payment, &payment_intent);
            Ok(failed(failure, &started))
        }
        // The reader may have the payment although the answer was lost: the host polls,
        // and the PaymentIntent and reader say what happened. Never guessed.
        Err(error) if error.code.as_str() == "outcome_unknown" => Ok(waiting(CardState::AWAITING_CARD, &started, pace)),
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
    Ok(waiting(CardState::AWAITING_CARD, &started, Pace::Idle { waiting: 1 }))
}

/// A PaymentIntent as Stripe has it now: what decides every outcome.
fn read_intent(api: &StripeApi, payment_intent: &str, deadline_ms: i64) -> Result<Value, MethodError> {
    api.read(&format!("/v1/payment_intents/{payment_intent}"), deadline_ms)
}

/// Where the payment stands, read from Stripe. A final answer lets go of the reader; a
/// waiting one renews its claim (after a restart, it makes it again).
pub fn poll(api: &StripeApi, readers: &Readers, payment: &PaymentContext, started: &Started) -> Result<CardProgress, MethodError> {
    let began = api.now_ms();
    let mut progress = look(api, readers, payment, started)?;
    // The pace runs from the start of one look to the next, however long this one
    // waited for its turn in the budget.
    if let Some(after) = progress.poll_after_ms() {
        let spent = (api.now_ms() - began).max(0) as u64;
        progress.set_poll_after_ms(after.saturating_sub(spent).max(MIN_POLL_AFTER_MS));
    }
    if let Started::Terminal { reader, .. } = started {
        let payment_id = payment.payment_id.as_str();
        match progress.state {
            CardState::SUCCEEDED | CardState::FAILED => readers.claims.release(reader, payment_id),
            _ => {
                let _ = readers.claims.claim(reader, payment_id, api.now_ms());
            }
        }
    }
    Ok(progress)
}

fn look(api: &StripeApi, readers: &Readers, payment: &PaymentContext, started: &Started) -> Result<CardProgress, MethodError> {
    let deadline = payment.deadline_unix_ms;
    match started {
        Started::Terminal { payment_intent, reader } => {
            let waiting_now = readers.waiting(api.now_ms());
            let still_waiting = || waiting(CardState::AWAITING_CARD, started, Pace::Idle { waiting: waiting_now });
            let mut reader_now = readers.watch.reader(api, reader, waiting_now, deadline)?;
            if waits_for(&reader_now, payment_intent) {
                return Ok(still_waiting());
            }
            if waiting_now >= 2 {
                // A shared list may predate this payment's start: only the reader itself,
                // read now, may say that its action changed.
                reader_now = read_reader(api, reader, deadline)?;
                if waits_for(&reader_now, payment_intent) {
                    return Ok(still_waiting());
                }
            }
            let action = &reader_now["action"];
            let ours = action.pointer("/process_payment_intent/payment_intent").and_then(Value::as_str) == Some(payment_intent.as_str());
            // The action changed (the card was presented or declined, or the reader let
            // go): the PaymentIntent, read after the reader, decides.
            let intent = read_intent(api, payment_intent, deadline)?;
            Ok(match intent["status"].as_str().unwrap_or("") {
                "succeeded" => succeeded(&intent, started),
                "canceled" => failed(MethodError::new("card_canceled", "the card payment was canceled"), started),
                "processing" | "requires_capture" => waiting(CardState::PROCESSING, started, Pace::Active),
                _ => match from_reader_action(ours, action, &intent) {
                    Verdict::Processing => waiting(CardState::PROCESSING, started, Pace::Active),
                    Verdict::Failed(failure) => return fail_for_good(api, payment, payment_intent, started, failure),
                },
            })
        }
        Started::Checkout { session, .. } => {
            let session_now = api.read_routine(&format!("/v1/checkout/sessions/{session}"), deadline)?;
            match (session_now["status"].as_str(), session_now["payment_intent"].as_str()) {
                (Some("complete"), Some(intent_id)) => {
                    let intent = read_intent(api, intent_id, deadline)?;
                    Ok(if intent["status"] == "succeeded" {
                        succeeded(&intent, started)
                    } else {
                        waiting(CardState::PROCESSING, started, Pace::Active)
                    })
                }
                (Some("expired"), _) => Ok(failed(MethodError::new("card_canceled", "the payment page expired unpaid"), started)),
                _ => Ok(waiting(CardState::AWAITING_CARD, started, Pace::Idle { waiting: 1 })),
            }
        }
    }
}

/// Whether the reader's action is still waiting for the customer to pay `payment_intent`.
fn waits_for(reader: &Value, payment_intent: &str) -> bool {
    let action = &reader["action"];
    action["status"] == "in_progress"
        && action.pointer("/process_payment_intent/payment_intent").and_then(Value::as_str) == Some(payment_intent)
}

/// What the reader's action says of a PaymentIntent that has not succeeded.
enum Verdict {
    /// Still to be decided (the card went through after the reader was read).
    Processing,
    /// Declined, or the reader no longer offers the payment: failed, once the
    /// PaymentIntent can no longer be paid ([`fail_for_good`]).
    Failed(MethodError),
}

/// A declined card, a card still being processed, or a reader that no longer waits.
fn from_reader_action(ours: bool, action: &Value, intent: &Value) -> Verdict {
    match (ours, action["status"].as_str()) {
        // The card went through after the reader was read: read the PaymentIntent soon.
        (true, Some("succeeded")) => Verdict::Processing,
        (true, Some("failed")) => {
            let decline = intent.pointer("/last_payment_error/decline_code").and_then(Value::as_str).unwrap_or("generic_decline");
            let message = action["failure_message"].as_str().unwrap_or("the card was declined");
            let code = match action["failure_code"].as_str() {
                Some("card_declined") | None => "card_declined",
                Some("terminal_reader_timeout") => "reader_timeout",
                Some(_) => "card_declined",
            };
            Verdict::Failed(MethodError::new(code, format!("{message} ({decline})")))
        }
        _ => Verdict::Failed(MethodError::new("reader_timeout", "the reader no longer waits for this payment")),
    }
}

/// Ends a reader payment as failed only once its PaymentIntent can no longer be paid:
/// canceled here, or already canceled. When Stripe refuses the cancel, the PaymentIntent
/// decides: paid is `succeeded`, anything else is still being decided (asked again).
fn fail_for_good(
    api: &StripeApi,
    payment: &PaymentContext,
    payment_intent: &str,
    started: &Started,
    failure: MethodError,
) -> Result<CardProgress, MethodError> {
    if cancel_intent(api, payment, payment_intent).is_ok() {
        return Ok(failed(failure, started));
    }
    let intent = read_intent(api, payment_intent, payment.deadline_unix_ms)?;
    Ok(match intent["status"].as_str() {
        Some("succeeded") => succeeded(&intent, started),
        Some("canceled") => failed(failure, started),
        _ => waiting(CardState::PROCESSING, started, Pace::Active),
    })
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
pub fn cancel(api: &StripeApi, readers: &Readers, payment: &PaymentContext, started: &Started) -> Result<CardProgress, MethodError> {
    match started {
        Started::Terminal { payment_intent, reader } => {
            // The reader may have finished meanwhile ("no action"): that is not an error here.
            let _ = api.post(
                &format!("/v1/terminal/readers/{reader}/cancel_action"),
                &Form::new(),
                &key(payment, "cancel-action"),
                payment.deadline_unix_ms,
            )?;
            // The PaymentIntent itself decides, never a look at the reader: a card tapped
            // just before the cancel is kept.
            let canceled = MethodError::new("card_canceled", "the card payment was canceled");
            let progress = fail_for_good(api, payment, payment_intent, started, canceled)?;
            if matches!(progress.state, CardState::SUCCEEDED | CardState::FAILED) {
                readers.claims.release(reader, payment.payment_id.as_str());
            }
            Ok(progress)
        }
        Started::Checkout { session, .. } => {
            let _ = api.post(
                &format!("/v1/checkout/sessions/{session}/expire"),
                &Form::new(),
                &key(payment, "expire"),
                payment.deadline_unix_ms,
            )?;
            let now = poll(api, readers, payment, started)?;
            Ok(match now.state {
                CardState::SUCCEEDED | CardState::PROCESSING => now,
                // Expired: nothing can be paid on it any more.
                CardState::FAILED => failed(MethodError::new("card_canceled", "the payment page was closed unpaid"), started),
                // Still open (the expiry did not take): asked again.
                _ => now,
            })
        }
    }
}
