//! `posbridge inspect`: what a method's plugin understands of a code, without redeeming
//! it — the plugin's own explanation (form, header, claims, signature, checks, what the
//! provider would be asked) when it gives one, else the inspected record. Offline: the
//! plugin's `inspect_code` makes no request.

use std::path::Path;
use std::sync::Arc;

use posbridge_plugin_api::{InspectedCode, PaymentContext, RString};
use serde_json::Value;

use super::conformance::ConformanceError as InspectError;
use super::{http_client, instantiate, load_directory, resolve, HostServices};

/// Loads `method`'s plugin and asks it about `code`; answers the lines to print and
/// whether the code was accepted.
pub async fn run(config_path: &Path, method: &str, code: String) -> Result<(Vec<String>, bool), InspectError> {
    let config = crate::config::load(config_path)?;
    let catalog = load_directory(&config.plugins)?;
    let method_config = config.methods.get(method).ok_or_else(|| InspectError::UnknownMethod {
        wanted: method.to_string(),
        known: config.methods.keys().cloned().collect::<Vec<_>>().join(", "),
    })?;
    let (plugin, kind) = resolve(&catalog, method_config).map_err(problems)?;
    let http = http_client(config.server.proxy.as_deref()).map_err(|error| InspectError::Method(error.to_string()))?;
    let services = HostServices::new(&plugin.id, &method_config.id, http, tokio::runtime::Handle::current());
    let created = instantiate(plugin, kind, method_config, posbridge_plugin_api::HostBox::of(services)).map_err(problems)?;
    let created = Arc::new(created);
    let answer = tokio::task::spawn_blocking(move || {
        // A payment that may take anything: inspect reports the code, not a purchase.
        let payment = PaymentContext {
            payment_id: RString::from("pay_inspect"),
            attempt_id: RString::from("pay_inspect-0"),
            register: RString::from("inspect"),
            currency: RString::from("EUR"),
            amount_due: u64::from(u32::MAX),
            eligible_amount: u64::from(u32::MAX),
            deadline_unix_ms: i64::MAX / 2,
            ..Default::default()
        };
        created.inspect_code(&payment, code.as_str().into()).into_result()
    })
    .await
    .map_err(|error| InspectError::Aborted(error.to_string()))?;
    let accepted = answer.is_ok();
    let explanation = match &answer {
        Ok(inspected) => inspected.extensions.get(InspectedCode::EXPLANATION),
        Err(error) => error.extensions.get(InspectedCode::EXPLANATION),
    };
    let lines = match explanation.and_then(|text| serde_json::from_str::<Value>(text).ok()) {
        Some(explanation) => render(&explanation),
        None => plain(&answer),
    };
    Ok((lines, accepted))
}

fn problems(problems: Vec<crate::config::Problem>) -> InspectError {
    InspectError::Method(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

/// The explanation as `key: value` lines, known keys first, in a fixed order.
fn render(explanation: &Value) -> Vec<String> {
    const ORDER: [&str; 8] = ["form", "header", "signature", "claims", "transaction_id", "checks", "online", "result"];
    let Some(object) = explanation.as_object() else { return vec![explanation.to_string()] };
    let known = ORDER.iter().filter_map(|key| object.get(*key).map(|value| (*key, value)));
    let others = object.iter().filter(|(key, _)| !ORDER.contains(&key.as_str())).map(|(key, value)| (key.as_str(), value));
    known.chain(others).map(|(key, value)| format!("{:<17}{}", format!("{key}:"), text(value))).collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

/// What any plugin answers, for one that gives no explanation.
fn plain(answer: &Result<InspectedCode, posbridge_plugin_api::MethodError>) -> Vec<String> {
    match answer {
        Ok(inspected) => vec![
            format!("receipt key:     {}", inspected.receipt_key),
            format!("amount:          {}", inspected.amount.into_option().map_or("not stated".to_string(), |amount| amount.to_string())),
            format!("signature:       {}", if inspected.signature_verified { "verified" } else { "none" }),
            "result:          accepted: scanning it at a payment redeems it".to_string(),
        ],
        Err(error) => vec![format!("result:          refused: {}: {}", error.code, error.message)],
    }
}
