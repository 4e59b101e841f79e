//! The API contract is exact: the OpenAPI 3.1 document describes what the server does,
//! and the server refuses what the document does not allow, through the real binary.
//! (CI also validates the document with openapi-spec-validator and fuzzes it with
//! Schemathesis; see .ci/run.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use posbridge::sandbox::{SandboxOptions, SmartumSandbox};
use posbridge_testkit::{Daemon, Install, TILL_TOKEN};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

fn shop() -> (SmartumSandbox, Daemon) {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let smartum = SmartumSandbox::start(listen, SandboxOptions::default()).unwrap();
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.configure(&smartum.config_section(install.path(), "").unwrap());
    let daemon = install.start();
    (smartum, daemon)
}

/// Sends raw bytes and answers the status line and body.
fn raw(daemon: &Daemon, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(daemon.base_url.trim_start_matches("http://")).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn post_raw(daemon: &Daemon, path: &str, content_type: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = daemon.request(reqwest::Method::POST, path).body(body.to_string());
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.json().unwrap_or(Value::Null))
}

#[test]
fn the_document_is_openapi_3_1_for_this_daemon_with_every_answer_declared() {
    let (_smartum, daemon) = shop();
    let document: Value = daemon.get("/openapi.json").json().unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["servers"][0]["url"], daemon.base_url.as_str(), "servers name the configured listen address");
    let mut ids = std::collections::HashSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_string()), "{id} twice");
            assert!(operation["tags"].as_array().is_some_and(|tags| !tags.is_empty()), "{id} has no tag");
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.keys().any(|status| status.starts_with('2')), "{id} declares no success");
            for status in ["400", "403", "429"] {
                assert!(responses.contains_key(status), "{id} does not declare {status}");
            }
            if path.starts_with("/v1/") {
                assert!(responses["401"]["headers"]["WWW-Authenticate"].is_object(), "{id}: 401 without WWW-Authenticate");
            }
            assert!(responses["429"]["headers"]["Retry-After"].is_object(), "{id}: 429 without Retry-After");
        }
    }
    let create = &document["paths"]["/v1/payments"]["post"];
    assert!(create["responses"]["201"]["links"]["ScanPayment"].is_object(), "create links to scan");
    let schema = &document["components"]["schemas"]["CreatePayment"];
    assert_eq!(schema["properties"]["method"]["enum"], json!(["smartum"]), "the configured methods");
    assert_eq!(schema["properties"]["amount"]["maximum"], 1_000_000_000);
    assert_eq!(schema["properties"]["reference"]["maxLength"], 128);
}

#[test]
fn bodies_must_be_json_objects_within_their_limits() {
    let (_smartum, daemon) = shop();
    let (status, answer) = post_raw(&daemon, "/v1/payments", Some("application/json"), r#"["smartum", 100, "EUR"]"#);
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_request")), "an array is not a payment: {answer}");
    let (status, answer) = post_raw(&daemon, "/v1/payments", None, r#"{"method": "smartum", "amount": 100, "currency": "EUR"}"#);
    assert_eq!((status, answer["error"]["code"].as_str()), (415, Some("unsupported_media_type")), "{answer}");
    let huge = json!({"method": "smartum", "amount": 100, "currency": "EUR", "reference": "R".repeat(100_000)});
    let (status, answer) = post_raw(&daemon, "/v1/payments", Some("application/json"), &huge.to_string());
    assert_eq!((status, answer["error"]["field"].as_str()), (400, Some("reference")), "{answer}");
    let (status, answer) =
        daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 9_223_372_036_854_775_807i64, "currency": "EUR"}));
    assert_eq!((status, answer["error"]["field"].as_str()), (400, Some("amount")), "{answer}");
    let (status, answer) = daemon.post("/v1/payments", &json!({"method": "smartum", "amount": "100", "currency": "EUR"}));
    assert_eq!(status, 400, "{answer}");
    assert!(!answer["error"]["message"].as_str().unwrap().contains("i64"), "no Rust type names: {answer}");
    let (status, created) = daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 1500.0, "currency": "EUR"}));
    assert_eq!((status, created["amount"].as_u64()), (201, Some(1500)), "1500.0 is the integer 1500: {created}");
    let (status, answer) =
        post_raw(&daemon, &format!("/v1/payments/{}/manual", created["id"].as_str().unwrap()), Some("application/json"), "[100]");
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        daemon.get_json(&format!("/v1/payments/{}", created["id"].as_str().unwrap())).1["status"],
        "awaiting_scan",
        "nothing changed"
    );
    let (status, answer) = daemon.post_as(posbridge_testkit::MANAGER_TOKEN, "/v1/refunds", &json!({}));
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("incomplete_request")), "{answer}");
    let (status, answer) = daemon.post("/v1/refunds", &json!({"payment": created["id"], "include_splits": true}));
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("invalid_state")), "the plain refund's rule: {answer}");
}

#[test]
fn request_framing_and_router_errors_use_the_error_shape() {
    let (_smartum, daemon) = shop();
    let (status, answer) = raw(&daemon, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 400, "two Host headers: {answer}");
    let (status, answer) = raw(&daemon, "GET http://evil.example/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 403, "an absolute-form target names its host: {answer}");
    assert!(answer.contains("forbidden_host"), "{answer}");
    let response = daemon.request(reqwest::Method::DELETE, "/v1/payments").send().unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.json::<Value>().unwrap()["error"]["code"], "method_not_allowed");
}

#[test]
fn decode_takes_only_images_and_a_retried_decode_scan_replays_its_answer() {
    let (smartum, daemon) = shop();
    let (_, payment) = daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 3000, "currency": "EUR"}));
    let receipt = smartum.create_receipt(3000);
    let png = posbridge_testkit::images::encode(&posbridge_testkit::images::qr_frame(&receipt.jws, 4), image::ImageFormat::Png);
    let decode = |content_type: &str| {
        let response = daemon
            .request(reqwest::Method::POST, &format!("/v1/decode?payment={}", payment["id"].as_str().unwrap()))
            .header("Content-Type", content_type)
            .header("Idempotency-Key", "decode-once")
            .body(png.clone())
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let (status, answer) = decode("application/json");
    assert_eq!(status, 415, "a PNG sent as JSON: {answer}");
    let (status, first) = decode("image/png");
    assert_eq!(status, 200, "{first}");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["payment"]["status"], "succeeded", "{first}");
    let (status, again) = decode("image/png");
    assert_eq!(status, 200, "a retry replays, it does not scan again: {again}");
    assert_eq!(serde_json::from_str::<Value>(&again).unwrap(), first);
    assert_eq!(smartum.checks(), 1);
    let _ = TILL_TOKEN;
}
