//! Payment latency through real HTTP: the release `posbridge` binary with the real
//! Smartum plugin, against the sandbox Smartum in this process. Measured in the same
//! run, beside it: the single-request floor (one bare axum round trip on loopback plus
//! one sled flush) and the structural floor of a payment (two bare round trips, the
//! two POS requests; three flushes, the payment's creation, write-ahead and settlement;
//! one round trip to the local fake provider, the redemption), and ES512 verification of
//! one receipt with the plugin's implementation (aws-lc-rs) and with RustCrypto's p521.
//!
//! `cargo bench -p posbridge --bench payment_latency` (set `BENCH_ITERATIONS` to change
//! the sample size; default 300).
//!
//! A shared machine's speed can drift by up to half between runs, so compare builds in
//! alternating runs and by their ratio to the floors of the same run: copy each build's
//! `posbridge` beside the original in the target directory and name it in `BENCH_DAEMON`
//! (the bench binary itself needs no rebuild). The plugin is looked up beside the binary,
//! so only the daemon is swapped (docs/performance.md). The daemon's CPU time per payment
//! is printed too: on two cores it is about as large as a payment's latency.

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
    let install = Install::new(&std::env::var("BENCH_DAEMON").unwrap_or(BIN.to_string()));
    install.add_plugin("posbridge-plugin-smartum");
    // Offline acceptance on, with limits no run reaches: online payments are unaffected
    // by it; the offline scans are measured at the end with the sandbox switched down.
    let offline = "timeout = \"3s\"\noffline = { enabled = true, max_amount = 100000, max_total = 100000000, max_age = \"2h\" }";
    install.configure(&smartum.config_section(install.path(), offline).unwrap());
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
    let mut structural = Vec::with_capacity(iterations);
    let floor_probe = Floor::start();
    let provider_url = format!("{}/v1/transactions/tx_floorProbe", smartum.url());
    let cpu_before = cpu_seconds(daemon.pid());
    for index in 0..iterations {
        let (created, total) = pay(100 + index as u64);
        create.push(created);
        scan.push(total - created);
        payment.push(total);
        floor.push(floor_probe.measure(&client));
        structural.push(floor_probe.measure_structural(&client, &provider_url));
    }
    // The floors run in this process: the daemon's CPU time over the loop is its own
    // work for the payments (on 2 cores about as large as their latency).
    let cpu_per_payment = (cpu_seconds(daemon.pid()) - cpu_before) / iterations as f64;
    let breakdown = daemon_breakdown(&client, &base);
    let (verify, verify_p521) = es512_verify_times(&smartum);
    let throughput = payments_per_second(&base, &smartum, iterations.max(100));
    let mut offline_scan = offline_scans(&client, &base, &smartum, iterations);

    let (p50, p99) = percentiles(&mut payment);
    let (floor50, floor99) = percentiles(&mut floor);
    let (structural50, structural99) = percentiles(&mut structural);
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
    println!(
        "  ES512 verification of one receipt: {:.3} ms with aws-lc-rs (in the scan), {:.3} ms with RustCrypto p521 ({:.1}x)",
        ms(verify),
        ms(verify_p521),
        ms(verify_p521) / ms(verify)
    );
    println!("  inside the daemon, mean per payment (its own metrics): {breakdown}");
    println!("  daemon CPU time (user + system, all threads) per payment: {:.3} ms", cpu_per_payment * 1000.0);
    println!("single-request floor: one bare axum round trip on loopback + one sled flush:");
    println!("  p50 {:>8.3} ms   p99 {:>8.3} ms", ms(floor50), ms(floor99));
    println!("structural floor: two bare round trips + three sled flushes + one round trip to the local fake Smartum:");
    println!("  p50 {:>8.3} ms   p99 {:>8.3} ms", ms(structural50), ms(structural99));
    println!("ratio payment/single-request floor: p50 {:.2}x   p99 {:.2}x", ms(p50) / ms(floor50), ms(p99) / ms(floor99));
    println!("ratio payment/structural floor:     p50 {:.2}x   p99 {:.2}x", ms(p50) / ms(structural50), ms(p99) / ms(structural99));
    println!("throughput: {throughput:.1} payments/s (4 registers in parallel)");
    let (offline50, offline99) = percentiles(&mut offline_scan);
    println!("scan with Smartum down, receipt taken offline ({iterations} sequential; no provider round trip):");
    println!(
        "  p50 {:>8.3} ms   p99 {:>8.3} ms   (online scan above: p50 {:.3}, p99 {:.3}; offline/online p50 {:.2}x)",
        ms(offline50),
        ms(offline99),
        ms(scan50),
        ms(scan99),
        ms(offline50) / ms(scan50)
    );
}

/// Scan times of receipts taken offline: Smartum is switched unavailable, one scan finds
/// it so (and waits out the method's timeout), then each scan is measured.
fn offline_scans(client: &reqwest::blocking::Client, base: &str, smartum: &SmartumSandbox, iterations: usize) -> Vec<Duration> {
    smartum.set_faults(posbridge::sandbox::Faults { unavailable: true, ..Default::default() });
    let mut scans = Vec::with_capacity(iterations);
    for index in 0..=iterations {
        let receipt = smartum.create_receipt(100 + index as u64);
        let (created, total, paid) = posbridge_testkit::create_and_scan(client, base, 100 + index as u64, &receipt.jws);
        assert_eq!((paid["status"].as_str(), paid["verification"].as_str()), (Some("succeeded"), Some("offline")), "{paid}");
        if index > 0 {
            scans.push(total - created);
        }
    }
    smartum.set_faults(posbridge::sandbox::Faults::default());
    scans
}

/// The median time to verify one receipt signature: as the plugin does in a scan, and
/// with RustCrypto's p521 (what the plugin used before).
fn es512_verify_times(smartum: &SmartumSandbox) -> (Duration, Duration) {
    use p521::ecdsa::signature::Verifier;
    use p521::pkcs8::DecodePublicKey;
    let keys = posbridge_plugin_smartum::KeySet::from_pems(&[(smartum.kid().to_string(), smartum.public_key_pem())]).expect("key");
    let receipt = smartum.create_receipt(100);
    let median = |verify: &dyn Fn()| {
        let mut samples: Vec<Duration> = (0..200)
            .map(|_| {
                let started = Instant::now();
                verify();
                started.elapsed()
            })
            .collect();
        percentiles(&mut samples).0
    };
    let plugin = median(&|| {
        keys.verify(&receipt.jws).expect("verifies");
    });
    let key = p521::ecdsa::VerifyingKey::from_affine(*p521::PublicKey::from_public_key_pem(&smartum.public_key_pem()).unwrap().as_affine())
        .unwrap();
    let (input, signature) = receipt.jws.rsplit_once('.').unwrap();
    use base64::Engine;
    let signature_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).unwrap();
    let signature = p521::ecdsa::Signature::from_slice(&signature_bytes).unwrap();
    let rust_crypto = median(&|| key.verify(input.as_bytes(), &signature).expect("verifies"));
    (plugin, rust_crypto)
}

/// Where the daemon's time went, from its own `/metrics`: the mean of each plugin call
/// and of the server-side handling of each POS request of a payment.
fn daemon_breakdown(client: &reqwest::blocking::Client, base: &str) -> String {
    let text = client.get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let mean = |sum: &str, count: &str| value(sum) / value(count).max(1.0) * 1000.0;
    let plugin = |operation: &str| {
        let labels = format!("{{method=\"smartum\",operation=\"{operation}\"}}");
        mean(
            &format!("posbridge_plugin_call_duration_seconds_sum{labels}"),
            &format!("posbridge_plugin_call_duration_seconds_count{labels}"),
        )
    };
    let route = |method: &str, route: &str| {
        let labels = format!("{{method=\"{method}\",route=\"{route}\",status=");
        let find = |name: &str| {
            text.lines()
                .filter(|line| line.starts_with(&format!("{name}{labels}")))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        find("posbridge_http_request_seconds_sum") / find("posbridge_http_requests_total").max(1.0) * 1000.0
    };
    let commit_count = "posbridge_store_commit_duration_seconds_count{backend=\"sled\"}";
    let commit = mean("posbridge_store_commit_duration_seconds_sum{backend=\"sled\"}", commit_count);
    let commits = value(commit_count);
    let payments = value("posbridge_http_requests_total{method=\"POST\",route=\"/v1/payments\",status=\"201\"}");
    format!(
        "create handled {:.3} ms, scan handled {:.3} ms, of which plugin read_code {:.3} ms, inspect_code {:.3} ms (beside the write-ahead) and redeem {:.3} ms; each store commit (apply + flush) {commit:.3} ms, {:.2} commits per payment",
        route("POST", "/v1/payments"),
        route("POST", "/v1/payments/{id}/scan"),
        plugin("read_code"),
        plugin("inspect_code"),
        plugin("redeem"),
        commits / payments.max(1.0)
    )
}

/// CPU seconds (user + system) a process has used, all its threads, dead ones included.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name, which ends at the last ')': utime and stime are
    // the 14th and 15th of the whole line.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..].split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf reads a constant of the C library; it touches no memory of ours.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
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
        self.round_trip(client);
        self.flush(started);
        started.elapsed()
    }

    /// What a payment cannot avoid: the create (round trip + flush), the scan's
    /// write-ahead (flush), its redemption (a round trip to the fake provider), its
    /// settlement (flush) and the scan's own round trip.
    fn measure_structural(&self, client: &reqwest::blocking::Client, provider_url: &str) -> Duration {
        let started = Instant::now();
        self.round_trip(client);
        self.flush(started);
        self.round_trip(client);
        self.flush(started);
        let status = client.get(provider_url).send().unwrap().status();
        assert!(status.is_client_error() || status.is_success(), "the fake answered {status}");
        self.flush(started);
        started.elapsed()
    }

    fn round_trip(&self, client: &reqwest::blocking::Client) {
        let answer: Value = client.post(&self.url).json(&json!({"amount": 100})).send().unwrap().json().unwrap();
        assert_eq!(answer["ok"], true);
    }

    fn flush(&self, started: Instant) {
        self.db.insert(b"probe", started.elapsed().as_nanos().to_be_bytes().to_vec()).unwrap();
        self.runtime.block_on(self.db.flush_async()).unwrap();
    }
}
