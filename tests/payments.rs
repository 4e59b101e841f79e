//! Smartum payments end to end: the real binary on a loopback port, the real Smartum
//! plugin, and the sandbox Smartum (docs/smartum.md) with an ES512 key made in the test.

use std::net::SocketAddr;
use std::time::Duration;

use posbridge::sandbox::{Faults, SandboxOptions, SmartumSandbox};
use posbridge_testkit::{Daemon, Install, TILL_TOKEN};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

struct Shop {
    install: Install,
    smartum: SmartumSandbox,
    daemon: Option<Daemon>,
}

impl Shop {
    /// A shop with the Smartum plugin against a fresh sandbox; `method_extra` goes into
    /// `[methods.smartum]`, `config_extra` at the end of the config.
    fn new(method_extra: &str, config_extra: &str) -> Shop {
        Shop::with_options(SandboxOptions::default(), method_extra, config_extra)
    }

    fn with_options(options: SandboxOptions, method_extra: &str, config_extra: &str) -> Shop {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let smartum = SmartumSandbox::start(listen, options).expect("sandbox");
        let install = Install::new(BIN);
        install.add_plugin("posbridge-plugin-smartum");
        install.add_plugin("posbridge-test-plugin-panicky");
        let method = smartum.config_section(install.path(), method_extra).unwrap();
        install.configure(&format!("{method}\n[methods.boom]\nplugin = \"panicky\"\n\n{config_extra}"));
        let daemon = install.start();
        Shop { install, smartum, daemon: Some(daemon) }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("running")
    }

    /// kill -9, then start again on the same store.
    fn crash_and_restart(&mut self) {
        self.daemon.take().expect("running").kill();
        self.daemon = Some(self.install.start());
    }

    /// SIGTERM, then start again.
    fn restart(&mut self) {
        let status = self.daemon.take().expect("running").terminate();
        assert!(status.success());
        self.daemon = Some(self.install.start());
    }

    /// A 45.00 purchase of which 30.00 is Smartum-eligible.
    fn create(&self) -> Value {
        let (status, payment) = self.daemon().post("/v1/payments", &cart(4500, 3000));
        assert_eq!(status, 201, "{payment}");
        payment
    }

    fn scan(&self, payment: &Value, code: &str) -> (u16, Value) {
        self.daemon().post(&format!("/v1/payments/{}/scan", id(payment)), &json!({"code": code}))
    }

    fn payment(&self, payment: &Value) -> Value {
        let (status, body) = self.daemon().get_json(&format!("/v1/payments/{}", id(payment)));
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn id(value: &Value) -> &str {
    value["id"].as_str().expect("an id")
}

fn cart(total: u64, eligible: u64) -> Value {
    json!({
        "method": "smartum", "amount": total, "currency": "EUR", "reference": "R-2026-000123",
        "lines": [
            {"sku": "GYM-10", "name": "10x gym visit", "amount": eligible, "labels": ["smartum"]},
            {"sku": "DRINK", "name": "Protein drink", "amount": total - eligible, "labels": []}
        ]
    })
}

fn failure_code(payment: &Value) -> &str {
    payment["failure"]["code"].as_str().unwrap_or("")
}

#[test]
fn scanned_receipt_pays_once_and_is_marked_used_at_smartum() {
    let shop = Shop::new("", "");
    let payment = shop.create();
    assert_eq!(payment["status"], "awaiting_scan");
    assert_eq!(payment["eligible_amount"], 3000);
    assert_eq!(payment["remaining_amount"], 4500);
    assert_eq!(payment["version"], 1);

    let receipt = shop.smartum.create_receipt(3000);
    let (status, paid) = shop.scan(&payment, &receipt.jws);
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(paid["captured_amount"], 3000);
    assert_eq!(paid["remaining_amount"], 1500);
    assert_eq!(paid["transaction_id"], receipt.transaction_id.as_str());
    assert_eq!(paid["verified"], true);
    assert_eq!(paid["benefit"], "exercise");
    assert!(paid["version"].as_u64().unwrap() > 1);

    let at_smartum = shop.smartum.transaction(&receipt.transaction_id).unwrap();
    assert_eq!(at_smartum.status, "checked");
    let first_attempt = format!("{}-1", id(&payment));
    assert_eq!(at_smartum.check_reference.as_deref(), Some(first_attempt.as_str()), "the check names the attempt");
    assert_eq!(shop.smartum.checks(), 1);
    assert_eq!(shop.payment(&payment), paid, "GET answers what the scan answered");
}

#[test]
fn smaller_receipt_leaves_the_rest_to_pay() {
    let shop = Shop::new("", "");
    let payment = shop.create();
    let receipt = shop.smartum.create_receipt(2000);
    let (_, paid) = shop.scan(&payment, &receipt.jws);
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["captured_amount"], 2000);
    assert_eq!(paid["remaining_amount"], 2500);
}

#[test]
fn bare_transaction_id_and_receipt_url_are_confirmed_online() {
    let shop = Shop::new("", "");
    for code in [|r: &posbridge::sandbox::Receipt| r.transaction_id.clone(), |r: &posbridge::sandbox::Receipt| r.url.clone()] {
        let payment = shop.create();
        let receipt = shop.smartum.create_receipt(1000);
        let (_, paid) = shop.scan(&payment, &code(&receipt));
        assert_eq!(paid["status"], "succeeded", "{paid}");
        assert_eq!(paid["transaction_id"], receipt.transaction_id.as_str());
        assert_eq!(paid["captured_amount"], 1000);
    }
}

#[test]
fn a_receipt_pays_once_also_across_a_restart() {
    let mut shop = Shop::new("", "");
    let receipt = shop.smartum.create_receipt(3000);
    let first = shop.create();
    assert_eq!(shop.scan(&first, &receipt.jws).1["status"], "succeeded");

    let second = shop.create();
    let (status, refused) = shop.scan(&second, &receipt.jws);
    assert_eq!(status, 200);
    assert_eq!(refused["status"], "failed");
    assert_eq!(failure_code(&refused), "receipt_already_used");

    shop.crash_and_restart();
    let third = shop.create();
    let (_, refused) = shop.scan(&third, &receipt.transaction_id);
    assert_eq!(failure_code(&refused), "receipt_already_used", "{refused}");
    assert_eq!(shop.smartum.checks(), 1, "Smartum saw one check");
    // The first payment is still there, succeeded, after the crash.
    assert_eq!(shop.payment(&first)["status"], "succeeded");
}

#[test]
fn every_receipt_failure_has_its_code_and_the_payment_can_be_retried() {
    let shop = Shop::new("", "");
    let other_key = SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), SandboxOptions::default()).unwrap();
    let good = shop.smartum.create_receipt(3000);
    let mut tampered: Vec<String> = good.jws.split('.').map(str::to_string).collect();
    tampered[1] = base64_url(
        &json!({"iss": "smartum", "jti": good.transaction_id, "venue": "ven_SandboxVenue0001", "benefit": "exercise", "amount": 1, "currency": "EUR"}),
    );
    let header = json!({"alg": "ES512", "typ": "JWT", "kid": shop.smartum.kid()});
    let claims = |venue: &str, benefit: &str, amount: u64| json!({"iss": "smartum", "jti": "tx_AAAAAAAAAAAAAAAA", "venue": venue, "benefit": benefit, "amount": amount, "currency": "EUR", "iat": 1});
    let cases = [
        ("not a receipt".to_string(), "invalid_code"),
        ("tx_short".to_string(), "invalid_code"),
        (tampered.join("."), "bad_signature"),
        (other_key.create_receipt(3000).jws, "bad_signature"),
        (
            shop.smartum.sign(&json!({"alg": "ES512", "kid": "unknown-kid"}), &claims("ven_SandboxVenue0001", "exercise", 100)),
            "bad_signature",
        ),
        (
            shop.smartum.sign(&json!({"alg": "HS256", "kid": shop.smartum.kid()}), &claims("ven_SandboxVenue0001", "exercise", 100)),
            "bad_signature",
        ),
        (shop.smartum.sign(&header, &claims("ven_SomeOtherVenue01", "exercise", 100)), "wrong_venue"),
        (shop.smartum.sign(&header, &claims("ven_SandboxVenue0001", "lunch", 100)), "wrong_benefit"),
        (shop.smartum.create_receipt(3001).jws, "amount_exceeds_due"),
        (shop.smartum.create_receipt_for(500, "ven_SomeOtherVenue01", "exercise", now_ms()).transaction_id, "wrong_venue"),
        ("tx_UnknownUnknown00".to_string(), "invalid_code"),
    ];
    let payment = shop.create();
    for (code, expected) in &cases {
        let (status, answer) = shop.scan(&payment, code);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], "failed", "{code}: {answer}");
        assert_eq!(failure_code(&answer), *expected, "{code}: {answer}");
        assert!(!answer["failure"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(shop.smartum.checks(), 0, "no refused receipt was checked");
    // The same payment then takes a good receipt.
    let (_, paid) = shop.scan(&payment, &good.jws);
    assert_eq!(paid["status"], "succeeded", "{paid}");
}

#[test]
fn wrong_smartum_credentials_are_a_provider_error() {
    let options = SandboxOptions { client_secret: "the-real-secret".into(), ..SandboxOptions::default() };
    let shop = Shop::with_options(options, "", "");
    // The installation was configured with the sandbox's secret; make Smartum expect another.
    shop.install.write("smartum.secret", "a-wrong-secret\n");
    let mut shop = shop;
    shop.restart();
    let payment = shop.create();
    let receipt = shop.smartum.create_receipt(1000);
    let (_, answer) = shop.scan(&payment, &receipt.transaction_id);
    assert_eq!(failure_code(&answer), "provider_error", "{answer}");
}

#[test]
fn smartum_down_is_provider_unavailable_nothing_is_lost_and_a_later_scan_succeeds() {
    let shop = Shop::new("timeout = \"3s\"", "");
    let payment = shop.create();
    let receipt = shop.smartum.create_receipt(3000);
    shop.smartum.set_faults(Faults { unavailable: true, ..Faults::default() });
    let (status, answer) = shop.scan(&payment, &receipt.jws);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "failed");
    assert_eq!(failure_code(&answer), "provider_unavailable", "{answer}");
    assert_eq!(shop.smartum.transaction(&receipt.transaction_id).unwrap().status, "paid", "nothing was taken");

    shop.smartum.set_faults(Faults::default());
    let (_, paid) = shop.scan(&payment, &receipt.jws);
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(paid["captured_amount"], 3000);
}

#[test]
fn crash_after_smartum_checked_the_receipt_ends_succeeded_once() {
    let mut shop = Shop::new("", "");
    let payment = shop.create();
    let receipt = shop.smartum.create_receipt(3000);
    shop.smartum.set_faults(Faults { stall_after_check: true, ..Faults::default() });

    // The answer never comes: the daemon is killed while it waits for Smartum.
    let scanning = shop.daemon().post_unanswered(&format!("/v1/payments/{}/scan", id(&payment)), &json!({"code": receipt.jws}));
    assert!(shop.smartum.wait_for_checks(1, Duration::from_secs(30)), "Smartum never saw the check");
    assert_eq!(shop.payment(&payment)["status"], "processing", "write-ahead recorded the attempt");

    shop.smartum.set_faults(Faults::default());
    shop.crash_and_restart();
    let (_, resolved) = shop.daemon().get_json(&format!("/v1/payments/{}?wait=30&version=2", id(&payment)));
    assert_eq!(resolved["status"], "succeeded", "{resolved}");
    assert_eq!(resolved["captured_amount"], 3000);
    assert_eq!(resolved["transaction_id"], receipt.transaction_id.as_str());
    assert_eq!(shop.smartum.checks(), 1, "redeemed once");
    scanning.join().unwrap();

    // And the receipt cannot pay again.
    let again = shop.create();
    assert_eq!(failure_code(&shop.scan(&again, &receipt.jws).1), "receipt_already_used");
}

#[test]
fn manual_entry_succeeds_unverified_and_its_refund_needs_the_transaction_id() {
    let shop = Shop::new("", "");
    let receipt = shop.smartum.create_receipt(2500);
    let payment = shop.create();
    let (status, paid) = shop.daemon().post(&format!("/v1/payments/{}/manual", id(&payment)), &json!({"amount": 2500}));
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["verified"], false);
    assert_eq!(paid["transaction_id"], Value::Null);
    assert_eq!(paid["remaining_amount"], 2000);

    let (status, refused) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&payment), "amount": 1000}));
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "transaction_id_required");
    assert_eq!(refused["error"]["field"], "transaction_id");
    assert_eq!(shop.payment(&payment)["refunded_amount"], 0, "a refused refund reserves nothing");

    let by_transaction = json!({"method": "smartum", "transaction_id": receipt.transaction_id, "amount": 1000});
    let (status, refused) = shop.daemon().post("/v1/refunds", &by_transaction);
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("forbidden_role")), "a till refunds its payments only: {refused}");
    let (status, refund) = shop.daemon().post_as(posbridge_testkit::MANAGER_TOKEN, "/v1/refunds", &by_transaction);
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "succeeded");
    assert_eq!(refund["payment"], Value::Null);
    assert_eq!(refund["transaction_id"], receipt.transaction_id.as_str());
    assert_eq!(shop.smartum.transaction(&receipt.transaction_id).unwrap().status, "partially_refunded");

    let (status, too_much) = shop.daemon().post(&format!("/v1/payments/{}/manual", id(&shop.create())), &json!({"amount": 3001}));
    assert_eq!(status, 422);
    assert_eq!(too_much["error"]["code"], "amount_exceeds_due");
}

#[test]
fn manual_entry_with_transaction_id_is_refunded_from_the_cache() {
    let shop = Shop::new("", "");
    let receipt = shop.smartum.create_receipt(3000);
    let payment = shop.create();
    let (_, paid) = shop
        .daemon()
        .post(&format!("/v1/payments/{}/manual", id(&payment)), &json!({"amount": 3000, "transaction_id": receipt.transaction_id}));
    assert_eq!(paid["transaction_id"], receipt.transaction_id.as_str());
    let (status, refund) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&payment)}));
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["amount"], 3000);
    assert_eq!(shop.smartum.transaction(&receipt.transaction_id).unwrap().status, "refunded");
}

#[test]
fn scanned_payment_refunds_from_cache_partially_then_fully_and_never_more() {
    let mut shop = Shop::new("", "");
    let receipt = shop.smartum.create_receipt(3000);
    let payment = shop.create();
    shop.scan(&payment, &receipt.jws);

    let (status, first) =
        shop.daemon().post("/v1/refunds", &json!({"payment": id(&payment), "amount": 1000, "reason": "customer_request"}));
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["amount"], 1000);
    assert!(first["id"].as_str().unwrap().starts_with("re_"));
    assert_eq!(shop.payment(&payment)["refunded_amount"], 1000);

    let (status, over) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&payment), "amount": 2001}));
    assert_eq!(status, 422);
    assert_eq!(over["error"]["code"], "refund_exceeds_payment");

    shop.restart();
    let (status, rest) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&payment)}));
    assert_eq!(status, 201, "{rest}");
    assert_eq!(rest["amount"], 2000, "the whole refundable rest");
    assert_eq!(shop.payment(&payment)["refunded_amount"], 3000);
    let (_, read) = shop.daemon().get_json(&format!("/v1/refunds/{}", rest["id"].as_str().unwrap()));
    assert_eq!(read, rest);

    let (status, nothing_left) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&payment), "amount": 1}));
    assert_eq!(status, 422);
    assert_eq!(nothing_left["error"]["code"], "refund_exceeds_payment");
    let at_smartum = shop.smartum.transaction(&receipt.transaction_id).unwrap();
    assert_eq!((at_smartum.status, at_smartum.refunded_amount), ("refunded", 3000));
}

#[test]
fn refunds_after_the_payment_day_are_refused() {
    let shop = Shop::new("", "");
    let two_days_ago = now_ms() - 2 * 86_400_000;
    let receipt = shop.smartum.create_receipt_for(1500, "ven_SandboxVenue0001", "exercise", two_days_ago);
    let payment = shop.create();
    assert_eq!(shop.scan(&payment, &receipt.jws).1["status"], "succeeded");
    let (status, refused) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&payment)}));
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "refund_window_closed");
    assert_eq!(shop.payment(&payment)["refunded_amount"], 0, "the reservation is given back");
}

#[test]
fn idempotent_replay_and_conflict_also_after_a_restart() {
    let mut shop = Shop::new("", "");
    let body = cart(4500, 3000);
    let post = |shop: &Shop, key: &str, body: &Value| {
        let response =
            shop.daemon().request(reqwest::Method::POST, "/v1/payments").header("Idempotency-Key", key).json(body).send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let first = post(&shop, "create-R-123", &body);
    assert_eq!(first.0, 201);
    let again = post(&shop, "create-R-123", &body);
    assert_eq!(again, first, "status and body identical");

    shop.crash_and_restart();
    let after_restart = post(&shop, "create-R-123", &body);
    assert_eq!(after_restart, first);
    let (status, conflict) = post(&shop, "create-R-123", &cart(4600, 3000));
    assert_eq!(status, 409);
    assert!(conflict.contains("idempotency_conflict"), "{conflict}");
    let (_, list) = shop.daemon().get_json("/v1/payments");
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "one payment was created: {list}");

    // A replayed error is identical too, and a scan replays its answer.
    let payment: Value = serde_json::from_str(&first.1).unwrap();
    let receipt = shop.smartum.create_receipt(3000);
    let scan = |key: &str| {
        let response = shop
            .daemon()
            .request(reqwest::Method::POST, &format!("/v1/payments/{}/scan", id(&payment)))
            .header("Idempotency-Key", key)
            .json(&json!({"code": receipt.jws}))
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let scanned = scan("scan-1");
    assert_eq!(scan("scan-1"), scanned);
    assert_eq!(shop.smartum.checks(), 1);
    let (status, bad_key) = post(&shop, "", &body);
    assert_eq!(status, 400, "{bad_key}");
}

#[test]
fn bad_requests_get_documented_errors_and_change_nothing() {
    let shop = Shop::new("", "");
    let paid = shop.create();
    shop.scan(&paid, &shop.smartum.create_receipt(3000).jws);
    let before = (shop.daemon().get_json("/v1/payments").1, shop.payment(&paid));
    let raw = |body: Vec<u8>| {
        let response = shop
            .daemon()
            .request(reqwest::Method::POST, "/v1/payments")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    let mut negative = cart(4500, 3000);
    negative["amount"] = json!(-4500);
    let mut negative_line = cart(4500, 3000);
    negative_line["lines"][1]["amount"] = json!(-1);
    let mut unknown = cart(4500, 3000);
    unknown["tip"] = json!(100);
    let mut unknown_in_line = cart(4500, 3000);
    unknown_in_line["lines"][0]["colour"] = json!("red");
    let mut not_summing = cart(4500, 3000);
    not_summing["amount"] = json!(5000);
    let mut nothing = cart(4500, 3000);
    nothing["lines"][0]["labels"] = json!([]);
    let mut unknown_method = cart(4500, 3000);
    unknown_method["method"] = json!("bitcoin");
    let cases: Vec<(Vec<u8>, u16, &str, Option<&str>)> = vec![
        (b"{\"method\": \"smartum\", ".to_vec(), 400, "invalid_request", None),
        (b"not json at all".to_vec(), 400, "invalid_request", None),
        (serde_json::to_vec(&negative).unwrap(), 400, "invalid_request", Some("amount")),
        (serde_json::to_vec(&negative_line).unwrap(), 400, "invalid_request", Some("lines[1].amount")),
        (serde_json::to_vec(&unknown).unwrap(), 400, "invalid_request", Some("tip")),
        (serde_json::to_vec(&unknown_in_line).unwrap(), 400, "invalid_request", Some("lines[0].colour")),
        (serde_json::to_vec(&not_summing).unwrap(), 422, "lines_do_not_sum", Some("lines")),
        (serde_json::to_vec(&nothing).unwrap(), 422, "nothing_eligible", Some("lines")),
        (serde_json::to_vec(&unknown_method).unwrap(), 422, "unknown_method", Some("method")),
    ];
    for (body, status, code, field) in cases {
        let (got, answer) = raw(body);
        assert_eq!(got, status, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }
    }
    // 8 MiB: refused before it is read (its own connection, which the server closes).
    let huge = reqwest::blocking::Client::new()
        .post(format!("{}/v1/payments", shop.daemon().base_url))
        .bearer_auth(TILL_TOKEN)
        .header("Content-Type", "application/json")
        .body(vec![b' '; 8 * 1024 * 1024])
        .send()
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(huge.json::<Value>().unwrap()["error"]["code"], "payload_too_large");
    let (status, answer) = shop.daemon().post(&format!("/v1/payments/{}/scan", id(&paid)), &json!({"code": "x", "extra": 1}));
    assert_eq!((status, answer["error"]["field"].as_str()), (400, Some("extra")));
    assert_eq!(shop.daemon().get("/healthz").status(), 200, "the daemon is unharmed");
    let after = (shop.daemon().get_json("/v1/payments").1, shop.payment(&paid));
    assert_eq!(after, before, "nothing stored changed");
}

#[test]
fn tokens_host_and_origins_are_enforced() {
    let mut shop = Shop::new("", "");
    shop.install.write("conf.d/origins.toml", "[server]\nallowed_origins = [\"http://pos.localhost:3000\"]\n");
    shop.restart();
    let url = format!("{}/v1/methods", shop.daemon().base_url);
    let client = reqwest::blocking::Client::new();
    assert_eq!(client.get(&url).send().unwrap().status(), 401);
    assert_eq!(client.get(&url).bearer_auth("not-the-token-at-all-0000").send().unwrap().status(), 401);
    let ok = client.get(&url).bearer_auth(TILL_TOKEN).send().unwrap();
    assert_eq!(ok.status(), 200);
    let methods: Value = ok.json().unwrap();
    let smartum = methods["data"].as_array().unwrap().iter().find(|m| m["id"] == "smartum").unwrap();
    assert_eq!(smartum["plugin"], "smartum");
    assert!(smartum["capabilities"].as_array().unwrap().contains(&json!("scan")));

    let rebound = client.get(&url).bearer_auth(TILL_TOKEN).header("Host", "evil.example:8787").send().unwrap();
    assert_eq!(rebound.status(), 403);
    assert_eq!(rebound.json::<Value>().unwrap()["error"]["code"], "forbidden_host");
    let health = client.get(format!("{}/healthz", shop.daemon().base_url)).header("Host", "attacker.example").send().unwrap();
    assert_eq!(health.status(), 403);

    let foreign = client.get(&url).bearer_auth(TILL_TOKEN).header("Origin", "https://evil.example").send().unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(foreign.json::<Value>().unwrap()["error"]["code"], "origin_not_allowed");
    let allowed = client.get(&url).bearer_auth(TILL_TOKEN).header("Origin", "http://pos.localhost:3000").send().unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "http://pos.localhost:3000");
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://pos.localhost:3000")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .unwrap();
    assert!(preflight.status().is_success());
    assert!(preflight.headers()["access-control-allow-headers"].to_str().unwrap().contains("Idempotency-Key"));
}

#[test]
fn events_stream_resumes_by_last_event_id_across_a_restart() {
    let mut shop = Shop::new("", "");
    let payment = shop.create();
    shop.scan(&payment, &shop.smartum.create_receipt(3000).jws);
    let first_three = shop.daemon().events(None, 3);
    assert_eq!(first_three.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(first_three.iter().all(|e| e.1 == "payment.updated"));
    assert_eq!(first_three[2].2["status"], "succeeded");

    shop.restart();
    let refund = shop.daemon().post("/v1/refunds", &json!({"payment": id(&payment), "amount": 500})).1;
    let resumed = shop.daemon().events(Some(2), 3);
    assert_eq!(resumed[0].0, 3);
    assert_eq!(resumed[0].2["status"], "succeeded");
    let kinds: Vec<&str> = resumed[1..].iter().map(|e| e.1.as_str()).collect();
    assert!(kinds.contains(&"refund.updated"), "{kinds:?}");
    assert!(resumed.iter().any(|e| e.2["id"] == refund["id"]));
}

#[test]
fn long_poll_returns_when_the_payment_changes() {
    let shop = Shop::new("", "");
    let payment = shop.create();
    let url = format!("{}/v1/payments/{}?wait=30&version=1", shop.daemon().base_url, id(&payment));
    let waiting = std::thread::spawn(move || {
        reqwest::blocking::Client::new().get(url).bearer_auth(TILL_TOKEN).send().unwrap().json::<Value>().unwrap()
    });
    let receipt = shop.smartum.create_receipt(3000);
    shop.scan(&payment, &receipt.jws);
    let changed = waiting.join().unwrap();
    assert!(changed["version"].as_u64().unwrap() > 1, "{changed}");

    let (status, _) = shop.daemon().get_json(&format!("/v1/payments/{}?wait=61", id(&payment)));
    assert_eq!(status, 400);
    let (status, current) = shop.daemon().get_json(&format!("/v1/payments/{}?wait=1&version=999", id(&payment)));
    assert_eq!(status, 200, "a wait that times out answers the current payment");
    assert_eq!(current["status"], "succeeded");
}

#[test]
fn unscanned_payments_expire_and_cancel_works_only_before_success() {
    let shop = Shop::new("", "[payments]\nscan_timeout = \"1s\"\n");
    let expiring = shop.create();
    let (_, expired) = shop.daemon().get_json(&format!("/v1/payments/{}?wait=30&version=1", id(&expiring)));
    assert_eq!(expired["status"], "expired", "{expired}");
    let (status, late) = shop.scan(&expiring, &shop.smartum.create_receipt(100).jws);
    assert_eq!(status, 409, "{late}");
    assert_eq!(late["error"]["code"], "invalid_state");

    let canceled = shop.create();
    let (status, answer) = shop.daemon().post(&format!("/v1/payments/{}/cancel", id(&canceled)), &json!({}));
    assert_eq!((status, answer["status"].as_str()), (200, Some("canceled")));
    let paid = shop.create();
    shop.scan(&paid, &shop.smartum.create_receipt(1000).jws);
    let (status, refused) = shop.daemon().post(&format!("/v1/payments/{}/cancel", id(&paid)), &json!({}));
    assert_eq!(status, 409);
    assert_eq!(refused["error"]["code"], "invalid_state");
    let (status, _) = shop.daemon().get_json("/v1/payments/pay_doesnotexist0000");
    assert_eq!(status, 404);
}

#[test]
fn history_lists_newest_first_with_filters_and_pages() {
    let shop = Shop::new("", "");
    let ids: Vec<String> = (0..3).map(|_| id(&shop.create()).to_string()).collect();
    shop.scan(&json!({"id": ids[1]}), &shop.smartum.create_receipt(1000).jws);
    let (_, all) = shop.daemon().get_json("/v1/payments");
    let listed: Vec<&str> = all["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(all["has_more"], false);
    let (_, page) = shop.daemon().get_json("/v1/payments?limit=2");
    assert_eq!(page["has_more"], true);
    let (_, next) = shop.daemon().get_json(&format!("/v1/payments?limit=2&starting_after={}", ids[1]));
    assert_eq!(next["data"][0]["id"], ids[0].as_str());
    let (_, succeeded) = shop.daemon().get_json("/v1/payments?status=succeeded&register=till-1");
    assert_eq!(succeeded["data"].as_array().unwrap().len(), 1);
    let (_, by_reference) = shop.daemon().get_json("/v1/payments?reference=R-2026-000123&limit=100");
    assert_eq!(by_reference["data"].as_array().unwrap().len(), 3, "the POS finds its purchase by receipt number");
    let (_, other_reference) = shop.daemon().get_json("/v1/payments?reference=R-other");
    assert_eq!(other_reference["data"], json!([]));
    let (_, none) = shop.daemon().get_json("/v1/payments?from=2999-01-01T00:00:00Z");
    assert_eq!(none["data"], json!([]));
    assert_eq!(shop.daemon().get_json("/v1/payments?status=bogus").0, 400);
}

#[test]
fn a_plugin_panicking_in_a_call_is_an_error_and_the_daemon_keeps_serving() {
    let shop = Shop::new("", "");
    let panicking = json!({"method": "boom", "amount": 100, "currency": "EUR", "lines": [{"sku": "X", "name": "x", "amount": 100, "labels": ["panic"]}]});
    let (status, answer) = shop.daemon().post("/v1/payments", &panicking);
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["code"], "plugin_panicked");
    assert!(answer["error"]["message"].as_str().unwrap().contains("panicked in eligible_amount"));
    // The same plugin's scan path panics too; the payment records the failure.
    let calm = json!({"method": "boom", "amount": 100, "currency": "EUR"});
    let (status, payment) = shop.daemon().post("/v1/payments", &calm);
    assert_eq!(status, 201, "{payment}");
    let (_, scanned) = shop.daemon().post(&format!("/v1/payments/{}/scan", id(&payment)), &json!({"code": "anything"}));
    assert_eq!(failure_code(&scanned), "plugin_panicked", "{scanned}");
    assert_eq!(shop.daemon().get("/healthz").status(), 200);
    assert_eq!(shop.create()["status"], "awaiting_scan", "other methods keep working");
}

#[test]
fn metrics_and_openapi_describe_the_running_api() {
    let shop = Shop::new("", "");
    shop.scan(&shop.create(), &shop.smartum.create_receipt(1000).jws);
    let metrics = shop.daemon().get("/metrics").text().unwrap();
    assert!(metrics.contains("posbridge_http_requests_total{method=\"POST\",route=\"/v1/payments\",status=\"201\"} 1"), "{metrics}");
    assert!(metrics.contains("posbridge_plugin_calls_total{method=\"smartum\",operation=\"redeem\",outcome=\"ok\"} 1"), "{metrics}");
    let openapi: Value = shop.daemon().get("/openapi.json").json().unwrap();
    assert_eq!(openapi["openapi"], "3.1.0");
    for path in ["/v1/payments", "/v1/payments/{id}/scan", "/v1/refunds", "/v1/events", "/readyz"] {
        assert!(openapi["paths"][path].is_object(), "{path} missing");
    }
    let create = &openapi["paths"]["/v1/payments"]["post"];
    let reference = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str().unwrap();
    let schema = &openapi["components"]["schemas"][reference.rsplit('/').next().unwrap()];
    assert_eq!(schema["additionalProperties"], false, "unknown fields are refused, and documented so");
    assert!(schema["required"].as_array().unwrap().contains(&json!("amount")));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn base64_url(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[test]
fn an_expired_access_token_is_renewed_once_and_the_call_goes_through() {
    let shop = Shop::new("", "");
    let first = shop.create();
    shop.scan(&first, &shop.smartum.create_receipt(1000).jws);
    assert_eq!(shop.smartum.token_requests(), 1, "the token is cached between calls");
    let second = shop.create();
    shop.scan(&second, &shop.smartum.create_receipt(1000).jws);
    assert_eq!(shop.smartum.token_requests(), 1);

    shop.smartum.revoke_tokens();
    let third = shop.create();
    let (_, paid) = shop.scan(&third, &shop.smartum.create_receipt(1000).jws);
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(shop.smartum.token_requests(), 2, "one new token after the 401");
}

#[test]
fn the_quick_start_sandbox_takes_a_payment_end_to_end() {
    // The shipped sandbox config, on free ports, with this build's plugins.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let install = Install::new(BIN);
    for file in [
        "sandbox.toml",
        "sandbox/smartum.secret",
        "sandbox/smartum-es512.pem",
        "sandbox/smartum-es512-private.pem",
        "sandbox/stripe.secret",
    ] {
        install.write(file, &std::fs::read_to_string(example.join(file)).unwrap());
    }
    install.add_plugin("posbridge-plugin-smartum");
    install.add_plugin("posbridge-plugin-stripe-split");
    let (smartum_port, stripe_port) = (posbridge_testkit::free_port(), posbridge_testkit::free_port());
    let config = std::fs::read_to_string(install.path().join("sandbox.toml"))
        .unwrap()
        .replace("listen = \"127.0.0.1:8787\"", "listen = \"127.0.0.1:0\"")
        .replace("http://127.0.0.1:8788", &format!("http://127.0.0.1:{smartum_port}"))
        .replace("http://127.0.0.1:8789", &format!("http://127.0.0.1:{stripe_port}"))
        .replace("dir = \"../target/debug\"", "dir = \"plugins\"");
    install.write("posbridge.toml", &config);
    let daemon = install.start_command(&["sandbox"]);
    assert!(daemon.wait_for_output("Sandbox Smartum", Duration::from_secs(30)).is_some(), "{:?}", daemon.output());

    let receipt = install.run(&["sandbox", "receipt", "--amount", "3000"]);
    let printed = String::from_utf8_lossy(&receipt.stdout);
    assert!(receipt.status.success(), "{printed}");
    assert!(printed.contains('█'), "a QR code is drawn");
    let code = printed.lines().find_map(|line| line.strip_prefix("receipt:")).unwrap().trim().to_string();
    let payment = daemon.post("/v1/payments", &cart(4500, 3000)).1;
    let (_, paid) = daemon.post(&format!("/v1/payments/{}/scan", id(&payment)), &json!({"code": code}));
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(paid["remaining_amount"], 1500);

    // The rest by card on the sandbox reader: `posbridge sandbox card` taps a test card.
    let (_, card) = daemon.post("/v1/payments", &json!({"method": "card", "amount": 1500, "currency": "EUR", "split_of": id(&payment)}));
    assert_eq!(card["status"], "awaiting_card", "{card}");
    let tapped = install.run(&["sandbox", "card"]);
    assert!(tapped.status.success(), "{}", posbridge_testkit::all_output(&tapped));
    let current = daemon.follow(id(&card), 0, &["awaiting_card", "processing"]);
    assert_eq!(current["status"], "succeeded", "{current}");
    assert_eq!(daemon.get_json(&format!("/v1/payments/{}", id(&payment))).1["remaining_amount"], 0);
}

#[test]
fn a_lost_check_answer_is_resolved_by_asking_smartum_and_pays_once() {
    let shop = Shop::new("request_timeout_ms = 500", "");
    let payment = shop.create();
    let receipt = shop.smartum.create_receipt(3000);
    // Smartum records the check but its answer never arrives.
    shop.smartum.set_faults(Faults { stall_after_check: true, ..Faults::default() });
    let (status, paid) = shop.scan(&payment, &receipt.jws);
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(paid["captured_amount"], 3000);
    assert_eq!(shop.smartum.checks(), 1, "checked once");
}

/// A POS that gives up after `after`: sends `body` to `path` and hangs up.
fn post_and_hang_up(daemon: &Daemon, path: &str, body: &Value, after: Duration) {
    let client = reqwest::blocking::Client::builder().timeout(after).build().unwrap();
    let sent = client.post(format!("{}{path}", daemon.base_url)).bearer_auth(TILL_TOKEN).json(body).send();
    assert!(sent.is_err(), "the POS was meant to hang up before the answer: {sent:?}");
}

#[test]
fn a_pos_that_hangs_up_mid_scan_does_not_strand_the_payment() {
    let shop = Shop::new("timeout = \"10s\"\nrequest_timeout_ms = 8000", "");
    let payment = shop.create();
    let receipt = shop.smartum.create_receipt(3000);
    shop.smartum.set_faults(Faults { slow: Some(Duration::from_secs(3)), ..Faults::default() });
    post_and_hang_up(
        shop.daemon(),
        &format!("/v1/payments/{}/scan", id(&payment)),
        &json!({"code": receipt.jws}),
        Duration::from_millis(200),
    );

    let settled = shop.daemon().follow(id(&payment), 1, &["awaiting_scan", "processing"]);
    let seen = std::time::Instant::now();
    assert_eq!(settled["status"], "succeeded", "the engine finished the scan the POS left: {settled}");
    assert_eq!(settled["captured_amount"], 3000);
    let answered = shop.smartum.last_answer_at().expect("Smartum answered the check");
    assert!(seen.duration_since(answered) < Duration::from_secs(1), "settled {:?} after Smartum's answer", seen.duration_since(answered));
    assert_eq!(shop.smartum.checks(), 1);
}

#[test]
fn smartum_down_then_back_resolves_a_lost_answer_without_a_restart() {
    let shop = Shop::new("timeout = \"3s\"\nrequest_timeout_ms = 700", "");
    let payment = shop.create();
    let receipt = shop.smartum.create_receipt(3000);
    // The check takes effect but its answer is lost; then Smartum goes down.
    shop.smartum.set_faults(Faults { stall_after_check: true, ..Faults::default() });
    let path = format!("/v1/payments/{}/scan", id(&payment));
    post_and_hang_up(shop.daemon(), &path, &json!({"code": receipt.jws}), Duration::from_millis(200));
    assert!(shop.smartum.wait_for_checks(1, Duration::from_secs(30)), "Smartum saw the check");
    shop.smartum.set_faults(Faults { unavailable: true, ..Faults::default() });
    let processing = shop.daemon().follow(id(&payment), 1, &["awaiting_scan"]);
    assert_eq!(processing["status"], "processing", "{processing}");
    assert!(
        shop.daemon().wait_for_log(&["could not answer the lookup yet", id(&payment)], Duration::from_secs(30)).is_some(),
        "lookups were tried while Smartum was down"
    );

    let back = std::time::Instant::now();
    shop.smartum.set_faults(Faults::default());
    let settled = shop.daemon().follow(id(&payment), processing["version"].as_u64().unwrap(), &["processing"]);
    assert_eq!(settled["status"], "succeeded", "{settled}");
    assert!(back.elapsed() < Duration::from_secs(2), "resolved {:?} after Smartum came back", back.elapsed());
    assert_eq!(shop.smartum.checks(), 1, "redeemed once");
}

#[test]
fn not_taken_is_believed_only_after_the_attempt_could_have_landed() {
    let shop = Shop::new("timeout = \"3s\"\nrequest_timeout_ms = 700", "");
    let payment = shop.create();
    let receipt = shop.smartum.create_receipt(3000);
    shop.smartum.set_faults(Faults { black_hole: true, ..Faults::default() });
    post_and_hang_up(
        shop.daemon(),
        &format!("/v1/payments/{}/scan", id(&payment)),
        &json!({"code": receipt.jws}),
        Duration::from_millis(200),
    );
    let processing = shop.daemon().follow(id(&payment), 1, &["awaiting_scan"]);
    assert_eq!(processing["status"], "processing", "{processing}");
    // The check is lost on the way; Smartum answers reads: "not checked", while the lost
    // request could still land.
    let unknown = shop.daemon().wait_for_log(&["provider outcome unknown", id(&payment)], Duration::from_secs(30));
    assert!(unknown.is_some(), "the redeem gave up without an answer:\n{}", shop.daemon().log().join("\n"));
    let failed = shop.daemon().follow(id(&payment), processing["version"].as_u64().unwrap(), &["processing"]);
    assert_eq!(failure_code(&failed), "attempt_interrupted", "{failed}");
    let started = posbridge::payments::model::parse_rfc3339(processing["updated_at"].as_str().unwrap()).unwrap();
    let decided = posbridge::payments::model::parse_rfc3339(failed["updated_at"].as_str().unwrap()).unwrap();
    assert!(decided - started >= 3000, "decided {} ms after the attempt, before the method's timeout", decided - started);
    assert_eq!(shop.smartum.transaction(&receipt.transaction_id).unwrap().status, "paid", "nothing was taken");
    shop.smartum.set_faults(Faults::default());
    let (_, paid) = shop.scan(&payment, &receipt.jws);
    assert_eq!(paid["status"], "succeeded", "the receipt pays on a new scan: {paid}");
}

#[test]
fn a_pos_that_hangs_up_mid_refund_still_gets_its_refund_done() {
    let shop = Shop::new("timeout = \"10s\"\nrequest_timeout_ms = 8000", "");
    let payment = shop.create();
    let receipt = shop.smartum.create_receipt(3000);
    assert_eq!(shop.scan(&payment, &receipt.jws).1["status"], "succeeded");
    shop.smartum.set_faults(Faults { slow: Some(Duration::from_secs(2)), ..Faults::default() });
    post_and_hang_up(shop.daemon(), "/v1/refunds", &json!({"payment": id(&payment), "amount": 1000}), Duration::from_millis(200));
    assert!(
        shop.daemon().wait_for_log(&["refund updated", "\"status\":\"succeeded\""], Duration::from_secs(30)).is_some(),
        "the refund finished without its request"
    );
    let (_, refunds) = shop.daemon().get_json(&format!("/v1/refunds?payment={}", id(&payment)));
    assert_eq!(refunds["data"].as_array().unwrap().len(), 1, "{refunds}");
    assert_eq!(refunds["data"][0]["status"], "succeeded");
    assert_eq!(shop.smartum.transaction(&receipt.transaction_id).unwrap().refunded_amount, 1000);
}

#[test]
fn a_crash_between_the_refund_and_its_answer_replays_the_same_answer() {
    let mut shop = Shop::new("", "");
    shop.daemon.take().unwrap().kill();
    shop.daemon = Some(shop.install.start_with_env(&[("FAILPOINTS", "api-before-answer=1*return")]));
    let payment = shop.create();
    let receipt = shop.smartum.create_receipt(3000);
    assert_eq!(shop.scan(&payment, &receipt.jws).1["status"], "succeeded");

    let refund = |daemon: &Daemon| {
        let response = daemon
            .request(reqwest::Method::POST, "/v1/refunds")
            .header("Idempotency-Key", "refund-after-fault")
            .json(&json!({"payment": id(&payment), "amount": 1200}))
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let (status, first) = refund(shop.daemon());
    assert_eq!(status, 500, "the injected fault hid the answer: {first}");
    let (status, second) = refund(shop.daemon());
    assert_eq!(status, 201, "{second}");
    let (status, third) = refund(shop.daemon());
    assert_eq!((status, &third), (201, &second), "the same answer, byte for byte");
    assert_eq!(shop.smartum.refund_count(), 1, "refunded once");
    assert_eq!(shop.smartum.transaction(&receipt.transaction_id).unwrap().refunded_amount, 1200);
    let answer: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(answer["status"], "succeeded");
    assert_eq!(shop.daemon().get_json(&format!("/v1/refunds/{}", id(&answer))).1["status"], "succeeded");
}

#[test]
fn work_for_a_method_no_longer_configured_waits_for_it_and_goes_on() {
    let mut shop = Shop::new("timeout = \"3s\"", "[payments]\nscan_timeout = \"5s\"\n");
    let first = shop.create();
    let second = shop.create();
    for payment in [&first, &second] {
        let receipt = shop.smartum.create_receipt(3000);
        assert_eq!(shop.scan(payment, &receipt.jws).1["status"], "succeeded");
    }
    let unscanned = shop.create();
    // A refund Smartum cannot take now stays pending…
    shop.smartum.set_faults(Faults { unavailable: true, ..Faults::default() });
    let (status, pending) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&first), "amount": 500}));
    assert_eq!((status, pending["status"].as_str()), (201, Some("pending")), "{pending}");
    // …and the method is removed while the daemon is down.
    let full_config = std::fs::read_to_string(shop.install.config_path()).unwrap();
    shop.daemon.take().unwrap().kill();
    shop.install.configure("[methods.boom]\nplugin = \"panicky\"\n");
    shop.daemon = Some(shop.install.start());

    let (_, ready) = shop.daemon().get_json_as(posbridge_testkit::TECHNICIAN_TOKEN, "/readyz");
    assert_eq!(ready["waiting_for_method"][0]["id"], id(&pending), "{ready}");
    assert_eq!(ready["waiting_for_method"][0]["work"], "refund");
    let (_, status) = shop.daemon().get_json("/v1/status");
    assert_eq!(status["waiting_for_method"], ready["waiting_for_method"], "the status page shows it too");
    let (status, refused) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&second), "amount": 700}));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("method_not_configured")), "{refused}");
    // A payment of the missing method that awaited a scan is still taken up: it expires.
    let (_, expired) = shop.daemon().get_json(&format!("/v1/payments/{}?wait=30&version=1", id(&unscanned)));
    assert_eq!(expired["status"], "expired", "{expired}");

    shop.smartum.set_faults(Faults::default());
    std::fs::write(shop.install.config_path(), full_config).unwrap();
    assert!(shop.daemon().wait_for_log(&["config reloaded"], Duration::from_secs(30)).is_some(), "the config was reloaded");
    let (status, refunded) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&second), "amount": 700}));
    assert_eq!((status, refunded["status"].as_str()), (201, Some("succeeded")), "{refunded}");
    assert!(
        shop.daemon().wait_for_log(&["refund updated", id(&pending), "\"status\":\"succeeded\""], Duration::from_secs(30)).is_some(),
        "the pending refund went on once its method was back"
    );
    assert!(shop.daemon().get_json_as(posbridge_testkit::TECHNICIAN_TOKEN, "/readyz").1.get("waiting_for_method").is_none());
}

/// Every flush fails between the apply and the flush: nobody is told the change happened.
#[test]
fn a_failed_flush_is_never_acknowledged() {
    let mut shop = Shop::new("", "");
    shop.daemon.take().expect("running").terminate();
    shop.daemon = Some(shop.install.start_with_env(&[("FAILPOINTS", "store-before-flush=return")]));
    let (status, body) = shop.daemon().post("/v1/payments", &cart(4500, 3000));
    assert!(status >= 500, "an unflushed payment is not acknowledged: {status} {body}");
    assert!(body.get("id").is_none(), "{body}");
    let metrics = shop.daemon().get("/metrics").text().unwrap();
    assert!(metrics.contains("posbridge_last_event_id 0"), "no event was published:\n{metrics}");

    // Without the failure, the same store takes payments again.
    shop.restart();
    let payment = shop.create();
    assert_eq!(payment["status"], "awaiting_scan");
}

/// Every filter the list offers, read through the indexes, equals filtering the whole
/// history by hand; pages join up without gaps or repeats.
#[test]
fn lists_by_reference_register_and_status_agree_with_a_full_scan() {
    let shop = Shop::new("", "[[registers]]\nid = \"till-2\"\n");
    let daemon = shop.daemon();
    for n in 0..18u64 {
        let register = if n % 3 == 0 { "till-2" } else { "till-1" };
        let body =
            json!({"method": "smartum", "amount": 1000 + n, "currency": "EUR", "register": register, "reference": format!("R{}", n % 4)});
        let (status, payment) = daemon.post_as(posbridge_testkit::MANAGER_TOKEN, "/v1/payments", &body);
        assert_eq!(status, 201, "{payment}");
        match n % 3 {
            1 => {
                let receipt = shop.smartum.create_receipt(1000 + n).jws;
                let (status, paid) = daemon.post_as(
                    posbridge_testkit::MANAGER_TOKEN,
                    &format!("/v1/payments/{}/scan", id(&payment)),
                    &json!({"code": receipt}),
                );
                assert_eq!((status, paid["status"].as_str()), (200, Some("succeeded")), "{paid}");
            }
            2 => {
                let (status, _) =
                    daemon.post_as(posbridge_testkit::MANAGER_TOKEN, &format!("/v1/payments/{}/cancel", id(&payment)), &json!({}));
                assert_eq!(status, 200);
            }
            _ => {}
        }
    }
    let everything = list_all(daemon, posbridge_testkit::MANAGER_TOKEN, "");
    assert_eq!(everything.len(), 18);
    type Keep<'a> = &'a dyn Fn(&Value) -> bool;
    let filters: [(&str, Keep); 5] = [
        ("reference=R1", &|p| p["reference"] == "R1"),
        ("register=till-2", &|p| p["register"] == "till-2"),
        ("status=succeeded", &|p| p["status"] == "succeeded"),
        ("register=till-1&status=canceled", &|p| p["register"] == "till-1" && p["status"] == "canceled"),
        ("reference=R2&status=awaiting_scan", &|p| p["reference"] == "R2" && p["status"] == "awaiting_scan"),
    ];
    for (query, keep) in filters {
        let expected: Vec<&Value> = everything.iter().filter(|payment| keep(payment)).collect();
        assert!(!expected.is_empty(), "{query} selects something");
        let listed = list_all(daemon, posbridge_testkit::MANAGER_TOKEN, query);
        assert_eq!(listed.iter().collect::<Vec<_>>(), expected, "{query}");
    }
    // A till sees its own register's payments only, whatever it asks.
    let own = list_all(daemon, TILL_TOKEN, "");
    assert!(!own.is_empty() && own.iter().all(|payment| payment["register"] == "till-1"));
    assert!(list_all(daemon, TILL_TOKEN, "register=till-2").is_empty());
}

/// Every page of `GET /v1/payments?{query}`, three at a time.
fn list_all(daemon: &Daemon, token: &str, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = daemon.get_json_as(token, &format!("/v1/payments?limit=3&{query}{after}"));
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap().clone();
        if let Some(last) = data.last() {
            after = format!("&starting_after={}", id(last));
        }
        all.extend(data);
        if page["has_more"] != true {
            return all;
        }
    }
}

/// With a retention of two seconds, a paid payment, its refund and the events about
/// them go while the daemon runs; a payment still waiting for its scan stays; an event
/// stream resumed before the oldest kept event is told so.
#[test]
fn retention_removes_old_payments_and_events_while_the_daemon_runs() {
    let mut shop = Shop::new("", "[payments]\nscan_timeout = \"10m\"\n");
    let paid = shop.create();
    shop.scan(&paid, &shop.smartum.create_receipt(3000).jws);
    let (status, refund) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&paid), "amount": 500}));
    assert_eq!((status, refund["status"].as_str()), (201, Some("succeeded")), "{refund}");
    let waiting = shop.create();

    shop.install.write("conf.d/retention.toml", "[store]\nretention = \"2s\"\njournal_retention = \"2s\"\n");
    shop.restart();
    let removed = shop.daemon().wait_for_log(&["retention removed old records", "\"payments\":1"], Duration::from_secs(30));
    assert!(removed.is_some(), "the sweep removed the paid payment:\n{}", shop.daemon().log().join("\n"));
    let (status, _) = shop.daemon().get_json(&format!("/v1/payments/{}", id(&paid)));
    assert_eq!(status, 404, "the paid payment is gone");
    let (status, _) = shop.daemon().get_json(&format!("/v1/refunds/{}", id(&refund)));
    assert_eq!(status, 404, "its refund with it");
    assert_eq!(shop.payment(&waiting)["status"], "awaiting_scan", "open work stays");
    let (_, listed) = shop.daemon().get_json("/v1/payments?reference=R-2026-000123");
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");

    let resumed = shop.daemon().events(Some(1), 1);
    assert_eq!(resumed[0].1, "events.truncated", "{resumed:?}");
    assert!(resumed[0].2["oldest_kept"].as_u64().unwrap() > 2, "{resumed:?}");
}
