//! A local Stripe: the parts of Stripe's published API posbridge uses, as strict as
//! Stripe is: form-encoded bodies only (JSON refused), unknown parameters refused with
//! `parameter_unknown`, Stripe's error object, idempotency keys (same key and parameters →
//! the same response; other parameters → `idempotency_error`; concurrent → `409`),
//! PaymentIntents, Terminal readers with the `present_payment_method` test helper,
//! refunds, Checkout Sessions, and Stripe's rate limits (25 requests/s per account and
//! per endpoint, as in test mode: `429` with `Stripe-Rate-Limited-Reason`). Faults for
//! tests: an unavailable API, a lost `process_payment_intent` answer.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use p521::elliptic_curve::rand_core::{OsRng, RngCore};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::form;
use crate::payments::model::now_ms;

/// Card numbers the `present_payment_method` helper declines, with their decline codes
/// (Stripe's test cards).
const DECLINES: [(&str, &str); 3] =
    [("4000000000000002", "generic_decline"), ("4000000000009995", "insufficient_funds"), ("4000000000000069", "expired_card")];

/// Who the fake accepts.
#[derive(Clone)]
pub struct StripeOptions {
    pub secret_key: String,
    /// Connected accounts that may be named in `Stripe-Account` or as a destination.
    pub connected_accounts: Vec<String>,
    /// Terminal readers that exist.
    pub readers: Vec<String>,
    /// Requests per second the account, and each endpoint, may send (Stripe's test mode:
    /// 25); more answer `429`. `0`: no limit.
    pub rate_limit: u32,
}

impl Default for StripeOptions {
    fn default() -> Self {
        StripeOptions {
            secret_key: "sk_test_sandbox".into(),
            connected_accounts: vec!["acct_1SandboxMerchant".into()],
            readers: vec!["tmr_SandboxReader1".into()],
            rate_limit: 25,
        }
    }
}

/// Faults a test can switch on.
#[derive(Debug, Clone, Default)]
pub struct StripeFaults {
    /// Every request answers `503`.
    pub unavailable: bool,
    /// `process_payment_intent` takes effect, then its answer never comes.
    pub lose_process_answer: bool,
    /// Requests with an idempotency key wait, in progress, until this is switched off.
    pub hold_in_flight: bool,
}

#[derive(Default)]
struct Ledger {
    payment_intents: BTreeMap<String, Value>,
    readers: BTreeMap<String, Value>,
    refunds: BTreeMap<String, Value>,
    sessions: BTreeMap<String, Value>,
    idempotency: HashMap<String, (String, u16, Value)>,
    in_flight: HashSet<String>,
    faults: StripeFaults,
    /// Every request: (method, path) — for counting what a payment cost.
    requests: Vec<(String, String)>,
    /// `cancel_action` calls per reader.
    cancel_actions: u64,
    /// Time spent answering requests (for benchmarks: what the fake itself costs).
    serving: std::time::Duration,
    /// Requests accepted within the last second: (when, endpoint).
    recent: VecDeque<(std::time::Instant, String)>,
    /// When each request came (for the busiest second).
    arrivals: Vec<std::time::Instant>,
    /// Requests answered `429`.
    rate_limited: u64,
}

impl Ledger {
    /// Admits a request under the rate limits, or names the limit it would break
    /// (`Stripe-Rate-Limited-Reason`).
    fn admit(&mut self, limit: u32, endpoint: &str) -> Result<(), &'static str> {
        let now = std::time::Instant::now();
        self.arrivals.push(now);
        while self.recent.front().is_some_and(|(at, _)| now.duration_since(*at) >= std::time::Duration::from_secs(1)) {
            self.recent.pop_front();
        }
        let limit = limit as usize;
        if limit > 0 && self.recent.len() >= limit {
            self.rate_limited += 1;
            return Err("global-rate");
        }
        if limit > 0 && self.recent.iter().filter(|(_, seen)| seen == endpoint).count() >= limit {
            self.rate_limited += 1;
            return Err("endpoint-rate");
        }
        self.recent.push_back((now, endpoint.to_string()));
        Ok(())
    }
}

/// An API operation as Stripe's rate limits count it: the method and the path with ids
/// replaced (`GET /v1/payment_intents/{id}`).
pub fn endpoint_of(method: &str, path: &str) -> String {
    let generic: Vec<&str> = path.split('/').map(|part| if is_object_id(part) { "{id}" } else { part }).collect();
    format!("{method} {}", generic.join("/"))
}

fn is_object_id(part: &str) -> bool {
    ["pi_", "tmr_", "cs_", "re_", "ch_"].iter().any(|prefix| part.starts_with(prefix))
}

struct Shared {
    options: StripeOptions,
    ledger: Mutex<Ledger>,
    changed: Condvar,
    released: tokio::sync::Notify,
    base_url: Mutex<String>,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running fake Stripe on a loopback port. Stops when dropped.
pub struct StripeSandbox {
    shared: Arc<Shared>,
    pub address: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

fn id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", bytes.iter().map(|byte| ALPHABET[(*byte as usize) % ALPHABET.len()] as char).collect::<String>())
}

/// A Stripe error answer.
fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str, param: Option<&str>) -> (StatusCode, Value) {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    (status, json!({"error": error}))
}

fn invalid(message: &str, param: Option<&str>) -> (StatusCode, Value) {
    stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", None, message, param)
}

fn unknown_parameter(param: &str) -> (StatusCode, Value) {
    stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_unknown"),
        &format!("Received unknown parameter: {param}"),
        Some(param),
    )
}

fn missing(param: &str) -> (StatusCode, Value) {
    stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_missing"),
        &format!("Missing required param: {param}."),
        Some(param),
    )
}

fn not_found(kind: &str, id: &str) -> (StatusCode, Value) {
    stripe_error(StatusCode::NOT_FOUND, "invalid_request_error", Some("resource_missing"), &format!("No such {kind}: '{id}'"), Some("id"))
}

type Answer = (StatusCode, Value);

/// Parameters of one request, checked against what the endpoint accepts.
struct Params(Map<String, Value>);

impl Params {
    fn check_known(&self, allowed: &[&str]) -> Result<(), Answer> {
        match self.0.keys().find(|key| !allowed.contains(&key.as_str())) {
            Some(key) => Err(unknown_parameter(key)),
            None => Ok(()),
        }
    }

    fn text(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(Value::as_str).map(str::to_string)
    }

    fn required_text(&self, key: &str) -> Result<String, Answer> {
        self.text(key).ok_or_else(|| missing(key))
    }

    fn integer(&self, key: &str) -> Result<Option<u64>, Answer> {
        match self.text(key) {
            None => Ok(None),
            Some(text) => text.parse::<u64>().map(Some).map_err(|_| {
                stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("parameter_invalid_integer"),
                    &format!("Invalid integer: {text}"),
                    Some(key),
                )
            }),
        }
    }

    fn metadata(&self) -> Result<Value, Answer> {
        match self.0.get("metadata") {
            None => Ok(json!({})),
            Some(Value::Object(map)) if map.values().all(Value::is_string) => Ok(Value::Object(map.clone())),
            Some(_) => Err(invalid("Invalid hash", Some("metadata"))),
        }
    }
}

impl StripeSandbox {
    /// Starts the fake on `listen` (port 0 picks one) in a thread of its own.
    pub fn start(listen: SocketAddr, options: StripeOptions) -> std::io::Result<StripeSandbox> {
        let mut ledger = Ledger::default();
        for reader in &options.readers {
            ledger.readers.insert(reader.clone(), json!({"id": reader, "object": "terminal.reader", "status": "online", "device_type": "simulated_wisepos_e", "action": null}));
        }
        let shared = Arc::new(Shared {
            options,
            ledger: Mutex::new(ledger),
            changed: Condvar::new(),
            released: tokio::sync::Notify::new(),
            base_url: Mutex::new(String::new()),
        });
        let server = super::spawn_server(listen, "stripe-sandbox", router(shared.clone()))?;
        *shared.base_url.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = format!("http://{}", server.address);
        Ok(StripeSandbox { shared, address: server.address, shutdown: Some(server.shutdown) })
    }

    /// A `[methods.card]` section for this fake (its first connected account; `extra`
    /// appended), its secret key written to `stripe.secret` in `dir` (mode 600).
    pub fn config_section(&self, dir: &std::path::Path, extra: &str) -> std::io::Result<String> {
        let options = &self.shared.options;
        super::write_secret(&dir.join("stripe.secret"), &options.secret_key)?;
        let account = options.connected_accounts.first().map(String::as_str).unwrap_or_default();
        Ok(format!(
            "[methods.card]\nplugin = \"stripe-split\"\napi_url = \"{}\"\nsecret_key_file = \"stripe.secret\"\nconnected_account = \"{account}\"\n{extra}\n",
            self.url()
        ))
    }

    /// `http://127.0.0.1:PORT`, the `api_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Switches faults on or off.
    pub fn set_faults(&self, faults: StripeFaults) {
        self.shared.ledger().faults = faults;
        self.shared.released.notify_waiters();
    }

    /// Waits until `count` idempotent requests are in progress.
    pub fn wait_in_flight(&self, count: usize, timeout: std::time::Duration) -> bool {
        let ledger = self.shared.ledger();
        let (ledger, _) = self
            .shared
            .changed
            .wait_timeout_while(ledger, timeout, |ledger| ledger.in_flight.len() < count)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ledger.in_flight.len() >= count
    }

    /// The customer taps a card on the reader (Stripe's test helper, in process).
    pub fn present_card(&self, reader: &str, number: &str) -> Result<Value, Value> {
        let mut ledger = self.shared.ledger();
        let answer = present(&mut ledger, reader, number);
        drop(ledger);
        self.shared.changed.notify_all();
        match answer {
            (status, body) if status.is_success() => Ok(body),
            (_, body) => Err(body),
        }
    }

    /// A PaymentIntent as Stripe sees it.
    pub fn payment_intent(&self, id: &str) -> Option<Value> {
        self.shared.ledger().payment_intents.get(id).cloned()
    }

    /// Every PaymentIntent, oldest first.
    pub fn payment_intents(&self) -> Vec<Value> {
        self.shared.ledger().payment_intents.values().cloned().collect()
    }

    /// PaymentIntents that took money.
    pub fn charges(&self) -> usize {
        self.shared.ledger().payment_intents.values().filter(|intent| intent["status"] == "succeeded").count()
    }

    /// Waits until `count` requests to `endpoint` (as [`endpoint_of`] names it) have come.
    pub fn wait_for_requests(&self, endpoint: &str, count: usize, timeout: std::time::Duration) -> bool {
        let seen =
            |ledger: &mut Ledger| ledger.requests.iter().filter(|(method, path)| endpoint_of(method, path) == endpoint).count() >= count;
        let ledger = self.shared.ledger();
        let (_ledger, waited) = self
            .shared
            .changed
            .wait_timeout_while(ledger, timeout, |ledger| !seen(ledger))
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        !waited.timed_out()
    }

    /// Every request so far with when it came: (when, method, path).
    pub fn requests_timed(&self) -> Vec<(std::time::Instant, String, String)> {
        let ledger = self.shared.ledger();
        ledger.arrivals.iter().zip(&ledger.requests).map(|(at, (method, path))| (*at, method.clone(), path.clone())).collect()
    }

    /// Requests answered `429` so far.
    pub fn rate_limited(&self) -> u64 {
        self.shared.ledger().rate_limited
    }

    /// The most requests that arrived within any one second since `since`.
    pub fn busiest_second(&self, since: std::time::Instant) -> usize {
        let ledger = self.shared.ledger();
        let arrivals: Vec<std::time::Instant> = ledger.arrivals.iter().copied().filter(|at| *at >= since).collect();
        let mut busiest = 0;
        let mut first = 0;
        for (last, at) in arrivals.iter().enumerate() {
            while at.duration_since(arrivals[first]) >= std::time::Duration::from_secs(1) {
                first += 1;
            }
            busiest = busiest.max(last + 1 - first);
        }
        busiest
    }

    /// A reader as Stripe sees it.
    pub fn reader(&self, id: &str) -> Option<Value> {
        self.shared.ledger().readers.get(id).cloned()
    }

    /// Time the fake spent answering requests so far.
    pub fn serving_time(&self) -> std::time::Duration {
        self.shared.ledger().serving
    }

    /// `cancel_action` calls so far.
    pub fn cancel_actions(&self) -> u64 {
        self.shared.ledger().cancel_actions
    }

    /// Every request so far, as (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.ledger().requests.clone()
    }

    /// Pays an open Checkout Session (the customer completes the page).
    pub fn pay_session(&self, id: &str) -> Result<Value, Value> {
        let mut ledger = self.shared.ledger();
        let answer = pay_session(&mut ledger, id);
        drop(ledger);
        self.shared.changed.notify_all();
        match answer {
            (status, body) if status.is_success() => Ok(body),
            (_, body) => Err(body),
        }
    }

    /// Waits until the reader has an action in progress (a payment waits for the card).
    pub fn wait_for_reader_action(&self, reader: &str, timeout: std::time::Duration) -> bool {
        let ledger = self.shared.ledger();
        let busy = |ledger: &mut Ledger| ledger.readers.get(reader).is_some_and(|reader| reader["action"]["status"] == "in_progress");
        let (mut ledger, _) = self
            .shared
            .changed
            .wait_timeout_while(ledger, timeout, |ledger| !busy(ledger))
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        busy(&mut ledger)
    }

    /// Waits until there is an open Checkout Session, and answers it.
    pub fn wait_for_session(&self, timeout: std::time::Duration) -> Option<Value> {
        let ledger = self.shared.ledger();
        let open = |ledger: &mut Ledger| ledger.sessions.values().find(|session| session["status"] == "open").cloned();
        let (mut ledger, _) = self
            .shared
            .changed
            .wait_timeout_while(ledger, timeout, |ledger| open(ledger).is_none())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open(&mut ledger)
    }
}

impl Drop for StripeSandbox {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/payment_intents", post(api))
        .route("/v1/payment_intents/{id}", get(api).post(api))
        .route("/v1/payment_intents/{id}/cancel", post(api))
        .route("/v1/terminal/readers", get(api))
        .route("/v1/terminal/readers/{id}", get(api))
        .route("/v1/terminal/readers/{id}/process_payment_intent", post(api))
        .route("/v1/terminal/readers/{id}/cancel_action", post(api))
        .route("/v1/test_helpers/terminal/readers/{id}/present_payment_method", post(api))
        .route("/v1/balance", get(api))
        .route("/v1/refunds", post(api))
        .route("/v1/refunds/{id}", get(api))
        .route("/v1/checkout/sessions", post(api))
        .route("/v1/checkout/sessions/{id}", get(api))
        .route("/v1/checkout/sessions/{id}/expire", post(api))
        .route("/pay/{id}", get(pay_page).post(pay_page_submit))
        .with_state(shared)
}

/// Waits while the `hold_in_flight` fault is on.
async fn hold_while_asked(shared: &Shared) {
    loop {
        let released = shared.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if !shared.ledger().faults.hold_in_flight {
            return;
        }
        released.await;
    }
}

/// Every API request: authentication, faults, form parsing, idempotency, then dispatch.
async fn api(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let started = std::time::Instant::now();
    let admitted = {
        let mut ledger = shared.ledger();
        ledger.requests.push((method.to_string(), path.clone()));
        ledger.admit(shared.options.rate_limit, &endpoint_of(method.as_str(), &path))
    };
    shared.changed.notify_all();
    let response = match admitted {
        Ok(()) => {
            let (status, body) = handle(&shared, &method, &path, uri.query().unwrap_or(""), &headers, &body).await;
            (status, Json(body)).into_response()
        }
        Err(reason) => {
            let (status, body) = stripe_error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                None,
                "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                None,
            );
            (status, [("stripe-rate-limited-reason", reason)], Json(body)).into_response()
        }
    };
    shared.ledger().serving += started.elapsed();
    response
}

async fn handle(shared: &Arc<Shared>, method: &Method, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
    if shared.ledger().faults.unavailable {
        return stripe_error(StatusCode::SERVICE_UNAVAILABLE, "api_error", None, "The sandbox is switched to unavailable.", None);
    }
    let key = headers.get("authorization").and_then(|value| value.to_str().ok()).and_then(|value| value.strip_prefix("Bearer "));
    if key != Some(shared.options.secret_key.as_str()) {
        return stripe_error(StatusCode::UNAUTHORIZED, "invalid_request_error", None, "Invalid API Key provided.", None);
    }
    let account = headers.get("stripe-account").and_then(|value| value.to_str().ok()).map(str::to_string);
    if let Some(account) = &account {
        if !shared.options.connected_accounts.contains(account) {
            return stripe_error(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                Some("account_invalid"),
                "The provided key does not have access to account.",
                None,
            );
        }
    }
    let params = if *method == Method::POST {
        let content_type = headers.get("content-type").and_then(|value| value.to_str().ok()).unwrap_or("");
        if !content_type.starts_with("application/x-www-form-urlencoded") && !body.is_empty() {
            return invalid("Invalid request: Stripe API bodies are form-encoded (application/x-www-form-urlencoded), not JSON.", None);
        }
        match form::decode(body) {
            Ok(Value::Object(map)) => Params(map),
            Ok(_) => Params(Map::new()),
            Err(message) => return invalid(&format!("Invalid request: {message}"), None),
        }
    } else {
        // A GET's parameters are its query string, in the same bracket notation.
        match form::decode(query.as_bytes()) {
            Ok(Value::Object(map)) => Params(map),
            Ok(_) => Params(Map::new()),
            Err(message) => return invalid(&format!("Invalid request: {message}"), None),
        }
    };
    let idempotency_key = headers.get("idempotency-key").and_then(|value| value.to_str().ok()).map(str::to_string);
    let Some(key) = idempotency_key.filter(|_| *method == Method::POST) else {
        return dispatch(shared, method, path, &params, account.as_deref());
    };
    let scoped = format!("{}:{key}", account.as_deref().unwrap_or("platform"));
    let fingerprint = hex::encode(Sha256::digest(format!("{path}\n{}", Value::Object(params.0.clone())).as_bytes()));
    {
        let mut ledger = shared.ledger();
        if let Some((seen, status, answer)) = ledger.idempotency.get(&scoped) {
            if *seen != fingerprint {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    None,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                    None,
                );
            }
            return (StatusCode::from_u16(*status).unwrap_or(StatusCode::OK), answer.clone());
        }
        if !ledger.in_flight.insert(scoped.clone()) {
            return stripe_error(
                StatusCode::CONFLICT,
                "idempotency_error",
                Some("idempotency_key_in_use"),
                "There is currently another in-progress request using this Idempotent Key.",
                None,
            );
        }
    }
    shared.changed.notify_all();
    hold_while_asked(shared).await;
    let (status, answer) = dispatch(shared, method, path, &params, account.as_deref());
    let lose = {
        let mut ledger = shared.ledger();
        ledger.in_flight.remove(&scoped);
        // Stripe saves results once an endpoint began executing, errors included, but not 5xx.
        if !status.is_server_error() {
            ledger.idempotency.insert(scoped, (fingerprint, status.as_u16(), answer.clone()));
        }
        path.ends_with("/process_payment_intent") && status.is_success() && ledger.faults.lose_process_answer
    };
    if lose {
        // Done and recorded at "Stripe"; only the answer never reaches the caller.
        std::future::pending::<()>().await;
    }
    (status, answer)
}

fn dispatch(shared: &Arc<Shared>, method: &Method, path: &str, params: &Params, account: Option<&str>) -> Answer {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let answer = {
        let mut ledger = shared.ledger();
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["v1", "payment_intents"]) => create_payment_intent(&shared.options, &mut ledger, params, account),
            ("GET", ["v1", "payment_intents", id]) => ledger
                .payment_intents
                .get(*id)
                .cloned()
                .map(|intent| (StatusCode::OK, intent))
                .unwrap_or_else(|| not_found("payment_intent", id)),
            ("POST", ["v1", "payment_intents", id, "cancel"]) => cancel_payment_intent(&mut ledger, id, params),
            ("GET", ["v1", "terminal", "readers"]) => list_readers(&ledger, params),
            ("GET", ["v1", "terminal", "readers", id]) => {
                ledger.readers.get(*id).cloned().map(|reader| (StatusCode::OK, reader)).unwrap_or_else(|| not_found("terminal.reader", id))
            }
            ("POST", ["v1", "terminal", "readers", id, "process_payment_intent"]) => process(&mut ledger, id, params),
            ("POST", ["v1", "terminal", "readers", id, "cancel_action"]) => cancel_action(&mut ledger, id, params),
            ("POST", ["v1", "test_helpers", "terminal", "readers", id, "present_payment_method"]) => {
                present_helper(&mut ledger, id, params)
            }
            ("GET", ["v1", "balance"]) => (
                StatusCode::OK,
                json!({"object": "balance", "livemode": false, "available": [{"amount": 0, "currency": "eur"}], "pending": []}),
            ),
            ("POST", ["v1", "refunds"]) => create_refund(&mut ledger, params),
            ("GET", ["v1", "refunds", id]) => {
                ledger.refunds.get(*id).cloned().map(|refund| (StatusCode::OK, refund)).unwrap_or_else(|| not_found("refund", id))
            }
            ("POST", ["v1", "checkout", "sessions"]) => {
                let base = shared.base_url.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
                create_session(&mut ledger, params, &base)
            }
            ("GET", ["v1", "checkout", "sessions", id]) => ledger
                .sessions
                .get(*id)
                .cloned()
                .map(|session| (StatusCode::OK, session))
                .unwrap_or_else(|| not_found("checkout.session", id)),
            ("POST", ["v1", "checkout", "sessions", id, "expire"]) => expire_session(&mut ledger, id, params),
            _ => stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                None,
                &format!("Unrecognized request URL ({method} {path})."),
                None,
            ),
        }
    };
    shared.changed.notify_all();
    answer
}

fn create_payment_intent(options: &StripeOptions, ledger: &mut Ledger, params: &Params, account: Option<&str>) -> Answer {
    if let Err(answer) = params.check_known(&[
        "amount",
        "currency",
        "payment_method_types",
        "capture_method",
        "metadata",
        "description",
        "transfer_data",
        "statement_descriptor",
    ]) {
        return answer;
    }
    let amount = match params.integer("amount") {
        Ok(Some(amount)) if amount >= 50 => amount,
        Ok(Some(_)) => return invalid("Amount must be at least €0.50 eur", Some("amount")),
        Ok(None) => return missing("amount"),
        Err(answer) => return answer,
    };
    let currency = match params.required_text("currency") {
        Ok(currency) if currency.len() == 3 && currency == currency.to_ascii_lowercase() => currency,
        Ok(currency) => return invalid(&format!("Invalid currency: {currency}"), Some("currency")),
        Err(answer) => return answer,
    };
    let metadata = match params.metadata() {
        Ok(metadata) => metadata,
        Err(answer) => return answer,
    };
    let destination = params.0.get("transfer_data").map(|data| data.get("destination").and_then(Value::as_str).map(str::to_string));
    if let Some(destination) = &destination {
        match destination {
            Some(account) if options.connected_accounts.contains(account) => {}
            _ => return invalid("Invalid transfer_data[destination]", Some("transfer_data[destination]")),
        }
    }
    let methods = params.0.get("payment_method_types").cloned().unwrap_or(json!(["card"]));
    let intent_id = id("pi_");
    let intent = json!({
        "id": intent_id, "object": "payment_intent", "amount": amount, "amount_received": 0, "currency": currency,
        "capture_method": params.text("capture_method").unwrap_or_else(|| "automatic".into()),
        "payment_method_types": methods, "metadata": metadata, "description": params.text("description"),
        "status": "requires_payment_method", "latest_charge": null, "last_payment_error": null,
        "transfer_data": destination.flatten().map(|destination| json!({"destination": destination})),
        "on_behalf_of": account, "amount_refunded": 0, "created": now_ms() / 1000,
    });
    ledger.payment_intents.insert(intent_id, intent.clone());
    (StatusCode::OK, intent)
}

fn cancel_payment_intent(ledger: &mut Ledger, id: &str, params: &Params) -> Answer {
    if let Err(answer) = params.check_known(&["cancellation_reason"]) {
        return answer;
    }
    let Some(intent) = ledger.payment_intents.get_mut(id) else { return not_found("payment_intent", id) };
    if matches!(intent["status"].as_str(), Some("succeeded") | Some("canceled")) {
        let message =
            format!("You cannot cancel this PaymentIntent because it has a status of {}.", intent["status"].as_str().unwrap_or(""));
        return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", Some("payment_intent_unexpected_state"), &message, None);
    }
    intent["status"] = json!("canceled");
    intent["cancellation_reason"] = json!(params.text("cancellation_reason").unwrap_or_else(|| "requested_by_customer".into()));
    (StatusCode::OK, intent.clone())
}

fn process(ledger: &mut Ledger, reader_id: &str, params: &Params) -> Answer {
    if let Err(answer) = params.check_known(&["payment_intent", "process_config"]) {
        return answer;
    }
    let intent_id = match params.required_text("payment_intent") {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    match ledger.payment_intents.get(&intent_id).map(|intent| intent["status"].clone()) {
        None => return not_found("payment_intent", &intent_id),
        Some(status) if status != "requires_payment_method" => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("payment_intent_unexpected_state"),
                "This PaymentIntent cannot be processed in its state.",
                None,
            );
        }
        Some(_) => {}
    }
    let Some(reader) = ledger.readers.get_mut(reader_id) else { return not_found("terminal.reader", reader_id) };
    if reader["action"]["status"] == "in_progress" {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("terminal_reader_busy"),
            "Reader is currently busy processing another request.",
            None,
        );
    }
    reader["action"] = json!({"type": "process_payment_intent", "status": "in_progress", "failure_code": null, "failure_message": null, "process_payment_intent": {"payment_intent": intent_id}});
    (StatusCode::OK, reader.clone())
}

/// `GET /v1/terminal/readers`: a page of readers in id order (Stripe's list object).
/// Of Stripe's filters, `limit`, `starting_after` and `status` (what posbridge sends);
/// the others are refused rather than ignored.
fn list_readers(ledger: &Ledger, params: &Params) -> Answer {
    if let Err(refused) = params.check_known(&["limit", "starting_after", "status"]) {
        return refused;
    }
    let limit = match params.integer("limit") {
        Ok(limit) => limit.unwrap_or(10),
        Err(refused) => return refused,
    };
    if !(1..=100).contains(&limit) {
        return invalid("Invalid integer: limit must be between 1 and 100", Some("limit"));
    }
    let after = params.text("starting_after");
    let status = params.text("status");
    let matching: Vec<&Value> = ledger
        .readers
        .iter()
        .filter(|(id, _)| after.as_ref().is_none_or(|after| id.as_str() > after.as_str()))
        .filter(|(_, reader)| status.as_ref().is_none_or(|status| reader["status"] == status.as_str()))
        .map(|(_, reader)| reader)
        .collect();
    let page: Vec<Value> = matching.iter().take(limit as usize).map(|reader| (*reader).clone()).collect();
    (StatusCode::OK, json!({"object": "list", "url": "/v1/terminal/readers", "has_more": matching.len() > page.len(), "data": page}))
}

/// Stripe's answer to acting on a reader that waits for nothing.
fn no_action_in_progress() -> Answer {
    stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("terminal_reader_unexpected_state"),
        "Reader has no action in progress.",
        None,
    )
}

fn cancel_action(ledger: &mut Ledger, reader_id: &str, params: &Params) -> Answer {
    if let Err(answer) = params.check_known(&[]) {
        return answer;
    }
    ledger.cancel_actions += 1;
    let Some(reader) = ledger.readers.get_mut(reader_id) else { return not_found("terminal.reader", reader_id) };
    if reader["action"]["status"] != "in_progress" {
        return no_action_in_progress();
    }
    reader["action"] = Value::Null;
    (StatusCode::OK, reader.clone())
}

fn present_helper(ledger: &mut Ledger, reader_id: &str, params: &Params) -> Answer {
    if let Err(answer) = params.check_known(&["type", "card_present", "amount_tip"]) {
        return answer;
    }
    let number =
        params.0.get("card_present").and_then(|card| card.get("number")).and_then(Value::as_str).unwrap_or("4242424242424242").to_string();
    present(ledger, reader_id, &number)
}

/// The customer taps a card: the reader's action completes, the PaymentIntent succeeds or
/// records the decline.
fn present(ledger: &mut Ledger, reader_id: &str, number: &str) -> Answer {
    let Some(reader) = ledger.readers.get_mut(reader_id) else { return not_found("terminal.reader", reader_id) };
    if reader["action"]["status"] != "in_progress" {
        return no_action_in_progress();
    }
    let intent_id = reader["action"]["process_payment_intent"]["payment_intent"].as_str().unwrap_or_default().to_string();
    let decline = DECLINES.iter().find(|(card, _)| *card == number).map(|(_, code)| *code);
    match decline {
        Some(decline_code) => {
            reader["action"]["status"] = json!("failed");
            reader["action"]["failure_code"] = json!("card_declined");
            reader["action"]["failure_message"] = json!("Your card was declined.");
            if let Some(intent) = ledger.payment_intents.get_mut(&intent_id) {
                intent["last_payment_error"] = json!({"type": "card_error", "code": "card_declined", "decline_code": decline_code, "message": "Your card was declined."});
            }
        }
        None => {
            reader["action"]["status"] = json!("succeeded");
            if let Some(intent) = ledger.payment_intents.get_mut(&intent_id) {
                intent["status"] = json!("succeeded");
                intent["amount_received"] = intent["amount"].clone();
                intent["latest_charge"] = json!(id("ch_"));
                intent["last_payment_error"] = Value::Null;
            }
        }
    }
    let reader = ledger.readers.get(reader_id).cloned().unwrap_or_default();
    (StatusCode::OK, reader)
}

fn create_refund(ledger: &mut Ledger, params: &Params) -> Answer {
    if let Err(answer) =
        params.check_known(&["payment_intent", "charge", "amount", "reason", "metadata", "reverse_transfer", "refund_application_fee"])
    {
        return answer;
    }
    let intent_id = match params.required_text("payment_intent") {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    let amount = match params.integer("amount") {
        Ok(amount) => amount,
        Err(answer) => return answer,
    };
    let reverse_transfer = params.text("reverse_transfer").as_deref() == Some("true");
    let Some(intent) = ledger.payment_intents.get_mut(&intent_id) else { return not_found("payment_intent", &intent_id) };
    if intent["status"] != "succeeded" {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("charge_not_refundable"),
            "This PaymentIntent has no successful charge to refund.",
            Some("payment_intent"),
        );
    }
    if reverse_transfer && intent["transfer_data"].is_null() {
        return invalid("reverse_transfer is only for charges with a transfer (destination charges).", Some("reverse_transfer"));
    }
    let received = intent["amount_received"].as_u64().unwrap_or(0);
    let refunded = intent["amount_refunded"].as_u64().unwrap_or(0);
    let amount = amount.unwrap_or(received - refunded);
    if refunded >= received {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("charge_already_refunded"),
            "Charge has already been refunded.",
            None,
        );
    }
    if amount == 0 || amount > received - refunded {
        let message = format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({})", received - refunded);
        return invalid(&message, Some("amount"));
    }
    intent["amount_refunded"] = json!(refunded + amount);
    let refund_id = id("re_");
    let refund = json!({"id": refund_id, "object": "refund", "amount": amount, "currency": intent["currency"], "payment_intent": intent_id,
        "charge": intent["latest_charge"], "status": "succeeded", "reason": params.text("reason"), "reverse_transfer": reverse_transfer});
    ledger.refunds.insert(refund_id, refund.clone());
    (StatusCode::OK, refund)
}

fn create_session(ledger: &mut Ledger, params: &Params, base_url: &str) -> Answer {
    if let Err(answer) = params.check_known(&[
        "mode",
        "line_items",
        "success_url",
        "cancel_url",
        "client_reference_id",
        "metadata",
        "payment_intent_data",
        "expires_at",
        "payment_method_types",
    ]) {
        return answer;
    }
    if params.text("mode").as_deref() != Some("payment") {
        return invalid("mode must be payment", Some("mode"));
    }
    let Some(Value::Array(items)) = params.0.get("line_items") else { return missing("line_items") };
    let mut total = 0u64;
    let mut currency = String::new();
    for item in items {
        let unit = item.pointer("/price_data/unit_amount").and_then(Value::as_str).and_then(|text| text.parse::<u64>().ok());
        let quantity = item.get("quantity").and_then(Value::as_str).and_then(|text| text.parse::<u64>().ok()).unwrap_or(1);
        currency = item.pointer("/price_data/currency").and_then(Value::as_str).unwrap_or("").to_string();
        match unit {
            Some(unit) => total += unit * quantity,
            None => return missing("line_items[0][price_data][unit_amount]"),
        }
    }
    let session_id = id("cs_test_");
    let session = json!({
        "id": session_id, "object": "checkout.session", "mode": "payment", "status": "open", "payment_status": "unpaid",
        "amount_total": total, "currency": currency, "url": format!("{base_url}/pay/{session_id}"),
        "client_reference_id": params.text("client_reference_id"), "metadata": params.metadata().unwrap_or_default(),
        "payment_intent": null, "success_url": params.text("success_url"),
    });
    ledger.sessions.insert(session_id, session.clone());
    (StatusCode::OK, session)
}

fn expire_session(ledger: &mut Ledger, id: &str, params: &Params) -> Answer {
    if let Err(answer) = params.check_known(&[]) {
        return answer;
    }
    let Some(session) = ledger.sessions.get_mut(id) else { return not_found("checkout.session", id) };
    if session["status"] != "open" {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "Only Checkout Sessions with a status of `open` can be expired.",
            None,
        );
    }
    session["status"] = json!("expired");
    (StatusCode::OK, session.clone())
}

fn pay_session(ledger: &mut Ledger, session_id: &str) -> Answer {
    let Some(session) = ledger.sessions.get(session_id).cloned() else { return not_found("checkout.session", session_id) };
    if session["status"] != "open" {
        return invalid("This Checkout Session is no longer open.", None);
    }
    let intent_id = id("pi_");
    let intent = json!({"id": intent_id, "object": "payment_intent", "amount": session["amount_total"], "amount_received": session["amount_total"],
        "currency": session["currency"], "status": "succeeded", "latest_charge": id("ch_"), "payment_method_types": ["card"], "metadata": session["metadata"],
        "amount_refunded": 0, "transfer_data": null, "last_payment_error": null});
    ledger.payment_intents.insert(intent_id.clone(), intent);
    let session = ledger.sessions.get_mut(session_id).expect("present");
    session["status"] = json!("complete");
    session["payment_status"] = json!("paid");
    session["payment_intent"] = json!(intent_id);
    (StatusCode::OK, session.clone())
}

/// The customer's payment page (the sandbox's stand-in for Stripe Checkout).
async fn pay_page(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let session = shared.ledger().sessions.get(&id).cloned();
    match session {
        Some(session) => Html(format!(
            "<!doctype html><title>Sandbox checkout</title><h1>Pay {} {}</h1><p>Status: {}</p><form method=post><button>Pay with test card 4242</button></form>",
            session["amount_total"].as_u64().unwrap_or(0) as f64 / 100.0,
            session["currency"].as_str().unwrap_or("").to_uppercase(),
            session["status"].as_str().unwrap_or("")
        ))
        .into_response(),
        None => (StatusCode::NOT_FOUND, Html("<h1>No such checkout session</h1>".to_string())).into_response(),
    }
}

async fn pay_page_submit(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let (status, _) = pay_session(&mut shared.ledger(), &id);
    shared.changed.notify_all();
    let message = if status.is_success() { "Paid. You can close this page." } else { "This payment page is no longer open." };
    Html(format!("<!doctype html><title>Sandbox checkout</title><h1>{message}</h1>")).into_response()
}
