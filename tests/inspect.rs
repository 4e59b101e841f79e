//! `posbridge inspect` golden output: what the Smartum plugin understands of a signed
//! receipt, a receipt URL, a bare transaction id, garbage, and a QR code in an image,
//! without redeeming anything. Receipts are signed with the sandbox's shipped key
//! (ECDSA signatures are deterministic, RFC 6979), so the output is byte-for-byte stable.
//! `UPDATE_GOLDEN=1` rewrites the files after a deliberate change.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use posbridge_testkit::{images, Install};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");
const TX: &str = "tx_GoldenReceipt0001";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn install() -> Install {
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.write("smartum-es512.pem", &std::fs::read_to_string(repo().join("config/sandbox/smartum-es512.pem")).unwrap());
    install.write("smartum.secret", "golden-secret-0123456789\n");
    posbridge_testkit::private(&install.path().join("smartum.secret"));
    install.configure(
        "[methods.smartum]\nplugin = \"smartum\"\napi_url = \"http://127.0.0.1:9\"\nclient_id = \"golden\"\n\
         client_secret_file = \"smartum.secret\"\nvenue_id = \"ven_SandboxVenue0001\"\nbenefit = \"exercise\"\n\
         [[methods.smartum.jwt_keys]]\nkid = \"sandbox-2026\"\npem_file = \"smartum-es512.pem\"\n",
    );
    install
}

fn signed_receipt() -> String {
    let pem = std::fs::read_to_string(repo().join("config/sandbox/smartum-es512-private.pem")).unwrap();
    let key = posbridge::sandbox::smartum::signing_key_from_pem(&pem).expect("the shipped sandbox key");
    let header = json!({"alg": "ES512", "typ": "JWT", "kid": "sandbox-2026"});
    let claims =
        json!({"jti": TX, "venue": "ven_SandboxVenue0001", "benefit": "exercise", "amount": 3000, "currency": "EUR", "iat": 1_795_600_000});
    posbridge::sandbox::smartum::sign_receipt(&key, &header, &claims)
}

/// Runs `posbridge inspect` with `args`; answers stdout and whether it succeeded.
fn inspect(install: &Install, args: &[&str], stdin: Option<&str>) -> (String, bool) {
    let mut child = Command::new(BIN)
        .args(["inspect", "--method", "smartum", "--config"])
        .arg(install.config_path())
        .args(args)
        .env_remove("POSBRIDGE_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    (String::from_utf8_lossy(&output.stdout).into_owned(), output.status.success())
}

fn golden(name: &str, actual: &str) {
    let file = repo().join("tests/fixtures/inspect").join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&file, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("{} is missing (UPDATE_GOLDEN=1 writes it)", file.display()));
    assert_eq!(actual, expected, "{name}: `posbridge inspect` output changed (UPDATE_GOLDEN=1 to accept)");
}

#[test]
fn inspect_prints_what_the_plugin_understood_of_each_form() {
    let install = install();
    let (jws, accepted) = inspect(&install, &[&signed_receipt()], None);
    assert!(accepted, "{jws}");
    golden("jws", &jws);
    let (url, accepted) = inspect(&install, &[&format!("https://pay.smartum.fi/receipts/{TX}")], None);
    assert!(accepted, "{url}");
    golden("url", &url);
    let (bare, accepted) = inspect(&install, &["-"], Some(&format!("{TX}\n")));
    assert!(accepted, "{bare}");
    golden("bare", &bare);
    let (garbage, accepted) = inspect(&install, &["not a receipt"], None);
    assert!(!accepted, "{garbage}");
    golden("garbage", &garbage);

    let png = install.path().join("receipt.png");
    std::fs::write(&png, images::encode(&images::qr_frame(&signed_receipt(), 3), image::ImageFormat::Png)).unwrap();
    let (from_image, accepted) = inspect(&install, &["--image", png.to_str().unwrap()], None);
    assert!(accepted, "{from_image}");
    assert_eq!(from_image, jws, "the image's QR code reads as the same receipt");
    golden("image", &from_image);

    for output in [&jws, &url, &bare, &garbage] {
        assert!(!output.contains("golden-secret"), "never the client secret: {output}");
    }
}
