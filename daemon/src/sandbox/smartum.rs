//! A local Smartum: the working contract of docs/smartum.md, strictly (form-encoded
//! token requests, Bearer required, `409` on a second check, refund limits, the
//! same-day window and idempotency keys), with its own ES512 key and transactions made
//! on demand. `posbridge sandbox` runs it for POS developers; the black-box tests use
//! it as their Smartum. One implementation of the contract, for both.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p521::ecdsa::signature::Signer;
use p521::ecdsa::{Signature, SigningKey, VerifyingKey};
use p521::elliptic_curve::rand_core::{OsRng, RngCore};
use p521::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde::Deserialize;
use serde_json::{json, Value};

use super::form::percent_decode;
use crate::payments::model::{now_ms, rfc3339};

/// Who the sandbox accepts and what its receipts say by default.
#[derive(Clone)]
pub struct SandboxOptions {
    pub client_id: String,
    pub client_secret: String,
    pub venue_id: String,
    pub benefit: String,
    pub kid: String,
    /// The receipt signing key; a fresh one when `None`.
    pub signing_key: Option<SigningKey>,
    /// Access token lifetime.
    pub token_ttl: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            client_id: "sandbox-client".into(),
            client_secret: "sandbox-secret".into(),
            venue_id: "ven_SandboxVenue0001".into(),
            benefit: "exercise".into(),
            kid: "sandbox-2026".into(),
            signing_key: None,
            token_ttl: Duration::from_secs(3600),
        }
    }
}

/// A transaction as Smartum keeps it.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub id: String,
    pub venue: String,
    pub benefit: String,
    pub amount: u64,
    pub currency: String,
    pub status: &'static str,
    pub refunded_amount: u64,
    pub check_reference: Option<String>,
    pub created_at: i64,
}

impl Transaction {
    fn json(&self) -> Value {
        json!({
            "id": self.id, "venue": self.venue, "benefit": self.benefit, "amount": self.amount,
            "currency": self.currency, "status": self.status, "refunded_amount": self.refunded_amount,
            "check_reference": self.check_reference, "created_at": rfc3339(self.created_at),
        })
    }
}

/// A paid transaction and the ways its receipt can be presented.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub transaction_id: String,
    /// The signed receipt (what the QR code holds).
    pub jws: String,
    /// A receipt URL carrying the transaction id.
    pub url: String,
}

/// Faults a test (or a curious developer) can switch on.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every API request answers `503`.
    pub unavailable: bool,
    /// A check is recorded, then its answer never comes (a lost answer).
    pub stall_after_check: bool,
    /// Checks and refunds take this long before they take effect and are answered.
    pub slow: Option<Duration>,
    /// Checks and refunds go unanswered and take no effect (requests lost on the way);
    /// the caller's own timeout ends them. Reads are answered.
    pub black_hole: bool,
}

#[derive(Default)]
struct Ledger {
    tokens: HashMap<String, i64>,
    transactions: BTreeMap<String, Transaction>,
    refunds: HashMap<String, (String, u16, Value)>,
    faults: Faults,
    checks: u64,
    token_requests: u64,
    /// When the last check or refund answer was sent.
    last_answer_at: Option<std::time::Instant>,
}

struct Shared {
    options: SandboxOptions,
    key: SigningKey,
    ledger: Mutex<Ledger>,
    checked: Condvar,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running sandbox Smartum on a loopback port. Stops when dropped.
pub struct SmartumSandbox {
    shared: Arc<Shared>,
    /// Where it listens.
    pub address: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    let tail: String = bytes.iter().map(|byte| ALPHABET[(*byte as usize) % ALPHABET.len()] as char).collect();
    format!("{prefix}{tail}")
}

impl SmartumSandbox {
    /// Starts the sandbox on `listen` (port 0 picks one) in a thread of its own.
    pub fn start(listen: SocketAddr, options: SandboxOptions) -> std::io::Result<SmartumSandbox> {
        let key = options.signing_key.clone().unwrap_or_else(|| SigningKey::random(&mut OsRng));
        let shared = Arc::new(Shared { options, key, ledger: Mutex::default(), checked: Condvar::new() });
        let server = super::spawn_server(listen, "smartum-sandbox", router(shared.clone()))?;
        Ok(SmartumSandbox { shared, address: server.address, shutdown: Some(server.shutdown) })
    }

    /// `http://127.0.0.1:PORT`, the `api_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The public key receipts verify with, PEM (SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> String {
        public_key_pem(&self.shared.key)
    }

    /// The sandbox's key as a JWKS document (what `/.well-known/jwks.json` serves).
    pub fn jwks(&self) -> String {
        json!({"keys": [public_jwk(&self.shared.key, &self.shared.options.kid)]}).to_string()
    }

    /// A `[methods.smartum]` section for a posbridge config in `dir` that talks to this
    /// sandbox: writes `smartum.secret` and `smartum-es512.pem` there; `extra` lines go
    /// into the section.
    pub fn config_section(&self, dir: &std::path::Path, extra: &str) -> std::io::Result<String> {
        let options = &self.shared.options;
        super::write_secret(&dir.join("smartum.secret"), &options.client_secret)?;
        std::fs::write(dir.join("smartum-es512.pem"), self.public_key_pem())?;
        Ok(format!(
            "[methods.smartum]\nplugin = \"smartum\"\napi_url = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"smartum.secret\"\nvenue_id = \"{}\"\nbenefit = \"{}\"\neligible_label = \"smartum\"\n{extra}\n[[methods.smartum.jwt_keys]]\nkid = \"{}\"\npem_file = \"smartum-es512.pem\"\n",
            self.url(),
            options.client_id,
            options.venue_id,
            options.benefit,
            options.kid
        ))
    }

    /// The `kid` in the receipts' header.
    pub fn kid(&self) -> &str {
        &self.shared.options.kid
    }

    /// Creates a paid transaction for the configured venue and benefit.
    pub fn create_receipt(&self, amount: u64) -> Receipt {
        let options = &self.shared.options;
        self.create_receipt_for(amount, &options.venue_id.clone(), &options.benefit.clone(), now_ms())
    }

    /// Creates a paid transaction with chosen claims and creation time.
    pub fn create_receipt_for(&self, amount: u64, venue: &str, benefit: &str, created_at: i64) -> Receipt {
        create(&self.shared, amount, venue, benefit, "EUR", created_at)
    }

    /// Signs arbitrary claims with the sandbox key (for tests of bad receipts).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        sign_with(&self.shared.key, header, claims)
    }

    /// A transaction as Smartum sees it now.
    pub fn transaction(&self, id: &str) -> Option<Transaction> {
        self.shared.ledger().transactions.get(id).cloned()
    }

    /// Marks a paid transaction checked by someone else (`reference`), as another shop's
    /// till would while this one is cut off: `false` if it is not `paid`.
    pub fn check_elsewhere(&self, id: &str, reference: &str) -> bool {
        let mut ledger = self.shared.ledger();
        match ledger.transactions.get_mut(id) {
            Some(transaction) if transaction.status == "paid" => {
                transaction.status = "checked";
                transaction.check_reference = Some(reference.to_string());
                true
            }
            _ => false,
        }
    }

    /// When the last check or refund was answered (for "settled within a second of
    /// the provider's answer").
    pub fn last_answer_at(&self) -> Option<std::time::Instant> {
        self.shared.ledger().last_answer_at
    }

    /// How many refunds the sandbox has taken.
    pub fn refund_count(&self) -> usize {
        self.shared.ledger().refunds.len()
    }

    /// Switches faults on or off.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.ledger().faults = faults;
    }

    /// Checks recorded so far.
    pub fn checks(&self) -> u64 {
        self.shared.ledger().checks
    }

    /// Token requests answered so far.
    pub fn token_requests(&self) -> u64 {
        self.shared.ledger().token_requests
    }

    /// Waits until at least `count` checks were recorded, or `timeout` passes.
    pub fn wait_for_checks(&self, count: u64, timeout: Duration) -> bool {
        let ledger = self.shared.ledger();
        let (ledger, _) = self
            .shared
            .checked
            .wait_timeout_while(ledger, timeout, |ledger| ledger.checks < count)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ledger.checks >= count
    }

    /// Forgets every access token, as if they expired (the next call gets a 401).
    pub fn revoke_tokens(&self) {
        self.shared.ledger().tokens.clear();
    }
}

impl Drop for SmartumSandbox {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A PEM public key for a signing key.
/// A public key as a JWK (`kty` EC, `crv` P-521) with its `kid`.
pub fn public_jwk(key: &SigningKey, kid: &str) -> Value {
    let verifying = VerifyingKey::from(key);
    let jwk = p521::PublicKey::from_affine(*verifying.as_affine()).map(|public| public.to_jwk_string()).unwrap_or_default();
    let mut jwk: Value = serde_json::from_str(&jwk).unwrap_or_else(|_| json!({}));
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!("ES512");
    jwk["use"] = json!("sig");
    jwk
}

/// A receipt signed with `key` (a test's second key, say) rather than the sandbox's.
pub fn sign_receipt(key: &SigningKey, header: &Value, claims: &Value) -> String {
    sign_with(key, header, claims)
}

/// `GET /.well-known/jwks.json`: the sandbox's signing key, as Smartum would publish it.
async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({"keys": [public_jwk(&shared.key, &shared.options.kid)]})).into_response()
}

pub fn public_key_pem(key: &SigningKey) -> String {
    let verifying = VerifyingKey::from(key);
    p521::PublicKey::from_affine(*verifying.as_affine())
        .and_then(|public| public.to_public_key_pem(LineEnding::LF).map_err(|_| p521::elliptic_curve::Error))
        .unwrap_or_default()
}

/// A signing key from a PKCS#8 PEM file's text.
pub fn signing_key_from_pem(pem: &str) -> Option<SigningKey> {
    p521::SecretKey::from_pkcs8_pem(pem).ok().and_then(|secret| SigningKey::from_slice(&secret.to_bytes()).ok())
}

/// A new signing key as PKCS#8 PEM text.
pub fn new_signing_key_pem() -> String {
    let secret = p521::SecretKey::random(&mut OsRng);
    secret.to_pkcs8_pem(LineEnding::LF).map(|pem| pem.to_string()).unwrap_or_default()
}

fn sign_with(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fn create(shared: &Shared, amount: u64, venue: &str, benefit: &str, currency: &str, created_at: i64) -> Receipt {
    let id = random_id("tx_");
    let transaction = Transaction {
        id: id.clone(),
        venue: venue.to_string(),
        benefit: benefit.to_string(),
        amount,
        currency: currency.to_string(),
        status: "paid",
        refunded_amount: 0,
        check_reference: None,
        created_at,
    };
    shared.ledger().transactions.insert(id.clone(), transaction);
    let header = json!({"alg": "ES512", "typ": "JWT", "kid": shared.options.kid});
    let claims = json!({"iss": "smartum", "jti": id, "venue": venue, "benefit": benefit, "amount": amount, "currency": currency, "iat": created_at / 1000});
    Receipt { jws: sign_with(&shared.key, &header, &claims), url: format!("https://pay.smartum.fi/receipts/{id}"), transaction_id: id }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/v1/transactions/{id}", get(transaction))
        .route("/v1/transactions/{id}/check", post(check))
        .route("/v1/transactions/{id}/refunds", post(refund))
        .route("/_sandbox/transactions", post(sandbox_create))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(shared)
}

/// `POST /oauth/token`: client credentials, form-encoded only.
async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if shared.ledger().faults.unavailable {
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the sandbox is switched to unavailable");
    }
    let content_type = headers.get("content-type").and_then(|value| value.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "token requests are application/x-www-form-urlencoded");
    }
    let form: HashMap<String, String> = form_pairs(&body);
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "grant_type must be client_credentials");
    }
    let options = &shared.options;
    if form.get("client_id") != Some(&options.client_id) || form.get("client_secret") != Some(&options.client_secret) {
        return error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client or wrong secret");
    }
    let token = random_id("at_");
    let ttl = options.token_ttl.as_secs() as i64;
    let mut ledger = shared.ledger();
    ledger.token_requests += 1;
    ledger.tokens.insert(token.clone(), now_ms() + ttl * 1000);
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl})).into_response()
}

fn form_pairs(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (percent_decode(key), percent_decode(value)))
        .collect()
}

/// Waits out the `slow` fault, and forever in the `black_hole` one.
async fn obey_delays(shared: &Shared) {
    let (slow, black_hole) = {
        let ledger = shared.ledger();
        (ledger.faults.slow, ledger.faults.black_hole)
    };
    if black_hole {
        std::future::pending::<()>().await;
    }
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
}

/// Checks the Bearer token and the unavailable fault: `Some` is the refusal to answer.
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let ledger = shared.ledger();
    if ledger.faults.unavailable {
        return Some(error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the sandbox is switched to unavailable"));
    }
    let token = headers.get("authorization").and_then(|value| value.to_str().ok()).and_then(|value| value.strip_prefix("Bearer "));
    match token.and_then(|token| ledger.tokens.get(token)) {
        Some(expires) if *expires > now_ms() => None,
        _ => Some(error(StatusCode::UNAUTHORIZED, "invalid_token", "a valid Bearer access token is required")),
    }
}

async fn transaction(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(answer) = refusal(&shared, &headers) {
        return answer;
    }
    match shared.ledger().transactions.get(&id) {
        Some(transaction) => Json(json!({"data": transaction.json()})).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such transaction"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    venue: String,
    reference: String,
}

async fn check(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    obey_delays(&shared).await;
    if let Some(answer) = refusal(&shared, &headers) {
        return answer;
    }
    let Ok(request) = serde_json::from_slice::<CheckBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "body must be {\"venue\", \"reference\"}");
    };
    let (answer, stall) = {
        let mut ledger = shared.ledger();
        let stall = ledger.faults.stall_after_check;
        let Some(transaction) = ledger.transactions.get_mut(&id) else {
            return error(StatusCode::NOT_FOUND, "not_found", "no such transaction");
        };
        if transaction.venue != request.venue {
            return error(StatusCode::UNPROCESSABLE_ENTITY, "venue_mismatch", "the transaction was paid to another venue");
        }
        if transaction.status != "paid" {
            return error(StatusCode::CONFLICT, "already_checked", "the transaction was checked before");
        }
        transaction.status = "checked";
        transaction.check_reference = Some(request.reference);
        let answer = Json(json!({"data": transaction.json()})).into_response();
        ledger.checks += 1;
        if !stall {
            ledger.last_answer_at = Some(std::time::Instant::now());
        }
        (answer, stall)
    };
    shared.checked.notify_all();
    if stall {
        std::future::pending::<()>().await;
    }
    answer
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    amount: u64,
}

async fn refund(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    obey_delays(&shared).await;
    if let Some(answer) = refusal(&shared, &headers) {
        return answer;
    }
    let Some(key) = headers.get("idempotency-key").and_then(|value| value.to_str().ok()).map(str::to_string) else {
        return error(StatusCode::BAD_REQUEST, "idempotency_key_required", "refunds need an Idempotency-Key header");
    };
    let Ok(request) = serde_json::from_slice::<RefundBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "body must be {\"amount\"}");
    };
    let fingerprint = format!("{id}:{}", request.amount);
    let mut ledger = shared.ledger();
    if let Some((seen, status, answer)) = ledger.refunds.get(&key) {
        if *seen != fingerprint {
            return error(StatusCode::CONFLICT, "idempotency_conflict", "this Idempotency-Key was used for another refund");
        }
        return (StatusCode::from_u16(*status).unwrap_or(StatusCode::OK), Json(answer.clone())).into_response();
    }
    let Some(transaction) = ledger.transactions.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such transaction");
    };
    if !posbridge_plugin_helpers::time::same_helsinki_day(transaction.created_at, now_ms()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "refund_window_closed", "refunds are possible on the day of the payment only");
    }
    if request.amount == 0 || request.amount > transaction.amount - transaction.refunded_amount {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "amount_exceeds_refundable", "more than what is left to refund");
    }
    transaction.refunded_amount += request.amount;
    transaction.status = if transaction.refunded_amount == transaction.amount { "refunded" } else { "partially_refunded" };
    let answer = json!({"data": {"id": random_id("rf_"), "transaction": id, "amount": request.amount, "status": "succeeded"}});
    ledger.refunds.insert(key, (fingerprint, 201, answer.clone()));
    ledger.last_answer_at = Some(std::time::Instant::now());
    (StatusCode::CREATED, Json(answer)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    amount: u64,
    venue: Option<String>,
    benefit: Option<String>,
    currency: Option<String>,
}

/// `POST /_sandbox/transactions`: a customer pays in the app (sandbox only).
async fn sandbox_create(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<CreateBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "body must be {\"amount\", \"venue\"?, \"benefit\"?, \"currency\"?}");
    };
    let venue = request.venue.unwrap_or_else(|| shared.options.venue_id.clone());
    let benefit = request.benefit.unwrap_or_else(|| shared.options.benefit.clone());
    let receipt = create(&shared, request.amount, &venue, &benefit, request.currency.as_deref().unwrap_or("EUR"), now_ms());
    (StatusCode::CREATED, Json(json!({"transaction_id": receipt.transaction_id, "receipt": receipt.jws, "url": receipt.url})))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_pem() {
        let pem = new_signing_key_pem();
        let key = signing_key_from_pem(&pem).expect("parse");
        assert!(public_key_pem(&key).starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}
