//! `posbridge sandbox`: everything a POS developer needs to try every flow with no
//! Smartum account: a local Smartum (see [`smartum`]) and the daemon configured against
//! it, plus `posbridge sandbox receipt` to "pay in the app" and get a receipt QR code.

mod form;
pub mod smartum;
pub mod stripe;
mod third_party;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;
use serde_json::Value;

use crate::config::{self, Config, MethodConfig};
use crate::runtime::{self, StartError};
pub use smartum::{Faults, Receipt, SandboxOptions, SmartumSandbox};
pub use stripe::{endpoint_of, StripeFaults, StripeOptions, StripeSandbox};

/// A local fake provider's HTTP server on its own thread and runtime; stops when the
/// returned sender is dropped or sent to.
pub(crate) struct Server {
    pub address: SocketAddr,
    pub shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Serves `app` on `listen` (port 0 picks one) in a thread named `name`.
pub(crate) fn spawn_server(listen: SocketAddr, name: &str, app: axum::Router) -> std::io::Result<Server> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("sandbox runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("sandbox listener");
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
    })?;
    Ok(Server { address, shutdown })
}

/// Why the sandbox cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0}")]
    Setup(String),
}

/// What the sandbox takes from the config: the Smartum method pointing at a loopback URL.
struct SmartumSide {
    listen: SocketAddr,
    options: SandboxOptions,
}

fn setting(method: &MethodConfig, key: &str) -> Option<String> {
    method.settings.json.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The first `smartum` method and the loopback address its `api_url` names; `None`
/// when the config has no Smartum method (a sandbox of third-party fakes only).
fn smartum_side(config: &Config, signing_key: &Path) -> Result<Option<SmartumSide>, SandboxError> {
    let Some(method) = config.methods.values().find(|method| method.plugin == "smartum") else { return Ok(None) };
    let api_url = setting(method, "api_url").unwrap_or_default();
    let host_port = api_url.strip_prefix("http://").map(|rest| rest.trim_end_matches('/')).unwrap_or("");
    let listen: SocketAddr = host_port.parse().ok().filter(|address: &SocketAddr| address.ip().is_loopback()).ok_or_else(|| {
        SandboxError::Setup(format!("methods.{}.api_url must be http://127.0.0.1:PORT for the sandbox, found {api_url:?}", method.id))
    })?;
    let pem = std::fs::read_to_string(signing_key)
        .map_err(|error| SandboxError::Setup(format!("cannot read the sandbox signing key {}: {error}", signing_key.display())))?;
    let key = smartum::signing_key_from_pem(&pem)
        .ok_or_else(|| SandboxError::Setup(format!("{} is not a P-521 private key (PKCS#8 PEM)", signing_key.display())))?;
    let kid = method.settings.json.pointer("/jwt_keys/0/kid").and_then(Value::as_str).unwrap_or("sandbox").to_string();
    let options = SandboxOptions {
        client_id: setting(method, "client_id").unwrap_or_default(),
        client_secret: setting(method, "client_secret").unwrap_or_default(),
        venue_id: setting(method, "venue_id").unwrap_or_default(),
        benefit: setting(method, "benefit").unwrap_or_else(|| "exercise".into()),
        kid,
        signing_key: Some(key),
        ..SandboxOptions::default()
    };
    Ok(Some(SmartumSide { listen, options }))
}

/// The sandbox signing key beside the config, unless given.
pub fn default_signing_key(config_path: &Path) -> PathBuf {
    config_path.parent().unwrap_or_else(|| Path::new(".")).join("sandbox").join("smartum-es512-private.pem")
}

/// The `stripe-split` method whose `api_url` is a loopback address, if any.
fn stripe_side(config: &Config) -> Option<(SocketAddr, StripeOptions)> {
    let method = config.methods.values().find(|method| method.plugin == "stripe-split")?;
    let listen = crate::config::loopback_address(&setting(method, "api_url").unwrap_or_default())?;
    let mut options = StripeOptions { secret_key: setting(method, "secret_key").unwrap_or_default(), ..StripeOptions::default() };
    options.connected_accounts.extend(setting(method, "connected_account"));
    options.readers.extend(setting(method, "reader"));
    if let Some(Value::Object(by_register)) = method.settings.json.get("readers") {
        options.readers.extend(by_register.values().filter_map(Value::as_str).map(str::to_string));
    }
    options.readers.sort();
    options.readers.dedup();
    Some((listen, options))
}

/// Runs the sandbox Smartum (and Stripe, when a card method points at a loopback
/// address) and the daemon until SIGTERM or Ctrl-C.
pub async fn run(config_path: &Path, signing_key: &Path) -> Result<(), SandboxError> {
    let config = config::load(config_path).map_err(StartError::from)?;
    let fakes = third_party::start(&config.sandbox.providers).await?;
    let sandbox = match smartum_side(&config, signing_key)? {
        Some(side) => {
            let sandbox = SmartumSandbox::start(side.listen, side.options)
                .map_err(|error| SandboxError::Setup(format!("cannot listen on {}: {error}", side.listen)))?;
            println!("Sandbox Smartum: {} (venue {}, benefit {})", sandbox.url(), config_venue(&config), config_benefit(&config));
            Some(sandbox)
        }
        None if fakes.is_empty() => {
            return Err(SandboxError::Setup(
                "the config has no [methods.<id>] with plugin = \"smartum\" and no [[sandbox.providers]] to run".into(),
            ))
        }
        None => None,
    };
    let stripe = match stripe_side(&config) {
        Some((listen, options)) => {
            let stripe = StripeSandbox::start(listen, options)
                .map_err(|error| SandboxError::Setup(format!("cannot listen on {listen}: {error}")))?;
            println!("Sandbox Stripe:  {} (tap a card: posbridge sandbox card --config {})", stripe.url(), config_path.display());
            Some(stripe)
        }
        None => None,
    };
    println!("posbridge API:   http://{}  (token: the file named by [[clients]] token_file)", config.server.listen);
    if sandbox.is_some() {
        println!("Pay in the app:  posbridge sandbox receipt --config {} --amount 3000", config_path.display());
    }
    runtime::serve(config_path).await?;
    drop((sandbox, stripe, fakes));
    Ok(())
}

/// The customer taps a card on the sandbox reader (Stripe's `present_payment_method`
/// test helper); `decline` uses a test card that is declined.
pub async fn card(config_path: &Path, decline: bool) -> Result<(), SandboxError> {
    let config = config::load(config_path).map_err(StartError::from)?;
    let method = config
        .methods
        .values()
        .find(|method| method.plugin == "stripe-split")
        .ok_or_else(|| SandboxError::Setup("no stripe-split method in the config".into()))?;
    let (api_url, key) = (setting(method, "api_url").unwrap_or_default(), setting(method, "secret_key").unwrap_or_default());
    let reader = setting(method, "reader").ok_or_else(|| {
        SandboxError::Setup(format!("methods.{}.reader is not set: without a reader, open the payment page URL instead", method.id))
    })?;
    let number = if decline { "4000000000000002" } else { "4242424242424242" };
    let response = reqwest::Client::new()
        .post(format!("{}/v1/test_helpers/terminal/readers/{reader}/present_payment_method", api_url.trim_end_matches('/')))
        .bearer_auth(key)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("type=card_present&card_present[number]={number}"))
        .send()
        .await
        .map_err(|error| SandboxError::Setup(format!("is `posbridge sandbox` running? cannot reach {api_url}: {error}")))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(SandboxError::Setup(format!(
            "the sandbox reader refused: {}",
            answer["error"]["message"].as_str().unwrap_or("no payment is waiting on it")
        )));
    }
    println!("card {} presented on {reader}: {}", number, answer["action"]["status"].as_str().unwrap_or("?"));
    Ok(())
}

fn config_venue(config: &Config) -> String {
    config.methods.values().find(|method| method.plugin == "smartum").and_then(|method| setting(method, "venue_id")).unwrap_or_default()
}

fn config_benefit(config: &Config) -> String {
    config.methods.values().find(|method| method.plugin == "smartum").and_then(|method| setting(method, "benefit")).unwrap_or_default()
}

/// Asks a running sandbox for a paid transaction and prints its receipt: the code, and
/// a QR code drawn in the terminal for a scanner or the POS camera.
pub async fn receipt(
    config_path: &Path,
    amount: u64,
    venue: Option<String>,
    benefit: Option<String>,
    reports: Option<(PathBuf, String)>,
) -> Result<(), SandboxError> {
    let config = config::load(config_path).map_err(StartError::from)?;
    let method = config
        .methods
        .values()
        .find(|method| method.plugin == "smartum")
        .ok_or_else(|| SandboxError::Setup("no smartum method in the config".into()))?;
    let api_url = setting(method, "api_url").unwrap_or_default();
    let body = serde_json::json!({"amount": amount, "venue": venue, "benefit": benefit});
    let response = reqwest::Client::new()
        .post(format!("{}/_sandbox/transactions", api_url.trim_end_matches('/')))
        .json(&body)
        .send()
        .await
        .map_err(|error| SandboxError::Setup(format!("is `posbridge sandbox` running? cannot reach {api_url}: {error}")))?;
    let status = response.status();
    let answer: Value = response.json().await.map_err(|error| SandboxError::Setup(format!("the sandbox answered {status}: {error}")))?;
    let (Some(transaction), Some(code)) = (answer["transaction_id"].as_str(), answer["receipt"].as_str()) else {
        return Err(SandboxError::Setup(format!("the sandbox answered {status}: {answer}")));
    };
    println!("{}", render_qr(code));
    println!("transaction: {transaction}");
    println!("amount:      {amount} cents");
    println!("receipt:     {code}");
    if let Some((file, scanner)) = reports {
        let lines = scanner_reports(code, &scanner)?;
        append_lines(&file, &lines)?;
        println!("reports:     {} {scanner} reports appended to {}", lines.len(), file.display());
    }
    Ok(())
}

/// The hex report lines a scanner of kind `scanner` (`us`, `fi`, `pos`) sends for `code`.
pub fn scanner_reports(code: &str, scanner: &str) -> Result<Vec<String>, SandboxError> {
    use crate::config::KeyboardLayout;
    use crate::scanners::{keyboard, pos};
    let layout = match scanner {
        "pos" => return Ok(pos::reports_for(code, b"]Q1").iter().map(hex::encode).collect()),
        "fi" => KeyboardLayout::Fi,
        _ => KeyboardLayout::Us,
    };
    keyboard::reports_for(code, layout)
        .map(|reports| reports.iter().map(hex::encode).collect())
        .map_err(|c| SandboxError::Setup(format!("the {scanner} layout cannot type {c:?}")))
}

fn append_lines(file: &Path, lines: &[String]) -> Result<(), SandboxError> {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|error| SandboxError::Setup(format!("cannot open {}: {error}", file.display())))?;
    writeln!(out, "{}", lines.join("\n")).map_err(|error| SandboxError::Setup(format!("cannot write {}: {error}", file.display())))
}

/// A QR code as terminal text (two modules per character row).
pub fn render_qr(text: &str) -> String {
    match QrCode::new(text.as_bytes()) {
        Ok(code) => code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build(),
        Err(error) => format!("(cannot draw a QR code: {error})"),
    }
}

/// Writes a secret a sandbox config section names (readable by its owner only, as the
/// daemon requires of secret files).
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{secret}\n"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
