//! Card payments through the release binary and the real `stripe-split` plugin against
//! the fake Stripe: what posbridge adds to each payment (client-observed time less the
//! fake's own serving time) and how many requests a payment sends to Stripe.
//!
//! `cargo bench -p posbridge --bench card_payments`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use posbridge::sandbox::{StripeOptions, StripeSandbox};
use posbridge_testkit::{Install, TILL_TOKEN};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");
const READER: &str = "tmr_SandboxReader1";

fn main() {
    let stripe = StripeSandbox::start("127.0.0.1:0".parse().unwrap(), StripeOptions::default()).expect("fake Stripe");
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-stripe-split");
    install.write("stripe.secret", "sk_test_sandbox\n");
    install.configure(&format!(
        "[methods.card]\nplugin = \"stripe-split\"\napi_url = \"{}\"\nsecret_key_file = \"stripe.secret\"\nreader = \"{READER}\"\n",
        stripe.url()
    ));
    install.unlimited();
    let daemon = install.start();
    let client = reqwest::blocking::Client::new();
    let base = daemon.base_url.clone();

    let mut added = Vec::new();
    let mut settle = Vec::new();
    let mut requests_per_payment = Vec::new();
    let mut by_endpoint: BTreeMap<String, usize> = BTreeMap::new();
    let iterations = 60;
    for index in 0..iterations {
        let (requests_before, serving_before) = (stripe.requests().len(), stripe.serving_time());
        let started = Instant::now();
        let card: Value = client
            .post(format!("{base}/v1/payments"))
            .bearer_auth(TILL_TOKEN)
            .json(&json!({"method": "card", "amount": 1500 + index, "currency": "EUR"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let create = started.elapsed();
        let create_serving = stripe.serving_time() - serving_before;
        assert_eq!(card["status"], "awaiting_card", "{card}");
        let id = card["id"].as_str().unwrap().to_string();
        stripe.present_card(READER, "4242424242424242").unwrap();
        let presented = Instant::now();
        let settled = daemon.follow(&id, card["version"].as_u64().unwrap(), &["awaiting_card", "processing"]);
        assert_eq!(settled["status"], "succeeded", "{settled}");
        settle.push(presented.elapsed());
        added.push(create.saturating_sub(create_serving));
        let requests = &stripe.requests()[requests_before..];
        requests_per_payment.push(requests.len());
        if index == iterations - 1 {
            for (method, path) in requests {
                let endpoint = path
                    .split('/')
                    .map(|part| if part.starts_with("pi_") || part.starts_with("tmr_") { "{id}" } else { part })
                    .collect::<Vec<_>>()
                    .join("/");
                *by_endpoint.entry(format!("{method} {endpoint}")).or_default() += 1;
            }
        }
    }
    added.sort();
    settle.sort();
    requests_per_payment.sort();
    let p = |samples: &[Duration], q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    println!("card payment start (POST /v1/payments -> awaiting_card), {iterations} payments:");
    println!(
        "  added by posbridge (client time less the fake's serving time): p50 {:.2} ms, p99 {:.2} ms",
        p(&added, 0.5),
        p(&added, 0.99)
    );
    println!(
        "card presented -> payment succeeded seen by the POS: p50 {:.0} ms, p99 {:.0} ms (poll interval 250 ms)",
        p(&settle, 0.5),
        p(&settle, 0.99)
    );
    println!(
        "requests to Stripe per payment: median {}, max {}",
        requests_per_payment[requests_per_payment.len() / 2],
        requests_per_payment.last().unwrap()
    );
    for (endpoint, count) in by_endpoint {
        println!("  {count} x {endpoint}");
    }
}
