//! The provider's HTTP API, and nothing else: paths, field names, status codes, and how
//! a failure to get an answer is reported. A change at the provider is an edit here.
//!
//! The one rule that keeps money safe: once a request that moves money may have reached
//! the provider (an answer came, or the host says `maybe_sent`), a missing answer is
//! `outcome_unknown`, never `provider_unavailable`.

use posbridge_plugin_api::{Header, HostBox, HttpRequest, HttpResponse, MethodError, RString, RVec};
use posbridge_plugin_helpers::retry::{retry_after_ms, Backoff};
use serde_json::Value;

use crate::settings::VoucherSettings;

/// One request's timeout at most (less when the call's deadline is nearer).
const REQUEST_TIMEOUT_MS: i64 = 5_000;

/// A provider client over the host's HTTP.
pub struct VoucherApi {
    host: HostBox,
    settings: VoucherSettings,
}

/// An answer: the HTTP status and the JSON body (`Null` when there is none).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl VoucherApi {
    /// A client for the configured provider.
    pub fn new(host: HostBox, settings: VoucherSettings) -> VoucherApi {
        VoucherApi { host, settings }
    }

    /// The host's clock (tests drive it).
    pub fn now_ms(&self) -> i64 {
        self.host.now_unix_ms()
    }

    /// `POST` with an idempotency key: a repeat with the same key is the same operation.
    pub fn post(&self, path: &str, body: &Value, idempotency_key: &str, deadline_ms: i64) -> Result<Answer, MethodError> {
        self.call("POST", path, Some(body), Some(idempotency_key), deadline_ms)
    }

    /// `GET`: reads never move money, so a failure is simply "unavailable".
    pub fn get(&self, path: &str, deadline_ms: i64) -> Result<Answer, MethodError> {
        self.call("GET", path, None, None, deadline_ms)
    }

    /// One call, retried on 429/5xx and failures to connect while the deadline allows.
    fn call(&self, method: &str, path: &str, body: Option<&Value>, key: Option<&str>, deadline_ms: i64) -> Result<Answer, MethodError> {
        let mut backoff = Backoff::new(100, 1_000);
        let mut maybe_sent = false;
        loop {
            let failure = match self.send(method, path, body, key, deadline_ms) {
                Ok(response) if response.status == 429 || response.status >= 500 => {
                    maybe_sent = true;
                    let why = format!("the provider answered {}", response.status);
                    (why, retry_after_ms(&response))
                }
                Ok(response) => {
                    let body = serde_json::from_slice(response.body.as_slice()).unwrap_or(Value::Null);
                    return Ok(Answer { status: response.status, body });
                }
                Err(error) => {
                    maybe_sent |= error.maybe_sent;
                    (format!("cannot reach the provider ({})", error.kind), None)
                }
            };
            if !backoff.wait(self.now_ms(), deadline_ms, failure.1) {
                return Err(if maybe_sent && method != "GET" {
                    MethodError::outcome_unknown(format!("{}; posbridge will look the attempt up", failure.0))
                } else {
                    MethodError::new("provider_unavailable", format!("{}; nothing was done, try again", failure.0)).retryable()
                });
            }
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
        deadline_ms: i64,
    ) -> Result<HttpResponse, posbridge_plugin_api::HostError> {
        let remaining = deadline_ms - self.now_ms();
        if remaining <= 0 {
            return Err(posbridge_plugin_api::HostError::new("timeout", "no time left before the call's deadline", false));
        }
        let mut headers = vec![Header::new("Authorization", format!("Bearer {}", self.settings.api_key)), Header::new("Accept", "application/json")];
        if let Some(key) = key {
            headers.push(Header::new("Idempotency-Key", key));
        }
        if body.is_some() {
            headers.push(Header::new("Content-Type", "application/json"));
        }
        let request = HttpRequest {
            method: RString::from(method),
            url: RString::from(format!("{}{path}", self.settings.api_url)),
            headers: RVec::from(headers),
            body: RVec::from(body.map(|body| body.to_string().into_bytes()).unwrap_or_default()),
            timeout_ms: remaining.min(REQUEST_TIMEOUT_MS) as u64,
            redact: RVec::from(vec![RString::from(self.settings.api_key.as_str())]),
            ..Default::default()
        };
        self.host.http(request).into_result()
    }
}

/// The provider's error code in an answer (`{"error": "…"}`).
pub fn error_code(answer: &Answer) -> &str {
    answer.body["error"].as_str().unwrap_or("unknown")
}
