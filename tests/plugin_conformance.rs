//! `posbridge plugin test` through the real binary and the real loader, against the
//! sandbox Smartum (with an ES512 key made in the test) and the sandbox Stripe: both
//! shipped plugins pass every rule, and each deliberately flawed plugin in
//! tests/plugins/ fails, with a reason that names the rule it breaks.

use std::net::SocketAddr;

use posbridge::sandbox::{SandboxOptions, SmartumSandbox, StripeOptions, StripeSandbox};
use posbridge_testkit::{all_output, Install};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");
const FLAWED: &str = "posbridge-test-plugin-flawed";

/// An installation with the Smartum plugin, or a kind of the flawed one, configured as
/// method `under_test` against a fresh sandbox Smartum; answers the sandbox too (it must
/// outlive the check).
fn smartum_install(plugin_crate: &str, plugin: &str) -> (Install, SmartumSandbox) {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let smartum = SmartumSandbox::start(listen, SandboxOptions::default()).expect("sandbox");
    let install = Install::new(BIN);
    install.add_plugin(plugin_crate);
    let section = smartum
        .config_section(install.path(), "")
        .unwrap()
        .replace("[methods.smartum]\nplugin = \"smartum\"", &format!("[methods.under_test]\n{plugin}"))
        .replace("[[methods.smartum.jwt_keys]]", "[[methods.under_test.jwt_keys]]");
    install.configure(&section);
    (install, smartum)
}

/// Runs the check on `under_test`; answers the exit status's success and the JSON report.
fn plugin_test(install: &Install, method: &str, codes: Option<&str>) -> (bool, Value, String) {
    let out = install.path().join("report.json");
    let mut args = vec!["plugin", "test", "--method", method, "--out", out.to_str().unwrap()];
    if let Some(codes) = codes {
        args.extend(["--codes", codes]);
    }
    let output = install.run(&args);
    let text = all_output(&output);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap_or_else(|_| panic!("no report: {text}"))).unwrap();
    (output.status.success(), report, text)
}

fn outcome<'a>(report: &'a Value, rule: &str) -> (&'a str, &'a str) {
    let entry =
        report["rules"].as_array().unwrap().iter().find(|entry| entry["rule"] == rule).unwrap_or_else(|| panic!("{rule}: {report}"));
    (entry["outcome"].as_str().unwrap(), entry["detail"].as_str().unwrap())
}

fn codes_url(smartum: &SmartumSandbox) -> String {
    format!("{}/_sandbox/transactions", smartum.url())
}

#[test]
fn the_shipped_smartum_plugin_passes_every_rule_against_the_sandbox() {
    let (install, smartum) = smartum_install("posbridge-plugin-smartum", "plugin = \"smartum\"");
    let (passed, report, text) = plugin_test(&install, "under_test", Some(&codes_url(&smartum)));
    assert!(passed, "{text}");
    for rule in [
        "capabilities",
        "redeem_repeat",
        "lookup_taken",
        "lost_answer",
        "lookup_fencing",
        "lookup_concludes",
        "refund_repeat",
        "refund_resend",
        "deadline",
        "secrets",
    ] {
        assert_eq!(outcome(&report, rule).0, "passed", "{rule}: {text}");
    }
    assert!(text.contains("0 failed, 10 passed, 0 skipped"), "{text}");
    assert!(!text.contains(&smartum_secret(&install)), "the report never shows the client secret");
}

fn smartum_secret(install: &Install) -> String {
    std::fs::read_to_string(install.path().join("smartum.secret")).unwrap().trim().to_string()
}

#[test]
fn a_lookup_that_answers_not_taken_on_not_found_fails_the_lookup_rules() {
    let (install, smartum) = smartum_install(FLAWED, "plugin = \"flawed\"\nkind = \"naive_lookup\"");
    let (passed, report, text) = plugin_test(&install, "under_test", Some(&codes_url(&smartum)));
    assert!(!passed, "{text}");
    let (taken, why) = outcome(&report, "lookup_taken");
    assert_eq!(taken, "failed", "{text}");
    assert!(why.contains("answered NOT_TAKEN for an attempt the provider took"), "{why}");
    let (fencing, why) = outcome(&report, "lookup_fencing");
    assert_eq!(fencing, "failed", "{text}");
    assert!(why.contains("before the attempt's deadline"), "{why}");
    assert!(text.contains("FAIL  lookup_taken"), "one line per failed rule: {text}");
    assert_eq!(outcome(&report, "lost_answer").0, "passed", "the redeem itself is sound: {text}");
}

#[test]
fn a_redeem_that_reports_a_lost_answer_as_unavailable_fails_the_lost_answer_rule() {
    let (install, smartum) = smartum_install(FLAWED, "plugin = \"flawed\"\nkind = \"unavailable_on_lost_answer\"");
    let (passed, report, text) = plugin_test(&install, "under_test", Some(&codes_url(&smartum)));
    assert!(!passed, "{text}");
    let (lost, why) = outcome(&report, "lost_answer");
    assert_eq!(lost, "failed", "{text}");
    assert!(why.contains("redeem answered provider_unavailable after the answer to POST /v1/transactions/"), "{why}");
    assert!(why.contains("DropAnswerThenOutage"), "the line stayed down: {why}");
    assert!(why.contains("must be `outcome_unknown`"), "{why}");
    assert_eq!(outcome(&report, "lookup_taken").0, "passed", "{text}");
}

#[test]
fn a_manifest_promising_refunds_it_does_not_implement_fails_the_capabilities_rule() {
    let (install, smartum) = smartum_install(FLAWED, "plugin = \"flawed\"\nkind = \"refund_unimplemented\"");
    let check = install.run(&["check"]);
    assert!(check.status.success(), "it loads and configures without a word: {}", all_output(&check));
    let (passed, report, text) = plugin_test(&install, "under_test", Some(&codes_url(&smartum)));
    assert!(!passed, "{text}");
    let (capabilities, why) = outcome(&report, "capabilities");
    assert_eq!(capabilities, "failed", "{text}");
    assert!(why.contains("promises refund, refund_without_cache but the method answers `unsupported`"), "{why}");
}

#[test]
fn the_shipped_stripe_plugin_passes_against_the_sandbox_stripe_and_scan_rules_are_skipped_with_a_reason() {
    let stripe = StripeSandbox::start("127.0.0.1:0".parse().unwrap(), StripeOptions::default()).expect("stripe sandbox");
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-stripe-split");
    install.configure(&stripe.config_section(install.path(), "reader = \"tmr_SandboxReader1\"").unwrap());
    let (passed, report, text) = plugin_test(&install, "card", None);
    assert!(passed, "{text}");
    assert_eq!(outcome(&report, "capabilities").0, "passed", "{text}");
    assert_eq!(outcome(&report, "deadline").0, "passed", "{text}");
    assert_eq!(outcome(&report, "secrets").0, "passed", "{text}");
    assert_eq!(outcome(&report, "redeem_repeat"), ("skipped", "the method does not scan codes"), "{text}");
}

#[test]
fn without_a_code_source_the_scan_rules_are_skipped_saying_what_to_pass() {
    let (install, _smartum) = smartum_install("posbridge-plugin-smartum", "plugin = \"smartum\"");
    let (passed, report, text) = plugin_test(&install, "under_test", None);
    assert!(passed, "skipped rules do not fail the check: {text}");
    let (skipped, why) = outcome(&report, "redeem_repeat");
    assert_eq!(skipped, "skipped");
    assert!(why.contains("--codes URL"), "{why}");
}
