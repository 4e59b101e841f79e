//! Security defaults, each through the real binary: hashed tokens, per-client rate
//! limits, warnings for exposed secrets and non-loopback addresses, and no secret value
//! anywhere the daemon writes (logs, answers, metrics, the status page, the store).

use std::net::SocketAddr;

use posbridge::sandbox::{SandboxOptions, SmartumSandbox};
use posbridge_testkit::{all_output, Install, TILL_TOKEN};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn hashed_tokens_open_the_api_and_rate_limits_answer_429_per_client() {
    let install = Install::new(BIN);
    let hashed = "till-2-token-known-only-to-the-register";
    install.configure(&format!("[[clients]]\nname = \"till-2\"\ntoken_sha256 = \"{}\"\n", hex::encode(Sha256::digest(hashed.as_bytes()))));
    install.write("conf.d/limits.toml", "[server]\nrate_limit = 1\nrate_burst = 3\n");
    let daemon = install.start();
    let get =
        |token: &str| reqwest::blocking::Client::new().get(format!("{}/v1/methods", daemon.base_url)).bearer_auth(token).send().unwrap();
    assert_eq!(get(hashed).status(), 200, "a token stored only as its hash works");
    assert!(!std::fs::read_to_string(install.config_path()).unwrap().contains(hashed));

    let statuses: Vec<u16> = (0..3).map(|_| get(TILL_TOKEN).status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200], "the burst");
    let limited = get(TILL_TOKEN);
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.json::<Value>().unwrap()["error"]["code"], "rate_limited");
    assert_eq!(get(hashed).status(), 200, "another client has its own allowance");
}

#[cfg(unix)]
#[test]
fn check_warns_about_readable_secret_files_and_non_loopback_addresses() {
    use std::os::unix::fs::PermissionsExt;
    let install = Install::new(BIN);
    let secret = install.write("stripe.secret", "sk_test_warned_about_this\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(install.path().join("till-1.token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    install.add_plugin("posbridge-plugin-stripe-split");
    let config = posbridge_testkit::base_config().replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8787\"");
    install.write("posbridge.toml", &format!("{config}\n[methods.card]\nplugin = \"stripe-split\"\nsecret_key_file = \"stripe.secret\"\n"));
    let output = install.run(&["check"]);
    let text = all_output(&output);
    assert!(output.status.success(), "warnings do not fail the check: {text}");
    assert!(text.contains("stripe.secret (`secret_key_file`) is readable by other users (mode 644); chmod 600 it"), "{text}");
    assert!(text.contains("server.listen = 0.0.0.0:8787 is reachable from other machines"), "{text}");
    assert!(!text.contains("till-1.token"), "a private file is not warned about: {text}");
    assert!(!text.contains("sk_test_warned_about_this"));
}

#[test]
fn no_secret_value_appears_anywhere_the_daemon_writes() {
    let options = SandboxOptions { client_secret: "smartum-secret-5f0c2a9e".into(), ..SandboxOptions::default() };
    let smartum = SmartumSandbox::start(any_port(), options.clone()).unwrap();
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.add_plugin("posbridge-plugin-stripe-split");
    let stripe_key = "sk_test_stripe_secret_91d3b7";
    install.write("stripe.secret", &format!("{stripe_key}\n"));
    // The card method points at nothing: every call to it fails, with messages.
    let card = "[methods.card]\nplugin = \"stripe-split\"\napi_url = \"http://127.0.0.1:9\"\nsecret_key_file = \"stripe.secret\"\ntimeout = \"2s\"\n";
    install.configure(&format!("{}\n{card}", smartum.config_section(install.path(), "").unwrap()));
    let daemon = install.start_command(&["--log-level", "debug"]);
    let mut written = Vec::new();
    let mut post = |path: &str, body: Value| {
        let response = daemon.request(reqwest::Method::POST, path).json(&body).send().unwrap();
        let text = response.text().unwrap();
        written.push(text.clone());
        serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
    };
    let payment = post("/v1/payments", json!({"method": "smartum", "amount": 1000, "currency": "EUR"}));
    let receipt = smartum.create_receipt(1000);
    post(&format!("/v1/payments/{}/scan", payment["id"].as_str().unwrap()), json!({"code": receipt.jws}));
    post("/v1/refunds", json!({"payment": payment["id"], "amount": 100}));
    post("/v1/payments", json!({"method": "card", "amount": 1000, "currency": "EUR"}));
    post("/v1/refunds", json!({"method": "card", "transaction_id": "pi_123", "amount": 100}));
    // A reload that fails, and one that works.
    install.write("posbridge.toml", &std::fs::read_to_string(install.config_path()).unwrap().replace("client_id =", "client_idd ="));
    daemon.wait_for_log(&["config reload refused"], std::time::Duration::from_secs(30)).expect("refused reload logged");
    for path in ["/metrics", "/readyz", "/openapi.json", "/v1/methods", "/v1/payments", "/v1/refunds", "/v1/scanners", "/v1/status", "/"] {
        written.push(daemon.request(reqwest::Method::GET, path).send().unwrap().text().unwrap());
    }
    written.extend(daemon.log());
    written.extend(daemon.output());
    for entry in walk(&install.path().join("data")) {
        written.push(String::from_utf8_lossy(&std::fs::read(entry).unwrap()).into_owned());
    }
    let everything = written.join("\n");
    assert!(everything.contains("payment updated"), "the log was captured");
    for secret in ["smartum-secret-5f0c2a9e", stripe_key, TILL_TOKEN] {
        assert!(!everything.contains(secret), "{secret:?} was written somewhere");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
