//! Card payments as a shop lives them, through the release binary and the real
//! `stripe-split` plugin against the fake Stripe (with Stripe's test-mode rate limit of
//! 25 requests/s): each till starts a card payment, the customer taps after a random
//! 1-8 s, and the POS follows the payment with long polls. Reported for 1 till and for
//! 10 tills waiting at once: tap -> the POS sees `succeeded` (p50/p95), requests to Stripe
//! per payment and per second, the busiest second, and 429s met. Also: what posbridge
//! adds to starting a payment (client time less the fake's own serving time).
//!
//! `cargo bench -p posbridge --bench card_payments` (`BENCH_PAYMENTS` payments per till,
//! default 12 with one till and 6 with ten).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use posbridge::sandbox::{endpoint_of, StripeOptions, StripeSandbox};
use posbridge_testkit::{more_tills, till_token, Daemon, Install};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

fn reader_of(till: usize) -> String {
    format!("tmr_BenchTill{till}")
}

/// One shop of `tills` tills, each with its own reader.
struct Shop {
    stripe: StripeSandbox,
    daemon: Daemon,
    _install: Install,
}

impl Shop {
    fn start(tills: usize) -> Shop {
        let readers: Vec<String> = (1..=tills).map(reader_of).collect();
        let stripe = StripeSandbox::start("127.0.0.1:0".parse().unwrap(), StripeOptions { readers, ..StripeOptions::default() })
            .expect("fake Stripe");
        let install = Install::new(BIN);
        install.add_plugin("posbridge-plugin-stripe-split");
        install.write("stripe.secret", "sk_test_sandbox\n");
        let by_register: Vec<String> = (1..=tills).map(|till| format!("\"till-{till}\" = \"{}\"", reader_of(till))).collect();
        install.configure(&format!(
            "[methods.card]\nplugin = \"stripe-split\"\napi_url = \"{}\"\nsecret_key_file = \"stripe.secret\"\nreaders = {{ {} }}\n\n{}",
            stripe.url(),
            by_register.join(", "),
            more_tills(tills)
        ));
        install.unlimited();
        let daemon = install.start();
        Shop { stripe, daemon, _install: install }
    }
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Random(u64);

impl Random {
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What one payment showed.
struct Sample {
    tap_to_pos: Duration,
    /// From the tap to the PaymentIntent read that found it paid (arrival at the fake).
    tap_to_read: Duration,
    waited: Duration,
}

/// One till's payments: start, the customer taps after 1-8 s, follow until `succeeded`.
fn till_runs(shop: &Shop, till: usize, payments: usize, seed: u64) -> Vec<Sample> {
    let client = reqwest::blocking::Client::new();
    let token = till_token(till);
    let mut random = Random(seed);
    let mut samples = Vec::new();
    for index in 0..payments {
        let started = Instant::now();
        let card: Value = client
            .post(format!("{}/v1/payments", shop.daemon.base_url))
            .bearer_auth(&token)
            .json(&json!({"method": "card", "amount": 1500 + index, "currency": "EUR"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(card["status"], "awaiting_card", "{card}");
        let id = card["id"].as_str().unwrap().to_string();
        // The customer finds the card: a simulated person, so a real wait.
        std::thread::sleep(Duration::from_secs_f64(1.0 + 7.0 * random.next_unit()));
        shop.stripe.present_card(&reader_of(till), "4242424242424242").unwrap();
        let tapped = Instant::now();
        let paid = shop.daemon.follow_as(&token, &id, card["version"].as_u64().unwrap(), &["awaiting_card", "processing"]);
        assert_eq!(paid["status"], "succeeded", "{paid}");
        let seen = Instant::now();
        let intent = paid["transaction_id"].as_str().unwrap().to_string();
        let read_at = shop
            .stripe
            .requests_timed()
            .into_iter()
            .filter(|(at, method, path)| *at >= tapped && method == "GET" && path.ends_with(&intent))
            .map(|(at, _, _)| at)
            .next()
            .expect("the PaymentIntent was read after the tap");
        samples.push(Sample { tap_to_pos: seen - tapped, tap_to_read: read_at - tapped, waited: seen - started });
    }
    samples
}

/// The gaps between consecutive looks: at one reader within one wait for a customer,
/// and between lists of all readers.
fn poll_gaps(stripe: &StripeSandbox) -> Vec<Duration> {
    let mut last_look: BTreeMap<String, Instant> = BTreeMap::new();
    let mut gaps = Vec::new();
    for (at, method, path) in stripe.requests_timed() {
        let Some(rest) = path.strip_prefix("/v1/terminal/readers") else { continue };
        let mut parts = rest.trim_start_matches('/').split('/');
        let (reader, action) = (parts.next().unwrap_or(""), parts.next());
        match (method.as_str(), action) {
            ("GET", None) => {
                let key = if reader.is_empty() { "(list)" } else { reader };
                if let Some(previous) = last_look.insert(key.to_string(), at) {
                    gaps.push(at - previous);
                }
            }
            // A new payment on the reader starts a new wait.
            _ => {
                last_look.remove(reader);
            }
        }
    }
    gaps
}

fn percentile(samples: &[Duration], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

/// `tills` tills paying `payments` each, all at once.
fn shop_run(tills: usize, payments: usize) {
    let shop = Shop::start(tills);
    let started = Instant::now();
    let samples: Vec<Sample> = std::thread::scope(|scope| {
        let shop = &shop;
        let runs: Vec<_> =
            (1..=tills).map(|till| scope.spawn(move || till_runs(shop, till, payments, 0x9e37_79b9 + till as u64))).collect();
        runs.into_iter().flat_map(|run| run.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let all_requests = shop.stripe.requests();
    let taps: Vec<Duration> = samples.iter().map(|sample| sample.tap_to_pos).collect();
    let reads: Vec<Duration> = samples.iter().map(|sample| sample.tap_to_read).collect();
    let waited: f64 = samples.iter().map(|sample| sample.waited.as_secs_f64()).sum();
    println!("{tills} till(s) waiting at once, {} card payments, customer taps after 1-8 s:", samples.len());
    println!(
        "  tap -> POS sees succeeded (long poll): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        percentile(&taps, 0.5),
        percentile(&taps, 0.95),
        percentile(&taps, 1.0)
    );
    println!(
        "    of which tap -> the PaymentIntent read that finds it paid: p50 {:.0} ms, p95 {:.0} ms",
        percentile(&reads, 0.5),
        percentile(&reads, 0.95)
    );
    let is_poll = |endpoint: &str| endpoint == "GET /v1/terminal/readers/{id}" || endpoint == "GET /v1/terminal/readers";
    let polls = all_requests.iter().filter(|(method, path)| is_poll(&endpoint_of(method, path))).count();
    println!(
        "  requests to Stripe per payment: {:.1} (all requests / payments); per waiting till: {:.2}/s in all, of which looks at readers {:.2}/s",
        all_requests.len() as f64 / samples.len() as f64,
        all_requests.len() as f64 / waited,
        polls as f64 / waited
    );
    println!(
        "  all tills: {} requests in {:.1} s = {:.1}/s, busiest second {} requests, 429s met: {}",
        all_requests.len(),
        elapsed.as_secs_f64(),
        all_requests.len() as f64 / elapsed.as_secs_f64(),
        shop.stripe.busiest_second(started),
        shop.stripe.rate_limited()
    );
    let gaps = poll_gaps(&shop.stripe);
    println!(
        "  time between two looks (at one reader, or lists of all), at Stripe: p50 {:.0} ms, p95 {:.0} ms",
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.95)
    );
    let mut by_endpoint: BTreeMap<String, usize> = BTreeMap::new();
    for (method, path) in &all_requests {
        *by_endpoint.entry(endpoint_of(method, path)).or_default() += 1;
    }
    for (endpoint, count) in by_endpoint {
        println!("    {:>6.2} per payment  {endpoint}", count as f64 / samples.len() as f64);
    }
}

/// What posbridge adds to starting a card payment: client time less the fake's serving time.
fn start_overhead() {
    let shop = Shop::start(1);
    let client = reqwest::blocking::Client::new();
    let mut added = Vec::new();
    for index in 0..40 {
        let serving_before = shop.stripe.serving_time();
        let started = Instant::now();
        let card: Value = client
            .post(format!("{}/v1/payments", shop.daemon.base_url))
            .bearer_auth(till_token(1))
            .json(&json!({"method": "card", "amount": 1500 + index, "currency": "EUR"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let create = started.elapsed();
        added.push(create.saturating_sub(shop.stripe.serving_time() - serving_before));
        assert_eq!(card["status"], "awaiting_card", "{card}");
        shop.stripe.present_card(&reader_of(1), "4242424242424242").unwrap();
        let paid = shop.daemon.follow_as(&till_token(1), card["id"].as_str().unwrap(), 0, &["awaiting_card", "processing"]);
        assert_eq!(paid["status"], "succeeded");
    }
    println!(
        "card payment start (POST /v1/payments -> awaiting_card), added by posbridge: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&added, 0.5),
        percentile(&added, 0.99)
    );
}

fn main() {
    let payments = |default: usize| std::env::var("BENCH_PAYMENTS").ok().and_then(|text| text.parse().ok()).unwrap_or(default);
    start_overhead();
    shop_run(1, payments(12));
    shop_run(10, payments(6));
}
