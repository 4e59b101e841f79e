//! Plugin loading through the real binary: the real plugins load and are listed, and
//! every kind of bad library is refused with one clear line.

use posbridge_testkit::{all_output, library_file_name, Install};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

fn plugins_json(install: &Install) -> Value {
    let output = install.run(&["plugins", "--json"]);
    assert!(output.status.success(), "plugins failed: {}", all_output(&output));
    serde_json::from_slice(&output.stdout).expect("plugins --json prints JSON")
}

fn capabilities(listing: &Value, plugin: &str) -> Vec<String> {
    let entry = listing["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["id"] == plugin)
        .unwrap_or_else(|| panic!("{plugin} not listed: {listing}"));
    entry["methods"][0]["capabilities"].as_array().unwrap().iter().map(|cap| cap.as_str().unwrap().to_string()).collect()
}

fn refusal_for(listing: &Value, file_name: &str) -> String {
    let refusals = listing["refused"].as_array().unwrap();
    let refusal = refusals
        .iter()
        .find(|refusal| refusal["file"].as_str().unwrap().ends_with(file_name))
        .unwrap_or_else(|| panic!("{file_name} not refused: {listing}"));
    refusal["reason"].as_str().unwrap().to_string()
}

#[test]
fn both_real_plugins_load_and_are_listed_with_capabilities() {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.add_plugin("posbridge-plugin-stripe-split");
    install.configure("");

    let listing = plugins_json(&install);
    assert_eq!(listing["refused"], serde_json::json!([]));
    assert_eq!(capabilities(&listing, "smartum"), ["scan", "manual_entry", "refund", "refund_without_cache", "status_lookup", "cancel"]);
    assert_eq!(capabilities(&listing, "stripe-split"), ["card", "refund", "refund_without_cache", "status_lookup", "cancel"]);

    let text = all_output(&install.run(&["plugins"]));
    assert!(text.contains("smartum 0.1.0"), "{text}");
    assert!(text.contains("capabilities: card, refund, refund_without_cache, status_lookup, cancel"), "{text}");
}

#[test]
fn plugin_built_for_another_abi_is_refused_naming_both_versions() {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-test-plugin-abi-future");
    install.add_plugin("posbridge-plugin-smartum");
    install.configure("");

    let listing = plugins_json(&install);
    let reason = refusal_for(&listing, &library_file_name("posbridge-test-plugin-abi-future"));
    assert!(reason.contains("plugin ABI 2.0.0"), "{reason}");
    assert!(reason.contains("plugin ABI 1.x"), "{reason}");
    assert_eq!(reason.lines().count(), 1, "one line: {reason}");
    // The good plugin beside it still loads.
    assert!(capabilities(&listing, "smartum").contains(&"scan".to_string()));
}

#[test]
fn files_that_are_not_plugins_are_refused() {
    let install = Install::new(BIN);
    let suffix = std::env::consts::DLL_SUFFIX;
    install.write(&format!("plugins/garbage{suffix}"), "this is not a shared library");
    install.write(&format!("plugins/empty{suffix}"), "");
    install.write("plugins/README.txt", "not a library, and not looked at");
    install.configure("");

    let listing = plugins_json(&install);
    for file in [format!("garbage{suffix}"), format!("empty{suffix}")] {
        let reason = refusal_for(&listing, &file);
        assert!(reason.starts_with("not a loadable library"), "{file}: {reason}");
    }
    assert_eq!(listing["refused"].as_array().unwrap().len(), 2, "{listing}");
    assert_eq!(listing["plugins"], serde_json::json!([]));
}

#[test]
fn pinned_hash_mismatch_is_refused_and_a_method_needing_it_fails_check() {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-stripe-split");
    let zeros = "0".repeat(64);
    install.configure(&format!(
        "[plugins.pinned]\nstripe-split = \"sha256:{zeros}\"\n\n[methods.card]\nplugin = \"stripe-split\"\nsecret_key = \"sk_test_pinning\"\n"
    ));

    let listing = plugins_json(&install);
    let reason = refusal_for(&listing, &library_file_name("posbridge-plugin-stripe-split"));
    assert!(reason.contains("matches no [plugins.pinned] entry"), "{reason}");

    let check = install.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", all_output(&check));
    let text = all_output(&check);
    assert!(text.contains("methods.card.plugin"), "{text}");
    assert!(text.contains("no loaded plugin has id \"stripe-split\""), "{text}");
}

#[test]
fn pinned_hash_that_matches_loads() {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-stripe-split");
    install.configure("");
    let hash = plugins_json(&install)["plugins"][0]["sha256"].as_str().unwrap().to_string();
    install.configure(&format!("[plugins.pinned]\nstripe-split = \"{hash}\"\n"));
    let listing = plugins_json(&install);
    assert_eq!(listing["refused"], serde_json::json!([]), "{listing}");
    assert_eq!(listing["plugins"][0]["id"], "stripe-split");
}

#[test]
fn two_files_with_one_plugin_id_are_both_refused() {
    let install = Install::new(BIN);
    install.add_plugin_as("posbridge-plugin-smartum", &library_file_name("smartum-a"));
    install.add_plugin_as("posbridge-plugin-smartum", &library_file_name("smartum-b"));
    install.configure("");

    let listing = plugins_json(&install);
    for (file, other) in [("smartum_a", "smartum_b"), ("smartum_b", "smartum_a")] {
        let reason = refusal_for(&listing, &library_file_name(file));
        assert!(reason.contains("plugin id \"smartum\" is also provided by"), "{reason}");
        assert!(reason.contains(other), "{reason}");
    }
    assert_eq!(listing["plugins"], serde_json::json!([]));
}

#[test]
fn plugin_panicking_while_creating_a_method_is_an_error_not_a_crash() {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-test-plugin-panicky");
    install.configure("[methods.boom]\nplugin = \"panicky\"\npanic_on_create = true\n");

    let check = install.run(&["check"]);
    let text = all_output(&check);
    // Exit code 1 is posbridge reporting the problem; an abort would be a signal.
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(text.contains("methods.boom"), "{text}");
    assert!(text.contains("plugin_panicked"), "{text}");
    assert!(text.contains("panicky plugin refuses to be created"), "{text}");
}

#[test]
fn a_plugin_may_use_the_host_http_while_its_method_is_created() {
    let target = posbridge::sandbox::SmartumSandbox::start("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let install = Install::new(BIN);
    install.add_plugin("posbridge-test-plugin-panicky");
    install.configure(&format!("[methods.boom]\nplugin = \"panicky\"\nhttp_on_create = \"{}/v1/transactions/tx_0\"\n", target.url()));
    let daemon = install.start();
    let reached = daemon.wait_for_log(&["create reached", "HTTP 401"], std::time::Duration::from_secs(30));
    assert!(reached.is_some(), "{}", daemon.log().join("\n"));
    // And again at a reload, which creates the methods anew.
    install.write("conf.d/touch.toml", "# touched\n");
    assert!(daemon.wait_for_log(&["config reloaded"], std::time::Duration::from_secs(30)).is_some(), "{}", daemon.log().join("\n"));
    assert_eq!(daemon.get("/healthz").status(), 200, "the daemon is alive");
}

#[cfg(unix)]
#[test]
fn links_and_files_others_can_change_are_refused() {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    let elsewhere = install.path().join("libelsewhere.so");
    std::fs::copy(install.built_library("posbridge-plugin-stripe-split"), &elsewhere).unwrap();
    let link_name = library_file_name("linked-plugin");
    std::os::unix::fs::symlink(&elsewhere, install.plugins_dir().join(&link_name)).unwrap();
    install.configure("");

    let listing = plugins_json(&install);
    let reason = refusal_for(&listing, &link_name);
    assert!(reason.contains("symbolic link"), "{reason}");
    assert!(listing["plugins"].as_array().unwrap().iter().any(|plugin| plugin["id"] == "smartum"), "the plain file still loads");

    let smartum = install.plugins_dir().join(library_file_name("posbridge-plugin-smartum"));
    posbridge_testkit::set_mode(&smartum, 0o666);
    let reason = refusal_for(&plugins_json(&install), &library_file_name("posbridge-plugin-smartum"));
    assert!(reason.contains("can be written by other users"), "{reason}");

    posbridge_testkit::set_mode(&smartum, 0o644);
    posbridge_testkit::set_mode(&install.plugins_dir(), 0o775);
    let listing = plugins_json(&install);
    let reason = refusal_for(&listing, &library_file_name("posbridge-plugin-smartum"));
    assert!(reason.contains("plugin directory is not trusted") && reason.contains("mode 775"), "{reason}");
    assert_eq!(listing["plugins"], serde_json::json!([]), "nothing in a directory others can write loads");

    // The config file is held to the same rule.
    posbridge_testkit::set_mode(&install.plugins_dir(), 0o755);
    posbridge_testkit::set_mode(&install.config_path(), 0o664);
    let check = install.run(&["check"]);
    let text = all_output(&check);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(text.contains("not trusted") && text.contains("posbridge.toml"), "{text}");
}

/// The pinned bytes are the loaded bytes: the file is replaced on disk after it was
/// hashed and before it is loaded (a test-only pause between the two), and what runs is
/// still the file that was hashed.
#[cfg(target_os = "linux")]
#[test]
fn the_library_loaded_is_the_one_hashed_even_if_the_path_is_replaced_in_between() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let install = Install::new(BIN);
    let smartum = install.add_plugin("posbridge-plugin-smartum");
    let impostor = install.path().join("impostor.so");
    std::fs::copy(install.built_library("posbridge-test-plugin-panicky"), &impostor).unwrap();
    posbridge_testkit::set_mode(&impostor, 0o644);
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&smartum).unwrap()));
    install.configure(&format!("[plugins.pinned]\nsmartum = \"sha256:{hash}\"\n"));

    let mut listing = Command::new(BIN)
        .args(["plugins", "--json", "--config"])
        .arg(install.config_path())
        .env("FAILPOINTS", "loader-between-hash-and-load=sleep(1500)")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(listing.stderr.take().unwrap()).lines();
    let hashed = log.by_ref().map_while(Result::ok).find(|line| line.contains("plugin file opened and hashed"));
    assert!(hashed.is_some_and(|line| line.contains(&hash)), "the loader hashed the file");
    std::fs::rename(&impostor, &smartum).unwrap(); // the path now holds another library
    let output = listing.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let listing: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listing["refused"], serde_json::json!([]), "{listing}");
    let loaded = &listing["plugins"][0];
    assert_eq!(loaded["id"], "smartum", "the hashed library was loaded, not the one now at the path: {listing}");

    // Loaded again later (a reload), the replaced file is refused: it is not what was pinned.
    let reason = refusal_for(&plugins_json(&install), &library_file_name("posbridge-plugin-smartum"));
    assert!(reason.contains("matches no [plugins.pinned] entry"), "{reason}");
}
