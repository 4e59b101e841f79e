//! Stripe's HTTP API as this plugin uses it, over the host's HTTP capability:
//! form-encoded bodies in bracket notation, `Authorization: Bearer`, a pinned
//! `Stripe-Version`, `Stripe-Account` for direct charges on a connected account, and an
//! `Idempotency-Key` on every POST so a retry never creates a second object.

use std::time::Duration;

use posbridge_plugin_api::{Header, HostBox, HttpRequest, HttpResponse, LogLevel, MethodError, RStr, RString, RVec};
use posbridge_plugin_helpers::retry::{retry_after_ms, Backoff};
use serde_json::Value;

use crate::budget::{Priority, RequestBudget};
use crate::settings::{ChargeType, StripeSettings};

const FIRST_BACKOFF_MS: u64 = 100;
const MAX_BACKOFF_MS: u64 = 2_000;
const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// A form body in Stripe's bracket notation, in insertion order.
#[derive(Debug, Default, Clone)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Form::default()
    }

    /// Adds `key=value` (`key` may carry brackets: `metadata[x]`, `payment_method_types[]`).
    pub fn field(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.0.push((key.into(), value.to_string()));
        self
    }

    /// The encoded body.
    pub fn encode(&self) -> String {
        self.0.iter().map(|(key, value)| format!("{}={}", encode_component(key), encode_component(value))).collect::<Vec<_>>().join("&")
    }
}

fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'[' | b']' => out.push(byte as char),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Stripe's error object, kept for mapping to posbridge codes.
#[derive(Debug, Clone, Default)]
pub struct StripeError {
    pub status: u16,
    pub kind: String,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: String,
    pub param: Option<String>,
}

impl StripeError {
    fn from_body(status: u16, body: &Value) -> Self {
        let error = &body["error"];
        let text = |name: &str| error.get(name).and_then(Value::as_str).map(str::to_string);
        StripeError {
            status,
            kind: text("type").unwrap_or_else(|| "api_error".into()),
            code: text("code"),
            decline_code: text("decline_code"),
            message: text("message").unwrap_or_else(|| format!("Stripe answered {status}")),
            param: text("param"),
        }
    }

    /// The posbridge failure for this error.
    pub fn to_method_error(&self) -> MethodError {
        let code = self.code.as_deref().unwrap_or("");
        let error = match (self.kind.as_str(), code) {
            ("card_error", _) | (_, "card_declined") => {
                let decline = self.decline_code.as_deref().unwrap_or("generic_decline");
                MethodError::new("card_declined", format!("the card was declined ({decline}): {}", self.message))
            }
            (_, "terminal_reader_busy") => MethodError::new("reader_busy", "the card reader is busy with another payment"),
            (_, "terminal_reader_timeout") | (_, "terminal_reader_offline") => {
                MethodError::new("reader_timeout", format!("the card reader did not answer: {}", self.message))
            }
            ("rate_limit_error", _) | ("api_error", _) => {
                MethodError::new("provider_unavailable", format!("Stripe is not answering: {}", self.message)).retryable()
            }
            _ if self.status >= 500 || self.status == 429 => {
                MethodError::new("provider_unavailable", format!("Stripe is not answering: {}", self.message)).retryable()
            }
            _ => MethodError::new(
                "provider_error",
                format!(
                    "Stripe refused the request ({}{}): {}",
                    self.kind,
                    if code.is_empty() { String::new() } else { format!(", {code}") },
                    self.message
                ),
            ),
        };
        match &self.param {
            Some(param) if error.code.as_str() == "provider_error" => error.with_field(param.clone()),
            _ => error,
        }
    }
}

/// A Stripe client for one configured method: every request it sends, from any till's
/// payment, draws from the method's one request budget.
pub struct StripeApi {
    host: HostBox,
    settings: StripeSettings,
    budget: RequestBudget,
}

/// What a call ended with.
pub type Outcome = Result<Value, StripeError>;

impl StripeApi {
    /// A client with the method's key, version and account.
    pub fn new(host: HostBox, settings: StripeSettings) -> Self {
        let budget = RequestBudget::new(settings.max_requests_per_second);
        StripeApi { host, settings, budget }
    }

    /// The method's settings.
    pub fn settings(&self) -> &StripeSettings {
        &self.settings
    }

    /// The host's clock.
    pub fn now_ms(&self) -> i64 {
        self.host.now_unix_ms()
    }

    /// `GET path` with retries on 429/5xx within the deadline.
    pub fn get(&self, path: &str, deadline_ms: i64) -> Result<Outcome, MethodError> {
        self.call("GET", path, None, None, deadline_ms, Priority::Prompt)
    }

    /// A `GET` that only checks whether anything changed (a waiting payment's look at
    /// its reader): it never uses the budget's burst, which stays for requests a
    /// customer or cashier waits on.
    pub fn get_routine(&self, path: &str, deadline_ms: i64) -> Result<Outcome, MethodError> {
        self.call("GET", path, None, None, deadline_ms, Priority::Routine)
    }

    /// [`StripeApi::get`] answered as the object read; Stripe's refusal as the method's
    /// failure.
    pub fn read(&self, path: &str, deadline_ms: i64) -> Result<Value, MethodError> {
        self.get(path, deadline_ms)?.map_err(|error| error.to_method_error())
    }

    /// [`StripeApi::get_routine`] answered as [`StripeApi::read`] answers.
    pub fn read_routine(&self, path: &str, deadline_ms: i64) -> Result<Value, MethodError> {
        self.get_routine(path, deadline_ms)?.map_err(|error| error.to_method_error())
    }

    /// `POST path` with an idempotency key; retried with the same key on 429/5xx or a
    /// lost answer, so Stripe does it once. A POST whose outcome stays unknown at the
    /// deadline fails as `outcome_unknown`.
    pub fn post(&self, path: &str, form: &Form, idempotency_key: &str, deadline_ms: i64) -> Result<Outcome, MethodError> {
        self.call("POST", path, Some(form), Some(idempotency_key), deadline_ms, Priority::Prompt)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        form: Option<&Form>,
        idempotency_key: Option<&str>,
        deadline_ms: i64,
        priority: Priority,
    ) -> Result<Outcome, MethodError> {
        let mut backoff = Backoff::new(FIRST_BACKOFF_MS, MAX_BACKOFF_MS);
        let mut maybe_done = false;
        loop {
            let (why, retry_after) = match self.send(method, path, form, idempotency_key, deadline_ms, priority) {
                Ok(response) => {
                    let body: Value = serde_json::from_slice(response.body.as_slice()).unwrap_or(Value::Null);
                    if response.status < 300 {
                        return Ok(Ok(body));
                    }
                    let error = StripeError::from_body(response.status, &body);
                    let concurrent = response.status == 409 && error.code.as_deref() == Some("idempotency_key_in_use");
                    if !(response.status == 429 || response.status >= 500 || concurrent) {
                        return Ok(Err(error));
                    }
                    // A 5xx may have been acted on; 429 and a concurrent key were not.
                    maybe_done |= response.status >= 500;
                    let retry_after = retry_after_ms(&response);
                    if response.status == 429 {
                        self.rate_limited(&response, retry_after);
                    }
                    (format!("Stripe answered {}", response.status), retry_after)
                }
                Err(SendFailure::NotSent(why)) => (why, None),
                Err(SendFailure::Unanswered(why)) => {
                    maybe_done = true;
                    (why, None)
                }
            };
            if !backoff.wait(self.now_ms(), deadline_ms, retry_after) {
                let code = if maybe_done && method == "POST" { "outcome_unknown" } else { "provider_unavailable" };
                return Err(MethodError::new(code, format!("Stripe is not answering ({why})")).retryable());
            }
        }
    }

    /// A `429`: every request of the method slows down, not only this one.
    fn rate_limited(&self, response: &HttpResponse, retry_after: Option<u64>) {
        self.budget.limited(self.now_ms(), retry_after);
        let reason = response.header("stripe-rate-limited-reason").unwrap_or("not given");
        let message = format!(
            "Stripe limited this account's request rate (reason: {reason}); every request of this method waits {} ms, then runs at {:.0}% of {} requests/s until the limit recovers",
            retry_after.unwrap_or(crate::budget::DEFAULT_HOLD_MS),
            self.budget.share(self.now_ms()) * 100.0,
            self.budget.per_second()
        );
        self.host.log(LogLevel::WARN, RStr::from(message.as_str()));
    }

    /// Waits for the request's slot in the method's budget; `false` when it has none
    /// before the deadline (the request is not sent).
    fn wait_for_slot(&self, deadline_ms: i64, priority: Priority) -> bool {
        let now = self.now_ms();
        match self.budget.reserve(now, deadline_ms, priority) {
            Some(leave_at) => {
                if leave_at > now {
                    std::thread::sleep(Duration::from_millis((leave_at - now) as u64));
                }
                true
            }
            None => false,
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        form: Option<&Form>,
        idempotency_key: Option<&str>,
        deadline_ms: i64,
        priority: Priority,
    ) -> Result<HttpResponse, SendFailure> {
        if !self.wait_for_slot(deadline_ms, priority) {
            return Err(SendFailure::NotSent(format!("no slot in the {} requests/s budget before the deadline", self.budget.per_second())));
        }
        let remaining = deadline_ms - self.now_ms();
        if remaining <= 0 {
            return Err(SendFailure::NotSent("no time left".into()));
        }
        let settings = &self.settings;
        let mut headers = vec![
            Header::new("Authorization", format!("Bearer {}", settings.secret_key)),
            Header::new("Stripe-Version", settings.stripe_version.as_str()),
            Header::new("Accept", "application/json"),
        ];
        if let (Some(account), ChargeType::Direct) = (&settings.connected_account, settings.charge_type) {
            headers.push(Header::new("Stripe-Account", account.as_str()));
        }
        if let Some(key) = idempotency_key {
            headers.push(Header::new("Idempotency-Key", key));
        }
        let body = match form {
            Some(form) => {
                headers.push(Header::new("Content-Type", "application/x-www-form-urlencoded"));
                form.encode().into_bytes()
            }
            None => Vec::new(),
        };
        let request = HttpRequest {
            method: RString::from(method),
            url: RString::from(format!("{}{path}", settings.api_url)),
            headers: RVec::from(headers),
            body: RVec::from(body),
            timeout_ms: REQUEST_TIMEOUT_MS.min(remaining as u64),
            redact: RVec::from(vec![RString::from(settings.secret_key.as_str())]),
            ..Default::default()
        };
        self.host.http(request).into_result().map_err(|error| {
            let why = format!("cannot reach Stripe: {}", error.kind);
            if !error.maybe_sent {
                SendFailure::NotSent(why)
            } else {
                SendFailure::Unanswered(why)
            }
        })
    }
}

/// Why a request got no HTTP answer.
enum SendFailure {
    /// It never left (no connection, no time): Stripe did nothing.
    NotSent(String),
    /// It left and no answer came: Stripe may have acted on it.
    Unanswered(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracket_forms() {
        let form = Form::new().field("amount", 1500).field("payment_method_types[]", "card_present").field("metadata[reference]", "R 1&2");
        assert_eq!(form.encode(), "amount=1500&payment_method_types[]=card_present&metadata[reference]=R+1%262");
    }

    #[test]
    fn error_mapping() {
        let declined = StripeError::from_body(
            402,
            &serde_json::json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}}),
        );
        let error = declined.to_method_error();
        assert_eq!(error.code.as_str(), "card_declined");
        assert!(error.message.contains("insufficient_funds"));
        let busy = StripeError::from_body(
            400,
            &serde_json::json!({"error": {"type": "invalid_request_error", "code": "terminal_reader_busy", "message": "busy"}}),
        );
        assert_eq!(busy.to_method_error().code.as_str(), "reader_busy");
        let unknown = StripeError::from_body(
            400,
            &serde_json::json!({"error": {"type": "invalid_request_error", "code": "parameter_unknown", "param": "x", "message": "Received unknown parameter: x"}}),
        );
        let error = unknown.to_method_error();
        assert_eq!(error.code.as_str(), "provider_error");
        assert_eq!(error.field.into_option().map(|field| field.to_string()), Some("x".to_string()));
    }
}
