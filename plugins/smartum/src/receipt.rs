//! The three forms of a SmartumPay receipt code (docs/smartum.md): a signed JWS, a bare
//! transaction id, or a URL carrying it.

use crate::jws::{JwsError, KeySet};
use crate::settings::is_smartum_id;

/// The claims of a signed receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptClaims {
    pub transaction_id: String,
    pub venue: String,
    pub benefit: String,
    pub amount: u64,
    pub currency: String,
}

/// A scanned code, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// A JWS whose signature verified.
    Signed(ReceiptClaims),
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

/// Parses `code` and verifies a JWS against `keys`.
pub fn parse(code: &str, keys: &KeySet) -> Result<Receipt, ReceiptError> {
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
        let claims = keys.verify(code).map_err(ReceiptError::Signature)?;
        return claims_of(&claims).map(Receipt::Signed);
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

fn claims_of(claims: &serde_json::Value) -> Result<ReceiptClaims, ReceiptError> {
    let text = |name: &str| claims.get(name).and_then(|value| value.as_str()).map(str::to_string);
    let missing = |name: &str| ReceiptError::Invalid(format!("the signed receipt has no valid `{name}` claim"));
    if text("iss").as_deref() != Some("smartum") {
        return Err(missing("iss"));
    }
    let transaction_id = text("jti").filter(|id| is_smartum_id(id, "tx_")).ok_or_else(|| missing("jti"))?;
    Ok(ReceiptClaims {
        transaction_id,
        venue: text("venue").ok_or_else(|| missing("venue"))?,
        benefit: text("benefit").ok_or_else(|| missing("benefit"))?,
        amount: claims.get("amount").and_then(|amount| amount.as_u64()).ok_or_else(|| missing("amount"))?,
        currency: text("currency").ok_or_else(|| missing("currency"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_keys() -> KeySet {
        KeySet::from_pems(&[]).unwrap()
    }

    #[test]
    fn bare_and_url_forms() {
        let tx = "tx_R60D21hL60bj5N1v";
        assert_eq!(parse(tx, &no_keys()), Ok(Receipt::TransactionId(tx.into())));
        assert_eq!(parse(&format!(" {tx}\n"), &no_keys()), Ok(Receipt::TransactionId(tx.into())));
        assert_eq!(parse(&format!("https://pay.smartum.fi/receipts/{tx}"), &no_keys()), Ok(Receipt::TransactionId(tx.into())));
        assert_eq!(parse(&format!("https://pay.smartum.fi/r?lang=fi&tx={tx}#top"), &no_keys()), Ok(Receipt::TransactionId(tx.into())));
        assert!(matches!(parse("https://example.com/nothing", &no_keys()), Err(ReceiptError::Invalid(_))));
        assert!(matches!(parse("hello", &no_keys()), Err(ReceiptError::Invalid(_))));
        assert!(matches!(parse("tx_short", &no_keys()), Err(ReceiptError::Invalid(_))));
    }
}
