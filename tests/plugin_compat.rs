//! Old plugins keep loading: a plugin built against the pinned copy of plugin-api 1.0.0
//! (tests/compat/, its own workspace and lock file) is built with cargo, loaded by the
//! current daemon, and takes, finds and refunds a payment. A layout change in plugin-api
//! that v1 plugins would see makes the loader refuse it, and this test fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use posbridge_testkit::{all_output, library_file_name, set_mode, Install, MANAGER_TOKEN};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

/// Builds tests/compat/plugin-1.0 into its own target directory beside this build's.
fn build_old_plugin() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = Path::new(BIN).parent().and_then(Path::parent).expect("target dir").join("outside");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--locked", "--manifest-path"])
        .arg(repo.join("tests/compat/plugin-1.0/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "the 1.0 plugin builds: {}", all_output(&output));
    target.join("debug").join(library_file_name("posbridge-compat-plugin"))
}

#[test]
fn a_plugin_built_against_plugin_api_1_0_loads_pays_and_refunds() {
    let library = build_old_plugin();
    let install = Install::new(BIN);
    let installed = install.plugins_dir().join(library.file_name().unwrap());
    std::fs::copy(&library, &installed).expect("install the old plugin");
    set_mode(&installed, 0o644);
    install.configure("[methods.compat]\nplugin = \"compat\"\n");

    let listing = install.run(&["plugins", "--json"]);
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).expect("JSON listing");
    assert_eq!(listing["refused"], json!([]), "the 1.0 plugin is not refused: {listing}");
    assert_eq!(listing["plugins"][0]["id"], "compat", "{listing}");

    let daemon = install.start();
    let (status, payment) = daemon.post("/v1/payments", &json!({"method": "compat", "amount": 2000, "currency": "EUR"}));
    assert_eq!(status, 201, "{payment}");
    let id = payment["id"].as_str().unwrap();
    let (status, paid) = daemon.post(&format!("/v1/payments/{id}/scan"), &json!({"code": "COMPAT-1200"}));
    assert_eq!((status, paid["status"].as_str()), (200, Some("succeeded")), "{paid}");
    assert_eq!(paid["captured_amount"], 1200);
    assert_eq!(paid["transaction_id"], "compat-COMPAT-1200", "the settlement crossed the boundary whole: {paid}");

    let (status, refund) = daemon.post_as(MANAGER_TOKEN, "/v1/refunds", &json!({"payment": id, "amount": 500}));
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "succeeded", "{refund}");
    assert_eq!(refund["amount"], 500, "{refund}");

    let other = daemon.post("/v1/payments", &json!({"method": "compat", "amount": 2000, "currency": "EUR"})).1;
    let other_id = other["id"].as_str().unwrap();
    let (_, used) = daemon.post(&format!("/v1/payments/{other_id}/scan"), &json!({"code": "COMPAT-1200"}));
    assert_eq!(used["failure"]["code"], "receipt_already_used", "the receipt key reserved the code: {used}");
}
