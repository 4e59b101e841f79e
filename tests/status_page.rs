//! The technicians' status page in a real headless browser (Debian's chromium): it
//! signs in with a client token, then shows methods, plugins, scanners with their last
//! scan, recent payments and refunds, and the last config error.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use posbridge::sandbox::{scanner_reports, SandboxOptions, SmartumSandbox};
use posbridge_testkit::{Install, TILL_TOKEN};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

fn chromium() -> String {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok_and(|output| output.status.success()))
        .map(str::to_string)
        .expect("a headless browser is needed for this test: apt-get install chromium (.ci/run installs it)")
}

/// Loads `url` in headless chromium, lets its scripts run, and answers the DOM.
fn rendered_dom(url: &str, profile: &Path) -> String {
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom", url])
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_status_page_shows_the_shop_in_a_real_browser() {
    let options = SandboxOptions::default();
    let smartum = SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), options.clone()).unwrap();
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.write("plugins/not-a-plugin.so", "junk");
    assert!(Command::new("mkfifo").arg(install.path().join("front.fifo")).status().unwrap().success());
    let scanner = "[[scanners]]\nid = \"front-door\"\nsource = \"replay\"\npath = \"front.fifo\"\n";
    install.configure(&format!("{}\n{scanner}", smartum.config_section(install.path(), "").unwrap()));
    let text = std::fs::read_to_string(install.config_path()).unwrap().replacen(
        "id = \"till-1\"\n",
        "id = \"till-1\"\nscanners = [\"front-door\"]\n",
        1,
    );
    install.write("posbridge.toml", &text);
    let daemon = install.start();

    // A payment paid through the scanner, and a refund.
    let payment =
        daemon.post("/v1/payments", &json!({"method": "smartum", "amount": 2500, "currency": "EUR", "reference": "R-STATUS-1"})).1;
    let id = payment["id"].as_str().unwrap().to_string();
    let receipt = smartum.create_receipt(2500);
    {
        use std::io::Write;
        let mut fifo = std::fs::OpenOptions::new().write(true).open(install.path().join("front.fifo")).unwrap();
        writeln!(fifo, "{}", scanner_reports(&receipt.jws, "us").unwrap().join("\n")).unwrap();
    }
    let current = daemon.follow(&id, payment["version"].as_u64().unwrap(), &["awaiting_scan", "processing"]);
    assert_eq!(current["status"], "succeeded", "{current}");
    let refund = daemon.post("/v1/refunds", &json!({"payment": id, "amount": 500})).1;
    // A refused reload, so the page has a config error to show.
    install.write("conf.d/broken.toml", "[server]\nlisten = 5\n");
    daemon.wait_for_log(&["config reload refused"], Duration::from_secs(30)).expect("reload refused");

    let profile = tempfile::tempdir().unwrap();
    let page = format!("{}/#token={TILL_TOKEN}", daemon.base_url);
    let dom = rendered_dom(&page, profile.path());
    for expected in [
        "smartum",
        "front-door",
        "till-1",
        id.as_str(),
        "R-STATUS-1",
        "25.00 EUR",
        refund["id"].as_str().unwrap(),
        "not-a-plugin.so",
        "Last config reload refused",
        "broken.toml:2",
    ] {
        assert!(dom.contains(expected), "{expected:?} is not on the page:\n{dom}");
    }
    assert!(!dom.contains(TILL_TOKEN), "the token is not kept in the page");
    // The scanner row shows a last-scan time.
    let scanner_row = dom.split("<tr>").find(|row| row.contains("front-door")).unwrap();
    assert!(scanner_row.contains("T") && scanner_row.contains("Z"), "no last scan time: {scanner_row}");

    // Without a token the page asks for one and shows no data.
    let anonymous = rendered_dom(&daemon.base_url, tempfile::tempdir().unwrap().path());
    assert!(anonymous.contains("Sign in with a client token"), "{anonymous}");
    assert!(!anonymous.contains(id.as_str()));
}
