//! What a technician reads when something goes wrong: request ids on every log line of
//! a request, payments logged with posbridge's id, the POS reference and the provider's
//! transaction id together, and the metrics that count outcomes.

use posbridge::sandbox::{SandboxOptions, SmartumSandbox};
use posbridge_testkit::Install;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

#[test]
fn request_ids_ids_on_log_lines_and_outcome_metrics() {
    let smartum = SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), SandboxOptions::default()).unwrap();
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.configure(&smartum.config_section(install.path(), "").unwrap());
    let daemon = install.start();

    let created = daemon
        .request(reqwest::Method::POST, "/v1/payments")
        .json(&json!({"method": "smartum", "amount": 2000, "currency": "EUR", "reference": "R-LOG-7"}))
        .send()
        .unwrap();
    let generated = created.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(generated.starts_with("req_"), "{generated}");
    let payment: Value = created.json().unwrap();
    let id = payment["id"].as_str().unwrap().to_string();
    let receipt = smartum.create_receipt(2000);
    let scanned = daemon
        .request(reqwest::Method::POST, &format!("/v1/payments/{id}/scan"))
        .header("X-Request-Id", "pos-till1-000123")
        .json(&json!({"code": receipt.jws}))
        .send()
        .unwrap();
    assert_eq!(scanned.headers()["x-request-id"], "pos-till1-000123", "the caller's id comes back");

    // The answer can overtake the log line that records it: wait for the line.
    let logged = daemon.wait_for_log(&["payment updated", "\"status\":\"succeeded\""], std::time::Duration::from_secs(10));
    assert!(logged.is_some(), "the succeeded change is logged: {:?}", daemon.log());
    let lines: Vec<Value> = daemon.log().iter().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let succeeded = lines
        .iter()
        .find(|line| line["message"] == "payment updated" && line["status"] == "succeeded")
        .unwrap_or_else(|| panic!("no succeeded line: {lines:?}"));
    assert_eq!(succeeded["payment"], id.as_str());
    assert_eq!(succeeded["reference"], "R-LOG-7");
    assert_eq!(succeeded["transaction_id"], receipt.transaction_id.as_str());
    assert_eq!(succeeded["span"]["request_id"], "pos-till1-000123", "{succeeded}");
    let of_the_scan: Vec<&Value> = lines.iter().filter(|line| line["span"]["request_id"] == "pos-till1-000123").collect();
    assert!(of_the_scan.len() >= 2, "processing and succeeded are both logged under the scan's id: {of_the_scan:?}");
    assert!(lines.iter().any(|line| line["span"]["request_id"] == generated.as_str()), "the create's lines carry its generated id");

    let metrics = daemon.get("/metrics").text().unwrap();
    for expected in [
        "posbridge_payments_total{method=\"smartum\",status=\"succeeded\"} 1",
        "posbridge_plugin_call_duration_seconds_bucket{method=\"smartum\",operation=\"redeem\",le=\"+Inf\"} 1",
        "posbridge_plugin_call_duration_seconds_count{method=\"smartum\",operation=\"redeem\"} 1",
        "# TYPE posbridge_plugin_call_duration_seconds histogram",
        "# TYPE posbridge_store_commit_duration_seconds histogram",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
    // The payment's creation, write-ahead and settlement each waited for a commit.
    let commits = metrics
        .lines()
        .find_map(|line| line.strip_prefix("posbridge_store_commit_duration_seconds_count{backend=\"sled\"} "))
        .and_then(|count| count.parse::<u64>().ok());
    assert!(commits.is_some_and(|count| count >= 3), "store commits counted: {commits:?}\n{metrics}");
    // A refused reload is counted.
    install.write("conf.d/oops.toml", "[store]\nretention = \"soon\"\n");
    daemon.wait_for_log(&["config reload refused"], std::time::Duration::from_secs(30)).expect("refused");
    let metrics = daemon.get("/metrics").text().unwrap();
    assert!(metrics.contains("posbridge_config_reloads_total{outcome=\"refused\"} 1"), "{metrics}");
}
