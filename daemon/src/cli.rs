//! The command line: `serve` (the default), `check` and `plugins`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::logging::{self, LogFormat};
use crate::plugins::Catalog;
use crate::runtime::{self, Prepared, StartError};
use crate::sandbox;

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
    /// List the plugins found in the plugin directory, with versions and capabilities.
    Plugins {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
enum SandboxAction {
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
    },
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.global.log_format, &cli.global.log_level);
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
            Command::Plugins { json } => list_plugins(&config, json).map_err(Into::into),
            Command::Sandbox { signing_key, action: None } => {
                let key = signing_key.unwrap_or_else(|| sandbox::default_signing_key(&config));
                sandbox::run(&config, &key).await.map_err(Into::into)
            }
            Command::Sandbox { action: Some(SandboxAction::Receipt { amount, venue, benefit }), .. } => {
                sandbox::receipt(&config, amount, venue, benefit).await.map_err(Into::into)
            }
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

fn check(config_path: &Path) -> Result<(), StartError> {
    let Prepared { config, catalog, methods } = runtime::prepare(config_path)?;
    for refusal in &catalog.refused {
        println!("warning: {refusal}");
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
