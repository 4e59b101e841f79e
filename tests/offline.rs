//! Offline acceptance end to end: the real binary, the real Smartum plugin, the sandbox
//! Smartum switched unreachable and back, receipts signed with an ES512 key made in the
//! test. A receipt within the limits is taken while Smartum is down, checked when it
//! answers again, and one Smartum refuses becomes an exception the shop follows up.

use std::net::SocketAddr;
use std::time::Duration;

use posbridge::sandbox::{Faults, SandboxOptions, SmartumSandbox};
use posbridge_testkit::{Daemon, Install, MANAGER_TOKEN, TILL_TOKEN};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

/// Per receipt 50.00, all unconfirmed 80.00, receipts issued within two hours.
const OFFLINE: &str = r#"timeout = "2s"
offline = { enabled = true, max_amount = 5000, max_total = 8000, max_age = "2h" }"#;

struct Shop {
    install: Install,
    smartum: SmartumSandbox,
    daemon: Option<Daemon>,
}

impl Shop {
    fn new(method_extra: &str) -> Shop {
        let smartum = SmartumSandbox::start("127.0.0.1:0".parse::<SocketAddr>().unwrap(), SandboxOptions::default()).expect("sandbox");
        let install = Install::new(BIN);
        install.add_plugin("posbridge-plugin-smartum");
        install.configure(&smartum.config_section(install.path(), method_extra).unwrap());
        let daemon = install.start();
        Shop { install, smartum, daemon: Some(daemon) }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("running")
    }

    fn down(&self) {
        self.smartum.set_faults(Faults { unavailable: true, ..Faults::default() });
    }

    fn up(&self) {
        self.smartum.set_faults(Faults::default());
    }

    /// A purchase of `amount`, all of it payable with Smartum.
    fn create(&self, amount: u64) -> Value {
        let body = json!({"method": "smartum", "amount": amount, "currency": "EUR",
            "lines": [{"sku": "GYM", "name": "Gym visit", "amount": amount, "labels": ["smartum"]}]});
        let (status, payment) = self.daemon().post("/v1/payments", &body);
        assert_eq!(status, 201, "{payment}");
        payment
    }

    fn scan(&self, payment: &Value, code: &str) -> Value {
        let (status, answer) = self.daemon().post(&format!("/v1/payments/{}/scan", id(payment)), &json!({"code": code}));
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// A new purchase paid with a new receipt of `amount`: the payment as answered.
    fn pay(&self, amount: u64) -> (Value, String) {
        let receipt = self.smartum.create_receipt(amount);
        (self.scan(&self.create(amount), &receipt.jws), receipt.transaction_id)
    }

    /// Follows `payment` until its receipt's check is no longer pending.
    fn until_checked(&self, payment: &Value) -> Value {
        let mut current = payment.clone();
        loop {
            if current["offline"]["state"] != "pending" {
                return current;
            }
            let path = format!("/v1/payments/{}?wait=30&version={}", id(&current), current["version"]);
            let (status, next) = self.daemon().get_json(&path);
            assert_eq!(status, 200, "{next}");
            assert!(next["version"] != current["version"] || next["offline"]["state"] != "pending", "no change in 30 s: {next}");
            current = next;
        }
    }

    fn offline_status(&self) -> Value {
        let (status, body) = self.daemon().get_json_as(MANAGER_TOKEN, "/v1/status");
        assert_eq!(status, 200, "{body}");
        body["offline"][0].clone()
    }

    fn refund(&self, payment: &Value, amount: Option<u64>) -> reqwest::blocking::Response {
        let mut body = json!({"payment": id(payment)});
        if let Some(amount) = amount {
            body["amount"] = json!(amount);
        }
        self.daemon().post_json("/v1/refunds", &body)
    }
}

fn id(value: &Value) -> &str {
    value["id"].as_str().unwrap_or_else(|| panic!("an id in {value}"))
}

fn failure_code(payment: &Value) -> &str {
    payment["failure"]["code"].as_str().unwrap_or("")
}

fn assert_taken_offline(paid: &Value) {
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!((&paid["verified"], &paid["verification"]), (&json!(false), &json!("offline")), "{paid}");
    assert_eq!(paid["offline"]["state"], "pending", "{paid}");
}

#[test]
fn smartum_down_a_receipt_within_the_limits_is_taken_offline_then_confirmed_when_it_answers() {
    let shop = Shop::new(OFFLINE);
    shop.down();
    let (first, first_tx) = shop.pay(3000);
    assert_taken_offline(&first);
    assert_eq!(first["captured_amount"], 3000);
    assert_eq!(first["transaction_id"], first_tx.as_str());
    // Once Smartum is known to be down, the next receipt is taken without asking it.
    let (second, second_tx) = shop.pay(2000);
    assert_taken_offline(&second);
    assert_eq!(shop.smartum.checks(), 0, "nothing reached Smartum");
    assert_eq!(shop.smartum.transaction(&first_tx).unwrap().status, "paid");

    // The same receipt at another payment is refused offline too.
    let repeat = shop.create(3000);
    let refused = shop.scan(&repeat, &shop_receipt_of(&shop, &first));
    assert_eq!((refused["status"].as_str(), failure_code(&refused)), (Some("failed"), "receipt_already_used"), "{refused}");

    // The status page tells the open total against its limit and the oldest receipt.
    let status = shop.offline_status();
    assert_eq!(
        (status["method"].as_str(), status["open_receipts"].as_u64(), status["open_amount"].as_u64()),
        (Some("smartum"), Some(2), Some(5000)),
        "{status}"
    );
    assert_eq!(status["max_total"], 8000);
    assert!(status["oldest_accepted_at"].is_string() && status["provider_down_since"].is_string(), "{status}");
    // A part refund waits for the confirmation.
    let waiting = shop.refund(&first, Some(1000));
    assert_eq!(waiting.status(), 409);
    let retry_after: u64 = waiting.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert_eq!(waiting.json::<Value>().unwrap()["error"]["code"], "not_confirmed_yet");

    shop.up();
    for (paid, transaction) in [(&first, &first_tx), (&second, &second_tx)] {
        let confirmed = shop.until_checked(paid);
        assert_eq!(confirmed["offline"]["state"], "confirmed", "{confirmed}");
        assert_eq!(
            (&confirmed["verified"], &confirmed["verification"], &confirmed["status"]),
            (&json!(true), &json!("online"), &json!("succeeded"))
        );
        assert_eq!(confirmed["benefit"], "exercise");
        let at_smartum = shop.smartum.transaction(transaction).unwrap();
        assert_eq!(at_smartum.status, "checked");
        assert_eq!(at_smartum.check_reference, Some(format!("{}-1", id(paid))), "checked with the attempt's own reference");
    }
    assert_eq!(shop.smartum.checks(), 2);
    assert_eq!(shop.offline_status()["open_receipts"], 0);
    // Confirmed, it refunds as any payment does.
    let refunded = shop.refund(&first, Some(1000));
    assert_eq!(refunded.status(), 201);
    assert_eq!(refunded.json::<Value>().unwrap()["status"], "succeeded");
}

/// The receipt a payment was paid with, signed again by the sandbox for a second scan.
fn shop_receipt_of(shop: &Shop, payment: &Value) -> String {
    let transaction = shop.smartum.transaction(payment["transaction_id"].as_str().unwrap()).unwrap();
    let header = json!({"alg": "ES512", "typ": "JWT", "kid": shop.smartum.kid()});
    let claims = json!({"jti": transaction.id, "venue": transaction.venue, "benefit": transaction.benefit,
        "amount": transaction.amount, "currency": transaction.currency, "iat": transaction.created_at / 1000});
    shop.smartum.sign(&header, &claims)
}

#[test]
fn outside_the_offline_limits_each_receipt_is_refused_with_its_own_code_and_nothing_is_taken() {
    let shop = Shop::new(OFFLINE);
    shop.down();
    let refused = |code: &str, amount: u64| {
        let paid = shop.scan(&shop.create(amount), code);
        assert_eq!(paid["status"], "failed", "{paid}");
        failure_code(&paid).to_string()
    };
    let too_much = shop.smartum.create_receipt(6000);
    assert_eq!(refused(&too_much.jws, 6000), "offline_amount_exceeded");
    let three_hours_ago = posbridge::payments::model::now_ms() - 3 * 3600 * 1000;
    let options = SandboxOptions::default();
    let old = shop.smartum.create_receipt_for(1000, &options.venue_id, &options.benefit, three_hours_ago);
    assert_eq!(refused(&old.jws, 1000), "offline_receipt_too_old");
    let elsewhere = shop.smartum.create_receipt_for(1000, "ven_SomeOtherVenue01", &options.benefit, posbridge::payments::model::now_ms());
    assert_eq!(refused(&elsewhere.jws, 1000), "wrong_venue");
    let genuine = shop.smartum.create_receipt(1000);
    let forged = {
        let mut parts: Vec<String> = genuine.jws.split('.').map(str::to_string).collect();
        let other = SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), SandboxOptions::default()).unwrap();
        let resigned = other.sign(&json!({"alg": "ES512", "typ": "JWT", "kid": shop.smartum.kid()}), &json!({"jti": genuine.transaction_id, "venue": options.venue_id, "benefit": options.benefit, "amount": 1000, "currency": "EUR", "iat": 1}));
        parts[2] = resigned.split('.').nth(2).unwrap().to_string();
        parts.join(".")
    };
    assert_eq!(refused(&forged, 1000), "bad_signature");
    assert_eq!(refused(&genuine.transaction_id, 1000), "offline_not_verifiable", "a bare id proves nothing offline");
    // Within each limit, until the total is reached.
    assert_taken_offline(&shop.pay(5000).0);
    assert_taken_offline(&shop.pay(3000).0);
    let one_more = shop.smartum.create_receipt(1000);
    assert_eq!(refused(&one_more.jws, 1000), "offline_limit_reached");
    assert_eq!(shop.smartum.checks(), 0);
    assert_eq!(shop.offline_status()["open_amount"], 8000);
}

#[test]
fn offline_receipts_waiting_at_a_kill_are_checked_after_the_restart() {
    let mut shop = Shop::new(OFFLINE);
    shop.down();
    let taken: Vec<(Value, String)> = (0..3).map(|_| shop.pay(1500)).collect();
    for (paid, _) in &taken {
        assert_taken_offline(paid);
    }
    shop.daemon.take().expect("running").kill();
    shop.daemon = Some(shop.install.start());
    // Still down after the restart: the open total is what the store holds.
    let status = shop.offline_status();
    assert_eq!((status["open_receipts"].as_u64(), status["open_amount"].as_u64()), (Some(3), Some(4500)), "{status}");
    shop.up();
    for (paid, transaction) in &taken {
        let confirmed = shop.until_checked(&shop.daemon().get_json(&format!("/v1/payments/{}", id(paid))).1);
        assert_eq!(confirmed["offline"]["state"], "confirmed", "{confirmed}");
        assert_eq!(shop.smartum.transaction(transaction).unwrap().check_reference, Some(format!("{}-1", id(paid))));
    }
    assert_eq!(shop.smartum.checks(), 3, "each receipt checked once");
}

#[test]
fn a_receipt_checked_elsewhere_before_the_line_returns_is_an_exception_the_shop_follows_up() {
    let shop = Shop::new(OFFLINE);
    shop.down();
    let (paid, transaction) = shop.pay(2500);
    assert_taken_offline(&paid);
    assert!(shop.smartum.check_elsewhere(&transaction, "another-shop-7"));
    let events_before = shop.daemon().get_json_as(MANAGER_TOKEN, "/v1/status").1;
    assert_eq!(events_before["exceptions"], 0);
    shop.up();
    let refused = shop.until_checked(&paid);
    assert_eq!(refused["status"], "succeeded", "the goods are gone: still succeeded");
    assert_eq!(refused["offline"]["state"], "refused", "{refused}");
    assert_eq!(refused["offline"]["reason"]["code"], "receipt_already_used", "{refused}");
    assert_eq!(refused["verification"], "offline");

    let (status, exceptions) = shop.daemon().get_json_as(MANAGER_TOKEN, "/v1/exceptions");
    assert_eq!(status, 200, "{exceptions}");
    let listed = &exceptions["data"][0];
    assert_eq!(
        (listed["payment"].as_str(), listed["amount"].as_u64(), listed["transaction_id"].as_str()),
        (Some(id(&paid)), Some(2500), Some(transaction.as_str())),
        "{exceptions}"
    );
    assert_eq!(listed["reason"]["code"], "receipt_already_used");
    assert!(listed["reason"]["message"].as_str().unwrap().contains("already used"), "Smartum's reason: {listed}");
    assert_eq!(exceptions["data"].as_array().unwrap().len(), 1);
    let (forbidden, _) = shop.daemon().get_json_as(TILL_TOKEN, "/v1/exceptions");
    assert_eq!(forbidden, 403, "a till does not read the exceptions list");
    assert_eq!(shop.daemon().get_json_as(MANAGER_TOKEN, "/v1/status").1["exceptions"], 1);

    let manager_events =
        reqwest::blocking::Client::new().get(format!("{}/v1/events", shop.daemon().base_url)).bearer_auth(MANAGER_TOKEN).send().unwrap();
    let stream = std::io::BufRead::lines(std::io::BufReader::new(manager_events));
    let mut saw_exception = false;
    for line in stream.map_while(Result::ok) {
        if line == "event: exception.created" {
            saw_exception = true;
        }
        if line.starts_with(':') {
            break; // a keep-alive: the journal so far was read
        }
        if saw_exception && line.starts_with("data: ") {
            let data: Value = serde_json::from_str(&line["data: ".len()..]).unwrap();
            assert_eq!(data["payment"], id(&paid));
            break;
        }
    }
    assert!(saw_exception, "a manager's event stream tells of the exception");
    let metrics = shop.daemon().get("/metrics").text().unwrap();
    assert!(metrics.contains("posbridge_offline_receipts_total{method=\"smartum\",status=\"refused\"} 1"), "{metrics}");
    // Nothing at Smartum to refund: the shop settles it by hand.
    let refund = shop.refund(&paid, None);
    assert_eq!(refund.status(), 409);
    assert_eq!(refund.json::<Value>().unwrap()["error"]["code"], "offline_check_refused");
}

#[test]
fn a_full_refund_before_the_check_was_sent_cancels_it_and_a_sent_one_waits_for_smartum() {
    let shop = Shop::new(OFFLINE);
    // Down from the start: not even a token is fetched, so no check is ever sent.
    shop.down();
    let (unsent, transaction) = shop.pay(2000);
    assert_taken_offline(&unsent);
    let refund = shop.refund(&unsent, None);
    assert_eq!(refund.status(), 201);
    assert_eq!(refund.json::<Value>().unwrap()["status"], "succeeded");
    let canceled = shop.daemon().get_json(&format!("/v1/payments/{}", id(&unsent))).1;
    assert_eq!((canceled["offline"]["state"].as_str(), canceled["refunded_amount"].as_u64()), (Some("canceled"), Some(2000)), "{canceled}");
    assert_eq!(shop.offline_status()["open_amount"], 0);

    // Smartum answers again: the canceled check is never sent, and the customer's
    // receipt, untouched at Smartum, pays a new purchase.
    shop.up();
    assert!(
        shop.daemon()
            .wait_for_log(&["the provider answers again: receipts taken offline are checked now"], Duration::from_secs(30))
            .is_some(),
        "the prober never saw Smartum back"
    );
    let again = shop.smartum.transaction(&transaction).unwrap();
    assert_eq!((again.status, shop.smartum.checks(), shop.smartum.refund_count()), ("paid", 0, 0));
    let receipt = shop_receipt_of(&shop, &canceled);
    let repaid = shop.scan(&shop.create(2000), &receipt);
    assert_eq!((repaid["status"].as_str(), repaid["verification"].as_str()), (Some("succeeded"), Some("online")), "{repaid}");

    // A check lost on its way (Smartum reads, but checks vanish): the receipt is taken
    // offline, and a full refund waits, as the check may yet land.
    shop.smartum.set_faults(Faults { black_hole: true, ..Faults::default() });
    let (lost, lost_transaction) = shop.pay(1000);
    assert_taken_offline(&lost);
    let waiting = shop.refund(&lost, None);
    assert_eq!(waiting.status(), 409);
    assert!(waiting.headers().contains_key("retry-after"));
    shop.up();
    let confirmed = shop.until_checked(&lost);
    assert_eq!(confirmed["offline"]["state"], "confirmed", "{confirmed}");
    assert_eq!(shop.smartum.transaction(&lost_transaction).unwrap().status, "checked");
    assert_eq!(shop.refund(&lost, None).status(), 201, "confirmed, it refunds");
}

#[test]
fn offline_acceptance_is_off_unless_enabled_and_its_limits_must_be_written() {
    let shop = Shop::new("timeout = \"2s\"");
    shop.down();
    let (failed, _) = shop.pay(1000);
    assert_eq!((failed["status"].as_str(), failure_code(&failed)), (Some("failed"), "provider_unavailable"), "{failed}");
    assert!(shop.offline_status().is_null(), "no method takes receipts offline");

    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.configure(&shop.smartum.config_section(install.path(), "offline = { enabled = true, max_total = 1000 }").unwrap());
    let checked = install.run(&["check"]);
    let said = posbridge_testkit::all_output(&checked);
    assert!(!checked.status.success());
    assert!(said.contains("methods.smartum.offline.max_amount") && said.contains("missing"), "{said}");
}

#[test]
fn doctor_shows_offline_mode_the_open_total_and_the_oldest_receipt() {
    let mut shop = Shop::new(OFFLINE);
    shop.down();
    assert_taken_offline(&shop.pay(1200).0);
    shop.daemon.take().expect("running").terminate();
    let doctor = shop.install.run(&["doctor"]);
    let said = posbridge_testkit::all_output(&doctor);
    let line = said.lines().find(|line| line.contains("offline smartum")).unwrap_or_else(|| panic!("{said}"));
    assert!(line.contains("open: 1 receipt(s), 12.00 of 8000") || line.contains("open: 1 receipt(s), 1200 of 8000"), "{line}");
    assert!(line.contains("oldest taken"), "{line}");
}
