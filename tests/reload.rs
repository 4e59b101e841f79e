//! Config hot reload through the real binary: valid changes are applied and announced,
//! invalid ones are logged with file and line while the running config stays, removed
//! methods still refund, plugins added to the directory load, changed ones wait for a
//! restart.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use posbridge::sandbox::{SandboxOptions, SmartumSandbox};
use posbridge_testkit::{library_file_name, Daemon, Install, MANAGER_TOKEN, TECHNICIAN_TOKEN, TILL_TOKEN};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");
const WAIT: Duration = Duration::from_secs(30);
const TILL_2_TOKEN: &str = "till-2-token-0123456789abcdef";

struct Shop {
    install: Install,
    smartum: SmartumSandbox,
    smartum_method: String,
    daemon: Daemon,
}

fn shop() -> Shop {
    let options = SandboxOptions::default();
    let smartum = SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), options.clone()).unwrap();
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    let smartum_method = smartum.config_section(install.path(), "").unwrap();
    install.configure(&smartum_method);
    let daemon = install.start();
    Shop { install, smartum, smartum_method, daemon }
}

/// Reads `/v1/events` until a `config.reloaded` event after `after`; answers its data.
fn next_reload(daemon: &Daemon, after: u64) -> (u64, Value) {
    // Config events are for managers and technicians, not tills.
    let response = reqwest::blocking::Client::new()
        .get(format!("{}/v1/events?after={after}", daemon.base_url))
        .bearer_auth(TECHNICIAN_TOKEN)
        .send()
        .unwrap();
    let mut lines = BufReader::new(response).lines();
    let (mut id, mut kind) = (0, String::new());
    let started = std::time::Instant::now();
    loop {
        // Keep-alive comments arrive every 15 s, so this check runs even while nothing happens.
        assert!(started.elapsed() < WAIT * 2, "no config.reloaded event:\n{}", daemon.log().join("\n"));
        let line = lines.next().expect("stream").unwrap();
        if let Some(value) = line.strip_prefix("id: ") {
            id = value.parse().unwrap();
        } else if let Some(value) = line.strip_prefix("event: ") {
            kind = value.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            if kind == "config.reloaded" {
                return (id, serde_json::from_str(data).unwrap());
            }
        }
    }
}

fn status_with(daemon: &Daemon, token: &str, path: &str) -> u16 {
    reqwest::blocking::Client::new().get(format!("{}{path}", daemon.base_url)).bearer_auth(token).send().unwrap().status().as_u16()
}

#[test]
fn a_valid_change_is_applied_and_announced() {
    let shop = shop();
    assert_eq!(status_with(&shop.daemon, TILL_2_TOKEN, "/v1/methods"), 401);
    shop.install.write("conf.d/20-till-2.toml", &format!("[[clients]]\nname = \"till-2\"\ntoken = \"{TILL_2_TOKEN}\"\n"));
    let (_, reloaded) = next_reload(&shop.daemon, 0);
    assert_eq!(reloaded["methods"], json!(["smartum"]));
    assert_eq!(status_with(&shop.daemon, TILL_2_TOKEN, "/v1/methods"), 200, "the new client works");
    assert_eq!(status_with(&shop.daemon, TILL_TOKEN, "/v1/methods"), 200, "the old one too");
}

#[test]
fn an_invalid_change_is_logged_with_its_line_and_the_running_config_stays() {
    let shop = shop();
    let broken = format!(
        "{}\n{}\n[server\nlisten = \"127.0.0.1:0\"\n",
        posbridge_testkit::base_config().replace("[server]\nlisten = \"127.0.0.1:0\"\n", ""),
        shop.smartum_method
    );
    let line = broken.lines().position(|line| line == "[server").unwrap() + 1;
    shop.install.write("posbridge.toml", &broken);
    let expected = format!("{}:{line}", shop.install.config_path().display());
    let logged = shop.daemon.wait_for_log(&["config reload refused", &expected], WAIT);
    assert!(logged.is_some(), "no refusal naming {expected}:\n{}", shop.daemon.log().join("\n"));
    // Still serving with the config it had.
    assert_eq!(status_with(&shop.daemon, TILL_TOKEN, "/v1/methods"), 200);
    let (status, payment) = shop.daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 1000, "currency": "EUR"}));
    assert_eq!(status, 201, "{payment}");
    let ready: Value = shop.daemon.get_json_as(TECHNICIAN_TOKEN, "/readyz").1;
    assert_eq!(ready["status"], "ready");
    assert!(ready["last_reload_error"].as_str().unwrap().contains(&expected), "{ready}");

    // Fixed again: applied, and the error is gone.
    shop.install.configure(&shop.smartum_method);
    next_reload(&shop.daemon, 0);
    let ready: Value = shop.daemon.get_json_as(TECHNICIAN_TOKEN, "/readyz").1;
    assert!(ready.get("last_reload_error").is_none(), "{ready}");
}

#[test]
fn a_removed_method_takes_no_new_payments_but_still_refunds() {
    let shop = shop();
    let (_, payment) = shop.daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 1000, "currency": "EUR"}));
    let receipt = shop.smartum.create_receipt(1000);
    let paid = shop.daemon.post(&format!("/v1/payments/{}/scan", payment["id"].as_str().unwrap()), &json!({"code": receipt.jws})).1;
    assert_eq!(paid["status"], "succeeded");

    shop.install.configure("");
    let (_, reloaded) = next_reload(&shop.daemon, 0);
    assert_eq!(reloaded["methods"], json!([]));
    let (status, refused) = shop.daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 1000, "currency": "EUR"}));
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("unknown_method")));
    let (status, refund) = shop.daemon.post("/v1/refunds", &json!({"payment": paid["id"]}));
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "succeeded");
}

#[test]
fn plugins_added_to_the_directory_load_on_reload_and_changed_ones_wait_for_a_restart() {
    let shop = shop();
    shop.install.add_plugin("posbridge-plugin-stripe-split");
    shop.install
        .configure(&format!("{}\n[methods.card]\nplugin = \"stripe-split\"\nsecret_key = \"sk_test_reload\"\n", shop.smartum_method));
    let (id, reloaded) = next_reload(&shop.daemon, 0);
    assert_eq!(reloaded["methods"], json!(["card", "smartum"]));
    let methods = shop.daemon.get_json("/v1/methods").1;
    assert!(methods["data"].as_array().unwrap().iter().any(|method| method["id"] == "card"), "{methods}");

    // The Smartum library replaced on disk: refused until a restart, the loaded one runs on.
    let file = shop.install.plugins_dir().join(library_file_name("posbridge-plugin-smartum"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"changed");
    std::fs::write(&file, bytes).unwrap();
    shop.install.write("conf.d/30-touch.toml", "# touched\n");
    let refusal = shop.daemon.wait_for_log(&["plugin refused", "restart posbridge"], WAIT);
    assert!(refusal.is_some(), "{}", shop.daemon.log().join("\n"));
    let logged = shop.daemon.wait_for_log(&["config reload refused", "no loaded plugin has id \\\"smartum\\\""], WAIT);
    assert!(logged.is_some(), "the method needing it refuses the reload: {}", shop.daemon.log().join("\n"));
    assert!(shop.daemon.get_json("/v1/methods").1["data"].as_array().unwrap().iter().any(|method| method["id"] == "smartum"));
    let _ = id;
}

#[test]
fn a_register_added_by_a_reload_takes_payments_at_once() {
    let shop = shop();
    let for_till_2 = json!({"method": "smartum", "amount": 1000, "currency": "EUR", "register": "till-2"});
    let (status, refused) = shop.daemon.post_as(MANAGER_TOKEN, "/v1/payments", &for_till_2);
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("unknown_register")), "{refused}");
    shop.install.write(
        "conf.d/30-till-2.toml",
        &format!("[[registers]]\nid = \"till-2\"\n\n[[clients]]\nname = \"till-2\"\ntoken = \"{TILL_2_TOKEN}\"\n"),
    );
    next_reload(&shop.daemon, 0);
    let (status, created) =
        shop.daemon.post_as(TILL_2_TOKEN, "/v1/payments", &json!({"method": "smartum", "amount": 1000, "currency": "EUR"}));
    assert_eq!(status, 201, "the reloaded register is known to the engine: {created}");
    assert_eq!(created["register"], "till-2");
}
