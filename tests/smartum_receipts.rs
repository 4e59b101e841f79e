//! Smartum receipts that differ from the assumed shape, through the real binary against
//! the sandbox Smartum (an ES512 key made in the test): a verified receipt with other
//! claim names is confirmed online, `iss` is not required, an unknown `kid` names the
//! configured ones.

use std::net::SocketAddr;
use std::time::Duration;

use posbridge::sandbox::{SandboxOptions, SmartumSandbox};
use posbridge_testkit::{Daemon, Install};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

fn shop() -> (Install, SmartumSandbox, Daemon) {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let smartum = SmartumSandbox::start(listen, SandboxOptions::default()).expect("sandbox");
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.configure(&smartum.config_section(install.path(), "").unwrap());
    let daemon = install.start();
    (install, smartum, daemon)
}

/// Creates a 20.00 payment and scans `code` into it.
fn pay(daemon: &Daemon, code: &str) -> Value {
    let lines = json!([{"sku": "GYM", "name": "Gym", "amount": 2000, "labels": ["smartum"]}]);
    let (status, payment) = daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 2000, "currency": "EUR", "lines": lines}));
    assert_eq!(status, 201, "{payment}");
    let (status, scanned) = daemon.post(&format!("/v1/payments/{}/scan", payment["id"].as_str().unwrap()), &json!({"code": code}));
    assert_eq!(status, 200, "{scanned}");
    scanned
}

fn header(smartum: &SmartumSandbox, kid: Option<&str>) -> Value {
    json!({"alg": "ES512", "typ": "JWT", "kid": kid.unwrap_or(smartum.kid())})
}

#[test]
fn a_verified_receipt_with_other_claim_names_is_confirmed_online() {
    let (_install, smartum, daemon) = shop();
    let paid = smartum.create_receipt(1200);
    let options = SandboxOptions::default();
    let renamed = json!({"transaction": paid.transaction_id, "venue_id": options.venue_id, "sum": 1200, "kind": "exercise"});
    let scanned = pay(&daemon, &smartum.sign(&header(&smartum, None), &renamed));
    assert_eq!(scanned["status"], "succeeded", "{scanned}");
    assert_eq!(
        (scanned["captured_amount"].as_u64(), scanned["verified"].as_bool()),
        (Some(1200), Some(true)),
        "Smartum decided: {scanned}"
    );
    assert_eq!(scanned["transaction_id"], paid.transaction_id.as_str());
    let line = daemon.wait_for_log(&["claims were not understood", paid.transaction_id.as_str()], Duration::from_secs(10));
    assert!(line.is_some(), "the technician can see why: {:?}", daemon.log());
    assert_eq!(smartum.transaction(&paid.transaction_id).unwrap().status, "checked");
}

#[test]
fn a_receipt_without_iss_pays_on_its_signed_claims() {
    let (_install, smartum, daemon) = shop();
    let paid = smartum.create_receipt(900);
    let options = SandboxOptions::default();
    let claims =
        json!({"jti": paid.transaction_id, "venue": options.venue_id, "benefit": options.benefit, "amount": 900, "currency": "EUR"});
    let scanned = pay(&daemon, &smartum.sign(&header(&smartum, None), &claims));
    assert_eq!((scanned["status"].as_str(), scanned["captured_amount"].as_u64()), (Some("succeeded"), Some(900)), "{scanned}");
}

#[test]
fn a_receipt_signed_with_an_unknown_key_names_the_configured_keys() {
    let (_install, smartum, daemon) = shop();
    let paid = smartum.create_receipt(500);
    let options = SandboxOptions::default();
    let claims =
        json!({"jti": paid.transaction_id, "venue": options.venue_id, "benefit": options.benefit, "amount": 500, "currency": "EUR"});
    let scanned = pay(&daemon, &smartum.sign(&header(&smartum, Some("rotated-2027")), &claims));
    assert_eq!(scanned["status"], "failed", "{scanned}");
    assert_eq!(scanned["failure"]["code"], "bad_signature");
    let message = scanned["failure"]["message"].as_str().unwrap();
    assert_eq!(message, format!("receipt signed with key \"rotated-2027\"; configured keys: {}", smartum.kid()), "{scanned}");
    assert_eq!(smartum.transaction(&paid.transaction_id).unwrap().status, "paid", "nothing was redeemed");
}

/// The write-ahead records what the plugin read of a code while its signature is
/// checked beside it: a forged receipt (the sandbox's `kid`, another key) naming a real
/// transaction fails with `bad_signature` before Smartum is asked, and the reservation
/// the write-ahead made for that transaction goes with it, so the genuine receipt then
/// pays another payment.
#[test]
fn a_forged_receipt_written_ahead_is_refused_and_frees_its_transaction() {
    let (_install, smartum, daemon) = shop();
    let genuine = smartum.create_receipt(700);
    let forger = posbridge::sandbox::smartum::signing_key_from_pem(&posbridge::sandbox::smartum::new_signing_key_pem()).unwrap();
    let forged =
        posbridge::sandbox::smartum::sign_receipt(&forger, &header(&smartum, None), &standard_claims(&genuine.transaction_id, 700));
    let checks_before = smartum.checks();

    let refused = pay(&daemon, &forged);
    assert_eq!((refused["status"].as_str(), refused["failure"]["code"].as_str()), (Some("failed"), Some("bad_signature")), "{refused}");
    assert_eq!(smartum.checks(), checks_before, "Smartum was not asked");
    assert_eq!(smartum.transaction(&genuine.transaction_id).unwrap().status, "paid");

    let paid = pay(&daemon, &genuine.jws);
    assert_eq!((paid["status"].as_str(), paid["captured_amount"].as_u64()), (Some("succeeded"), Some(700)), "{paid}");
    assert_eq!(paid["verified"], true, "{paid}");
    assert_eq!(smartum.transaction(&genuine.transaction_id).unwrap().status, "checked");
    let metrics = daemon.get("/metrics").text().unwrap();
    let read = "posbridge_plugin_call_duration_seconds_count{method=\"smartum\",operation=\"read_code\"} 2";
    assert!(metrics.contains(read), "both codes were read before their check, for the write-ahead: {metrics}");
}

/// The same Smartum method configured with keys from a JWKS instead of a PEM.
fn shop_with_keys(keys_config: impl Fn(&SmartumSandbox, &Install) -> String) -> (Install, SmartumSandbox, Daemon) {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let smartum = SmartumSandbox::start(listen, SandboxOptions::default()).expect("sandbox");
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    let section = smartum.config_section(install.path(), "").unwrap();
    let without_pem = section.split("[[methods.smartum.jwt_keys]]").next().unwrap().to_string();
    install.configure(&format!("{without_pem}{}\n", keys_config(&smartum, &install)));
    let daemon = install.start();
    (install, smartum, daemon)
}

fn standard_claims(transaction_id: &str, amount: u64) -> Value {
    let options = SandboxOptions::default();
    json!({"jti": transaction_id, "venue": options.venue_id, "benefit": options.benefit, "amount": amount, "currency": "EUR"})
}

#[test]
fn a_jwks_file_with_two_keys_verifies_receipts_signed_with_either() {
    let rotated = p521::ecdsa::SigningKey::random(&mut p521::elliptic_curve::rand_core::OsRng);
    let rotated_for_config = rotated.clone();
    let (_install, smartum, daemon) = shop_with_keys(move |smartum, install| {
        let sandbox_key = serde_json::from_str::<Value>(&smartum.jwks()).unwrap()["keys"][0].clone();
        let document = json!({"keys": [sandbox_key, posbridge::sandbox::smartum::public_jwk(&rotated_for_config, "rotated-2027")]});
        install.write("smartum-jwks.json", &document.to_string());
        "jwks_file = \"smartum-jwks.json\"".to_string()
    });
    let first = smartum.create_receipt(700);
    let signed_by_sandbox = pay(&daemon, &first.jws);
    assert_eq!(signed_by_sandbox["status"], "succeeded", "{signed_by_sandbox}");
    let second = smartum.create_receipt(800);
    let header = json!({"alg": "ES512", "typ": "JWT", "kid": "rotated-2027"});
    let code = posbridge::sandbox::smartum::sign_receipt(&rotated, &header, &standard_claims(&second.transaction_id, 800));
    let signed_by_rotated = pay(&daemon, &code);
    assert_eq!(
        (signed_by_rotated["status"].as_str(), signed_by_rotated["captured_amount"].as_u64()),
        (Some("succeeded"), Some(800)),
        "{signed_by_rotated}"
    );
}

#[test]
fn keys_published_at_a_jwks_url_are_fetched_at_start() {
    let (_install, smartum, daemon) = shop_with_keys(|smartum, _| format!("jwks_url = \"{}/.well-known/jwks.json\"", smartum.url()));
    let receipt = smartum.create_receipt(600);
    let scanned = pay(&daemon, &receipt.jws);
    assert_eq!(scanned["status"], "succeeded", "{scanned}");
}

#[test]
fn the_status_shows_the_last_refused_codes_hashed_with_why() {
    let (_install, smartum, daemon) = shop();
    let garbage = "SMARTUM-NOT-A-RECEIPT-0042";
    assert_eq!(pay(&daemon, garbage)["failure"]["code"], "invalid_code");
    let paid = smartum.create_receipt(500);
    let options = SandboxOptions::default();
    let claims =
        json!({"jti": paid.transaction_id, "venue": options.venue_id, "benefit": options.benefit, "amount": 500, "currency": "EUR"});
    let unknown_key = smartum.sign(&header(&smartum, Some("rotated-2027")), &claims);
    assert_eq!(pay(&daemon, &unknown_key)["failure"]["code"], "bad_signature");

    let (status, body) = daemon.get_json("/v1/status");
    assert_eq!(status, 200, "{body}");
    let refused = body["refused_codes"].as_array().expect("refused codes");
    assert_eq!(refused.len(), 2, "{body}");
    assert_eq!((refused[0]["reason"].as_str(), refused[0]["method"].as_str()), (Some("bad_signature"), Some("smartum")), "newest first");
    assert!(refused[0]["message"].as_str().unwrap().contains("rotated-2027"));
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(garbage.as_bytes()));
    assert_eq!(refused[1]["code_sha256"], &digest[..16]);
    let text = body.to_string();
    assert!(!text.contains(garbage) && !text.contains(&unknown_key), "never the code itself: {text}");
    let page = daemon.get("/").text().unwrap();
    assert!(page.contains("id=\"refused-codes\""), "the status page has the table");
}
