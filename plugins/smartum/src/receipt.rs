//! The three forms of a SmartumPay receipt code (docs/smartum.md): a signed JWS, a bare
//! transaction id, or a URL carrying it.

use crate::jws::{JwsError, KeySet, SignatureCheck};
use crate::settings::is_smartum_id;
use crate::wire::claims;

/// The claims of a signed receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptClaims {
    pub transaction_id: String,
    pub venue: String,
    pub benefit: String,
    pub amount: u64,
    pub currency: String,
    /// The signed issue time (`iat`), in milliseconds since the epoch.
    pub issued_at_ms: Option<i64>,
}

/// A scanned code, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// A JWS whose signature verified (unless the check was deferred).
    Signed(ReceiptClaims),
    /// A JWS whose signature verified (likewise) but whose claims are not in the assumed shape:
    /// the transaction id found in it, to be confirmed online; `why` says what was not
    /// understood.
    SignedUnreadable { transaction_id: String, why: String },
    /// A transaction id (bare or from a URL): confirmed online only.
    TransactionId(String),
}

/// Why a code is not a usable receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptError {
    /// Not any of the three forms, or claims missing.
    Invalid(String),
    /// A JWS that failed verification.
    Signature(JwsError),
}

/// Parses `code` and verifies a JWS against `keys` (unless `check` defers that).
pub fn parse(code: &str, keys: &KeySet, check: SignatureCheck) -> Result<Receipt, ReceiptError> {
    let code = code.trim();
    if is_smartum_id(code, "tx_") {
        return Ok(Receipt::TransactionId(code.to_string()));
    }
    if code.starts_with("https://") || code.starts_with("http://") {
        return transaction_id_from_url(code)
            .map(Receipt::TransactionId)
            .ok_or_else(|| ReceiptError::Invalid("the URL carries no Smartum transaction id".into()));
    }
    if code.matches('.').count() == 2 {
        let payload = keys.open(code, check).map_err(ReceiptError::Signature)?;
        return match claims_of(&payload) {
            Ok(claims) => Ok(Receipt::Signed(claims)),
            Err(why) => transaction_in(&payload)
                .map(|transaction_id| Receipt::SignedUnreadable { transaction_id, why: why.clone() })
                .ok_or_else(|| ReceiptError::Invalid(format!("the signed receipt names no Smartum transaction (tx_…): {why}"))),
        };
    }
    Err(ReceiptError::Invalid("not a SmartumPay receipt (expected a signed receipt, a tx_ id or a receipt URL)".into()))
}

fn transaction_id_from_url(url: &str) -> Option<String> {
    let without_fragment = url.split('#').next()?;
    let (path, query) = match without_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (without_fragment, None),
    };
    let from_query = query.into_iter().flat_map(|query| query.split('&')).find_map(|pair| pair.strip_prefix("tx="));
    let from_path = path.trim_end_matches('/').rsplit('/').next();
    [from_query, from_path].into_iter().flatten().find(|candidate| is_smartum_id(candidate, "tx_")).map(str::to_string)
}

/// The claims in the assumed shape, or what is missing. `iss` is not required: nothing
/// public says what Smartum puts there, and the signature already proves the issuer.
fn claims_of(payload: &serde_json::Value) -> Result<ReceiptClaims, String> {
    let text = |name: &str| payload.get(name).and_then(|value| value.as_str()).map(str::to_string);
    let missing = |name: &str| format!("no valid `{name}` claim");
    let transaction_id = text(claims::TRANSACTION).filter(|id| is_smartum_id(id, "tx_")).ok_or_else(|| missing(claims::TRANSACTION))?;
    Ok(ReceiptClaims {
        transaction_id,
        venue: text(claims::VENUE).ok_or_else(|| missing(claims::VENUE))?,
        benefit: text(claims::BENEFIT).ok_or_else(|| missing(claims::BENEFIT))?,
        amount: payload.get(claims::AMOUNT).and_then(|amount| amount.as_u64()).ok_or_else(|| missing(claims::AMOUNT))?,
        currency: text(claims::CURRENCY).ok_or_else(|| missing(claims::CURRENCY))?,
        issued_at_ms: payload.get(claims::ISSUED_AT).and_then(|seconds| seconds.as_i64()).map(|seconds| seconds.saturating_mul(1000)),
    })
}

/// A transaction id anywhere in a verified payload: under the assumed claim or an alias,
/// in a URL, or as any `tx_…` string.
fn transaction_in(payload: &serde_json::Value) -> Option<String> {
    let named = std::iter::once(claims::TRANSACTION).chain(claims::TRANSACTION_ALIASES);
    let by_name = named.filter_map(|name| payload.get(name).and_then(|value| value.as_str())).find(|id| is_smartum_id(id, "tx_"));
    by_name.map(str::to_string).or_else(|| {
        let mut strings = Vec::new();
        collect_strings(payload, &mut strings);
        strings.iter().find_map(|text| {
            let url = (text.starts_with("https://") || text.starts_with("http://")).then(|| transaction_id_from_url(text)).flatten();
            url.or_else(|| {
                text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .find(|word| is_smartum_id(word, "tx_"))
                    .map(str::to_string)
            })
        })
    })
}

fn collect_strings<'v>(value: &'v serde_json::Value, found: &mut Vec<&'v str>) {
    match value {
        serde_json::Value::String(text) => found.push(text),
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_strings(item, found)),
        serde_json::Value::Object(map) => map.values().for_each(|item| collect_strings(item, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_keys() -> KeySet {
        KeySet::from_pems(&[]).unwrap()
    }

    #[test]
    fn a_transaction_is_found_in_claims_of_another_shape() {
        let renamed = serde_json::json!({"transaction": "tx_R60D21hL60bj5N1v", "venue_id": "ven_x", "sum": 1200});
        assert_eq!(transaction_in(&renamed).as_deref(), Some("tx_R60D21hL60bj5N1v"));
        let in_url = serde_json::json!({"receipt": {"link": "https://pay.smartum.fi/r?tx=tx_abc-1"}});
        assert_eq!(transaction_in(&in_url).as_deref(), Some("tx_abc-1"));
        let in_text = serde_json::json!({"note": "paid (tx_Q9, exercise)"});
        assert_eq!(transaction_in(&in_text).as_deref(), Some("tx_Q9"));
        assert_eq!(transaction_in(&serde_json::json!({"sum": 5})), None);
        assert!(claims_of(&renamed).unwrap_err().contains("`jti`"));
    }

    #[test]
    fn the_signed_issue_time_is_read_in_milliseconds_and_is_optional() {
        let claims = serde_json::json!({"jti": "tx_R60D21hL60bj5N1v", "venue": "ven_x", "benefit": "exercise", "amount": 1200, "currency": "EUR", "iat": 1763800000});
        assert_eq!(claims_of(&claims).unwrap().issued_at_ms, Some(1_763_800_000_000));
        let mut without = claims.clone();
        without.as_object_mut().unwrap().remove("iat");
        assert_eq!(claims_of(&without).unwrap().issued_at_ms, None, "a receipt without iat still pays online");
    }

    #[test]
    fn bare_and_url_forms() {
        let tx = "tx_R60D21hL60bj5N1v";
        assert_eq!(parse(tx, &no_keys(), SignatureCheck::Verify), Ok(Receipt::TransactionId(tx.into())));
        assert_eq!(parse(&format!(" {tx}\n"), &no_keys(), SignatureCheck::Verify), Ok(Receipt::TransactionId(tx.into())));
        assert_eq!(
            parse(&format!("https://pay.smartum.fi/receipts/{tx}"), &no_keys(), SignatureCheck::Verify),
            Ok(Receipt::TransactionId(tx.into()))
        );
        assert_eq!(
            parse(&format!("https://pay.smartum.fi/r?lang=fi&tx={tx}#top"), &no_keys(), SignatureCheck::Verify),
            Ok(Receipt::TransactionId(tx.into()))
        );
        assert!(matches!(parse("https://example.com/nothing", &no_keys(), SignatureCheck::Verify), Err(ReceiptError::Invalid(_))));
        assert!(matches!(parse("hello", &no_keys(), SignatureCheck::Verify), Err(ReceiptError::Invalid(_))));
        assert_eq!(parse("tx_short", &no_keys(), SignatureCheck::Verify), Ok(Receipt::TransactionId("tx_short".into())), "no fixed length");
        assert!(matches!(parse("tx_", &no_keys(), SignatureCheck::Verify), Err(ReceiptError::Invalid(_))));
    }
}
