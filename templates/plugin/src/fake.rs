//! A fake voucher provider: the provider's contract as `wire.rs` codes to it, kept in
//! memory. Tests call it in-process (`transport`); `fake-provider` serves it over HTTP
//! for `posbridge plugin test` and `posbridge sandbox`. `POST /_fake/codes {"amount"}`
//! issues a fresh voucher, as a customer buying one would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use posbridge_plugin_api::{Header, HostError, HttpRequest, HttpResponse, RVec};
use serde_json::{json, Value};

/// A request as the fake reads it.
pub struct FakeRequest<'a> {
    pub method: &'a str,
    /// Path and query, e.g. `/redemptions?reference=pay_…-1`.
    pub target: &'a str,
    pub authorization: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Default)]
struct Ledger {
    serial: u64,
    /// Voucher code → value in cents, and the redemption that used it.
    vouchers: HashMap<String, (u64, Option<String>)>,
    /// Redemption id → the redemption as answered, and what was refunded of it.
    redemptions: HashMap<String, (Value, u64)>,
    /// Idempotency key → the answer given, replayed for a repeat.
    answers: HashMap<String, (u16, Value)>,
}

/// The fake provider.
pub struct FakeProvider {
    api_key: String,
    ledger: Mutex<Ledger>,
}

impl FakeProvider {
    /// A provider accepting `api_key`.
    pub fn new(api_key: &str) -> Arc<FakeProvider> {
        Arc::new(FakeProvider { api_key: api_key.to_string(), ledger: Mutex::new(Ledger::default()) })
    }

    /// Issues a voucher worth `amount` cents; answers its code.
    pub fn issue(&self, amount: u64) -> String {
        let mut ledger = self.ledger.lock().unwrap();
        ledger.serial += 1;
        let code = format!("V-{:08}", ledger.serial);
        ledger.vouchers.insert(code.clone(), (amount, None));
        code
    }

    /// How many redemptions were made (a double charge shows here).
    pub fn redemptions(&self) -> usize {
        self.ledger.lock().unwrap().redemptions.len()
    }

    /// Answers one request: status and JSON body.
    pub fn handle(&self, request: &FakeRequest<'_>) -> (u16, Value) {
        let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
        let (path, query) = request.target.split_once('?').unwrap_or((request.target, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if request.method == "POST" && segments == ["_fake", "codes"] {
            return (201, json!({"code": self.issue(body["amount"].as_u64().unwrap_or(1000))}));
        }
        if request.authorization != Some(format!("Bearer {}", self.api_key).as_str()) {
            return (401, json!({"error": "unauthorized"}));
        }
        let mut ledger = self.ledger.lock().unwrap();
        if let Some(replay) = request.idempotency_key.and_then(|key| ledger.answers.get(key)) {
            return replay.clone();
        }
        let answer = match (request.method, segments.as_slice()) {
            ("GET", ["health"]) => (200, json!({"ok": true})),
            ("POST", ["vouchers", code, "redeem"]) => redeem(&mut ledger, code, &body),
            ("GET", ["redemptions"]) => {
                let reference = query.strip_prefix("reference=").unwrap_or_default();
                let found: Vec<Value> =
                    ledger.redemptions.values().filter(|(redemption, _)| redemption["reference"] == reference).map(|(r, _)| r.clone()).collect();
                (200, json!({"redemptions": found}))
            }
            ("POST", ["redemptions", id, "refunds"]) => refund(&mut ledger, id, &body),
            _ => (404, json!({"error": "not_found"})),
        };
        if let Some(key) = request.idempotency_key.filter(|_| request.method == "POST") {
            ledger.answers.insert(key.to_string(), answer.clone());
        }
        answer
    }

    /// The fake as a test host's transport: requests never leave the process.
    pub fn transport(self: &Arc<Self>) -> impl Fn(&HttpRequest) -> Result<HttpResponse, HostError> + Send + Sync + 'static {
        let fake = self.clone();
        move |request: &HttpRequest| {
            let header = |name: &str| request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str());
            let after_scheme = request.url.split_once("://").map_or(request.url.as_str(), |(_, rest)| rest);
            let target = after_scheme.find('/').map_or("/", |at| &after_scheme[at..]);
            let fake_request = FakeRequest {
                method: request.method.as_str(),
                target,
                authorization: header("authorization"),
                idempotency_key: header("idempotency-key"),
                body: request.body.as_slice(),
            };
            let (status, body) = fake.handle(&fake_request);
            let headers = RVec::from(vec![Header::new("content-type", "application/json")]);
            Ok(HttpResponse { status, headers, body: RVec::from(body.to_string().into_bytes()), ..Default::default() })
        }
    }

    /// Serves the fake over HTTP on `listen` (e.g. `127.0.0.1:9911`) until the process
    /// ends; prints one line once it listens.
    pub fn serve(self: &Arc<Self>, listen: &str) -> std::io::Result<()> {
        let server = tiny_http::Server::http(listen).map_err(std::io::Error::other)?;
        println!("fake provider listening on http://{listen} (vouchers: POST /_fake/codes)");
        for mut incoming in server.incoming_requests() {
            let mut body = Vec::new();
            std::io::Read::read_to_end(incoming.as_reader(), &mut body)?;
            let header = |name: &'static str| incoming.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().to_string());
            let (authorization, idempotency_key) = (header("Authorization"), header("Idempotency-Key"));
            let method = incoming.method().as_str().to_string();
            let target = incoming.url().to_string();
            let request = FakeRequest {
                method: &method,
                target: &target,
                authorization: authorization.as_deref(),
                idempotency_key: idempotency_key.as_deref(),
                body: &body,
            };
            let (status, answer) = self.handle(&request);
            let content_type = tiny_http::Header::from_bytes("Content-Type", "application/json").expect("a valid header");
            let response = tiny_http::Response::from_string(answer.to_string()).with_status_code(status).with_header(content_type);
            let _ = incoming.respond(response);
        }
        Ok(())
    }
}

fn redeem(ledger: &mut Ledger, code: &str, body: &Value) -> (u16, Value) {
    let Some((value, used)) = ledger.vouchers.get(code).cloned() else { return (404, json!({"error": "unknown_voucher"})) };
    if used.is_some() {
        return (409, json!({"error": "already_redeemed"}));
    }
    if value > body["max_amount"].as_u64().unwrap_or(0) {
        return (422, json!({"error": "amount_exceeds_due"}));
    }
    ledger.serial += 1;
    let id = format!("rd_{:08}", ledger.serial);
    let redemption = json!({"redemption_id": id, "voucher": code, "amount": value, "reference": body["reference"]});
    ledger.vouchers.insert(code.to_string(), (value, Some(id.clone())));
    ledger.redemptions.insert(id, (redemption.clone(), 0));
    (201, redemption)
}

fn refund(ledger: &mut Ledger, id: &str, body: &Value) -> (u16, Value) {
    let amount = body["amount"].as_u64().unwrap_or(0);
    let serial = ledger.serial + 1;
    let Some((redemption, refunded)) = ledger.redemptions.get_mut(id) else { return (404, json!({"error": "unknown_redemption"})) };
    if *refunded + amount > redemption["amount"].as_u64().unwrap_or(0) {
        return (422, json!({"error": "amount_exceeds_refundable"}));
    }
    *refunded += amount;
    ledger.serial = serial;
    (201, json!({"refund_id": format!("rf_{serial:08}"), "amount": amount}))
}
