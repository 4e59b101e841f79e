//! Scanner and QR image figures:
//! - decoder throughput (reports per second) on the golden 436-character receipt,
//! - the time from a receipt's last report (written to a `replay` scanner's FIFO) to its
//!   payment's `succeeded`, through the release binary against the sandbox Smartum,
//! - `/v1/decode` per 1280×720 frame, and how many of each kind of frame rqrr alone, the
//!   old whole-frame pipeline ("before") and the staged one ("after") decode, with the
//!   median time of each in process and of the daemon's answer over HTTP, and how many
//!   of the staged pipeline's answers our own locator read (`Pass::Located`).
//!
//! `cargo bench -p posbridge --bench scanners`

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use image::GrayImage;
use posbridge::config::KeyboardLayout;
use posbridge::qr_images::{find_codes, find_codes_with, Pass, Strategy};
use posbridge::sandbox::{scanner_reports, SandboxOptions, SmartumSandbox};
use posbridge::scanners::replay::parse_line;
use posbridge::scanners::{KeyboardDecoder, PosDecoder, Terminators};
use posbridge_testkit::images::{encode, qr_frame, rotated};
use posbridge_testkit::{Daemon, Install, TILL_TOKEN};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

fn main() {
    decoder_throughput();
    let smartum = SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), SandboxOptions::default()).expect("sandbox");
    let install = install_with_fifo_scanner(&smartum);
    install.unlimited();
    let daemon = install.start();
    scan_to_succeeded(&install, &daemon, &smartum);
    decode_frames(&daemon.base_url, &smartum);
}

fn fixture(name: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/scanners").join(name);
    std::fs::read_to_string(path).unwrap().lines().filter_map(|line| parse_line(line).unwrap()).map(|(_, report)| report).collect()
}

fn decoder_throughput() {
    let keyboard = fixture("receipt-us.hex");
    let rounds = 2000;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut decoder = KeyboardDecoder::new(KeyboardLayout::Us, Terminators { enter: true, tab: false }, 100);
        for (index, report) in keyboard.iter().enumerate() {
            std::hint::black_box(decoder.feed(index as u64, report).unwrap());
        }
    }
    let per_second = (rounds * keyboard.len()) as f64 / started.elapsed().as_secs_f64();
    println!("keyboard decoder: {:.1} M reports/s ({} reports a receipt)", per_second / 1e6, keyboard.len());
    let pos = fixture("receipt-pos.hex");
    let started = Instant::now();
    for _ in 0..rounds * 20 {
        let mut decoder = PosDecoder::new();
        for report in &pos {
            std::hint::black_box(decoder.feed(report).unwrap());
        }
    }
    let per_second = (rounds * 20 * pos.len()) as f64 / started.elapsed().as_secs_f64();
    println!("HID POS decoder: {:.1} M reports/s ({} reports a receipt)", per_second / 1e6, pos.len());
}

fn install_with_fifo_scanner(smartum: &SmartumSandbox) -> Install {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    let fifo = install.path().join("front.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let scanner = "[[scanners]]\nid = \"front\"\nsource = \"replay\"\npath = \"front.fifo\"\n";
    install.configure(&format!("{}\n{scanner}", smartum.config_section(install.path(), "").unwrap()));
    let text = std::fs::read_to_string(install.config_path()).unwrap().replacen(
        "id = \"till-1\"\n",
        "id = \"till-1\"\nscanners = [\"front\"]\n",
        1,
    );
    install.write("posbridge.toml", &text);
    install
}

fn scan_to_succeeded(install: &Install, daemon: &Daemon, smartum: &SmartumSandbox) {
    let client = reqwest::blocking::Client::new();
    let base = &daemon.base_url;
    let mut samples = Vec::new();
    for _ in 0..40 {
        let created: Value = client
            .post(format!("{base}/v1/payments"))
            .bearer_auth(TILL_TOKEN)
            .json(&json!({"method": "smartum", "amount": 3000, "currency": "EUR"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        let lines = scanner_reports(&smartum.create_receipt(3000).jws, "us").unwrap();
        let mut fifo = std::fs::OpenOptions::new().write(true).open(install.path().join("front.fifo")).unwrap();
        let (body, last) = lines.split_at(lines.len() - 2); // Enter press and release
        writeln!(fifo, "{}", body.join("\n")).unwrap();
        fifo.flush().unwrap();
        let started = Instant::now();
        writeln!(fifo, "{}", last.join("\n")).unwrap();
        fifo.flush().unwrap();
        let paid = daemon.follow(&id, 1, &["processing"]);
        assert_eq!(paid["status"], "succeeded", "{paid}");
        samples.push(started.elapsed());
        drop(fifo);
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "last report -> payment succeeded (40 receipts, US keyboard scanner on a FIFO): p50 {:.2} ms, p99 {:.2} ms",
        ms(at(0.5)),
        ms(at(0.99))
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Per kind of frame: how many of the 20 each strategy decodes and its median time in
/// this process ("before" is the old whole-frame pass order, `Strategy::Exhaustive`),
/// then the daemon's answer over HTTP (the new pipeline; PNG decoding included).
fn decode_frames(base: &str, smartum: &SmartumSandbox) {
    let dark = |image: &GrayImage| {
        let mut inverted = image.clone();
        image::imageops::invert(&mut inverted);
        inverted
    };
    type Frame = fn(&str, &dyn Fn(&GrayImage) -> GrayImage) -> GrayImage;
    let kinds: Vec<(&str, Frame)> = vec![
        ("clean, 6 px/module", |text, _| qr_frame(text, 6)),
        ("rotated 17°", |text, _| rotated(&qr_frame(text, 6), 17.0)),
        ("blurred σ=1.6", |text, _| image::imageops::blur(&qr_frame(text, 6), 1.6)),
        ("blurred σ=2.5", |text, _| image::imageops::blur(&qr_frame(text, 6), 2.5)),
        ("dark mode", |text, dark| dark(&qr_frame(text, 6))),
        ("3 px/module", |text, _| qr_frame(text, 3)),
        ("dark, rotated 11°, σ=1.6, 5 px", |text, dark| dark(&image::imageops::blur(&rotated(&qr_frame(text, 5), 11.0), 1.6))),
    ];
    let client = reqwest::blocking::Client::new();
    println!("/v1/decode, 1280x720 frames, 20 receipts each; median times per frame");
    println!(
        "  {:<32} {:>11} | {:>17} | {:>29} | {:>7}",
        "", "rqrr alone", "before (old order)", "after: in process | HTTP, PNG", "located"
    );
    for (name, make) in kinds {
        let (mut alone, mut before, mut after, mut served) = (0, Vec::new(), Vec::new(), Vec::new());
        let (mut found_before, mut found_after, mut found_served, mut located) = (0, 0, 0, 0);
        for _ in 0..20 {
            let text = smartum.create_receipt(3000).jws;
            let frame = make(&text, &dark);
            let (found, took) = timed(|| find_codes_with(&frame, Strategy::Exhaustive));
            before.push(took);
            if found.codes == [text.clone()] {
                found_before += 1;
                alone += usize::from(found.by == Some((Pass::AsIs, false)));
            }
            let (found, took) = timed(|| find_codes(&frame));
            after.push(took);
            found_after += usize::from(found.codes == [text.clone()]);
            located += usize::from(found.by.is_some_and(|(pass, _)| pass == Pass::Located));
            let body = encode(&frame, image::ImageFormat::Png);
            let (answer, took) = timed(|| {
                let answer: Value = client
                    .post(format!("{base}/v1/decode"))
                    .bearer_auth(TILL_TOKEN)
                    .header("Content-Type", "image/png")
                    .body(body)
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                answer
            });
            served.push(took);
            found_served += usize::from(answer["codes"] == json!([text]));
        }
        println!(
            "  {name:<32} {alone:>5}/20   | {found_before:>2}/20 {:>7.1} ms | {found_after:>2}/20 {:>6.1} ms | {found_served:>2}/20 {:>6.1} ms | {located:>4}/20",
            median(before),
            median(after),
            median(served)
        );
    }
}

fn timed<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let result = work();
    (result, started.elapsed())
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    ms(samples[samples.len() / 2])
}
