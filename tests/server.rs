//! The daemon as a process: it starts on the configured loopback port, answers health
//! and readiness, and stops cleanly on SIGTERM.

use posbridge_testkit::Install;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

#[test]
fn serves_health_and_readiness_and_stops_on_sigterm() {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-stripe-split");
    install.configure("[methods.card]\nplugin = \"stripe-split\"\nsecret_key = \"sk_test_server\"\n");
    let daemon = install.start();

    let health = daemon.get("/healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().unwrap()["status"], "ok");

    let ready = daemon.get("/readyz");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().unwrap();
    assert_eq!(body, serde_json::json!({"status": "ready"}), "without a token: ready or not, nothing more");
    let (status, body) = daemon.get_json_as(posbridge_testkit::TECHNICIAN_TOKEN, "/readyz");
    assert_eq!(status, 200);
    assert_eq!(body["checks"], serde_json::json!({"store": true, "plugins": true, "config": true}));
    assert_eq!(daemon.get_json("/readyz").1, serde_json::json!({"status": "ready"}), "a till gets no details either");

    assert!(install.path().join("data").is_dir(), "the store directory is created");
    let status = daemon.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[test]
fn logs_are_json_lines_when_asked() {
    let install = Install::new(BIN);
    install.configure("");
    let daemon = install.start();
    let log = daemon.log();
    assert!(!log.is_empty());
    for line in &log {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(event["timestamp"].is_string() && event["level"].is_string(), "{line}");
    }
}

#[test]
fn second_daemon_on_the_same_store_is_refused() {
    let install = Install::new(BIN);
    install.configure("");
    let _first = install.start();
    let output = std::process::Command::new(BIN).arg("--config").arg(install.config_path()).output().expect("run second daemon");
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("cannot open the store"), "{text}");
}
