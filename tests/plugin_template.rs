//! The integrator's path, end to end: `posbridge plugin new` makes a plugin crate from the
//! template in a fresh directory outside the workspace; it builds, passes its own tests
//! (flows and the conformance rules against its fake), and passes `posbridge plugin test`
//! through the real loader against its fake provider served over HTTP. No file is edited.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output};

use posbridge_testkit::{all_output, free_port};

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
}
