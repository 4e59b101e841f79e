//! The store at shop scale: a store filled directly with realistic payments (default
//! 1,000,000: 70% Smartum alone, 30% a Smartum part plus a card leg, 20% refunded, 1,000
//! register/day combinations over 400 days, the journal holding its last 7 days), then
//! the release `posbridge` binary on it, measured over real HTTP.
//!
//! `cargo bench -p posbridge --bench store_scale` (`STORE_SCALE_PAYMENTS=N` to change the
//! size; `STORE_SCALE_ONLY=fill` to stop after filling and sizing the store,
//! `STORE_SCALE_ONLY=throughput` for the parallel payments on an empty store only;
//! `STORE_SCALE_KEEP=/path` copies the filled store there, `STORE_SCALE_DIR=/path`
//! measures the refund reservation on such a kept store only).
//!
//! Then the same store on PostgreSQL (a throwaway cluster of Debian's server): the
//! filled store moved with `posbridge store copy`, two daemons on it, and the same
//! lookups, payments and throughput (10 registers over the 2 daemons), beside the sled
//! figures of the same run (`STORE_SCALE_ONLY=postgres` skips the rest of the sled part).

use std::path::Path;
use std::time::{Duration, Instant};

use posbridge::payments::model::{Amount, Currency, Millis, Payment, PaymentId, PaymentStatus, Refund, RefundId, RefundStatus};
use posbridge::sandbox::{SandboxOptions, SmartumSandbox};
use posbridge::store::{Commit, PaymentIndex, SledStore as Store, Window};
use posbridge_testkit::postgres::Postgres;
use posbridge_testkit::{Daemon, Install, MANAGER_TOKEN};
use serde_json::{json, Value};

const BUILT: &str = env!("CARGO_BIN_EXE_posbridge");
const DAY: Millis = 86_400_000;
const REGISTERS: usize = 5;
const DAYS: usize = 200; // every second day of 400: 5 × 200 = 1,000 register/days
const SAMPLES: usize = 1_000;

fn main() {
    let count: usize = std::env::var("STORE_SCALE_PAYMENTS").ok().and_then(|text| text.parse().ok()).unwrap_or(1_000_000);
    let smartum = SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), SandboxOptions::default()).expect("sandbox");
    // `POSBRIDGE_BIN=/path/to/posbridge` measures another build (A/B against an older
    // commit with `STORE_SCALE_ONLY=throughput`).
    let bin = std::env::var("POSBRIDGE_BIN").unwrap_or_else(|_| BUILT.to_string());
    let install = Install::new(&bin);
    install.add_plugin("posbridge-plugin-smartum");
    let registers: String =
        (1..=10).map(|n| format!("[[registers]]\nid = \"till-{n}\"\n")).collect::<String>().replace("[[registers]]\nid = \"till-1\"\n", "");
    install.configure(&format!("{}\n{registers}", smartum.config_section(install.path(), "").unwrap()));
    install.unlimited();
    let data = install.path().join("data");

    let (empty_start, empty_rss) = start_figures(&install);
    println!("empty store: start to listening {:.1} ms (median of 5), RSS {:.1} MB", ms(empty_start), empty_rss);

    let only = std::env::var("STORE_SCALE_ONLY").unwrap_or_default();
    if let Ok(kept) = std::env::var("STORE_SCALE_DIR") {
        // A store filled (and kept) by an earlier run: the refund reservation alone.
        let path = Path::new(&kept);
        let references = references_around(path, 300);
        let refund = refund_reservations(path, &references);
        println!(
            "refund of a 300-day-old payment (lookup by reference + reserve + flush, no provider): p50 {:.3} ms p99 {:.3} ms",
            ms(refund.0),
            ms(refund.1)
        );
        return;
    }
    let grouped = commits_per_second(10, 200, false);
    let serialized = commits_per_second(10, 200, true);
    println!(
        "store commits, 10 writers: {grouped:.0}/s with group commit, {serialized:.0}/s with each commit locked across its flush ({:.2}x)",
        grouped / serialized
    );
    if only == "throughput" {
        let daemon = install.start();
        for registers in [4, 10] {
            let throughput = payments_per_second(&[&daemon], &smartum, registers, 1_000);
            println!("empty store: {throughput:.1} payments/s ({registers} registers in parallel, create + scan)");
        }
        return;
    }
    let filled = Instant::now();
    let references = fill(&data, count);
    println!("filled {count} payments in {:.1} s", filled.elapsed().as_secs_f64());
    for (tree, entries, bytes) in Store::open(&data).expect("store").logical_sizes().expect("sizes") {
        println!("  tree {tree:<12} {entries:>9} entries {:>7.1} B per payment (keys + values)", bytes as f64 / count as f64);
    }
    let bytes = directory_bytes(&data);
    println!("bytes on disk per payment, all trees: {:.0} B ({:.1} MB in all)", bytes as f64 / count as f64, bytes as f64 / 1e6);
    if let Ok(keep) = std::env::var("STORE_SCALE_KEEP") {
        let copied = std::process::Command::new("cp").args(["-a"]).arg(&data).arg(&keep).status().expect("cp");
        assert!(copied.success(), "copy the filled store to {keep}");
    }
    if only == "fill" {
        return;
    }
    if only != "postgres" {
        let refund = refund_reservations(&data, &references);
        println!(
            "refund of a 300-day-old payment (lookup by reference + reserve + flush, no provider): p50 {:.3} ms p99 {:.3} ms",
            ms(refund.0),
            ms(refund.1)
        );
        let (full_start, full_rss) = start_figures(&install);
        println!(
            "{count} payments: start to listening {:.1} ms (median of 5; {:.0}% of empty), RSS {:.1} MB",
            ms(full_start),
            100.0 * full_start.as_secs_f64() / empty_start.as_secs_f64(),
            full_rss
        );
    }

    let daemon = install.start();
    let client = reqwest::blocking::Client::new();
    let lookups = list_lookups(&client, &daemon, &references);
    let by_reference = lookups[0].1;

    let (sequential, _) = pay_sequentially(&client, &daemon, &smartum, 200);
    report("create + scan, one register, sequential (baseline for retention)", sequential);
    let throughput = payments_per_second(&[&daemon], &smartum, 10, 1_000);
    println!("throughput: {throughput:.1} payments/s (10 registers in parallel, create + scan)");
    let throughput_4 = payments_per_second(&[&daemon], &smartum, 4, 1_000);
    println!("throughput: {throughput_4:.1} payments/s (4 registers in parallel, create + scan)");
    drop(daemon);
    on_postgres(&install, &bin, &smartum, &references, sequential, by_reference, count);
    if only == "postgres" {
        return;
    }

    // Retention over the same store with half of it expired: payments go on meanwhile.
    install.write("conf.d/retention.toml", "[store]\nretention = \"200d\"\n");
    let daemon = install.start();
    let sweep_started = Instant::now();
    let (during, paid) = pay_until_swept(&client, &daemon, &smartum, Duration::from_secs(90));
    match daemon.wait_for_log(&["retention removed old records"], Duration::ZERO) {
        Some(swept) => println!("retention sweep (50% expired) finished within {:.1} s: {swept}", sweep_started.elapsed().as_secs_f64()),
        None => println!(
            "retention sweep (50% expired) still running after {:.1} s (it rests 4x its work)",
            sweep_started.elapsed().as_secs_f64()
        ),
    }
    report(&format!("create + scan during the sweep ({paid} payments)"), during);
    println!("p99 during the sweep / p99 without: {:.2}x", during.1.as_secs_f64() / sequential.1.as_secs_f64());
    drop(daemon);
    let after = directory_bytes(&data);
    println!("after retention: {:.1} MB on disk", after as f64 / 1e6);
}

/// `SAMPLES` timed GETs of the paths `make` gives: p50 and p99.
fn samples(client: &reqwest::blocking::Client, daemon: &Daemon, make: &dyn Fn(usize) -> String) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..SAMPLES).map(|n| timed(|| get(client, daemon, &make(n)))).collect();
    percentiles(&mut times)
}

/// The list reads a shop makes, each reported; answers them (the first is by reference).
fn list_lookups(
    client: &reqwest::blocking::Client,
    daemon: &Daemon,
    references: &[(String, Millis)],
) -> Vec<(&'static str, (Duration, Duration))> {
    let now = posbridge::payments::model::now_ms();
    let by_reference = move |n: usize| format!("/v1/payments?reference={}", references[(n * 7919) % references.len()].0);
    let by_window =
        move |n: usize| format!("/v1/payments?from={}&to={}", iso(now - 300 * DAY + (n as Millis % 10) * 3_600_000), iso(now - 299 * DAY));
    let lookups: [(&'static str, &dyn Fn(usize) -> String); 6] = [
        ("GET /v1/payments?reference=R", &by_reference),
        ("first page by status=refunded-or-failed (failed)", &|_| "/v1/payments?status=failed".into()),
        ("first page by status=succeeded", &|_| "/v1/payments?status=succeeded".into()),
        ("first page by register", &|n| format!("/v1/payments?register=till-{}", 1 + n % REGISTERS)),
        ("first page by time window (one day, 300 days ago)", &by_window),
        ("first page, no filter", &|_| "/v1/payments?limit=20".into()),
    ];
    lookups
        .into_iter()
        .map(|(what, make)| {
            let figures = samples(client, daemon, make);
            report(what, figures);
            (what, figures)
        })
        .collect()
}

/// The filled store moved to PostgreSQL with `posbridge store copy`, then two daemons
/// on it: the same lookups, sequential payments and throughput (10 registers over both
/// daemons), with the ratios to the sled figures of this run.
fn on_postgres(
    sled: &Install,
    bin: &str,
    smartum: &SmartumSandbox,
    references: &[(String, Millis)],
    sled_sequential: (Duration, Duration),
    sled_reference: (Duration, Duration),
    count: usize,
) {
    let server = Postgres::private();
    let first = Install::new(bin).on_shared_store(&server.new_database());
    let second = first.beside();
    let config = std::fs::read_to_string(sled.config_path()).expect("the sled install's config");
    for install in [&first, &second] {
        install.write("posbridge.toml", &config);
        install.write("smartum.secret", &std::fs::read_to_string(sled.path().join("smartum.secret")).expect("secret"));
        posbridge_testkit::private(&install.path().join("smartum.secret"));
        install.write("smartum-es512.pem", &std::fs::read_to_string(sled.path().join("smartum-es512.pem")).expect("key"));
        install.add_plugin("posbridge-plugin-smartum");
        install.unlimited();
    }
    assert!(first.run(&["store", "migrate"]).status.success());
    let copy_started = Instant::now();
    let from = format!("sled:{}", sled.path().join("data").display());
    let copied = first.run(&["store", "copy", "--from", &from, "--to", "postgres"]);
    let printed = posbridge_testkit::all_output(&copied);
    assert!(copied.status.success(), "{printed}");
    println!("postgres: `store copy` of {count} payments took {:.1} s:\n{printed}", copy_started.elapsed().as_secs_f64());
    // What the database does on its own within minutes of a bulk load (autovacuum, a
    // checkpoint), done now: the shop's steady state is measured, not the load's wake.
    let settled = std::process::Command::new("psql")
        .arg(first.store_url.as_deref().expect("url"))
        .args(["-q", "-c", "VACUUM ANALYZE", "-c", "CHECKPOINT"])
        .status();
    assert!(settled.is_ok_and(|status| status.success()), "VACUUM ANALYZE, CHECKPOINT");

    let (a, b) = (first.start(), second.start());
    let client = reqwest::blocking::Client::new();
    let lookups = list_lookups(&client, &a, references);
    let by_reference = lookups[0].1;
    println!(
        "postgres/sled, reference lookup: p50 {:.2}x p99 {:.2}x",
        by_reference.0.as_secs_f64() / sled_reference.0.as_secs_f64(),
        by_reference.1.as_secs_f64() / sled_reference.1.as_secs_f64()
    );
    let (sequential, _) = pay_sequentially(&client, &a, smartum, 200);
    report("postgres: create + scan, one register, sequential", sequential);
    println!(
        "postgres/sled, create + scan: p50 {:.2}x p99 {:.2}x (goal: p99 at most 2x)",
        sequential.0.as_secs_f64() / sled_sequential.0.as_secs_f64(),
        sequential.1.as_secs_f64() / sled_sequential.1.as_secs_f64()
    );
    let throughput = payments_per_second(&[&a, &b], smartum, 10, 1_000);
    println!("postgres: throughput {throughput:.1} payments/s (10 registers over 2 daemons, create + scan)");
}

/// Commits per second from `writers` concurrent writers, each committing one payment
/// change at a time on a fresh store: through group commit, or (`serialized`) each
/// commit holding one global lock across its flush, as every change did before.
fn commits_per_second(writers: usize, each: usize, serialized: bool) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("data")).expect("store");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let now = posbridge::payments::model::now_ms();
    runtime.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|writer| {
                let (store, lock) = (store.clone(), lock.clone());
                tokio::spawn(async move {
                    for n in 0..each {
                        let payment = paid(now, (writer * each + n) as u64 + 1, writer % REGISTERS, "smartum", 1000, "R");
                        let commit = Commit {
                            events: vec![("payment.updated".into(), posbridge::payments::view::payment(&payment))],
                            payments: vec![payment],
                            ..Commit::default()
                        };
                        let _held = if serialized { Some(lock.lock().await) } else { None };
                        store.commit(&commit).await.expect("commit");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
        (writers * each) as f64 / started.elapsed().as_secs_f64()
    })
}

fn report(what: &str, (p50, p99): (Duration, Duration)) {
    println!("{what}: p50 {:.3} ms p99 {:.3} ms", ms(p50), ms(p99));
}

fn iso(at: Millis) -> String {
    posbridge_plugin_helpers::time::format_rfc3339_ms(at)
}

/// Starts the daemon five times: the median time to its `listening` line, and the RSS
/// of the last start once listening.
fn start_figures(install: &Install) -> (Duration, f64) {
    let mut times = Vec::new();
    let mut rss = 0.0;
    for _ in 0..5 {
        let started = Instant::now();
        let daemon = install.start();
        times.push(started.elapsed());
        rss = resident_mb(daemon.pid());
        daemon.terminate();
    }
    times.sort();
    (times[2], rss)
}

fn resident_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn directory_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).expect("store directory").flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() { directory_bytes(&entry.path()) } else { meta.len() };
    }
    total
}

/// A succeeded payment as the engine stores it.
fn paid(at: Millis, unique: u64, register: usize, method: &str, amount: u64, reference: &str) -> Payment {
    let card = method == "card";
    Payment {
        id: PaymentId::new(at, unique),
        status: PaymentStatus::Succeeded,
        method: method.into(),
        register: format!("till-{}", register + 1),
        client: format!("till-{}", register + 1),
        reference: Some(reference.into()),
        amount: Amount(amount),
        currency: Currency::parse("EUR").unwrap(),
        eligible_amount: Amount(amount),
        captured_amount: Amount(amount),
        split_captured_amount: Amount(0),
        split_reserved_amount: Amount(0),
        refunded_amount: Amount(0),
        transaction_id: Some(if card { format!("pi_3Q{unique:022}") } else { format!("tx_{unique:016x}") }),
        receipt_key: None,
        verified: (!card).then_some(true),
        benefit: (!card).then(|| "lunch".into()),
        failure: None,
        split_of: None,
        lines: Vec::new(),
        created_at: at,
        updated_at: at + 2_300,
        expires_at: at + 300_000,
        captured_at: Some(at + 2_300),
        // Written as one change here (a later version of a payment the store does not
        // hold would be refused as one retention removed).
        version: 1,
        attempt: None,
        attempts: 0,
        plugin_data: None,
        next_action: None,
        cancel_requested_at: None,
        compensation: None,
        offline: None,
    }
}

/// Fills the store; answers the references with their payments' creation times.
fn fill(path: &Path, count: usize) -> Vec<(String, Millis)> {
    let store = Store::open(path).expect("store");
    let now = posbridge::payments::model::now_ms();
    let per_register_day = count.div_ceil(REGISTERS * DAYS);
    let mut unique = 1u64 << 40;
    let mut references = Vec::new();
    let mut written = 0;
    'days: for day in 0..DAYS {
        let day_start = now - (400 - 2 * day as Millis) * DAY + 8 * 3_600_000;
        for register in 0..REGISTERS {
            let mut commit = Commit::default();
            let mut n = 0;
            while n < per_register_day {
                let at = day_start + (n as Millis * 12 * 3_600_000) / per_register_day as Millis;
                unique += 1;
                let reference = format!("R{day:03}-{register}-{n:05}");
                let mut first = paid(at, unique, register, "smartum", 2_000 + (unique % 5_000), &reference);
                let split = unique % 10 < 3;
                let refunded = unique % 5 == 0;
                let mut payments = vec![];
                if split {
                    unique += 1;
                    let mut leg = paid(at + 4_000, unique, register, "card", 1_500, &reference);
                    leg.split_of = Some(first.id.clone());
                    first.amount = Amount(first.amount.0 + 1_500);
                    first.split_captured_amount = Amount(1_500);
                    payments.push(leg);
                }
                payments.insert(0, first);
                if refunded {
                    let target = &mut payments[0];
                    target.refunded_amount = target.captured_amount;
                    unique += 1;
                    commit.refunds.push(Refund {
                        id: RefundId::new(at + 600_000, unique),
                        status: RefundStatus::Succeeded,
                        payment: Some(target.id.clone()),
                        method: target.method.clone(),
                        transaction_id: target.transaction_id.clone(),
                        amount: target.captured_amount,
                        currency: target.currency.clone(),
                        reason: Some("customer returned".into()),
                        failure: None,
                        provider_refund_id: Some(format!("re_{unique:016x}")),
                        client: target.client.clone(),
                        created_at: at + 600_000,
                        updated_at: at + 600_000,
                    });
                }
                for payment in payments {
                    if now - payment.created_at < 7 * DAY {
                        for _ in 0..3 {
                            commit.events.push(("payment.updated".into(), posbridge::payments::view::payment(&payment)));
                        }
                    }
                    commit.reserve.push((payment.transaction_id.clone().unwrap(), payment.id.clone()));
                    commit.payments.push(payment);
                    n += 1;
                    written += 1;
                }
                references.push((reference, at));
            }
            store.import(&commit).expect("import");
            if written >= count {
                break 'days;
            }
        }
    }
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(store.flush()).expect("flush");
    references
}

/// The references of the payments created about `days` ago in a stored store.
fn references_around(path: &Path, days: Millis) -> Vec<(String, Millis)> {
    let store = Store::open(path).expect("store");
    let now = posbridge::payments::model::now_ms();
    let window = Window { from: Some(now - (days + 1) * DAY), to: Some(now - (days - 1) * DAY), before: None };
    store
        .payments_in(PaymentIndex::All, &window)
        .filter_map(|payment| payment.ok())
        .filter_map(|payment| payment.reference.map(|reference| (reference, payment.created_at)))
        .collect()
}

/// The engine's refund reservation without the provider: find the payment by its
/// reference, then commit the reserved payment, the refund and its event (flushed).
fn refund_reservations(path: &Path, references: &[(String, Millis)]) -> (Duration, Duration) {
    let store = Store::open(path).expect("store");
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let now = posbridge::payments::model::now_ms();
    let old: Vec<&String> =
        references.iter().filter(|(_, at)| (now - at) / DAY >= 299 && (now - at) / DAY <= 301).map(|(reference, _)| reference).collect();
    assert!(!old.is_empty(), "payments 300 days old exist");
    let mut lookups = Vec::new();
    let mut times: Vec<Duration> = (0..200)
        .map(|n| {
            let reference = old[(n * 104_729) % old.len()];
            let started = Instant::now();
            let mut payment =
                store.payments_in(PaymentIndex::Reference(reference), &Window::default()).next().expect("found").expect("readable");
            lookups.push(started.elapsed());
            payment.refunded_amount = Amount(payment.refunded_amount.0.saturating_add(1));
            payment.version += 1;
            let refund = Refund {
                id: RefundId::new(now, store.unique().unwrap()),
                // Stored settled, so the daemon started on this store later has no
                // refund to resume (the commit costs the same).
                status: RefundStatus::Succeeded,
                payment: Some(payment.id.clone()),
                method: payment.method.clone(),
                transaction_id: payment.transaction_id.clone(),
                amount: Amount(1),
                currency: payment.currency.clone(),
                reason: None,
                failure: None,
                provider_refund_id: None,
                client: "office".into(),
                created_at: now,
                updated_at: now,
            };
            let commit = Commit {
                events: vec![
                    ("payment.updated".into(), json!({"id": payment.id.as_str()})),
                    ("refund.updated".into(), json!({"id": refund.id.as_str()})),
                ],
                payments: vec![payment],
                refunds: vec![refund],
                ..Commit::default()
            };
            runtime.block_on(store.commit(&commit)).expect("commit");
            started.elapsed()
        })
        .collect();
    let (lookup50, lookup99) = percentiles(&mut lookups);
    println!("  of which the lookup by reference (cold pages of a 300-day-old day): p50 {:.3} ms p99 {:.3} ms", ms(lookup50), ms(lookup99));
    percentiles(&mut times)
}

fn get(client: &reqwest::blocking::Client, daemon: &Daemon, path: &str) {
    let answer = client.get(format!("{}{path}", daemon.base_url)).bearer_auth(MANAGER_TOKEN).send().expect("answer");
    assert!(answer.status().is_success(), "{path}: {}", answer.status());
    let body: Value = answer.json().expect("json");
    assert!(body["data"].is_array(), "{body}");
}

fn timed(work: impl FnOnce()) -> Duration {
    let started = Instant::now();
    work();
    started.elapsed()
}

fn pay(client: &reqwest::blocking::Client, base: &str, register: &str, receipt: &str) {
    let payment = json!({"method": "smartum", "amount": 100_000, "currency": "EUR", "register": register});
    let (_, _, paid) = posbridge_testkit::create_and_scan_as(client, base, MANAGER_TOKEN, &payment, receipt);
    assert_eq!(paid["status"], "succeeded", "{paid}");
}

fn pay_sequentially(
    client: &reqwest::blocking::Client,
    daemon: &Daemon,
    smartum: &SmartumSandbox,
    count: usize,
) -> ((Duration, Duration), usize) {
    pay_while(client, daemon, smartum, |paid| paid < count)
}

/// Pays one after another until the daemon logs the end of its retention sweep, or for
/// `at_most`.
fn pay_until_swept(
    client: &reqwest::blocking::Client,
    daemon: &Daemon,
    smartum: &SmartumSandbox,
    at_most: Duration,
) -> ((Duration, Duration), usize) {
    let started = Instant::now();
    let swept = || daemon.wait_for_log(&["retention removed old records"], Duration::ZERO).is_some();
    let (times, paid) = pay_while(client, daemon, smartum, |_| !swept() && started.elapsed() < at_most);
    assert!(paid >= 20, "the sweep was too short to measure payments beside it ({paid})");
    (times, paid)
}

/// Pays at register till-1, one payment after another, while `more(payments so far)`;
/// answers the p50 and p99 of create + scan, and how many were paid.
fn pay_while(
    client: &reqwest::blocking::Client,
    daemon: &Daemon,
    smartum: &SmartumSandbox,
    more: impl Fn(usize) -> bool,
) -> ((Duration, Duration), usize) {
    let mut times = Vec::new();
    while more(times.len()) {
        let receipt = smartum.create_receipt(100 + times.len() as u64).jws;
        times.push(timed(|| pay(client, &daemon.base_url, "till-1", &receipt)));
    }
    let paid = times.len();
    (percentiles(&mut times), paid)
}

/// `registers` tills paying in parallel, spread over `daemons` (register n at daemon n
/// modulo their number); payments per second over `count` payments.
fn payments_per_second(daemons: &[&Daemon], smartum: &SmartumSandbox, registers: usize, count: usize) -> f64 {
    let receipts: Vec<String> = (0..count).map(|n| smartum.create_receipt(100 + n as u64).jws).collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (n, chunk) in receipts.chunks(count.div_ceil(registers)).enumerate() {
            let base = daemons[n % daemons.len()].base_url.as_str();
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                let register = format!("till-{}", n + 1);
                for receipt in chunk {
                    pay(&client, base, &register, receipt);
                }
            });
        }
    });
    count as f64 / started.elapsed().as_secs_f64()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}
