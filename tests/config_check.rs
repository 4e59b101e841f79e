//! `posbridge check`: every mistake listed with its file and line, exit code 1, and no
//! secret ever printed.

use posbridge_testkit::{all_output, Install};
use sha2::Digest;

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

/// A secret that must never be printed: the Smartum client secret, given inline.
const CLIENT_SECRET: &str = "smartum-client-secret-7f3a9c";
/// A client token that is too short: the error about it must not print it either.
const SHORT_TOKEN: &str = "tok-9q8w";

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|line| line.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in config")) + 1
}

#[test]
fn check_lists_every_mistake_with_its_line_and_never_a_secret() {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.write("smartum.pem", "-----BEGIN PUBLIC KEY-----\nMIGb\n-----END PUBLIC KEY-----\n");
    let config = format!(
        r#"[server]
listen = "127.0.0.1:not-a-port"
allowed_origin = ["http://localhost:3000"]

[store]
path = "data"
retention = "forever"

[plugins]
dir = "plugins"

[[clients]]
name = "till-1"
token = "{SHORT_TOKEN}"

[[registers]]
id = "till-1"
scanners = ["front"]

[methods.smartum]
plugin = "smartum"
api_url = "https://api.staging.smartum.fi"
client_id = "demo"
client_secret = "{CLIENT_SECRET}"
venue_id = "ven_not a venue"
benefit = "exercise"
[[methods.smartum.jwt_keys]]
kid = "k1"
pem_file = "smartum.pem"
"#
    );
    install.write("posbridge.toml", &config);
    let output = install.run(&["check"]);
    let text = all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");

    let file = install.config_path().display().to_string();
    let expectations = [
        ("listen = ", "server.listen", "expected an address"),
        ("allowed_origin =", "server.allowed_origin", "did you mean `allowed_origins`?"),
        ("retention =", "store.retention", "expected a duration"),
        ("[[clients]]", "clients[0].token", "too short"),
        ("scanners = [\"front\"]", "registers[0].scanners", "no [[scanners]] entry has id \"front\""),
    ];
    for (needle, key, message) in expectations {
        let expected = format!("{file}:{}: `{key}`: ", line_of(&config, needle));
        let line = text.lines().find(|line| line.contains(&expected)).unwrap_or_else(|| panic!("no {expected:?} in:\n{text}"));
        assert!(line.contains(message), "{line}");
    }
    for secret in [CLIENT_SECRET, SHORT_TOKEN] {
        assert!(!text.contains(secret), "secret {secret:?} printed:\n{text}");
    }
}

#[test]
fn plugin_setting_mistakes_point_at_their_lines() {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.write("smartum.secret", "smartum-secret-from-file-55aa\n");
    let config = format!(
        r#"{}
[methods.smartum]
plugin = "smartum"
api_url = "https://api.staging.smartum.fi"
client_id = "demo"
client_secret_file = "smartum.secret"
venue_id = "ven_not a venue"
benefit = "sauna"
eligible_lable = "smartum"
"#,
        posbridge_testkit::base_config()
    );
    install.write("posbridge.toml", &config);
    let output = install.run(&["check"]);
    let text = all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let file = install.config_path().display().to_string();
    for (needle, key) in [
        ("venue_id =", "methods.smartum.venue_id"),
        ("eligible_lable =", "methods.smartum.eligible_lable"),
        ("[methods.smartum]", "methods.smartum.jwt_keys"),
    ] {
        let expected = format!("{file}:{}: `{key}`: ", line_of(&config, needle));
        assert!(text.contains(&expected), "no {expected:?} in:\n{text}");
    }
    assert!(!text.contains("smartum-secret-from-file-55aa"), "{text}");
    // A benefit Smartum is not known to use is a warning: Smartum may name more.
    assert!(!text.contains("`methods.smartum.benefit`"), "{text}");
    assert!(text.contains("benefit \"sauna\" is not one Smartum is known to use"), "{text}");
}

#[test]
fn syntax_errors_name_the_line() {
    let install = Install::new(BIN);
    install.write("posbridge.toml", "[server]\nlisten = \"127.0.0.1:8787\"\n\n[store\npath = \"data\"\n");
    let output = install.run(&["check"]);
    let text = all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let expected = format!("{}:4: ", install.config_path().display());
    assert!(text.contains(&expected) && text.contains("TOML syntax"), "{text}");
}

#[test]
fn conf_d_files_merge_in_name_order_and_secrets_come_from_env() {
    let install = Install::new(BIN);
    install.configure("");
    install.write("conf.d/10-till2.toml", "[[clients]]\nname = \"till-2\"\ntoken = \"env:POSBRIDGE_TEST_TILL2_TOKEN\"\n");
    install.write("conf.d/20-store.toml", "[store]\nretention = \"30d\"\n");
    let output = std::process::Command::new(&install.bin)
        .args(["check", "--config"])
        .arg(install.config_path())
        .env("POSBRIDGE_TEST_TILL2_TOKEN", "till-2-token-from-environment-xyz")
        .output()
        .unwrap();
    let text = all_output(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("4 client(s)"), "the three of every test install and till-2: {text}");
    assert!(!text.contains("till-2-token-from-environment-xyz"), "{text}");

    // Without the variable, the error names the variable and the line in the conf.d file.
    let output = install.run(&["check"]);
    let text = all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let expected = format!(
        "{}:3: `clients[3].token`: environment variable POSBRIDGE_TEST_TILL2_TOKEN is not set",
        install.path().join("conf.d/10-till2.toml").display()
    );
    assert!(text.contains(&expected), "no {expected:?} in:\n{text}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    // The example as shipped, with its plugin directory pointed at this build's libraries.
    let example_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let install = Install::new(BIN);
    for entry in std::fs::read_dir(&example_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, install.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    install.add_plugin("posbridge-plugin-smartum");
    install.add_plugin("posbridge-plugin-stripe-split");
    let text = std::fs::read_to_string(install.path().join("posbridge.toml")).unwrap();
    let installed_dir = "dir = \"/usr/local/lib/posbridge/plugins\"";
    assert!(text.contains(installed_dir), "the template's plugin dir changed; update this test");
    assert!(!text.contains("token_file") && !text.contains("token ="), "the template holds no usable token");
    install.write("posbridge.toml", &text.replace(installed_dir, "dir = \"plugins\""));

    let output = install.run(&["check"]);
    let text = all_output(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("methods: card, smartum"), "{text}");

    // The install steps make the tokens: printed once, only the hash kept.
    let made = install.run(&["token", "new", "--client", "till-1"]);
    assert!(made.status.success(), "{}", all_output(&made));
    let token = String::from_utf8(made.stdout).unwrap().trim().to_string();
    assert_eq!(token.len(), 43, "{token}");
    let config = std::fs::read_to_string(install.config_path()).unwrap();
    assert!(!config.contains(&token), "the token itself is not kept");
    assert!(config.contains(&hex::encode(sha2::Sha256::digest(token.as_bytes()))), "its SHA-256 is");
    let file = install.path().join("office.token");
    let made = install.run(&["token", "new", "--client", "office", "--file", file.to_str().unwrap()]);
    assert!(made.status.success(), "{}", all_output(&made));
    let office = String::from_utf8(made.stdout).unwrap().trim().to_string();
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), office);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    install.write("conf.d/test-port.toml", "[server]\nlisten = \"127.0.0.1:0\"\n");
    let daemon = install.start();
    let methods = |token: &str| {
        reqwest::blocking::Client::new().get(format!("{}/v1/methods", daemon.base_url)).bearer_auth(token).send().unwrap().status()
    };
    assert_eq!(methods(&token), 200, "the new till token opens the API");
    assert_eq!(methods(&office), 200, "so does the office's, from its file");
}

#[test]
fn a_missing_plugin_directory_is_one_located_problem_among_the_others() {
    let install = posbridge_testkit::Install::new(BIN);
    install.write(
        "posbridge.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\npath = \"data\"\n\n[plugins]\ndir = \"no-such-dir\"\n\n[payments]\nscan_timeout = \"soon\"\n",
    );
    let output = install.run(&["check"]);
    let text = posbridge_testkit::all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("posbridge.toml:8: `plugins.dir`: the plugin directory"), "located at its line: {text}");
    assert!(text.contains("no-such-dir does not exist"), "{text}");
    assert!(text.contains("`payments.scan_timeout`"), "the other problem is reported too: {text}");
}
