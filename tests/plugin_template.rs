//! The integrator's path, end to end: `posbridge plugin new` makes a plugin crate from the
//! template in a fresh directory outside the workspace; it builds, passes its own tests
//! (flows and the conformance rules against its fake), and passes `posbridge plugin test`
//! through the real loader against its fake provider served over HTTP. No file is edited.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use posbridge_testkit::{all_output, free_port, private, set_mode, Install};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

fn cargo(dir: &Path, target: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(cargo).args(args).current_dir(dir).env("CARGO_TARGET_DIR", target).env_remove("RUSTFLAGS").output().expect("cargo runs")
}

/// Kills the fake provider when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_plugin_made_from_the_template_outside_the_workspace_builds_tests_and_passes_plugin_test() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let dir = outside.path().join("acme-voucher");
    let made = Command::new(BIN).args(["plugin", "new", "acme-voucher", "--dir"]).arg(&dir).arg("--sdk").arg(&repo).output().unwrap();
    assert!(made.status.success(), "{}", all_output(&made));
    // The workspace's lock file pins the versions the SDK is tested with (cargo adds the
    // template's own few dependencies).
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let target = Path::new(BIN).parent().and_then(Path::parent).unwrap().join("outside");

    let tested = cargo(&dir, &target, &["test"]);
    let text = all_output(&tested);
    assert!(tested.status.success(), "the new plugin's own tests pass: {text}");
    assert!(text.contains("the_plugin_passes_every_conformance_rule ... ok"), "{text}");
    for build in [&["build"][..], &["build", "--features", "fake", "--bins"]] {
        let built = cargo(&dir, &target, build);
        assert!(built.status.success(), "{}", all_output(&built));
    }

    let port = free_port();
    let fake = Command::new(target.join("debug/fake-provider"))
        .args([format!("127.0.0.1:{port}"), "fake-api-key-0123456789".to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut fake = Running(fake);
    let mut said = String::new();
    BufReader::new(fake.0.stdout.take().unwrap()).read_line(&mut said).unwrap();
    assert!(said.contains("listening"), "the fake provider started: {said:?}");
    let config = std::fs::read_to_string(dir.join("plugin-test.toml"))
        .unwrap()
        .replace("dir = \"target/debug\"", &format!("dir = \"{}\"", target.join("debug").display()))
        .replace("127.0.0.1:9911", &format!("127.0.0.1:{port}"));
    std::fs::write(dir.join("plugin-test.toml"), config).unwrap();
    let checked = Command::new(BIN)
        .current_dir(&dir)
        .args(["plugin", "test", "--config", "plugin-test.toml", "--method", "acme_voucher", "--codes"])
        .arg(format!("http://127.0.0.1:{port}/_fake/codes"))
        .output()
        .unwrap();
    let report = all_output(&checked);
    assert!(checked.status.success(), "{report}");
    assert!(report.contains("plugin acme-voucher 0.1.0"), "{report}");
    assert!(report.contains("0 failed, 10 passed, 0 skipped"), "{report}");

    sandbox_runs_the_fake_beside_the_daemon(&target);
}

/// `posbridge sandbox` starts the plugin's fake from `[[sandbox.providers]]`, waits for
/// it, and the daemon takes a voucher payment through the plugin: the integrator's quick
/// start is the project's.
fn sandbox_runs_the_fake_beside_the_daemon(target: &Path) {
    let install = Install::new(BIN);
    let plugin = install.plugins_dir().join("libacme_voucher.so");
    std::fs::copy(target.join("debug/libacme_voucher.so"), &plugin).unwrap();
    set_mode(&plugin, 0o644);
    install.write("acme.key", "fake-api-key-0123456789\n");
    private(&install.path().join("acme.key"));
    let port = free_port();
    let fake = target.join("debug/fake-provider");
    install.configure(&format!(
        "[methods.acme]\nplugin = \"acme-voucher\"\napi_url = \"http://127.0.0.1:{port}\"\napi_key_file = \"acme.key\"\n\n\
         [[sandbox.providers]]\nname = \"acme-voucher\"\nurl = \"http://127.0.0.1:{port}\"\n\
         command = [\"{}\", \"127.0.0.1:{port}\", \"fake-api-key-0123456789\"]\n",
        fake.display()
    ));
    let daemon = install.start_command(&["sandbox"]);
    assert!(daemon.wait_for_output("Fake acme-voucher: http://127.0.0.1", Duration::from_secs(30)).is_some(), "{:?}", daemon.output());
    let minted: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/_fake/codes"))
        .json(&json!({"amount": 1200}))
        .send()
        .and_then(|response| response.json())
        .expect("the sandbox started the fake");
    let (status, payment) = daemon.post("/v1/payments", &json!({"method": "acme", "amount": 2000, "currency": "EUR"}));
    assert_eq!(status, 201, "{payment}");
    let scan = format!("/v1/payments/{}/scan", payment["id"].as_str().unwrap());
    let (status, paid) = daemon.post(&scan, &json!({"code": minted["code"]}));
    assert_eq!((status, paid["status"].as_str(), paid["captured_amount"].as_u64()), (200, Some("succeeded"), Some(1200)), "{paid}");
    assert!(daemon.terminate().success(), "the sandbox ends, and its fake with it");
    assert!(reqwest::blocking::get(format!("http://127.0.0.1:{port}/health")).is_err(), "the fake was stopped with the sandbox");
}
