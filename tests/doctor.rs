//! `posbridge doctor`: one line per check, OK or what to do, and the exit code.

use posbridge::sandbox::{SandboxOptions, SmartumSandbox};
use posbridge_testkit::{all_output, Install};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

#[cfg(unix)]
fn private(install: &Install) {
    use std::os::unix::fs::PermissionsExt;
    for file in ["till-1.token", "smartum.secret"] {
        std::fs::set_permissions(install.path().join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[cfg(not(unix))]
fn private(_install: &Install) {}

fn install_against(smartum: &SmartumSandbox, extra: &str) -> Install {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.add_plugin("posbridge-plugin-stripe-split");
    install.configure(&format!("{}\n{extra}", smartum.config_section(install.path(), "").unwrap()));
    private(&install);
    install
}

#[test]
fn all_good_is_exit_0_and_each_problem_says_what_to_do() {
    let options = SandboxOptions::default();
    let smartum = SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), options.clone()).unwrap();

    let good = install_against(&smartum, "");
    let output = good.run(&["doctor"]);
    let text = all_output(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("OK   method smartum (smartum): "), "{text}");
    assert!(text.contains("accepted the client credentials"), "{text}");
    assert!(text.contains("OK   store: "), "{text}");
    assert!(text.contains("checks OK"), "{text}");
    assert_eq!(smartum.token_requests(), 1, "the credentials were really tried");

    let broken = install_against(
        &smartum,
        "[methods.card]\nplugin = \"stripe-split\"\napi_url = \"http://127.0.0.1:9\"\nsecret_key = \"sk_test_doctor\"\ntimeout = \"2s\"\n\n[[scanners]]\nid = \"bench\"\nsource = \"replay\"\npath = \"missing.fifo\"\n",
    );
    let output = broken.run(&["doctor"]);
    let text = all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL method card (stripe-split): provider_unavailable"), "{text}");
    assert!(text.contains("check api_url, the credentials"), "{text}");
    assert!(text.contains("FAIL scanner bench:") && text.contains("mkfifo"), "{text}");
    assert!(text.contains("OK   method smartum"), "the good method is still OK: {text}");
    assert!(!text.contains("sk_test_doctor"));
}
