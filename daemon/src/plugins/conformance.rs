//! `posbridge plugin test`: the conformance rules of `posbridge-plugin-testkit` run on a
//! configured method whose plugin the real loader loaded (trust checks, ABI checks),
//! against the provider its config points at (an integrator's fake or a sandbox), with
//! the daemon's own HTTP client under the fault-injecting test host.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use posbridge_plugin_api::{Host, HttpRequest, RResult};
use posbridge_plugin_testkit::conformance::{self, CodeSource, Report, Subject};

use super::tool::{self, ToolError, ToolTarget};

/// What `posbridge plugin test` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `[methods.<id>]` to check.
    pub method: String,
    /// Where fresh codes come from: `POST {"amount", "currency"}` answers `{"code"}`.
    pub codes: Option<String>,
    /// Each test payment's amount, in cents.
    pub amount: u64,
    /// Where to write the report as JSON.
    pub out: Option<PathBuf>,
}

/// Loads the method's plugin, runs every rule, prints the report (and writes it to
/// `--out`). `Ok(report)` whether or not a rule failed; the caller sets the exit code.
pub async fn run(config_path: &Path, options: &Options) -> Result<Report, ToolError> {
    let ToolTarget { method, plugin, kind, services } = tool::target(config_path, &options.method)?;
    let runtime = tokio::runtime::Handle::current();
    let services = Arc::new(services);
    let module = plugin.module;
    let (method_id, kind_name, capabilities) = (method.id.clone(), kind.kind.clone(), kind.capabilities);
    let config_json = method.settings.json.to_string();
    let (codes_url, amount) = (options.codes.clone(), options.amount);
    println!("posbridge plugin test: method {method_id:?}, plugin {} {} ({})", plugin.id, plugin.version, plugin.file.display());
    let report = tokio::task::spawn_blocking(move || {
        let transport = Arc::new(move |request: &HttpRequest| services.http(request.clone()).into_result());
        let subject = Subject {
            method_id,
            kind: kind_name,
            capabilities,
            config_json,
            create: Box::new(move |setup| match module.create()(setup) {
                RResult::ROk(method) => Ok(method),
                RResult::RErr(problems) => Err(problems.into_iter().collect()),
            }),
            transport,
            codes: codes_url.map(|url| code_source(url, runtime)),
            amount,
        };
        conformance::run(&subject)
    })
    .await
    .map_err(|error| ToolError::Aborted(error.to_string()))?;
    println!("{report}");
    if let Some(path) = &options.out {
        let text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|source| ToolError::Report { path: path.clone(), source })?;
    }
    Ok(report)
}

/// Fresh codes from an integrator's fake (or the Smartum sandbox): `POST url` with
/// `{"amount", "currency"}`, answered by JSON holding `code` (or `receipt`).
fn code_source(url: String, runtime: tokio::runtime::Handle) -> CodeSource {
    let client = reqwest::Client::new();
    Box::new(move |amount| {
        runtime.block_on(async {
            let body = serde_json::json!({"amount": amount, "currency": "EUR"});
            let response = client.post(&url).json(&body).send().await.map_err(|error| format!("cannot reach {url}: {error}"))?;
            let status = response.status();
            let answer: serde_json::Value = response.json().await.map_err(|error| format!("{url} answered {status}: {error}"))?;
            answer["code"]
                .as_str()
                .or(answer["receipt"].as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("{url} answered {status} without a `code`: {answer}"))
        })
    })
}
