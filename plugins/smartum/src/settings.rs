//! The `[methods.<id>]` keys of a Smartum method (docs/configuration.md), validated at creation.

use posbridge_plugin_api::MethodError;
use posbridge_plugin_helpers::Settings;
use std::time::Duration;

/// Benefit names Smartum is known to use: `exercise`, `culture`, `massage`, `lunch` seen
/// on the wire; `health`, `bike`, `commuter` only in prose. A venue's benefit outside
/// this list is accepted with a warning (Smartum may name more than is public).
pub const KNOWN_BENEFITS: [&str; 7] = ["exercise", "culture", "massage", "lunch", "health", "bike", "commuter"];

/// Who decides whether a refund is still possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundWindow {
    /// Refused here unless asked for on the payment's day in Europe/Helsinki (no request
    /// is sent for a late refund).
    SameDayHelsinki,
    /// Always sent; Smartum's answer decides.
    Provider,
}

/// One of Smartum's published ES512 public keys.
#[derive(Debug, Clone)]
pub struct JwtKey {
    pub kid: String,
    pub pem: String,
}

/// A Smartum method's validated settings.
#[derive(Clone)]
pub struct SmartumSettings {
    pub api_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub venue_id: String,
    /// The benefit this venue takes, as Smartum names it.
    pub benefit: String,
    pub eligible_label: String,
    pub refund_window: RefundWindow,
    pub jwt_keys: Vec<JwtKey>,
    /// A JWKS document of Smartum's keys (`jwks_file = "…"` in the config).
    pub jwks: Option<String>,
    /// Where Smartum publishes its JWKS, fetched at start and by `posbridge doctor`.
    pub jwks_url: Option<String>,
    /// Per request to Smartum (the host's method timeout bounds the whole call).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for SmartumSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartumSettings")
            .field("api_url", &self.api_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("venue_id", &self.venue_id)
            .field("benefit", &self.benefit)
            .finish_non_exhaustive()
    }
}

/// `ven_` or `tx_` followed by one or more URL-safe characters (letters, digits, `-`,
/// `_`). Ids seen so far have 16 letters and digits, but nothing public fixes a length.
pub fn is_smartum_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

impl SmartumSettings {
    /// Reads and checks every key, reporting all problems together, and warnings for
    /// the technician (which do not stop the method) whether or not there are problems.
    pub fn parse(json: &str) -> (Result<SmartumSettings, Vec<MethodError>>, Vec<String>) {
        let mut warnings = Vec::new();
        let settings = Self::read(json, &mut warnings);
        (settings, warnings)
    }

    fn read(json: &str, warnings: &mut Vec<String>) -> Result<SmartumSettings, Vec<MethodError>> {
        let mut s = Settings::parse(json)?;
        let api_url = s.provider_url("api_url", None);
        let client_id = s.required_string("client_id");
        let client_secret = s.required_secret("client_secret");
        let venue_id = s.required_string("venue_id");
        if let Some(venue) = &venue_id {
            if !is_smartum_id(venue, "ven_") {
                s.problem("venue_id", format!("expected \"ven_\" and letters or digits (as in ven_pDmadXvNHA6XWoew), found {venue:?}"));
            }
        }
        let benefit = s.required_string("benefit");
        if let Some(name) = benefit.as_deref().filter(|name| !KNOWN_BENEFITS.contains(name)) {
            warnings.push(format!(
                "benefit {name:?} is not one Smartum is known to use ({}); receipts must name it exactly",
                KNOWN_BENEFITS.join(", ")
            ));
        }
        let refund_window = match s.string("refund_window").as_deref() {
            None | Some("same_day_helsinki") => RefundWindow::SameDayHelsinki,
            Some("provider") => RefundWindow::Provider,
            Some(other) => {
                s.problem("refund_window", format!("expected \"same_day_helsinki\" or \"provider\", found {other:?}"));
                RefundWindow::SameDayHelsinki
            }
        };
        let eligible_label = s.string("eligible_label").unwrap_or_else(|| "smartum".to_string());
        let request_timeout = Duration::from_millis(s.unsigned("request_timeout_ms").unwrap_or(5_000));
        let jwt_keys = s.tables("jwt_keys", |key| {
            let kid = key.required_string("kid");
            let pem = key.required_string("pem");
            if let Some(pem) = &pem {
                if !pem.contains("-----BEGIN PUBLIC KEY-----") {
                    key.problem("pem", "expected a PEM public key (-----BEGIN PUBLIC KEY-----)");
                }
            }
            Some(JwtKey { kid: kid?, pem: pem? })
        });
        let jwks = s.string("jwks");
        let jwks_url = if s.has("jwks_url") { s.provider_url("jwks_url", None) } else { None };
        if jwt_keys.is_empty() && jwks.is_none() && jwks_url.is_none() {
            s.problem(
                "jwt_keys",
                "Smartum's public keys are needed to verify receipts: [[methods.<id>.jwt_keys]] entries (kid and pem_file), \
                 jwks_file (a JWKS document) or jwks_url",
            );
        }
        s.finish()?;
        let missing = || vec![MethodError::new("invalid_config", "incomplete settings")];
        let settings = SmartumSettings {
            api_url: api_url.ok_or_else(missing)?.trim_end_matches('/').to_string(),
            client_id: client_id.ok_or_else(missing)?,
            client_secret: client_secret.ok_or_else(missing)?,
            venue_id: venue_id.ok_or_else(missing)?,
            benefit: benefit.ok_or_else(missing)?,
            eligible_label,
            refund_window,
            jwt_keys,
            jwks,
            jwks_url,
            request_timeout,
        };
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_smartum_id("ven_pDmadXvNHA6XWoew", "ven_"));
        assert!(is_smartum_id("tx_R60D21hL60bj5N1v", "tx_"));
        assert!(is_smartum_id("tx_R60D21hL60bj5N1", "tx_"), "any length");
        assert!(is_smartum_id("ven_pDmadXvNHA6XWo-w_2", "ven_"), "URL-safe characters");
        assert!(!is_smartum_id("tx_", "tx_"));
        assert!(!is_smartum_id("tx_a/b", "tx_"));
        assert!(!is_smartum_id("ven_abc", "tx_"));
    }

    #[test]
    fn every_problem_is_reported() {
        let problems = SmartumSettings::parse(r#"{"api_url": "ftp://x", "venue_id": "ven_sh/rt", "refund_window": "week"}"#).0.unwrap_err();
        let fields: Vec<String> = problems.iter().filter_map(|p| p.field.clone().into_option()).map(|f| f.to_string()).collect();
        for expected in ["api_url", "client_id", "client_secret", "venue_id", "benefit", "refund_window", "jwt_keys"] {
            assert!(fields.iter().any(|field| field == expected), "{expected} not in {fields:?}");
        }
    }

    #[test]
    fn an_unknown_benefit_is_a_warning_not_an_error() {
        let pem = include_str!("../../../config/sandbox/smartum-es512.pem").replace('\n', "\\n");
        let json = format!(
            r#"{{"api_url": "https://api.smartum.fi", "client_id": "c", "client_secret": "s", "venue_id": "ven_x", "benefit": "sauna", "jwt_keys": [{{"kid": "k", "pem": "{pem}"}}]}}"#
        );
        let (settings, warnings) = SmartumSettings::parse(&json);
        let settings = settings.expect("accepted");
        assert_eq!((settings.benefit.as_str(), settings.refund_window), ("sauna", RefundWindow::SameDayHelsinki));
        assert!(warnings[0].contains("\"sauna\" is not one Smartum is known to use"), "{warnings:?}");
    }
}
