//! The command line: `serve` (the default), `check` and `plugins`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::logging::{self, LogFormat};
use crate::plugins::Catalog;
use crate::runtime::{self, Prepared, StartError};
use crate::sandbox;
use crate::scanners;

/// posbridge: lets cash registers take benefit and card payments through plugins.
#[derive(Debug, Parser)]
#[command(name = "posbridge", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// The main TOML file (`conf.d/*.toml` beside it is merged in).
    #[arg(long, short, global = true, env = "POSBRIDGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace); POSBRIDGE_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default when no command is given).
    Serve,
    /// Validate the configuration and load the plugins; exit 0 when all is well, 1 if not.
    Check,
    /// Check everything a technician would: config, plugins, store, scanners, and each
    /// provider with the configured credentials; exit 0 when all is OK, 1 if not.
    Doctor,
    /// List the plugins found in the plugin directory, with versions and capabilities.
    Plugins {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What a method's plugin understands of a code (a receipt's form, header, claims,
    /// signature and checks, and what the provider would be asked), without redeeming it.
    Inspect {
        /// The `[methods.<id>]` whose plugin reads the code.
        #[arg(long)]
        method: String,
        /// Read the code from a QR code in this image (PNG or JPEG) instead.
        #[arg(long, value_name = "FILE")]
        image: Option<PathBuf>,
        /// The code as scanned; `-` (or nothing) reads it from stdin.
        code: Option<String>,
    },
    /// Plugin development: `new` makes a plugin crate from the template, `test` runs the
    /// conformance check on a configured method.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// USB scanners: list the HID devices present, or record one's raw reports.
    Scanners {
        #[command(subcommand)]
        action: ScannerAction,
    },
    /// Client tokens: `token new --client NAME` prints a fresh token once and keeps
    /// only its SHA-256 in the config (or writes it to a mode-600 `--file`).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// The store: `migrate` brings a shared PostgreSQL store's schema to this version.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Run a local Smartum sandbox and the daemon against it (try every flow with no
    /// Smartum account), or, with `receipt`, pay in the sandbox "app".
    Sandbox {
        /// The sandbox's receipt signing key (PKCS#8 PEM); default `sandbox/smartum-es512-private.pem` beside the config.
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<SandboxAction>,
    },
}

#[derive(Debug, Subcommand)]
enum StoreAction {
    /// Create or upgrade the tables of the `[store] backend = "postgres"` database (run
    /// once per upgrade, from any one daemon's machine; safe to run again).
    Migrate,
    /// Copy an embedded (sled) store into the config's PostgreSQL store: every payment,
    /// refund, receipt, idempotency record and event; safe to run again; exit 1 unless
    /// every record is in the database after. Stop the daemon using the sled store first.
    Copy {
        /// The store to copy: `sled:PATH` (its directory).
        #[arg(long, value_name = "sled:PATH")]
        from: String,
        /// Where to: `postgres`, the config's `[store]` database.
        #[arg(long, default_value = "postgres")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum PluginAction {
    /// Make a plugin crate from posbridge's template (a voucher provider with a fake, its
    /// tests and the conformance check), ready to build and test.
    New {
        /// The plugin's name: its crate name and plugin id (lowercase letters, digits, '-').
        name: String,
        /// Where to put it (default: ./NAME); must not exist or be empty.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The posbridge checkout whose plugin-api, plugin-helpers and plugin-testkit the
        /// plugin depends on (default: the one this posbridge was built from).
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
    /// Drive a configured method's plugin against its provider (a fake or a sandbox)
    /// through injected faults, and fail it where it would lose or double money; exit 0
    /// when every rule passes, 1 if not.
    Test {
        /// The `[methods.<id>]` to check.
        #[arg(long)]
        method: String,
        /// Where to get fresh codes to scan: `POST URL {"amount", "currency"}` answers
        /// `{"code": "..."}` (the Smartum sandbox's `/_sandbox/transactions` does).
        #[arg(long, value_name = "URL")]
        codes: Option<String>,
        /// Each test payment's amount, in cents.
        #[arg(long, default_value_t = 1000)]
        amount: u64,
        /// Also write the report as JSON to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Make a new random token for a client (added to the config if it is not there).
    New {
        /// The `[[clients]]` name.
        #[arg(long)]
        client: String,
        /// Write the token to this file (mode 600) and name it in the config
        /// (`token_file`) instead of keeping only its hash.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ScannerAction {
    /// List the HID devices present: vendor:product, usage page, serial, path.
    List,
    /// Write a device's raw reports to a replay file (one `@ms hex` line each) until Ctrl-C.
    Record {
        /// The device, as VENDOR:PRODUCT in hex (e.g. 0c2e:0b61).
        #[arg(long, value_name = "VID:PID")]
        device: String,
        /// Pick one of several identical devices by serial number.
        #[arg(long)]
        serial: Option<String>,
        /// Pick the interface by usage page (e.g. 0x8c for HID POS).
        #[arg(long, value_parser = parse_hex_u16)]
        usage_page: Option<u16>,
        /// The replay file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn parse_hex_u16(text: &str) -> Result<u16, String> {
    u16::from_str_radix(text.trim_start_matches("0x").trim_start_matches("0X"), 16)
        .map_err(|_| format!("expected a hex number such as 0c2e, found {text:?}"))
}

/// `VID:PID` in hex.
fn parse_device(text: &str) -> Result<(u16, u16), String> {
    let (vendor, product) =
        text.split_once(':').ok_or_else(|| format!("expected VENDOR:PRODUCT in hex (e.g. 0c2e:0b61), found {text:?}"))?;
    Ok((parse_hex_u16(vendor)?, parse_hex_u16(product)?))
}

#[derive(Debug, Subcommand)]
enum SandboxAction {
    /// Tap a test card on the sandbox Terminal reader (completes the waiting card payment).
    Card {
        /// Use a test card that is declined.
        #[arg(long)]
        decline: bool,
    },
    /// Create a paid transaction in the running sandbox and print its receipt as text and QR code.
    Receipt {
        /// Amount in cents.
        #[arg(long)]
        amount: u64,
        /// Pay to another venue (to try `wrong_venue`).
        #[arg(long)]
        venue: Option<String>,
        /// Another benefit type (to try `wrong_benefit`).
        #[arg(long)]
        benefit: Option<String>,
        /// Also write the raw HID reports a scanner would send for the receipt to this
        /// file (append it to a `replay` scanner's FIFO to "scan" it).
        #[arg(long, value_name = "FILE")]
        reports: Option<PathBuf>,
        /// The scanner the reports imitate: `us` or `fi` keyboard layout, or `pos`.
        #[arg(long, default_value = "us", value_parser = ["us", "fi", "pos"])]
        scanner: String,
    },
}

async fn migrate_store(config_path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let config = crate::config::load(config_path)?;
    let crate::config::StoreBackend::Postgres(shared) = &config.store.backend else {
        return Err("the store is sled (embedded): it needs no migration; `[store] backend = \"postgres\"` names a shared database".into());
    };
    let applied = crate::store::PostgresStore::migrate(shared).await?;
    match applied.as_slice() {
        [] => println!("the store's schema is up to date ({})", config.store.backend.describe()),
        versions => {
            println!("migrated {} to schema version {}", config.store.backend.describe(), versions.last().copied().unwrap_or_default())
        }
    }
    Ok(())
}

async fn copy_store(config_path: &Path, from: &str, to: &str) -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = from.strip_prefix("sled:") else {
        return Err(format!("--from {from:?}: give the sled store as sled:PATH (its directory)").into());
    };
    if to != "postgres" {
        return Err(format!("--to {to:?}: the store is copied into `postgres`, the config's [store] database").into());
    }
    let config = crate::config::load(config_path)?;
    let crate::config::StoreBackend::Postgres(shared) = &config.store.backend else {
        return Err("the config's [store] is not `backend = \"postgres\"`: name the database to copy into there".into());
    };
    let source = crate::store::SledStore::open(Path::new(path))?;
    let target = crate::store::PostgresStore::connect(shared).await?;
    let report = crate::store::copy::sled_to_postgres(&source, &target).await?;
    for copied in &report.copied {
        println!("{:<20} {:>9} in {path}, {:>9} in the database", copied.kind, copied.in_source, copied.in_target);
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    if !report.complete() {
        return Err("not every record is in the database (see above)".into());
    }
    println!("copied: every record of {path} is in {}", config.store.backend.describe());
    Ok(())
}

fn new_token(config: &std::path::Path, client: &str, file: Option<&std::path::Path>) -> Result<(), Box<dyn std::error::Error>> {
    let made = crate::tokens::new_token(config, client, file)?;
    match &made.file {
        Some(file) => eprintln!("token for {client} written to {} (mode 600); {} names it", file.display(), made.config.display()),
        None => eprintln!("{} now holds only this token's SHA-256; this is the only time it is shown:", made.config.display()),
    }
    println!("{}", made.token);
    Ok(())
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.global.log_format, &cli.global.log_level);
    if let Some(Command::Scanners { action }) = &cli.command {
        return scanners_command(action);
    }
    if let Some(Command::Plugin { action: PluginAction::New { name, dir, sdk } }) = &cli.command {
        return new_plugin(name, dir.as_deref(), sdk.as_deref());
    }
    let Some(config) = cli.global.config.clone() else {
        eprintln!("posbridge: no configuration given; pass --config FILE (or set POSBRIDGE_CONFIG)");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("posbridge: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => runtime::serve(&config).await.map_err(Into::into),
            Command::Check => check(&config).map_err(Into::into),
            Command::Doctor => {
                let findings = crate::doctor::examine(&config).await;
                for finding in &findings {
                    println!("{finding}");
                }
                let failed = findings.iter().filter(|finding| !finding.ok).count();
                if failed == 0 {
                    println!("all {} checks OK", findings.len());
                    Ok(())
                } else {
                    Err(format!("{failed} of {} checks failed", findings.len()).into())
                }
            }
            Command::Plugins { json } => list_plugins(&config, json).map_err(Into::into),
            Command::Store { action: StoreAction::Migrate } => migrate_store(&config).await,
            Command::Store { action: StoreAction::Copy { from, to } } => copy_store(&config, &from, &to).await,
            Command::Plugin { action: PluginAction::New { .. } } => Ok(()),
            Command::Inspect { method, image, code } => {
                let code = code_to_inspect(image.as_deref(), code)?;
                let (lines, accepted) = crate::plugins::inspect::run(&config, &method, code).await?;
                for line in lines {
                    println!("{line}");
                }
                if accepted {
                    Ok(())
                } else {
                    Err("the code was refused".into())
                }
            }
            Command::Plugin { action: PluginAction::Test { method, codes, amount, out } } => {
                let options = crate::plugins::conformance::Options { method, codes, amount, out };
                let report = crate::plugins::conformance::run(&config, &options).await?;
                match report.failures().len() {
                    0 => Ok(()),
                    failed => Err(format!("{failed} conformance rule(s) failed").into()),
                }
            }
            Command::Sandbox { signing_key, action: None } => {
                let key = signing_key.unwrap_or_else(|| sandbox::default_signing_key(&config));
                sandbox::run(&config, &key).await.map_err(Into::into)
            }
            Command::Sandbox { action: Some(SandboxAction::Receipt { amount, venue, benefit, reports, scanner }), .. } => {
                let reports = reports.map(|file| (file, scanner));
                sandbox::receipt(&config, amount, venue, benefit, reports).await.map_err(Into::into)
            }
            Command::Sandbox { action: Some(SandboxAction::Card { decline }), .. } => {
                sandbox::card(&config, decline).await.map_err(Into::into)
            }
            Command::Scanners { .. } => Ok(()),
            Command::Token { action: TokenAction::New { client, file } } => new_token(&config, &client, file.as_deref()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("posbridge: {}: {error}", config.display());
            ExitCode::FAILURE
        }
    }
}

/// The code `inspect` is given: from an image's QR code, the argument, or stdin.
fn code_to_inspect(image: Option<&Path>, code: Option<String>) -> Result<String, Box<dyn std::error::Error>> {
    if let Some(image) = image {
        let bytes = std::fs::read(image).map_err(|error| format!("cannot read {}: {error}", image.display()))?;
        let found = crate::qr_images::decode(&bytes).map_err(|error| format!("{}: {error}", image.display()))?;
        return found.codes.into_iter().next().ok_or_else(|| format!("{}: no QR code found", image.display()).into());
    }
    match code.as_deref() {
        Some(code) if code != "-" => Ok(code.to_string()),
        _ => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            Ok(text.trim().to_string())
        }
    }
}

fn new_plugin(name: &str, dir: Option<&Path>, sdk: Option<&Path>) -> ExitCode {
    use crate::plugins::template;
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(name));
    let Some(sdk) = sdk.map(Path::to_path_buf).or_else(template::default_sdk) else {
        eprintln!("posbridge plugin new: this posbridge was not built from a checkout that is still here; give --sdk DIR");
        return ExitCode::from(2);
    };
    match template::generate(name, &dir, &sdk) {
        Ok(files) => {
            println!("{}: plugin {name} made ({} files), depending on the SDK in {}", dir.display(), files.len(), sdk.display());
            println!("next: cd {} && cargo test   (then see README.md for `posbridge plugin test`)", dir.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("posbridge plugin new: {error}");
            ExitCode::FAILURE
        }
    }
}

fn scanners_command(action: &ScannerAction) -> ExitCode {
    let result = match action {
        ScannerAction::List => list_devices(),
        ScannerAction::Record { device, serial, usage_page, out } => record_device(device, serial.clone(), *usage_page, out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("posbridge scanners: {error}");
            ExitCode::FAILURE
        }
    }
}

fn list_devices() -> Result<(), String> {
    let api = scanners::hid::open_api()?;
    let devices = scanners::hid::list(&api)?;
    if devices.is_empty() {
        println!("no HID devices found (on Linux, check the udev rule that gives this user access to /dev/hidraw*)");
    }
    for device in devices {
        println!(
            "{:04x}:{:04x}  usage page 0x{:04x} usage 0x{:04x}  serial {}  {} {}  {}",
            device.vendor_id,
            device.product_id,
            device.usage_page,
            device.usage,
            device.serial.as_deref().unwrap_or("-"),
            device.manufacturer.as_deref().unwrap_or(""),
            device.product.as_deref().unwrap_or(""),
            device.path
        );
    }
    Ok(())
}

fn record_device(device: &str, serial: Option<String>, usage_page: Option<u16>, out: &Path) -> Result<(), String> {
    let (vendor_id, product_id) = parse_device(device)?;
    let api = scanners::hid::open_api()?;
    let mut file = std::fs::File::create(out).map_err(|error| format!("cannot create {}: {error}", out.display()))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| error.to_string())?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    eprintln!("recording {device} to {}; scan codes now, Ctrl-C to stop", out.display());
    let wanted = scanners::hid::DeviceMatch { vendor_id, product_id, serial, usage_page };
    let written = scanners::hid::record(&api, &wanted, &mut file, &|| stop.load(std::sync::atomic::Ordering::Relaxed))?;
    eprintln!("{written} reports written to {}", out.display());
    Ok(())
}

fn check(config_path: &Path) -> Result<(), StartError> {
    let Prepared { config, catalog, methods, .. } = runtime::prepare(config_path)?;
    for refusal in &catalog.refused {
        println!("warning: {refusal}");
    }
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
    let method_ids: Vec<&str> = methods.iter().map(|method| method.id.as_str()).collect();
    println!(
        "{}: configuration is valid: {} client(s), {} register(s), {} scanner(s), methods: {}; plugins loaded: {}",
        config_path.display(),
        config.clients.len(),
        config.registers.len(),
        config.scanners.len(),
        if method_ids.is_empty() { "none".to_string() } else { method_ids.join(", ") },
        catalog.plugins.keys().cloned().collect::<Vec<_>>().join(", "),
    );
    Ok(())
}

fn list_plugins(config_path: &Path, as_json: bool) -> Result<(), StartError> {
    let config = crate::config::load(config_path)?;
    let catalog = crate::plugins::load_directory(&config.plugins)?;
    if as_json {
        println!("{}", catalog_json(&catalog));
    } else {
        print_catalog(&catalog, &config.plugins.dir);
    }
    Ok(())
}

fn catalog_json(catalog: &Catalog) -> serde_json::Value {
    let plugins: Vec<_> = catalog
        .plugins
        .values()
        .map(|plugin| {
            json!({
                "id": plugin.id,
                "version": plugin.version,
                "file": plugin.file,
                "sha256": format!("sha256:{}", hex::encode(plugin.sha256)),
                "methods": plugin.methods.iter().map(|method| json!({
                    "kind": method.kind,
                    "description": method.description,
                    "capabilities": method.capabilities.names(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let refused: Vec<_> = catalog.refused.iter().map(|refusal| json!({"file": refusal.file, "reason": refusal.reason})).collect();
    json!({"plugins": plugins, "refused": refused})
}

fn print_catalog(catalog: &Catalog, dir: &Path) {
    println!("plugin directory: {}", dir.display());
    if catalog.plugins.is_empty() {
        println!("no plugins loaded");
    }
    for plugin in catalog.plugins.values() {
        println!("{} {}  ({})", plugin.id, plugin.version, plugin.file.display());
        println!("  sha256:{}", hex::encode(plugin.sha256));
        for method in &plugin.methods {
            println!("  method {}: {}", method.kind, method.description);
            println!("    capabilities: {}", method.capabilities.names().join(", "));
        }
    }
    for refusal in &catalog.refused {
        println!("{refusal}");
    }
}
