//! The card remainder through Stripe, end to end: the real binary, the real plugins,
//! the sandbox Smartum and the fake Stripe (strict as Stripe is).

use std::net::SocketAddr;
use std::time::Duration;

use posbridge::sandbox::{endpoint_of, SandboxOptions, SmartumSandbox, StripeFaults, StripeOptions, StripeSandbox};
use posbridge_testkit::{more_tills, till_token, Daemon, Install};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");
const READER: &str = "tmr_SandboxReader1";
const WAIT: Duration = Duration::from_secs(30);

struct Shop {
    install: Install,
    smartum: SmartumSandbox,
    stripe: StripeSandbox,
    daemon: Option<Daemon>,
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

impl Shop {
    /// Smartum and a Stripe card method; `card_extra` goes into `[methods.card]`.
    fn new(card_extra: &str, config_extra: &str) -> Shop {
        Shop::with_stripe(StripeOptions::default(), card_extra, config_extra)
    }

    /// A shop whose fake Stripe has `options` (readers, rate limit).
    fn with_stripe(options: StripeOptions, card_extra: &str, config_extra: &str) -> Shop {
        let smartum = SmartumSandbox::start(any_port(), SandboxOptions::default()).unwrap();
        let stripe = StripeSandbox::start(any_port(), options).unwrap();
        let install = Install::new(BIN);
        install.add_plugin("posbridge-plugin-smartum");
        install.add_plugin("posbridge-plugin-stripe-split");
        let card = stripe.config_section(install.path(), card_extra).unwrap();
        install.configure(&format!("{}\n{card}\n{config_extra}", smartum.config_section(install.path(), "").unwrap()));
        let daemon = install.start();
        Shop { install, smartum, stripe, daemon: Some(daemon) }
    }

    fn with_reader(config_extra: &str) -> Shop {
        Shop::new(&format!("reader = \"{READER}\"\ntimeout = \"3s\""), config_extra)
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    /// The Smartum leg: 30.00 of a 45.00 purchase, paid by a scanned receipt.
    fn smartum_leg(&self) -> Value {
        let cart = json!({"method": "smartum", "amount": 4500, "currency": "EUR", "reference": "R-77", "lines": [
            {"sku": "GYM", "name": "gym", "amount": 3000, "labels": ["smartum"]},
            {"sku": "DRINK", "name": "drink", "amount": 1500, "labels": []}]});
        let payment = self.daemon().post("/v1/payments", &cart).1;
        let receipt = self.smartum.create_receipt(3000);
        let (_, paid) = self.daemon().post(&format!("/v1/payments/{}/scan", id(&payment)), &json!({"code": receipt.jws}));
        assert_eq!(paid["status"], "succeeded", "{paid}");
        assert_eq!(paid["remaining_amount"], 1500);
        paid
    }

    /// The card leg for what the Smartum leg left.
    fn card_leg(&self, parent: &Value) -> Value {
        let (status, card) =
            self.daemon().post("/v1/payments", &json!({"method": "card", "amount": 1500, "currency": "EUR", "split_of": id(parent)}));
        assert_eq!(status, 201, "{card}");
        card
    }

    fn payment(&self, payment: &Value) -> Value {
        self.daemon().get_json(&format!("/v1/payments/{}", id(payment))).1
    }

    /// Follows a payment with long polls until it leaves the waiting states.
    fn settled(&self, payment: &Value) -> Value {
        self.daemon().follow(id(payment), 0, &["awaiting_card", "processing"])
    }
}

fn id(value: &Value) -> &str {
    value["id"].as_str().expect("an id")
}

#[test]
fn split_purchase_succeeds_as_one_purchase() {
    let shop = Shop::with_reader("");
    let smartum = shop.smartum_leg();
    let card = shop.card_leg(&smartum);
    assert_eq!(card["status"], "awaiting_card", "{card}");
    assert_eq!(card["split_of"], id(&smartum));

    assert!(shop.stripe.wait_for_reader_action(READER, WAIT), "the reader shows the amount");
    shop.stripe.present_card(READER, "4242424242424242").unwrap();
    let paid = shop.settled(&card);
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(paid["captured_amount"], 1500);
    let intent_id = paid["transaction_id"].as_str().unwrap();
    let intent = shop.stripe.payment_intent(intent_id).unwrap();
    assert_eq!(intent["amount"], 1500);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["payment_method_types"], json!(["card_present"]));
    assert_eq!(intent["metadata"]["posbridge_payment"], id(&card));
    assert_eq!(intent["on_behalf_of"], "acct_1SandboxMerchant", "charged on the connected account (Stripe-Account)");
    assert_eq!(shop.stripe.charges(), 1);
    assert_eq!(shop.payment(&smartum)["remaining_amount"], 0, "the purchase is fully paid");
}

#[test]
fn declined_card_then_cancel_refunds_the_smartum_leg() {
    let shop = Shop::with_reader("");
    let smartum = shop.smartum_leg();
    let card = shop.card_leg(&smartum);
    assert!(shop.stripe.wait_for_reader_action(READER, WAIT));
    shop.stripe.present_card(READER, "4000000000009995").unwrap();
    let declined = shop.settled(&card);
    assert_eq!(declined["status"], "failed");
    assert_eq!(declined["failure"]["code"], "card_declined", "{declined}");
    assert!(declined["failure"]["message"].as_str().unwrap().contains("insufficient_funds"));

    let (status, canceled) = shop.daemon().post(&format!("/v1/payments/{}/cancel", id(&card)), &json!({}));
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    let compensation = canceled["compensation"].as_array().expect("the purchase was undone");
    assert_eq!(compensation.len(), 1);
    assert_eq!(compensation[0]["payment"], id(&smartum));
    assert_eq!(compensation[0]["amount"], 3000);
    assert_eq!(compensation[0]["status"], "succeeded");
    assert_eq!(shop.payment(&smartum)["refunded_amount"], 3000);
    let receipt_tx = smartum["transaction_id"].as_str().unwrap();
    assert_eq!(shop.smartum.transaction(receipt_tx).unwrap().status, "refunded");
    assert_eq!(shop.stripe.charges(), 0);
}

#[test]
fn reader_timeout_sends_cancel_action_and_fails_the_card_leg() {
    let shop = Shop::with_reader("[payments]\ncard_timeout = \"1s\"\n");
    let smartum = shop.smartum_leg();
    let card = shop.card_leg(&smartum);
    let timed_out = shop.settled(&card);
    assert_eq!(timed_out["status"], "failed", "{timed_out}");
    assert_eq!(timed_out["failure"]["code"], "reader_timeout");
    assert_eq!(shop.stripe.cancel_actions(), 1, "cancel_action was sent to the reader");
    let reader = shop.stripe.reader(READER).unwrap();
    assert_eq!(reader["action"], Value::Null, "the reader is free again");
    let intents = shop.stripe.payment_intents();
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0]["status"], "canceled");
}

#[test]
fn lost_answer_to_process_payment_intent_charges_once() {
    let shop = Shop::with_reader("");
    let smartum = shop.smartum_leg();
    shop.stripe.set_faults(StripeFaults { lose_process_answer: true, ..StripeFaults::default() });
    let card = shop.card_leg(&smartum);
    // The reader got the payment although posbridge never heard back.
    assert!(shop.stripe.wait_for_reader_action(READER, WAIT));
    shop.stripe.set_faults(StripeFaults::default());
    shop.stripe.present_card(READER, "4242424242424242").unwrap();
    let paid = shop.settled(&card);
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(shop.stripe.payment_intents().len(), 1, "one PaymentIntent");
    assert_eq!(shop.stripe.charges(), 1, "one charge");
}

#[test]
fn kill_during_awaiting_card_is_resolved_after_restart() {
    let mut shop = Shop::with_reader("");
    let smartum = shop.smartum_leg();
    let card = shop.card_leg(&smartum);
    assert!(shop.stripe.wait_for_reader_action(READER, WAIT));
    shop.daemon.take().unwrap().kill();
    // The customer pays while posbridge is down.
    shop.stripe.present_card(READER, "4242424242424242").unwrap();
    shop.daemon = Some(shop.install.start());
    let paid = shop.settled(&card);
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(shop.stripe.payment_intents().len(), 1, "recovery read the PaymentIntent; it did not charge again");
    assert_eq!(shop.stripe.charges(), 1);
    assert_eq!(shop.payment(&smartum)["remaining_amount"], 0);
}

#[test]
fn card_refunds_partial_full_over_and_whole_purchase() {
    let shop = Shop::with_reader("");
    let smartum = shop.smartum_leg();
    let card = shop.card_leg(&smartum);
    assert!(shop.stripe.wait_for_reader_action(READER, WAIT));
    shop.stripe.present_card(READER, "4242424242424242").unwrap();
    let paid = shop.settled(&card);
    let intent_id = paid["transaction_id"].as_str().unwrap().to_string();

    let (status, partial) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&card), "amount": 500}));
    assert_eq!(status, 201, "{partial}");
    assert_eq!(partial["status"], "succeeded");
    assert_eq!(shop.stripe.payment_intent(&intent_id).unwrap()["amount_refunded"], 500);
    let (status, over) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&card), "amount": 1001}));
    assert_eq!(status, 422);
    assert_eq!(over["error"]["code"], "refund_exceeds_payment");

    let (status, whole) =
        shop.daemon().post("/v1/refunds", &json!({"payment": id(&smartum), "include_splits": true, "reason": "customer_request"}));
    assert_eq!(status, 201, "{whole}");
    let refunds = whole["data"].as_array().unwrap();
    assert_eq!(refunds.len(), 2, "both legs: {whole}");
    assert_eq!(refunds.iter().map(|refund| refund["amount"].as_u64().unwrap()).sum::<u64>(), 3000 + 1000);
    assert_eq!(shop.stripe.payment_intent(&intent_id).unwrap()["amount_refunded"], 1500);
    assert_eq!(shop.payment(&card)["refunded_amount"], 1500);
    assert_eq!(shop.payment(&smartum)["refunded_amount"], 3000);
}

#[test]
fn destination_charges_reverse_the_transfer_on_refund() {
    let shop = Shop::new(&format!("reader = \"{READER}\"\ncharge_type = \"destination\""), "");
    let card = shop.daemon().post("/v1/payments", &json!({"method": "card", "amount": 2000, "currency": "EUR"})).1;
    assert!(shop.stripe.wait_for_reader_action(READER, WAIT));
    shop.stripe.present_card(READER, "4242424242424242").unwrap();
    let paid = shop.settled(&card);
    let intent = shop.stripe.payment_intent(paid["transaction_id"].as_str().unwrap()).unwrap();
    assert_eq!(intent["transfer_data"]["destination"], "acct_1SandboxMerchant");
    assert_eq!(intent["on_behalf_of"], Value::Null, "a platform charge, not on the account");
    let (status, refund) = shop.daemon().post("/v1/refunds", &json!({"payment": id(&card)}));
    assert_eq!(status, 201, "{refund}");
    assert_eq!(shop.stripe.payment_intent(intent["id"].as_str().unwrap()).unwrap()["amount_refunded"], 2000);
}

#[test]
fn without_a_reader_the_customer_pays_on_a_page_shown_as_a_qr_code() {
    let shop = Shop::new("", "");
    let smartum = shop.smartum_leg();
    let card = shop.card_leg(&smartum);
    let next = &card["next_action"];
    assert_eq!(next["kind"], "show_qr", "{card}");
    let url = next["url"].as_str().unwrap();
    assert!(url.contains("/pay/cs_test_"), "{url}");
    let page = reqwest::blocking::get(url).unwrap().text().unwrap();
    assert!(page.contains("Pay 15 EUR"), "{page}");
    let session = shop.stripe.wait_for_session(WAIT).unwrap();
    assert_eq!(session["amount_total"], 1500);
    assert_eq!(session["client_reference_id"], id(&card));
    shop.stripe.pay_session(session["id"].as_str().unwrap()).unwrap();
    let paid = shop.settled(&card);
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(paid["next_action"], Value::Null);
}

/// The fake Stripe itself is as strict as Stripe: these are the rules the plugin lives by.
#[test]
fn the_fake_stripe_is_strict() {
    let stripe = StripeSandbox::start(any_port(), StripeOptions::default()).unwrap();
    let client = reqwest::blocking::Client::new();
    let post = |body: &str, key: Option<&str>, content_type: &str| {
        let mut request = client
            .post(format!("{}/v1/payment_intents", stripe.url()))
            .bearer_auth("sk_test_sandbox")
            .header("Content-Type", content_type)
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap())
    };
    let form = "application/x-www-form-urlencoded";
    let (status, json_body) = post(r#"{"amount": 1500, "currency": "eur"}"#, None, "application/json");
    assert_eq!(status, 400);
    assert_eq!(json_body["error"]["type"], "invalid_request_error");
    let (status, unknown) = post("amount=1500&currency=eur&colour=red", None, form);
    assert_eq!(status, 400);
    assert_eq!((unknown["error"]["code"].as_str(), unknown["error"]["param"].as_str()), (Some("parameter_unknown"), Some("colour")));
    let (status, missing) = post("currency=eur", None, form);
    assert_eq!((status, missing["error"]["code"].as_str()), (400, Some("parameter_missing")));

    let first = post("amount=1500&currency=eur", Some("key-1"), form);
    assert_eq!(first.0, 200);
    assert_eq!(post("amount=1500&currency=eur", Some("key-1"), form), first, "same key, same parameters: the same response");
    let (status, other) = post("amount=1600&currency=eur", Some("key-1"), form);
    assert_eq!((status, other["error"]["type"].as_str()), (400, Some("idempotency_error")));
    assert_eq!(stripe.payment_intents().len(), 1);

    let unauthorised = client
        .get(format!("{}/v1/payment_intents/{}", stripe.url(), first.1["id"].as_str().unwrap()))
        .bearer_auth("sk_test_wrong")
        .send()
        .unwrap();
    assert_eq!(unauthorised.status(), 401);

    // Concurrent requests with one key: the second is refused while the first runs.
    stripe.set_faults(StripeFaults { hold_in_flight: true, ..StripeFaults::default() });
    let url = stripe.url();
    let first_in_flight = std::thread::spawn(move || {
        let response = reqwest::blocking::Client::new()
            .post(format!("{url}/v1/payment_intents"))
            .bearer_auth("sk_test_sandbox")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Idempotency-Key", "key-2")
            .body("amount=900&currency=eur")
            .send()
            .unwrap();
        response.status().as_u16()
    });
    assert!(stripe.wait_in_flight(1, WAIT));
    let (status, concurrent) = post("amount=900&currency=eur", Some("key-2"), form);
    assert_eq!(status, 409, "{concurrent}");
    assert_eq!(concurrent["error"]["code"], "idempotency_key_in_use");
    stripe.set_faults(StripeFaults::default());
    assert_eq!(first_in_flight.join().unwrap(), 200, "the first one completes once released");

    // Starting a payment on the reader.
    let intent = first.1["id"].as_str().unwrap().to_string();
    let url = format!("{}/v1/terminal/readers/{READER}/process_payment_intent", stripe.url());
    let processing = client
        .post(&url)
        .bearer_auth("sk_test_sandbox")
        .header("Content-Type", form)
        .body(format!("payment_intent={intent}"))
        .send()
        .unwrap();
    assert_eq!(processing.status(), 200);
    // Another payment on a busy reader is Stripe's terminal_reader_busy.
    let second = post("amount=700&currency=eur", None, form).1;
    let busy = client
        .post(&url)
        .bearer_auth("sk_test_sandbox")
        .header("Content-Type", form)
        .body(format!("payment_intent={}", second["id"].as_str().unwrap()))
        .send()
        .unwrap();
    assert_eq!(busy.status(), 400);
    assert_eq!(busy.json::<Value>().unwrap()["error"]["code"], "terminal_reader_busy");

    // Stripe's rate limit (test mode: 25 requests a second): the rest answer 429, saying
    // which limit, and are not carried out.
    let intents_before = stripe.payment_intents().len();
    let answers: Vec<reqwest::blocking::Response> = (0..40)
        .map(|_| client.get(format!("{}/v1/payment_intents/{intent}", stripe.url())).bearer_auth("sk_test_sandbox").send().unwrap())
        .collect();
    let limited: Vec<&reqwest::blocking::Response> = answers.iter().filter(|answer| answer.status() == 429).collect();
    assert!(!limited.is_empty(), "40 requests at once meet the limit");
    assert!(limited.iter().all(|answer| answer.headers()["stripe-rate-limited-reason"] == "global-rate"));
    assert!(stripe.rate_limited() >= limited.len() as u64);
    let (status, refused) = post("amount=100&currency=eur", None, form);
    if status == 429 {
        assert_eq!(refused["error"]["type"], "invalid_request_error", "{refused}");
    }
    assert_eq!(stripe.payment_intents().len(), intents_before + usize::from(status == 200), "a limited request creates nothing");
}

#[test]
fn a_pos_that_hangs_up_while_the_card_starts_still_gets_the_card_payment() {
    let shop = Shop::with_reader("");
    let smartum = shop.smartum_leg();
    shop.stripe.set_faults(StripeFaults { hold_in_flight: true, ..StripeFaults::default() });
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let sent = client
        .post(format!("{}/v1/payments", shop.daemon().base_url))
        .bearer_auth(posbridge_testkit::TILL_TOKEN)
        .json(&json!({"method": "card", "amount": 1500, "currency": "EUR", "split_of": id(&smartum)}))
        .send();
    assert!(sent.is_err(), "the POS hung up while Stripe held the start");
    assert!(shop.stripe.wait_in_flight(1, WAIT), "the start reached Stripe");
    shop.stripe.set_faults(StripeFaults::default());

    assert!(shop.stripe.wait_for_reader_action(READER, WAIT), "the card job went on and the reader shows the amount");
    let (_, listed) = shop.daemon().get_json("/v1/payments?status=awaiting_card");
    let card = listed["data"][0].clone();
    assert_eq!(card["split_of"], id(&smartum), "{listed}");
    shop.stripe.present_card(READER, "4242424242424242").unwrap();
    let paid = shop.settled(&card);
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(shop.stripe.charges(), 1);
    assert_eq!(shop.payment(&smartum)["remaining_amount"], 0);
}

#[test]
fn two_card_legs_for_the_whole_remainder_cannot_both_be_open() {
    let shop = Shop::with_reader("");
    let smartum = shop.smartum_leg();
    let url = format!("{}/v1/payments", shop.daemon().base_url);
    let body = json!({"method": "card", "amount": 1500, "currency": "EUR", "split_of": id(&smartum)});
    let legs: Vec<_> = (0..2)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || {
                let response =
                    reqwest::blocking::Client::new().post(url).bearer_auth(posbridge_testkit::TILL_TOKEN).json(&body).send().unwrap();
                (response.status().as_u16(), response.json::<Value>().unwrap())
            })
        })
        .collect();
    let mut answers: Vec<(u16, Value)> = legs.into_iter().map(|leg| leg.join().unwrap()).collect();
    answers.sort_by_key(|(status, _)| *status);
    assert_eq!(answers[0].0, 201, "{answers:?}");
    assert_eq!((answers[1].0, answers[1].1["error"]["code"].as_str()), (422, Some("split_not_possible")), "{answers:?}");

    // A declined leg gives its amount back: a new leg may take it, and canceling the
    // stale declined leg after the purchase was paid refunds nothing.
    let first = answers[0].1.clone();
    assert!(shop.stripe.wait_for_reader_action(READER, WAIT));
    shop.stripe.present_card(READER, "4000000000009995").unwrap();
    assert_eq!(shop.settled(&first)["status"], "failed");
    let second = shop.card_leg(&smartum);
    assert!(shop.stripe.wait_for_reader_action(READER, WAIT));
    shop.stripe.present_card(READER, "4242424242424242").unwrap();
    assert_eq!(shop.settled(&second)["status"], "succeeded");
    let (status, canceled) = shop.daemon().post(&format!("/v1/payments/{}/cancel", id(&first)), &json!({}));
    assert_eq!((status, canceled["status"].as_str()), (200, Some("canceled")), "{canceled}");
    assert!(canceled.get("compensation").is_none(), "a completed purchase is not undone: {canceled}");
    assert_eq!(shop.payment(&smartum)["refunded_amount"], 0);
    assert_eq!(shop.payment(&second)["refunded_amount"], 0);
}

#[test]
fn a_retried_card_create_answers_the_current_state_instead_of_waiting_for_the_card() {
    let shop = Shop::with_reader("");
    let smartum = shop.smartum_leg();
    shop.stripe.set_faults(StripeFaults { hold_in_flight: true, ..StripeFaults::default() });
    let create = |patience: &str| {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .post(format!("{}/v1/payments", shop.daemon().base_url))
            .bearer_auth(posbridge_testkit::TILL_TOKEN)
            .header("Idempotency-Key", "card-leg-1")
            .header("Prefer", patience)
            .json(&json!({"method": "card", "amount": 1500, "currency": "EUR", "split_of": id(&smartum)}))
            .send()
            .unwrap()
    };
    // The first request gives up waiting for Stripe; its card job goes on.
    let first = create("wait=1");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().unwrap();
    assert_eq!(first["status"], "awaiting_card", "{first}");
    // The retry joins it: the same payment, its current state, not a second one.
    let again: Value = create("wait=1").json().unwrap();
    assert_eq!(again["id"], first["id"], "{again}");
    assert_eq!(shop.daemon().get_json("/v1/payments?status=awaiting_card").1["data"].as_array().unwrap().len(), 1);
    shop.stripe.set_faults(StripeFaults::default());
    assert!(shop.stripe.wait_for_reader_action(READER, WAIT));
    shop.stripe.present_card(READER, "4242424242424242").unwrap();
    assert_eq!(shop.settled(&first)["status"], "succeeded");
    assert_eq!(shop.stripe.charges(), 1);
}

/// Till `number`'s reader in the multi-till tests.
fn reader_of(number: usize) -> String {
    format!("tmr_Till{number}")
}

/// A shop of `tills` tills, each with its own reader, against a fake Stripe answering
/// at most `rate_limit` requests a second.
fn shop_of_tills(tills: usize, rate_limit: u32) -> Shop {
    let readers: Vec<String> = (1..=tills).map(reader_of).collect();
    let by_register: Vec<String> = (1..=tills).map(|number| format!("\"till-{number}\" = \"{}\"", reader_of(number))).collect();
    let options = StripeOptions { readers, rate_limit, ..StripeOptions::default() };
    Shop::with_stripe(options, &format!("readers = {{ {} }}\ntimeout = \"10s\"", by_register.join(", ")), &more_tills(tills))
}

/// A card payment of `amount` at till `number`: (HTTP status, payment).
fn card_at(shop: &Shop, number: usize, amount: u64) -> (u16, Value) {
    shop.daemon().post_as(&till_token(number), "/v1/payments", &json!({"method": "card", "amount": amount, "currency": "EUR"}))
}

/// The amount of the PaymentIntent a reader is working on.
fn amount_on_reader(shop: &Shop, reader: &str) -> Value {
    let intent = shop.stripe.reader(reader).unwrap()["action"]["process_payment_intent"]["payment_intent"].clone();
    shop.stripe.payment_intent(intent.as_str().expect("the reader has a payment")).unwrap()["amount"].clone()
}

#[test]
fn each_till_pays_on_its_own_reader_and_a_busy_reader_refuses_at_once() {
    let shop = shop_of_tills(2, 25);
    let (status, first) = card_at(&shop, 1, 1200);
    assert_eq!((status, first["status"].as_str()), (201, Some("awaiting_card")), "{first}");
    let (_, second) = card_at(&shop, 2, 3400);
    assert_eq!(second["status"], "awaiting_card", "{second}");
    assert!(shop.stripe.wait_for_reader_action(&reader_of(1), WAIT) && shop.stripe.wait_for_reader_action(&reader_of(2), WAIT));
    assert_eq!(amount_on_reader(&shop, &reader_of(1)), 1200, "till-1's payment is on till-1's reader");
    assert_eq!(amount_on_reader(&shop, &reader_of(2)), 3400);
    // Two payments waiting: they look at their readers in one shared list.
    assert!(shop.stripe.wait_for_requests("GET /v1/terminal/readers", 2, WAIT), "{:?}", shop.stripe.requests());

    // Till 1 again while its reader waits for the customer: refused at once, and no
    // PaymentIntent is made for it.
    let intents = shop.stripe.payment_intents().len();
    let (status, busy) = card_at(&shop, 1, 500);
    assert_eq!((status, busy["status"].as_str()), (201, Some("failed")), "{busy}");
    assert_eq!(busy["failure"]["code"], "reader_busy", "{busy}");
    assert!(busy["failure"]["message"].as_str().unwrap().contains(id(&first)), "names the payment holding the reader: {busy}");
    assert_eq!(shop.stripe.payment_intents().len(), intents, "nothing was sent to Stripe for it");

    shop.stripe.present_card(&reader_of(2), "4242424242424242").unwrap();
    let paid = shop.daemon().follow_as(&till_token(2), id(&second), 0, &["awaiting_card", "processing"]);
    assert_eq!((paid["status"].as_str(), paid["captured_amount"].as_u64()), (Some("succeeded"), Some(3400)), "{paid}");
    shop.stripe.present_card(&reader_of(1), "4242424242424242").unwrap();
    assert_eq!(shop.settled(&first)["status"], "succeeded");
    // Paid: the reader takes till 1's next payment.
    let (_, next) = card_at(&shop, 1, 700);
    assert_eq!(next["status"], "awaiting_card", "{next}");
    assert!(shop.stripe.wait_for_reader_action(&reader_of(1), WAIT));
    assert_eq!(amount_on_reader(&shop, &reader_of(1)), 700);
}

#[test]
fn a_waiting_card_payment_reads_only_the_reader_until_the_card_is_presented() {
    let shop = Shop::with_reader("");
    let (_, card) = shop.daemon().post("/v1/payments", &json!({"method": "card", "amount": 1500, "currency": "EUR"}));
    let reader_reads = "GET /v1/terminal/readers/{id}";
    assert!(shop.stripe.wait_for_requests(reader_reads, 3, WAIT), "the payment is followed");
    let before_tap = shop.stripe.requests().len();
    shop.stripe.present_card(READER, "4242424242424242").unwrap();
    assert_eq!(shop.settled(&card)["status"], "succeeded");
    let endpoints: Vec<String> = shop.stripe.requests().iter().map(|(method, path)| endpoint_of(method, path)).collect();
    let intent_reads = |requests: &[String]| requests.iter().filter(|endpoint| *endpoint == "GET /v1/payment_intents/{id}").count();
    assert_eq!(intent_reads(&endpoints[..before_tap]), 0, "while the reader waits only the reader is read: {endpoints:?}");
    assert_eq!(intent_reads(&endpoints[before_tap..]), 1, "the PaymentIntent is read once the reader's action changed: {endpoints:?}");
    assert!(endpoints[2..before_tap].iter().all(|endpoint| endpoint == reader_reads), "{endpoints:?}");
}

#[test]
fn stripe_rate_limits_slow_every_till_but_fail_no_payment() {
    let tills = 4;
    // Far below what four tills starting and waiting at once send.
    let shop = shop_of_tills(tills, 3);
    let started: Vec<Value> = std::thread::scope(|scope| {
        let shop = &shop;
        let starts: Vec<_> = (1..=tills).map(|number| scope.spawn(move || card_at(shop, number, 1000 + number as u64).1)).collect();
        starts.into_iter().map(|start| start.join().unwrap()).collect()
    });
    for (index, payment) in started.iter().enumerate() {
        assert_eq!(payment["status"], "awaiting_card", "till {}: {payment}", index + 1);
        assert!(shop.stripe.wait_for_reader_action(&reader_of(index + 1), WAIT), "till {} reached its reader", index + 1);
    }
    for number in 1..=tills {
        shop.stripe.present_card(&reader_of(number), "4242424242424242").unwrap();
    }
    for (index, payment) in started.iter().enumerate() {
        let paid = shop.daemon().follow_as(&till_token(index + 1), id(payment), 0, &["awaiting_card", "processing"]);
        assert_eq!(paid["status"], "succeeded", "till {}: {paid}", index + 1);
    }
    assert!(shop.stripe.rate_limited() > 0, "the fake's limit was met");
    assert_eq!((shop.stripe.payment_intents().len(), shop.stripe.charges()), (tills, tills), "each paid once");
    assert!(shop.daemon().wait_for_log(&["limited this account's request rate"], WAIT).is_some(), "the slow-down is logged");
}
