//! Payment latency through real HTTP: the release `posbridge` binary with the real
//! Smartum plugin, against the sandbox Smartum in this process. Measured in the same
//! run: the floor, one bare axum round trip on loopback plus one sled flush.
//!
//! `cargo bench -p posbridge --bench payment_latency` (set `BENCH_ITERATIONS` to change
//! the sample size; default 300).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use posbridge::sandbox::{SandboxOptions, SmartumSandbox};
use posbridge_testkit::Install;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

fn main() {
    let iterations: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|text| text.parse().ok()).unwrap_or(300);
    let options = SandboxOptions::default();
    let smartum = SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), options.clone()).expect("sandbox");
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.configure(&smartum.config_section(install.path(), "").unwrap());
    install.unlimited();
    let daemon = install.start();
    let client = reqwest::blocking::Client::new();
    let base = daemon.base_url.clone();

    let pay = |amount: u64| -> (Duration, Duration) {
        let receipt = smartum.create_receipt(amount);
        let (created_after, paid_after, paid) = posbridge_testkit::create_and_scan(&client, &base, amount, &receipt.jws);
        assert_eq!(paid["status"], "succeeded", "{paid}");
        (created_after, paid_after)
    };
    for _ in 0..20 {
        pay(100);
    }
    let mut payment = Vec::with_capacity(iterations);
    let mut create = Vec::with_capacity(iterations);
    let mut scan = Vec::with_capacity(iterations);
    let mut floor = Vec::with_capacity(iterations);
    let floor_probe = Floor::start();
    for index in 0..iterations {
        let (created, total) = pay(100 + index as u64);
        create.push(created);
        scan.push(total - created);
        payment.push(total);
        floor.push(floor_probe.measure(&client));
    }
    let verify = es512_verify_time(&smartum);
    let throughput = payments_per_second(&base, &smartum, iterations.max(100));

    let (p50, p99) = percentiles(&mut payment);
    let (floor50, floor99) = percentiles(&mut floor);
    println!("payment create -> scan -> succeeded ({iterations} sequential, real HTTP, release binary):");
    println!("  p50 {:>8.3} ms   p99 {:>8.3} ms", ms(p50), ms(p99));
    let ((create50, create99), (scan50, scan99)) = (percentiles(&mut create), percentiles(&mut scan));
    println!(
        "  of which create p50 {:.3} ms (p99 {:.3}); scan p50 {:.3} ms (p99 {:.3})",
        ms(create50),
        ms(create99),
        ms(scan50),
        ms(scan99)
    );
    println!("  ES512 verification of one receipt (RustCrypto p521, in the scan): {:.3} ms", ms(verify));
    println!("floor: one bare axum round trip on loopback + one sled flush:");
    println!("  p50 {:>8.3} ms   p99 {:>8.3} ms", ms(floor50), ms(floor99));
    println!("ratio payment/floor: p50 {:.2}x   p99 {:.2}x", ms(p50) / ms(floor50), ms(p99) / ms(floor99));
    println!("throughput: {throughput:.1} payments/s (4 registers in parallel)");
}

/// The median time to verify one receipt signature, as the plugin does in a scan.
fn es512_verify_time(smartum: &SmartumSandbox) -> Duration {
    let keys = posbridge_plugin_smartum::KeySet::from_pems(&[(smartum.kid().to_string(), smartum.public_key_pem())]).expect("key");
    let receipt = smartum.create_receipt(100);
    let mut samples: Vec<Duration> = (0..50)
        .map(|_| {
            let started = Instant::now();
            keys.verify(&receipt.jws).expect("verifies");
            started.elapsed()
        })
        .collect();
    percentiles(&mut samples).0
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

/// Four registers paying in parallel; payments per second over `count` payments.
fn payments_per_second(base: &str, smartum: &SmartumSandbox, count: usize) -> f64 {
    let receipts: Vec<String> = (0..count).map(|index| smartum.create_receipt(100 + index as u64).jws).collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in receipts.chunks(count.div_ceil(4)) {
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                for receipt in chunk {
                    let (_, _, paid) = posbridge_testkit::create_and_scan(&client, base, 100_000, receipt);
                    assert_eq!(paid["status"], "succeeded", "{paid}");
                }
            });
        }
    });
    count as f64 / started.elapsed().as_secs_f64()
}

/// A bare axum server answering a small JSON POST, and a sled database to flush.
struct Floor {
    url: String,
    db: sled::Db,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Floor {
    fn start() -> Floor {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap())).unwrap();
        let url = format!("http://{}/echo", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/echo", axum::routing::post(|body: axum::Json<Value>| async move { axum::Json(json!({"ok": true, "got": body.0})) }));
        runtime.spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        Floor { url, db, _dir: dir, runtime }
    }

    /// One round trip, then one write + flush.
    fn measure(&self, client: &reqwest::blocking::Client) -> Duration {
        let started = Instant::now();
        let answer: Value = client.post(&self.url).json(&json!({"amount": 100})).send().unwrap().json().unwrap();
        assert_eq!(answer["ok"], true);
        self.db.insert(b"probe", started.elapsed().as_nanos().to_be_bytes().to_vec()).unwrap();
        self.runtime.block_on(self.db.flush_async()).unwrap();
        started.elapsed()
    }
}
