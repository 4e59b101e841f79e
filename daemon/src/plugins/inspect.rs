//! `posbridge inspect`: what a method's plugin understands of a code, without redeeming
//! it — the plugin's own explanation (form, header, claims, signature, checks, what the
//! provider would be asked) when it gives one, else the inspected record. Offline: the
//! plugin's `inspect_code` makes no request.

use std::path::Path;
use std::sync::Arc;

use posbridge_plugin_api::{InspectedCode, PaymentContext, RString};
use serde_json::Value;

use super::instantiate;
use super::tool::{self, ToolError};

/// Loads `method`'s plugin and asks it about `code`; answers the lines to print and
/// whether the code was accepted.
pub async fn run(config_path: &Path, method: &str, code: String) -> Result<(Vec<String>, bool), ToolError> {
    let target = tool::target(config_path, method)?;
    let host = posbridge_plugin_api::HostBox::of(target.services);
    let created = instantiate(&target.plugin, &target.kind, &target.method, host).map_err(ToolError::problems)?;
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
    .map_err(|error| ToolError::Aborted(error.to_string()))?;
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
