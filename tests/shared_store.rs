//! Several daemons on one PostgreSQL store, as a shop with a posbridge beside each till:
//! each real binary on its own port and node name, one throwaway database, one sandbox
//! Smartum. What one daemon took, another refunds, lists and streams; a receipt is held
//! once across daemons; a killed daemon's work is finished by another after its lease
//! expires; a database outage refuses work clearly and heals without restarts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use posbridge::sandbox::{Faults, SandboxOptions, SmartumSandbox, StripeOptions, StripeSandbox};
use posbridge_testkit::postgres::Postgres;
use posbridge_testkit::{till_token, Daemon, Install};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

/// Two tills' machines (A and B) on one database and one Smartum.
struct Chain {
    smartum: SmartumSandbox,
    installs: [Install; 2],
    daemons: [Option<Daemon>; 2],
}

impl Chain {
    fn new() -> Chain {
        Chain::on(Postgres::shared())
    }

    fn on(server: &Postgres) -> Chain {
        let smartum = SmartumSandbox::start("127.0.0.1:0".parse::<SocketAddr>().unwrap(), SandboxOptions::default()).expect("sandbox");
        let first = Install::new(BIN).on_shared_store(&server.new_database());
        let second = first.beside();
        for install in [&first, &second] {
            install.add_plugin("posbridge-plugin-smartum");
            let method = smartum.config_section(install.path(), "").unwrap();
            install.configure(&format!("{method}\n{}", posbridge_testkit::more_tills(4)));
            // The checks read every payment as fast as they can.
            install.unlimited();
        }
        let daemons = [Some(first.start()), Some(second.start())];
        Chain { smartum, installs: [first, second], daemons }
    }

    fn at(&self, till: usize) -> &Daemon {
        self.daemons[till].as_ref().expect("running")
    }

    fn create(&self, till: usize) -> Value {
        let (status, payment) = self.at(till).post("/v1/payments", &json!({"method": "smartum", "amount": 3000, "currency": "EUR"}));
        assert_eq!(status, 201, "{payment}");
        payment
    }

    fn scan(&self, till: usize, payment: &Value, code: &str) -> (u16, Value) {
        self.at(till).post(&format!("/v1/payments/{}/scan", id(payment)), &json!({"code": code}))
    }
}

fn id(value: &Value) -> &str {
    value["id"].as_str().expect("an id")
}

fn failure_code(payment: &Value) -> &str {
    payment["failure"]["code"].as_str().or(payment["error"]["code"].as_str()).unwrap_or_default()
}

#[test]
fn a_payment_taken_at_one_till_is_found_refunded_and_streamed_at_another() {
    let chain = Chain::new();
    let payment = chain.create(0);
    let receipt = chain.smartum.create_receipt(3000);
    let (status, paid) = chain.scan(0, &payment, &receipt.jws);
    assert_eq!((status, paid["status"].as_str()), (200, Some("succeeded")), "{paid}");

    // B reads A's payment, finds it by receipt, and refunds part of it.
    let (status, seen) = chain.at(1).get_json(&format!("/v1/payments/{}", id(&payment)));
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen, paid, "B answers what A stored");
    let (status, refund) = chain.at(1).post("/v1/refunds", &json!({"transaction_id": receipt.transaction_id, "amount": 1000}));
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "succeeded", "{refund}");
    assert_eq!(refund["payment"], payment["id"]);
    assert_eq!(chain.smartum.refund_count(), 1);

    // A sees the refund on the payment it took, and refuses more than is left.
    let after = chain.at(0).get_json(&format!("/v1/payments/{}", id(&payment))).1;
    assert_eq!(after["refunded_amount"], 1000, "{after}");
    let (status, refused) = chain.at(0).post("/v1/refunds", &json!({"payment": id(&payment), "amount": 2500}));
    assert_eq!(status, 422, "{refused}");

    // Both daemons stream the same journal: A's changes and B's refund, in order, with
    // the same ids.
    let refunded =
        |events: &[(u64, String, Value)]| events.iter().any(|event| event.1 == "refund.updated" && event.2["status"] == "succeeded");
    let at_b = chain.at(1).events_until(None, refunded);
    let at_a = chain.at(0).events(None, at_b.len());
    assert_eq!(at_a, at_b, "one journal, whichever daemon is asked");
    let ids: Vec<u64> = at_b.iter().map(|event| event.0).collect();
    assert_eq!(ids, (1..=at_b.len() as u64).collect::<Vec<_>>(), "ids increase by one in commit order");
    assert_eq!(at_b[2].2["status"], "succeeded", "A's payment, as B streams it");

    // A stream waiting at A wakes for a change made at B.
    let last = ids.last().copied();
    let second = chain.create(1);
    let woken = chain.at(0).events(last, 1);
    assert_eq!(woken[0].2["id"], second["id"], "A's stream carries B's new payment");

    // Lists at either till see both tills' payments.
    let listed = chain.at(1).get_json("/v1/payments?limit=10").1;
    let listed: Vec<&str> = listed["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(listed, [id(&second), id(&payment)]);
}

#[test]
fn one_receipt_scanned_at_two_tills_at_once_pays_once() {
    let chain = Chain::new();
    for round in 0..4 {
        let payments = [chain.create(0), chain.create(1)];
        let receipt = chain.smartum.create_receipt(3000);
        let start = Arc::new(Barrier::new(2));
        let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let scans: Vec<_> = (0..2)
                .map(|till| {
                    let (start, payment, code, chain) = (start.clone(), &payments[till], receipt.jws.clone(), &chain);
                    scope.spawn(move || {
                        start.wait();
                        chain.scan(till, payment, &code)
                    })
                })
                .collect();
            scans.into_iter().map(|scan| scan.join().unwrap()).collect()
        });
        let succeeded = answers.iter().filter(|(_, body)| body["status"] == "succeeded").count();
        let refused = answers.iter().filter(|(_, body)| failure_code(body) == "receipt_already_used").count();
        assert_eq!((succeeded, refused), (1, 1), "round {round}: {answers:?}");
        assert_eq!(chain.smartum.checks(), round + 1, "round {round}: Smartum asked once per receipt; the store refused the other");
    }
}

#[test]
fn a_killed_daemons_payment_is_finished_by_another_after_its_lease() {
    let mut chain = Chain::new();
    let payment = chain.create(0);
    let receipt = chain.smartum.create_receipt(3000);
    chain.smartum.set_faults(Faults { stall_after_check: true, ..Faults::default() });
    let hanging = chain.at(0).post_unanswered(&format!("/v1/payments/{}/scan", id(&payment)), &json!({"code": receipt.jws}));
    assert!(chain.smartum.wait_for_checks(1, Duration::from_secs(30)), "Smartum never saw the check");
    assert_eq!(chain.at(1).get_json(&format!("/v1/payments/{}", id(&payment))).1["status"], "processing");

    // A dies holding the lease; B waits it out (3 s here), asks Smartum what became of
    // the attempt and finishes the payment: redeemed once.
    chain.smartum.set_faults(Faults::default());
    chain.daemons[0].take().expect("running").kill();
    let finished = chain.at(1).follow(id(&payment), 2, &["processing"]);
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["transaction_id"], receipt.transaction_id.as_str());
    assert_eq!(chain.smartum.checks(), 1, "never checked twice");
    hanging.join().unwrap();

    // A comes back and agrees; the receipt cannot pay again at either till.
    chain.daemons[0] = Some(chain.installs[0].start());
    assert_eq!(chain.at(0).get_json(&format!("/v1/payments/{}", id(&payment))).1, finished);
    let again = chain.create(0);
    assert_eq!(failure_code(&chain.scan(0, &again, &receipt.jws).1), "receipt_already_used");
}

#[test]
fn a_database_outage_refuses_new_work_clearly_and_heals_without_restarts() {
    // Its own server: stopping it must not disturb the other tests' databases.
    let server = Postgres::private();
    let chain = Chain::on(&server);
    let before = chain.create(0);
    let receipt = chain.smartum.create_receipt(3000);
    assert_eq!(chain.scan(0, &before, &receipt.jws).1["status"], "succeeded");
    let pending = chain.create(1);

    server.stop();
    let (status, refused) = chain.at(1).post("/v1/payments", &json!({"method": "smartum", "amount": 100, "currency": "EUR"}));
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "store_unavailable", "{refused}");
    let (status, ready) = chain.at(0).get_json_as(posbridge_testkit::MANAGER_TOKEN, "/readyz");
    assert_eq!(status, 503, "not ready while the store is down: {ready}");
    assert!(ready["store_error"].as_str().is_some_and(|why| why.contains("unavailable")), "/readyz says why: {ready}");
    let (_, shown) = chain.at(1).get_json_as(posbridge_testkit::MANAGER_TOKEN, "/v1/status");
    assert_eq!((shown["store_ok"].as_bool(), shown["store_backend"].as_str()), (Some(false), Some("postgres")), "{shown}");
    assert!(shown["store_error"].is_string(), "the status page says why: {shown}");
    let checks_before = chain.smartum.checks();
    let later = chain.smartum.create_receipt(3000);
    let (status, refused) = chain.scan(1, &pending, &later.jws);
    assert_eq!((status, refused["error"]["code"].as_str()), (503, Some("store_unavailable")), "{refused}");
    assert_eq!(chain.smartum.checks(), checks_before, "no provider call without its write-ahead");

    server.start();
    // Both daemons serve again by themselves; what was acknowledged is all there.
    let after = chain.at(1).get_json(&format!("/v1/payments/{}", id(&before))).1;
    assert_eq!(after["status"], "succeeded", "{after}");
    let (status, paid) = chain.scan(1, &pending, &later.jws);
    assert_eq!((status, paid["status"].as_str()), (200, Some("succeeded")), "{paid}");
    let next = chain.create(0);
    assert_eq!(chain.scan(0, &next, &chain.smartum.create_receipt(3000).jws).1["status"], "succeeded");
    assert_eq!(chain.at(0).get("/readyz").status().as_u16(), 200);
    // The event stream picks up after the outage, at either daemon.
    let streamed = chain.at(1).events(None, 8);
    assert!(streamed.windows(2).all(|pair| pair[1].0 == pair[0].0 + 1), "{streamed:?}");
}

#[test]
fn a_shop_moves_from_its_sled_store_to_the_shared_database_and_keeps_everything() {
    let smartum = SmartumSandbox::start("127.0.0.1:0".parse::<SocketAddr>().unwrap(), SandboxOptions::default()).expect("sandbox");
    let configure = |install: &Install| {
        install.add_plugin("posbridge-plugin-smartum");
        install.configure(&smartum.config_section(install.path(), "").unwrap());
    };
    // The shop as it was: one daemon on sled, three payments, one refunded in part.
    let old = Install::new(BIN);
    assert!(old.store_url.is_none(), "this target runs on sled");
    configure(&old);
    let daemon = old.start();
    let mut receipts = Vec::new();
    for _ in 0..3 {
        let (_, payment) = daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 3000, "currency": "EUR"}));
        let receipt = smartum.create_receipt(3000);
        let (_, paid) = daemon.post(&format!("/v1/payments/{}/scan", id(&payment)), &json!({"code": receipt.jws}));
        assert_eq!(paid["status"], "succeeded", "{paid}");
        receipts.push((paid, receipt));
    }
    let (status, refund) = daemon.post("/v1/refunds", &json!({"payment": id(&receipts[0].0), "amount": 1000}));
    assert_eq!((status, refund["status"].as_str()), (201, Some("succeeded")), "{refund}");
    let history =
        daemon.events_until(None, |events| events.iter().any(|event| event.1 == "refund.updated" && event.2["status"] == "succeeded"));
    assert!(daemon.terminate().success());

    // The move: the shared database's config, its schema, the copy (twice: the second
    // adds nothing and still verifies).
    let new = Install::new(BIN).on_shared_store(&Postgres::shared().new_database());
    configure(&new);
    let from = format!("sled:{}", old.path().join("data").display());
    assert!(new.run(&["store", "migrate"]).status.success());
    for run in 0..2 {
        let output = new.run(&["store", "copy", "--from", &from, "--to", "postgres"]);
        let printed = posbridge_testkit::all_output(&output);
        assert!(output.status.success(), "run {run}: {printed}");
        assert!(printed.contains("payments                     3 in"), "run {run}: {printed}");
        assert!(printed.contains("copied: every record"), "run {run}: {printed}");
    }
    let refused = new.run(&["store", "copy", "--from", "/no/such/store"]);
    assert!(!refused.status.success());
    assert!(posbridge_testkit::all_output(&refused).contains("sled:PATH"));

    // The shop on the shared store: the payments answer as before, refunds go on from
    // what is left, a used receipt stays used, and the event history continues.
    let daemon = new.start();
    for (paid, _) in &receipts {
        let (status, found) = daemon.get_json(&format!("/v1/payments/{}", id(paid)));
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["captured_amount"], paid["captured_amount"]);
    }
    let (status, too_much) = daemon.post("/v1/refunds", &json!({"payment": id(&receipts[0].0), "amount": 2500}));
    assert_eq!(status, 422, "only 20.00 is left: {too_much}");
    let (status, rest) = daemon.post("/v1/refunds", &json!({"transaction_id": receipts[1].1.transaction_id, "amount": 3000}));
    assert_eq!((status, rest["status"].as_str()), (201, Some("succeeded")), "{rest}");
    let (_, again) = daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 3000, "currency": "EUR"}));
    let (_, reused) = daemon.post(&format!("/v1/payments/{}/scan", id(&again)), &json!({"code": receipts[2].1.jws}));
    assert_eq!(failure_code(&reused), "receipt_already_used", "{reused}");
    let replayed = daemon.events(None, history.len());
    assert_eq!(replayed, history, "the journal came along");
    let next = daemon.events(Some(history.len() as u64), 1);
    assert_eq!(next[0].0, history.len() as u64 + 1, "new events follow the copied ones");
}

/// What the tills of the crash campaign were told, and what they could not be sure of.
#[derive(Default)]
struct Told {
    /// Payments answered `succeeded`: (payment id, transaction id).
    paid: Vec<(String, String)>,
    /// Refunds answered (201): refund id.
    refunded: Vec<String>,
    /// Every scan sent, answered or not: (payment id, transaction id).
    scanned: Vec<(String, String)>,
}

/// One till of the campaign: pays and sometimes refunds at its daemon, whichever port it
/// listens on now, until told to stop; a request lost to a kill is simply not counted.
fn till_at_work(
    number: usize,
    url: &Mutex<String>,
    smartum: &SmartumSandbox,
    told: &Mutex<Told>,
    acknowledged: &AtomicUsize,
    stop: &AtomicBool,
) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let token = till_token(number);
    let post = |path: &str, body: &Value| -> Option<(u16, Value)> {
        let base = url.lock().unwrap().clone();
        let response = client.post(format!("{base}{path}")).bearer_auth(&token).json(body).send().ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().ok()?))
    };
    let mut payments = 0;
    while !stop.load(Ordering::SeqCst) {
        let Some((201, payment)) = post("/v1/payments", &json!({"method": "smartum", "amount": 3000, "currency": "EUR"})) else { continue };
        let receipt = smartum.create_receipt(3000);
        told.lock().unwrap().scanned.push((id(&payment).to_string(), receipt.transaction_id.clone()));
        let Some((200, paid)) = post(&format!("/v1/payments/{}/scan", id(&payment)), &json!({"code": receipt.jws})) else { continue };
        if paid["status"] != "succeeded" {
            continue;
        }
        told.lock().unwrap().paid.push((id(&payment).to_string(), receipt.transaction_id.clone()));
        acknowledged.fetch_add(1, Ordering::SeqCst);
        payments += 1;
        if payments % 3 == 0 {
            if let Some((201, refund)) = post("/v1/refunds", &json!({"payment": id(&payment), "amount": 1000})) {
                told.lock().unwrap().refunded.push(id(&refund).to_string());
            }
        }
    }
}

#[test]
fn a_crash_campaign_over_two_daemons_loses_nothing_acknowledged_and_redeems_each_receipt_once() {
    const KILLS: usize = 6;
    let mut chain = Chain::new();
    let urls = [Mutex::new(chain.at(0).base_url.clone()), Mutex::new(chain.at(1).base_url.clone())];
    let told = Mutex::new(Told::default());
    let acknowledged = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Tills 1 and 2 pay at A, tills 3 and 4 at B.
        for number in 1..=4 {
            let (url, smartum, told, acknowledged, stop) = (&urls[(number - 1) / 2], &chain.smartum, &told, &acknowledged, &stop);
            scope.spawn(move || till_at_work(number, url, smartum, told, acknowledged, stop));
        }
        // Every few acknowledged payments, kill -9 one daemon (A and B in turn), start it
        // again, and let the tills find it on its new port.
        for kill in 0..KILLS {
            let target = (kill + 1) * 6;
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while acknowledged.load(Ordering::SeqCst) < target {
                assert!(std::time::Instant::now() < deadline, "the tills stalled at {} payments", acknowledged.load(Ordering::SeqCst));
                std::thread::yield_now();
            }
            let daemon = kill % 2;
            chain.daemons[daemon].take().expect("running").kill();
            let restarted = chain.installs[daemon].start();
            *urls[daemon].lock().unwrap() = restarted.base_url.clone();
            chain.daemons[daemon] = Some(restarted);
        }
        stop.store(true, Ordering::SeqCst);
    });
    let told = told.into_inner().unwrap();
    assert!(told.paid.len() >= KILLS * 6, "{} payments acknowledged", told.paid.len());

    // Every scan sent ends succeeded (holding its receipt) or not, never in between, and
    // agrees with Smartum's ledger: a receipt checked at Smartum is held by exactly that
    // payment; one never checked is held by none.
    let mut succeeded = 0;
    for (payment, transaction_id) in &told.scanned {
        let settled = chain.at(1).follow_as(posbridge_testkit::MANAGER_TOKEN, payment, 0, &["processing"]);
        let checked = chain.smartum.transaction(transaction_id).is_some_and(|transaction| transaction.status != "paid");
        if settled["status"] == "succeeded" {
            succeeded += 1;
            assert_eq!(settled["transaction_id"], transaction_id.as_str(), "{settled}");
            assert!(checked, "{payment} succeeded without Smartum checking {transaction_id}");
        } else {
            assert!(!checked, "Smartum checked {transaction_id} but {payment} is {}: {settled}", settled["status"]);
        }
    }
    assert_eq!(chain.smartum.checks(), succeeded as u64, "each receipt redeemed once, and each redemption is a payment");
    // Everything acknowledged is there, as it was told.
    for (payment, transaction_id) in &told.paid {
        let stored = chain.at(0).get_json_as(posbridge_testkit::MANAGER_TOKEN, &format!("/v1/payments/{payment}")).1;
        assert_eq!((stored["status"].as_str(), stored["transaction_id"].as_str()), (Some("succeeded"), Some(transaction_id.as_str())));
    }
    for refund in &told.refunded {
        let (status, stored) = chain.at(0).get_json_as(posbridge_testkit::MANAGER_TOKEN, &format!("/v1/refunds/{refund}"));
        assert_eq!(status, 200, "{refund}: {stored}");
        assert_ne!(stored["status"], "failed", "{stored}");
    }
}

#[test]
fn a_daemon_refuses_a_database_without_its_schema_and_a_bad_url_is_named_at_its_line() {
    let install = Install::new(BIN).on_shared_store(&Postgres::shared().new_database());
    install.configure("");
    // Not migrated: `serve` stops at once and names the command to run.
    let refused = install.run(&["serve"]);
    assert!(!refused.status.success());
    let said = posbridge_testkit::all_output(&refused);
    assert!(said.contains("schema version 0") && said.contains("posbridge store migrate"), "{said}");
    let migrated = install.run(&["store", "migrate"]);
    assert!(posbridge_testkit::all_output(&migrated).contains("schema version 2"), "{}", posbridge_testkit::all_output(&migrated));
    let again = install.run(&["store", "migrate"]);
    assert!(posbridge_testkit::all_output(&again).contains("up to date"), "{}", posbridge_testkit::all_output(&again));
    let doctor = install.run(&["doctor"]);
    assert!(posbridge_testkit::all_output(&doctor).contains("OK   store: postgres"), "{}", posbridge_testkit::all_output(&doctor));

    // A URL that is not one: `check` names the file, the line and the key.
    install.write("conf.d/00-store.toml", "[store]\nbackend = \"postgres\"\nurl = \"postgres://user@host:notaport/db\"\n");
    let checked = install.run(&["check"]);
    assert!(!checked.status.success());
    let said = posbridge_testkit::all_output(&checked);
    assert!(said.contains("00-store.toml:3") && said.contains("store.url") && said.contains("not a PostgreSQL URL"), "{said}");
}

#[test]
fn a_card_payment_waiting_at_one_till_is_canceled_from_another() {
    const READER: &str = "tmr_SandboxReader1";
    let any = || "127.0.0.1:0".parse::<SocketAddr>().unwrap();
    let smartum = SmartumSandbox::start(any(), SandboxOptions::default()).unwrap();
    let stripe = StripeSandbox::start(any(), StripeOptions::default()).unwrap();
    let first = Install::new(BIN).on_shared_store(&Postgres::shared().new_database());
    let second = first.beside();
    for install in [&first, &second] {
        install.add_plugin("posbridge-plugin-smartum");
        install.add_plugin("posbridge-plugin-stripe-split");
        let card = stripe.config_section(install.path(), &format!("reader = \"{READER}\"\ntimeout = \"3s\"")).unwrap();
        install.configure(&format!("{}\n{card}", smartum.config_section(install.path(), "").unwrap()));
    }
    let (at_a, at_b) = (first.start(), second.start());
    // At A: 30.00 by Smartum, the 15.00 left on the reader beside A.
    let cart = json!({"method": "smartum", "amount": 4500, "currency": "EUR", "lines": [
        {"sku": "GYM", "name": "gym", "amount": 3000, "labels": ["smartum"]},
        {"sku": "DRINK", "name": "drink", "amount": 1500, "labels": []}]});
    let purchase = at_a.post("/v1/payments", &cart).1;
    let receipt = smartum.create_receipt(3000);
    assert_eq!(at_a.post(&format!("/v1/payments/{}/scan", id(&purchase)), &json!({"code": receipt.jws})).1["status"], "succeeded");
    let (status, card) =
        at_a.post("/v1/payments", &json!({"method": "card", "amount": 1500, "currency": "EUR", "split_of": id(&purchase)}));
    assert_eq!(status, 201, "{card}");
    assert!(stripe.wait_for_reader_action(READER, Duration::from_secs(30)), "the reader beside A shows the payment");

    // The manager cancels it from B's machine: A's card job cancels it at Stripe, and the
    // purchase is undone.
    let (status, canceled) = at_b.post_as(posbridge_testkit::MANAGER_TOKEN, &format!("/v1/payments/{}/cancel", id(&card)), &json!({}));
    assert_eq!((status, canceled["status"].as_str()), (200, Some("canceled")), "{canceled}");
    assert_eq!(canceled["compensation"][0]["status"], "succeeded", "{canceled}");
    assert_eq!(smartum.transaction(&receipt.transaction_id).unwrap().status, "refunded");
    assert_eq!(stripe.charges(), 0);
    let seen_at_a = at_a.get_json(&format!("/v1/payments/{}", id(&card))).1;
    assert_eq!(seen_at_a["status"], "canceled", "{seen_at_a}");
}

/// A payment made by the real daemon on `install`'s store (then stopped), read back
/// through the store's port.
fn stored_payment(
    runtime: &tokio::runtime::Runtime,
    install: &Install,
    smartum: &SmartumSandbox,
) -> (posbridge::store::Store, posbridge::payments::model::Payment) {
    install.add_plugin("posbridge-plugin-smartum");
    install.configure(&smartum.config_section(install.path(), "").unwrap());
    let daemon = install.start();
    let (_, created) = daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 3000, "currency": "EUR"}));
    assert!(daemon.terminate().success());
    let config = posbridge::config::load(&install.config_path()).expect("config");
    let store = runtime.block_on(posbridge::store::Store::open(&config.store.backend)).expect("store");
    let id = posbridge::payments::model::PaymentId::parse(id(&created)).expect("an id");
    let payment = runtime.block_on(store.payment(&id)).expect("read").expect("stored");
    (store, payment)
}

#[test]
fn a_change_computed_from_a_stale_read_is_refused_on_both_stores() {
    use posbridge::store::{Commit, StoreError};
    let smartum = SmartumSandbox::start("127.0.0.1:0".parse::<SocketAddr>().unwrap(), SandboxOptions::default()).unwrap();
    let on_sled = Install::new(BIN);
    let on_postgres = Install::new(BIN).on_shared_store(&Postgres::shared().new_database());
    for install in [&on_sled, &on_postgres] {
        // One runtime for the store's whole life: its connections' tasks run on it.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (store, read) = stored_payment(&runtime, install, &smartum);
        let change = |from: &posbridge::payments::model::Payment, reference: &str| {
            let mut commit = Commit::default();
            commit.read_at(from);
            commit.payments.push(posbridge::payments::model::Payment {
                reference: Some(reference.into()),
                version: from.version + 1,
                ..from.clone()
            });
            runtime.block_on(store.commit(&commit))
        };
        assert!(change(&read, "first").is_ok(), "{}: a change over the version read lands", store.backend());
        let stale = change(&read, "second");
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{}: {stale:?}", store.backend());
        let now = runtime.block_on(store.payment(&read.id)).unwrap().unwrap();
        assert_eq!(now.reference.as_deref(), Some("first"), "{}: the first change stays", store.backend());
        // Two versions up from a fresh read (a cancel that starts a compensation) lands.
        let mut commit = Commit::default();
        commit.read_at(&now);
        commit.payments.push(posbridge::payments::model::Payment { version: now.version + 2, ..now.clone() });
        assert!(runtime.block_on(store.commit(&commit)).is_ok(), "{}", store.backend());
    }
}
