//! Smartum's HTTP API as posbridge assumes it (docs/smartum.md: which details are
//! confirmed and which assumed). Every path, field name and status code the plugin relies on is in this
//! file, so a correction from Smartum's partner documentation touches only here.

use std::sync::Mutex;

use posbridge_plugin_api::{Header, HostBox, HttpRequest, HttpResponse, MethodError, RString, RVec};
use posbridge_plugin_helpers::retry::{retry_after_ms, Backoff};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::settings::SmartumSettings;

/// The API's paths below the configured root, as assumed (docs/smartum.md lists each,
/// marked assumed; a test keeps the two in step).
pub mod paths {
    /// Client-credentials token.
    pub const TOKEN: &str = "/oauth/token";
    /// One transaction.
    pub const TRANSACTION: &str = "/v1/transactions/{tx}";
    /// Marking a transaction checked (redeemed).
    pub const CHECK: &str = "/v1/transactions/{tx}/check";
    /// Refunding part or all of a transaction.
    pub const REFUNDS: &str = "/v1/transactions/{tx}/refunds";

    /// `path` for transaction `id`.
    pub fn of(path: &str, id: &str) -> String {
        path.replace("{tx}", id)
    }
}

/// The claims of a signed receipt, as assumed (Smartum has not published the payload):
/// when a verified receipt does not carry them, the plugin reads what it can find and
/// asks Smartum online (docs/smartum.md).
pub mod claims {
    /// The transaction id (`tx_…`): the receipt's unique id, a JWT `jti`.
    pub const TRANSACTION: &str = "jti";
    /// Other names a transaction id may come under, tried in order before any `tx_…`
    /// string in the payload.
    pub const TRANSACTION_ALIASES: [&str; 4] = ["transaction", "transaction_id", "tx", "id"];
    /// The venue paid (`ven_…`).
    pub const VENUE: &str = "venue";
    /// The benefit type (`exercise`…).
    pub const BENEFIT: &str = "benefit";
    /// The amount in cents.
    pub const AMOUNT: &str = "amount";
    /// ISO 4217.
    pub const CURRENCY: &str = "currency";
    /// When Smartum issued the receipt (JWT `iat`, seconds since the epoch): optional,
    /// but a receipt without it is never accepted offline.
    pub const ISSUED_AT: &str = "iat";
}

/// Renew the access token this long before it expires.
const TOKEN_RENEW_MARGIN_MS: i64 = 60_000;
/// First retry delay after a 429 or 5xx; doubled each time, up to `MAX_BACKOFF_MS`.
const FIRST_BACKOFF_MS: u64 = 100;
const MAX_BACKOFF_MS: u64 = 2_000;

/// Where a Smartum transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
    Paid,
    Checked,
    Refunded,
    PartiallyRefunded,
}

/// `GET /v1/transactions/{id}` → `data`.
#[derive(Debug, Clone, Deserialize)]
pub struct Transaction {
    pub id: String,
    pub venue: String,
    pub benefit: String,
    pub amount: u64,
    pub currency: String,
    pub status: TransactionStatus,
    #[serde(default)]
    pub check_reference: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// The answer to marking a transaction checked.
pub enum CheckOutcome {
    /// Checked now, by us.
    Checked(Transaction),
    /// Smartum says it was checked before (by us after a lost answer, or by someone else).
    AlreadyChecked,
}

/// `POST /v1/transactions/{id}/refunds` → `data`.
#[derive(Debug, Clone, Deserialize)]
pub struct RefundRecord {
    pub id: String,
    pub status: String,
}

struct CachedToken {
    value: String,
    expires_at_ms: i64,
}

/// A Smartum API client over the host's HTTP capability.
pub struct SmartumApi {
    host: HostBox,
    settings: SmartumSettings,
    token: Mutex<Option<CachedToken>>,
}

/// A failure to reach Smartum or to understand it.
fn unavailable(message: impl Into<String>) -> MethodError {
    MethodError::new("provider_unavailable", message).retryable()
}

fn provider_error(message: impl Into<String>) -> MethodError {
    MethodError::new("provider_error", message)
}

impl SmartumApi {
    /// A client for the configured API root.
    pub fn new(host: HostBox, settings: SmartumSettings) -> Self {
        SmartumApi { host, settings, token: Mutex::new(None) }
    }

    /// The host's clock.
    pub fn now_ms(&self) -> i64 {
        self.host.now_unix_ms()
    }

    /// `GET url` without credentials (Smartum's published keys), as text.
    pub fn fetch_public(&self, url: &str, deadline_ms: i64) -> Result<String, MethodError> {
        let remaining = deadline_ms - self.now_ms();
        if remaining <= 0 {
            return Err(unavailable("no time left to fetch"));
        }
        let request = HttpRequest {
            method: RString::from("GET"),
            url: RString::from(url),
            headers: RVec::from(vec![Header::new("Accept", "application/json")]),
            timeout_ms: (self.settings.request_timeout.as_millis() as u64).min(remaining as u64),
            ..Default::default()
        };
        let response = self.host.http(request).into_result().map_err(|error| unavailable(format!("{}: {}", error.kind, error.message)))?;
        if response.status != 200 {
            return Err(unavailable(format!("HTTP {}", response.status)));
        }
        String::from_utf8(response.body.to_vec()).map_err(|_| provider_error("the answer is not text"))
    }

    /// A line for the technician in the daemon's log.
    pub fn log_warning(&self, message: &str) {
        self.host.log(posbridge_plugin_api::LogLevel::WARN, message.into());
    }

    /// Asks for a fresh access token: proves the URL and the client credentials.
    pub fn check_credentials(&self, deadline_ms: i64) -> Result<String, MethodError> {
        *self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        self.token(deadline_ms)?;
        Ok(format!("{} accepted the client credentials", self.settings.api_url))
    }

    /// Looks a transaction up; `None` when Smartum does not know it.
    pub fn transaction(&self, id: &str, deadline_ms: i64) -> Result<Option<Transaction>, MethodError> {
        let (status, body) = self.call("GET", &paths::of(paths::TRANSACTION, id), None, None, deadline_ms)?;
        match status {
            200 => data::<Transaction>(&body).map(Some),
            404 => Ok(None),
            _ => Err(unexpected(status, &body)),
        }
    }

    /// Marks a transaction checked (redeemed) with our payment id as the reference.
    pub fn check(&self, id: &str, reference: &str, deadline_ms: i64) -> Result<CheckOutcome, MethodError> {
        let body = json!({"venue": self.settings.venue_id, "reference": reference});
        let (status, answer) = self.call("POST", &paths::of(paths::CHECK, id), Some(body), None, deadline_ms)?;
        match status {
            // Smartum says it checked the receipt, in words we cannot read: the money may be
            // taken, so the outcome is unknown (a lookup settles it), not a failure.
            200 | 201 => data::<Transaction>(&answer)
                .map(CheckOutcome::Checked)
                .map_err(|error| MethodError::outcome_unknown(format!("{}; posbridge will look the receipt up", error.message))),
            409 => Ok(CheckOutcome::AlreadyChecked),
            404 => Err(MethodError::new("invalid_code", "Smartum does not know this receipt's transaction")),
            _ => Err(unexpected(status, &answer)),
        }
    }

    /// Refunds `amount` of a transaction; `idempotency_key` makes a retry safe.
    pub fn refund(&self, id: &str, amount: u64, idempotency_key: &str, deadline_ms: i64) -> Result<RefundRecord, MethodError> {
        let body = json!({"amount": amount});
        let (status, answer) = self.call("POST", &paths::of(paths::REFUNDS, id), Some(body), Some(idempotency_key), deadline_ms)?;
        match (status, error_code(&answer).as_deref()) {
            (200 | 201, _) => data::<RefundRecord>(&answer),
            (422, Some("refund_window_closed")) => Err(MethodError::new(
                "refund_window_closed",
                "Smartum refunds are possible on the day of the payment only (Europe/Helsinki)",
            )),
            (422, Some("amount_exceeds_refundable")) => {
                Err(MethodError::new("refund_exceeds_payment", "the refund is more than what is left to refund at Smartum")
                    .with_field("amount"))
            }
            (404, _) => Err(MethodError::new("invalid_code", "Smartum does not know this transaction").with_field("transaction_id")),
            _ => Err(unexpected(status, &answer)),
        }
    }

    /// One authorised call, with a token refresh on 401 and backoff on 429/5xx, all
    /// within the deadline. A POST that was sent but never answered fails as
    /// `outcome_unknown` (Smartum may have acted); any failure before it was sent, or of
    /// a GET, is `provider_unavailable`.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
        deadline_ms: i64,
    ) -> Result<(u16, Value), MethodError> {
        let mut sent = false;
        let result = self.call_with_retries(method, path, body, idempotency_key, deadline_ms, &mut sent);
        match result {
            Err(error) if error.retryable && sent && method != "GET" => Err(MethodError::outcome_unknown(error.message.to_string())),
            other => other,
        }
    }

    fn call_with_retries(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
        deadline_ms: i64,
        sent: &mut bool,
    ) -> Result<(u16, Value), MethodError> {
        let mut refreshed = false;
        let mut backoff = Backoff::new(FIRST_BACKOFF_MS, MAX_BACKOFF_MS);
        loop {
            let token = self.token(deadline_ms)?;
            let mut headers = vec![Header::new("Authorization", format!("Bearer {token}")), Header::new("Accept", "application/json")];
            if body.is_some() {
                headers.push(Header::new("Content-Type", "application/json"));
            }
            if let Some(key) = idempotency_key {
                headers.push(Header::new("Idempotency-Key", key));
            }
            let payload = body.as_ref().map(|body| body.to_string().into_bytes()).unwrap_or_default();
            let outcome = self.send(method, path, headers, payload, vec![token.clone()], deadline_ms, sent);
            match outcome {
                Ok(response) if response.status == 401 && !refreshed => {
                    refreshed = true;
                    *self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                }
                Ok(response) if is_retryable(response.status) => {
                    self.wait(&mut backoff, retry_after_ms(&response), deadline_ms, &format!("Smartum answered {}", response.status))?
                }
                Ok(response) => return Ok((response.status, parse_body(&response))),
                Err(failure) if failure.retryable => self.wait(&mut backoff, None, deadline_ms, &failure.message.to_string())?,
                Err(failure) => return Err(failure),
            }
        }
    }

    /// Sleeps before a retry, or gives up when the retry could not finish in time.
    fn wait(&self, backoff: &mut Backoff, at_least_ms: Option<u64>, deadline_ms: i64, why: &str) -> Result<(), MethodError> {
        if backoff.wait(self.now_ms(), deadline_ms, at_least_ms) {
            Ok(())
        } else {
            Err(unavailable(format!("Smartum is not answering ({why}); try again shortly")))
        }
    }

    fn token(&self, deadline_ms: i64) -> Result<String, MethodError> {
        let now = self.now_ms();
        let mut cached = self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(token) = cached.as_ref().filter(|token| token.expires_at_ms - TOKEN_RENEW_MARGIN_MS > now) {
            return Ok(token.value.clone());
        }
        let form = form_encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.settings.client_id),
            ("client_secret", &self.settings.client_secret),
        ]);
        let headers = vec![Header::new("Content-Type", "application/x-www-form-urlencoded"), Header::new("Accept", "application/json")];
        let secrets = vec![self.settings.client_secret.clone(), form.clone()];
        let response = self.send("POST", paths::TOKEN, headers, form.into_bytes(), secrets, deadline_ms, &mut false)?;
        let body = parse_body(&response);
        match response.status {
            200 => {
                let value = body
                    .get("access_token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| provider_error("Smartum's token answer has no access_token"))?;
                let expires_in = body.get("expires_in").and_then(Value::as_i64).unwrap_or(300);
                *cached = Some(CachedToken { value: value.to_string(), expires_at_ms: now + expires_in * 1000 });
                Ok(value.to_string())
            }
            400 | 401 | 403 => Err(provider_error("Smartum refused the client credentials (check client_id and client_secret)")),
            status if is_retryable(status) => Err(unavailable(format!("Smartum's token endpoint answered {status}"))),
            status => Err(unexpected(status, &body)),
        }
    }

    /// One HTTP request; `sent` becomes `true` once Smartum may have received it (an
    /// answer came, or the host says the request may have left before it failed).
    #[allow(clippy::too_many_arguments)] // one request's parts, each needed
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: Vec<Header>,
        body: Vec<u8>,
        redact: Vec<String>,
        deadline_ms: i64,
        sent: &mut bool,
    ) -> Result<HttpResponse, MethodError> {
        let remaining = deadline_ms - self.now_ms();
        if remaining <= 0 {
            return Err(unavailable("no time left to ask Smartum"));
        }
        let timeout_ms = (self.settings.request_timeout.as_millis() as u64).min(remaining as u64);
        let request = HttpRequest {
            method: RString::from(method),
            url: RString::from(format!("{}{path}", self.settings.api_url)),
            headers: RVec::from(headers),
            body: RVec::from(body),
            timeout_ms,
            redact: redact.into_iter().map(RString::from).collect(),
            ..Default::default()
        };
        let answer = self.host.http(request).into_result();
        *sent |= answer.as_ref().map_or_else(|error| error.maybe_sent, |_| true);
        answer.map_err(|error| unavailable(format!("cannot reach Smartum: {}", error.kind)))
    }
}

fn is_retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

fn parse_body(response: &HttpResponse) -> Value {
    serde_json::from_slice(response.body.as_slice()).unwrap_or(Value::Null)
}

fn data<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, MethodError> {
    body.get("data").cloned().ok_or_else(|| provider_error("Smartum's answer has no `data`")).and_then(|data| {
        serde_json::from_value(data).map_err(|error| provider_error(format!("Smartum's answer is not understood: {error}")))
    })
}

fn error_code(body: &Value) -> Option<String> {
    body.pointer("/error/code").and_then(Value::as_str).map(str::to_string)
}

fn unexpected(status: u16, body: &Value) -> MethodError {
    let detail = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no error message");
    let code = error_code(body).unwrap_or_else(|| "unknown".to_string());
    provider_error(format!("Smartum answered {status} ({code}: {detail})"))
}

/// `application/x-www-form-urlencoded`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(key, value)| format!("{}={}", percent_encode(key), percent_encode(value))).collect::<Vec<_>>().join("&")
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// docs/smartum.md is the contract a correction from Smartum is checked against: each
    /// path and claim this file assumes is in its table, marked assumed.
    #[test]
    fn the_contract_doc_lists_every_assumed_path_and_claim() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/smartum.md")).expect("docs/smartum.md");
        let row_with = |needle: &str| doc.lines().find(|line| line.starts_with('|') && line.contains(needle)).map(str::to_string);
        let status = |row: &str| row.trim_end_matches('|').rsplit('|').next().unwrap_or_default().trim().to_string();
        for path in [paths::TOKEN, paths::TRANSACTION, paths::CHECK, paths::REFUNDS] {
            let row = row_with(&format!("{{root}}{path}`")).unwrap_or_else(|| panic!("docs/smartum.md has no row for {path}"));
            assert!(status(&row).starts_with("assumed"), "{path} is not marked assumed: {row}");
        }
        let claims_row = row_with("JWS claims").expect("a row for the receipt's claims");
        assert!(status(&claims_row).starts_with("assumed"), "{claims_row}");
        for claim in [claims::TRANSACTION, claims::VENUE, claims::BENEFIT, claims::AMOUNT, claims::CURRENCY] {
            assert!(claims_row.contains(&format!("`{claim}`")), "claim {claim} is not in {claims_row}");
        }
        let aliases_row = row_with("an alias").expect("a row for tolerant reading");
        for alias in claims::TRANSACTION_ALIASES {
            assert!(aliases_row.contains(&format!("`{alias}`")), "alias {alias} is not in {aliases_row}");
        }
    }

    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode(&[("a", "b c"), ("s", "x&y=z/ä")]), "a=b+c&s=x%26y%3Dz%2F%C3%A4");
    }
}
