//! Scanners end to end through the real binary: a `replay` scanner on a FIFO completes
//! its register's waiting payment; with nothing waiting, a `scan.unclaimed` event; and
//! `/v1/decode` on phone-screen images generated here.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;

use image::{GrayImage, Luma};
use posbridge::sandbox::{scanner_reports, SandboxOptions, SmartumSandbox};
use posbridge_testkit::images::{encode, qr_frame, rotated};
use posbridge_testkit::{Daemon, Install};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

struct Shop {
    install: Install,
    smartum: SmartumSandbox,
    daemon: Daemon,
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

/// A shop whose till-1 has a keyboard (fi) scanner and a HID POS scanner, both replayed
/// from FIFOs.
fn shop() -> Shop {
    let options = SandboxOptions::default();
    let smartum = SmartumSandbox::start("127.0.0.1:0".parse::<SocketAddr>().unwrap(), options.clone()).unwrap();
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    mkfifo(&install.path().join("front.fifo"));
    mkfifo(&install.path().join("pos.fifo"));
    let scanners = r#"
[[scanners]]
id = "front"
source = "replay"
path = "front.fifo"
mode = "keyboard"
layout = "fi"

[[scanners]]
id = "counter"
source = "replay"
path = "pos.fifo"
mode = "pos"

[[registers]]
id = "till-2"
scanners = ["counter"]
"#;
    let config = format!("{}\n{scanners}", smartum.config_section(install.path(), "").unwrap());
    // till-1 (from the base config) gets the front scanner.
    install.configure(&config);
    let text = std::fs::read_to_string(install.config_path()).unwrap().replacen(
        "[[registers]]\nid = \"till-1\"\n",
        "[[registers]]\nid = \"till-1\"\nscanners = [\"front\"]\n",
        1,
    );
    install.write("posbridge.toml", &text);
    let daemon = install.start();
    Shop { install, smartum, daemon }
}

/// Writes report lines into a FIFO as a scanner session (open, write, close).
fn scan_into(fifo: &Path, lines: &[String]) {
    let mut writer = std::fs::OpenOptions::new().write(true).open(fifo).expect("open FIFO");
    writeln!(writer, "{}", lines.join("\n")).unwrap();
}

fn cart() -> Value {
    json!({"method": "smartum", "amount": 4500, "currency": "EUR", "lines": [
        {"sku": "GYM", "name": "gym", "amount": 3000, "labels": ["smartum"]},
        {"sku": "DRINK", "name": "drink", "amount": 1500, "labels": []}]})
}

#[test]
fn a_scan_from_the_registers_scanner_completes_its_waiting_payment() {
    let shop = shop();
    let (_, payment) = shop.daemon.post("/v1/payments", &cart());
    let id = payment["id"].as_str().unwrap();
    let receipt = shop.smartum.create_receipt(3000);
    scan_into(&shop.install.path().join("front.fifo"), &scanner_reports(&receipt.jws, "fi").unwrap());

    let paid = shop.daemon.follow(id, 1, &["processing"]);
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(paid["transaction_id"], receipt.transaction_id.as_str());

    let (_, scanners) = shop.daemon.get_json("/v1/scanners");
    let front = scanners["data"].as_array().unwrap().iter().find(|s| s["id"] == "front").unwrap().clone();
    assert_eq!(front["register"], "till-1");
    assert_eq!(front["mode"], "keyboard");
    assert_eq!(front["layout"], "fi");
    assert_eq!(front["connected"], true);
    assert!(front["last_scan_at"].is_string(), "{front}");

    // The HID POS scanner of till-2 pays till-2's payment, multi-report.
    let (_, other) = shop.daemon.post_as(
        posbridge_testkit::MANAGER_TOKEN,
        "/v1/payments",
        &json!({"method": "smartum", "amount": 1000, "currency": "EUR", "register": "till-2"}),
    );
    let other_id = other["id"].as_str().unwrap();
    let second = shop.smartum.create_receipt(1000);
    let pos_lines = scanner_reports(&second.jws, "pos").unwrap();
    assert!(pos_lines.len() > 1, "a receipt takes several HID POS reports");
    scan_into(&shop.install.path().join("pos.fifo"), &pos_lines);
    let paid = shop.daemon.follow_as(posbridge_testkit::MANAGER_TOKEN, other_id, 1, &["processing"]);
    assert_eq!(paid["status"], "succeeded", "{paid}");
}

#[test]
fn a_scan_with_no_payment_waiting_is_an_unclaimed_event() {
    let shop = shop();
    scan_into(&shop.install.path().join("front.fifo"), &scanner_reports("tx_R60D21hL60bj5N1v", "fi").unwrap());
    let (kinds, unclaimed) = first_unclaimed(&shop.daemon, posbridge_testkit::TILL_TOKEN);
    assert_eq!(kinds.first().map(String::as_str), Some("scanner.connected"), "the scanner connected first: {kinds:?}");
    assert_eq!(unclaimed["scanner"], "front");
    assert_eq!(unclaimed["register"], "till-1");
    assert_eq!(unclaimed["code"], "tx_R60D21hL60bj5N1v", "the register's till gets the code");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"tx_R60D21hL60bj5N1v"));
    assert_eq!(unclaimed["code_sha256"], digest.as_str());
    let (_, journal) = first_unclaimed(&shop.daemon, posbridge_testkit::MANAGER_TOKEN);
    assert!(journal.get("code").is_none(), "the journal keeps the hash, not the code: {journal}");
}

/// The event kinds up to the first `scan.unclaimed` event `token` receives, and its data.
fn first_unclaimed(daemon: &Daemon, token: &str) -> (Vec<String>, Value) {
    let response = reqwest::blocking::Client::new().get(format!("{}/v1/events", daemon.base_url)).bearer_auth(token).send().unwrap();
    let mut lines = BufReader::new(response).lines();
    let mut kind = String::new();
    let mut kinds = Vec::new();
    let started = std::time::Instant::now();
    let unclaimed = loop {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no scan.unclaimed event: {kinds:?}");
        let line = lines.next().expect("stream").unwrap();
        if let Some(value) = line.strip_prefix("event: ") {
            kind = value.to_string();
            kinds.push(kind.clone());
        } else if let Some(data) = line.strip_prefix("data: ") {
            if kind == "scan.unclaimed" {
                break serde_json::from_str::<Value>(data).unwrap();
            }
        }
    };
    (kinds, unclaimed)
}

fn decode(daemon: &Daemon, body: Vec<u8>, content_type: &str, query: &str) -> (u16, Value) {
    let response = daemon
        .request(reqwest::Method::POST, &format!("/v1/decode{query}"))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

#[test]
fn decode_finds_receipts_in_phone_screen_images() {
    let shop = shop();
    // A fixed receipt (the golden recording's), so each image is the same every run.
    let golden = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/scanners/receipt.txt")).unwrap();
    let golden = golden.trim_end();
    let clean = qr_frame(golden, 6);
    let dark = |image: &GrayImage| {
        let mut inverted = image.clone();
        image::imageops::invert(&mut inverted);
        inverted
    };
    let inverted = dark(&clean);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("clean PNG", encode(&clean, image::ImageFormat::Png), "image/png"),
        ("rotated 17 degrees", encode(&rotated(&clean, 17.0), image::ImageFormat::Png), "image/png"),
        ("blurred", encode(&image::imageops::blur(&clean, 1.6), image::ImageFormat::Png), "image/png"),
        ("dark mode (inverted)", encode(&inverted, image::ImageFormat::Png), "image/png"),
        ("JPEG", encode(&clean, image::ImageFormat::Jpeg), "image/jpeg"),
        ("3 px per module", encode(&qr_frame(golden, 3), image::ImageFormat::Png), "image/png"),
        (
            "dark, rotated and blurred",
            encode(&dark(&image::imageops::blur(&rotated(&clean, 11.0), 1.2)), image::ImageFormat::Jpeg),
            "image/jpeg",
        ),
    ];
    for (name, body, content_type) in cases {
        let (status, answer) = decode(&shop.daemon, body, content_type, "");
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["codes"], json!([golden]), "{name}");
    }

    // ?payment= applies the first code as a scan.
    let receipt = shop.smartum.create_receipt(3000);
    let (_, payment) = shop.daemon.post("/v1/payments", &cart());
    let frame = encode(&qr_frame(&receipt.jws, 6), image::ImageFormat::Png);
    let (status, answer) = decode(&shop.daemon, frame, "image/png", &format!("?payment={}", payment["id"].as_str().unwrap()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["payment"]["status"], "succeeded", "{answer}");

    // No code, and not an image.
    let blank = encode(&GrayImage::from_pixel(640, 480, Luma([200])), image::ImageFormat::Png);
    assert_eq!(decode(&shop.daemon, blank, "image/png", "").1["codes"], json!([]));
    let (status, refused) = decode(&shop.daemon, b"GIF89a not supported".to_vec(), "image/gif", "");
    assert_eq!(status, 415, "{refused}");
    assert_eq!(refused["error"]["code"], "unsupported_media_type");
}
