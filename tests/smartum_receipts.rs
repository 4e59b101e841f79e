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
