//! The plugin driven as posbridge drives it, against the fake provider in-process, with
//! faults injected by the testkit's host.

use std::sync::Arc;

use posbridge_plugin_api::{LookupState, PaymentMethod, Plugin};
use posbridge_plugin_testkit::{build, FakeHost, Fault};
use {{crate_name}}::fake::FakeProvider;
use {{crate_name}}::{VoucherMethod, VoucherPlugin};

const SETTINGS: &str = r#"{"api_url": "http://127.0.0.1:9911", "api_key": "test-key-0123456789"}"#;

fn method() -> (VoucherMethod, FakeHost, Arc<FakeProvider>) {
    let fake = FakeProvider::new("test-key-0123456789");
    let host = FakeHost::new(fake.transport());
    let method = VoucherPlugin::create(build::setup("vouchers", "{{project-name}}", SETTINGS, &host)).unwrap_or_else(|problems| panic!("{problems:?}"));
    (method, host, fake)
}

#[test]
fn a_voucher_pays_once_and_a_repeat_of_the_same_attempt_answers_the_same_redemption() {
    let (method, host, fake) = method();
    let code = fake.issue(1500);
    let payment = build::payment(&host, 2000);
    let inspected = method.inspect_code(&payment, &code).unwrap();
    let first = method.redeem(&payment, &code, &inspected).unwrap();
    assert_eq!(first.captured_amount, 1500);
    let again = method.redeem(&payment, &code, &inspected).unwrap();
    assert_eq!(again.transaction_id, first.transaction_id, "same attempt, same redemption");
    assert_eq!(fake.redemptions(), 1);

    let other = build::payment(&host, 2000);
    let refused = method.redeem(&other, &code, &method.inspect_code(&other, &code).unwrap()).unwrap_err();
    assert_eq!(refused.code.as_str(), "receipt_already_used");
}

#[test]
fn a_lost_answer_with_the_line_down_is_an_unknown_outcome_that_lookup_resolves() {
    let (method, host, fake) = method();
    let code = fake.issue(800);
    let payment = build::payment(&host, 2000);
    let inspected = method.inspect_code(&payment, &code).unwrap();
    host.fail_next("POST", "/redeem", Fault::DropAnswerThenOutage);
    let payment = posbridge_plugin_api::PaymentContext { deadline_unix_ms: host.clock().now_unix_ms() + 2_000, ..payment };
    let lost = method.redeem(&payment, &code, &inspected).unwrap_err();
    assert!(lost.is_outcome_unknown(), "{lost}");
    host.clear_faults();
    let found = method.lookup(&build::lookup(&host, &payment, &inspected, payment.deadline_unix_ms)).unwrap();
    assert_eq!(found.state, LookupState::TAKEN);
}

#[test]
fn a_provider_that_cannot_be_reached_took_nothing() {
    let (method, host, fake) = method();
    let code = fake.issue(800);
    let payment = posbridge_plugin_api::PaymentContext { deadline_unix_ms: host.clock().now_unix_ms() + 1_000, ..build::payment(&host, 2000) };
    host.fail_all("", "", Fault::Refused);
    let error = method.redeem(&payment, &code, &method.inspect_code(&payment, &code).unwrap()).unwrap_err();
    assert_eq!(error.code.as_str(), "provider_unavailable");
    assert_eq!(fake.redemptions(), 0);
}

#[test]
fn settings_problems_name_their_keys() {
    let host = FakeHost::new(|_| unreachable!("no request while reading settings"));
    let problems = match VoucherPlugin::create(build::setup("vouchers", "{{project-name}}", r#"{"api_url": "http://example.com"}"#, &host)) {
        Ok(_) => panic!("created without a key"),
        Err(problems) => problems,
    };
    let fields: Vec<String> = problems.iter().filter_map(|problem| problem.field.clone().into_option()).map(|field| field.to_string()).collect();
    assert_eq!(fields, vec!["api_url", "api_key"]);
}
