//! The `[methods.<id>]` keys of a Smartum method (docs/configuration.md), validated at creation.

use posbridge_plugin_api::MethodError;
use posbridge_plugin_helpers::Settings;
use std::time::Duration;

/// Smartum benefit types; a venue accepts only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benefit {
    Exercise,
    Culture,
    Massage,
    Lunch,
    Health,
    Bike,
    Commuter,
}

impl Benefit {
    /// Every benefit with Smartum's lowercase name.
    pub const ALL: [(Benefit, &'static str); 7] = [
        (Benefit::Exercise, "exercise"),
        (Benefit::Culture, "culture"),
        (Benefit::Massage, "massage"),
        (Benefit::Lunch, "lunch"),
        (Benefit::Health, "health"),
        (Benefit::Bike, "bike"),
        (Benefit::Commuter, "commuter"),
    ];

    /// Parses Smartum's lowercase name.
    pub fn parse(name: &str) -> Option<Benefit> {
        Benefit::ALL.iter().find(|(_, known)| *known == name).map(|(benefit, _)| *benefit)
    }

    /// Smartum's lowercase name.
    pub fn name(self) -> &'static str {
        Benefit::ALL.iter().find(|(benefit, _)| *benefit == self).map(|(_, name)| *name).unwrap_or("exercise")
    }
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
    pub benefit: Benefit,
    pub eligible_label: String,
    pub jwt_keys: Vec<JwtKey>,
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

/// `ven_` or `tx_` followed by 16 ASCII letters and digits.
pub fn is_smartum_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|rest| rest.len() == 16 && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

impl SmartumSettings {
    /// Reads and checks every key, reporting all problems together.
    pub fn parse(json: &str) -> Result<SmartumSettings, Vec<MethodError>> {
        let mut s = Settings::parse(json)?;
        let api_url = s.provider_url("api_url", None);
        let client_id = s.required_string("client_id");
        let client_secret = s.required_secret("client_secret");
        let venue_id = s.required_string("venue_id");
        if let Some(venue) = &venue_id {
            if !is_smartum_id(venue, "ven_") {
                s.problem("venue_id", format!("expected \"ven_\" and 16 letters or digits (as in ven_pDmadXvNHA6XWoew), found {venue:?}"));
            }
        }
        let benefit_name = s.required_string("benefit");
        let benefit = benefit_name.as_deref().and_then(Benefit::parse);
        if let (Some(name), None) = (&benefit_name, benefit) {
            let known: Vec<&str> = Benefit::ALL.iter().map(|(_, name)| *name).collect();
            s.problem("benefit", format!("unknown benefit {name:?}; expected one of {}", known.join(", ")));
        }
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
        if jwt_keys.is_empty() {
            s.problem("jwt_keys", "at least one [[methods.<id>.jwt_keys]] entry (kid and pem_file) is needed to verify receipts");
        }
        s.finish()?;
        let missing = || vec![MethodError::new("invalid_config", "incomplete settings")];
        Ok(SmartumSettings {
            api_url: api_url.ok_or_else(missing)?.trim_end_matches('/').to_string(),
            client_id: client_id.ok_or_else(missing)?,
            client_secret: client_secret.ok_or_else(missing)?,
            venue_id: venue_id.ok_or_else(missing)?,
            benefit: benefit.ok_or_else(missing)?,
            eligible_label,
            jwt_keys,
            request_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_smartum_id("ven_pDmadXvNHA6XWoew", "ven_"));
        assert!(is_smartum_id("tx_R60D21hL60bj5N1v", "tx_"));
        assert!(!is_smartum_id("tx_R60D21hL60bj5N1", "tx_"));
        assert!(!is_smartum_id("ven_pDmadXvNHA6XWo-w", "ven_"));
    }

    #[test]
    fn every_problem_is_reported() {
        let problems = SmartumSettings::parse(r#"{"api_url": "ftp://x", "venue_id": "ven_short", "benefit": "sauna"}"#).unwrap_err();
        let fields: Vec<String> = problems.iter().filter_map(|p| p.field.clone().into_option()).map(|f| f.to_string()).collect();
        for expected in ["api_url", "client_id", "client_secret", "venue_id", "benefit", "jwt_keys"] {
            assert!(fields.iter().any(|field| field == expected), "{expected} not in {fields:?}");
        }
    }
}
