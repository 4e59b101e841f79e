//! posbridge's conformance rules, run in-process against the fake provider: the same
//! check `posbridge plugin test` runs on the built library.

use std::sync::Arc;

use posbridge_plugin_api::{PaymentMethodBox, Plugin};
use posbridge_plugin_testkit::conformance::{self, Subject};
use {{crate_name}}::fake::FakeProvider;
use {{crate_name}}::{VoucherPlugin, CAPABILITIES};

#[test]
fn the_plugin_passes_every_conformance_rule() {
    let fake = FakeProvider::new("test-key-0123456789");
    let issuer = fake.clone();
    let subject = Subject {
        method_id: "vouchers".into(),
        kind: "{{project-name}}".into(),
        capabilities: CAPABILITIES,
        config_json: r#"{"api_url": "http://127.0.0.1:9911", "api_key": "test-key-0123456789"}"#.into(),
        create: Box::new(|setup| VoucherPlugin::create(setup).map(PaymentMethodBox::of)),
        transport: Arc::new(fake.transport()),
        codes: Some(Box::new(move |amount| Ok(issuer.issue(amount)))),
        amount: 1000,
    };
    let report = conformance::run(&subject);
    assert!(report.passed(), "{report}");
}
