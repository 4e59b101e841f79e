//! The `[methods.<id>]` keys of a Stripe card method.

use std::collections::BTreeMap;

use posbridge_plugin_api::MethodError;
use posbridge_plugin_helpers::Settings;

/// The Stripe API version every request pins, unless configured otherwise: a response
/// shape never changes under a running shop.
pub const DEFAULT_STRIPE_VERSION: &str = "2024-06-20";

/// The default request budget with a test key: under Stripe's 25 requests/s in test mode.
pub const TEST_REQUESTS_PER_SECOND: u32 = 20;
/// The default request budget with a live key: under Stripe's 100 requests/s in live mode,
/// leaving room for the merchant's other software on the same account.
pub const LIVE_REQUESTS_PER_SECOND: u32 = 80;

/// How a connected account is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeType {
    /// On the connected account itself (`Stripe-Account` header).
    Direct,
    /// On the platform, transferred to the connected account (`transfer_data[destination]`;
    /// refunds reverse the transfer).
    Destination,
}

/// A Stripe method's validated settings.
#[derive(Clone)]
pub struct StripeSettings {
    pub api_url: String,
    pub secret_key: String,
    pub stripe_version: String,
    /// Charge for the merchant's connected account.
    pub connected_account: Option<String>,
    pub charge_type: ChargeType,
    /// The Terminal reader of registers not named in `readers`; without one, those
    /// registers get a payment page.
    pub reader: Option<String>,
    /// Register → the Terminal reader beside it.
    pub readers: BTreeMap<String, String>,
    /// The method's shared request budget towards Stripe.
    pub max_requests_per_second: u32,
    /// Where the payment page sends the customer after paying.
    pub success_url: String,
    /// Shown on the payment page and the card statement's description.
    pub description: String,
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("api_url", &self.api_url)
            .field("secret_key", &"***")
            .field("stripe_version", &self.stripe_version)
            .field("connected_account", &self.connected_account)
            .field("charge_type", &self.charge_type)
            .field("reader", &self.reader)
            .field("readers", &self.readers)
            .field("max_requests_per_second", &self.max_requests_per_second)
            .finish_non_exhaustive()
    }
}

fn check_prefix(s: &mut Settings, key: &str, value: &Option<String>, prefixes: &[&str], example: &str) {
    if let Some(value) = value {
        if !prefixes.iter().any(|prefix| value.starts_with(prefix)) {
            s.problem(key, format!("expected an id such as {example:?}, found {value:?}"));
        }
    }
}

impl StripeSettings {
    /// The reader for a register's card payments: its own, else the shop's default;
    /// `None`: a payment page.
    pub fn reader_for(&self, register: &str) -> Option<&str> {
        self.readers.get(register).or(self.reader.as_ref()).map(String::as_str)
    }

    /// Every configured reader, each once (for the connection check).
    pub fn all_readers(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.reader.iter().chain(self.readers.values()).map(String::as_str).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Reads and checks every key, reporting all problems together.
    pub fn parse(json: &str) -> Result<StripeSettings, Vec<MethodError>> {
        let mut s = Settings::parse(json)?;
        let api_url = s.provider_url("api_url", Some("https://api.stripe.com"));
        let secret_key = s.required_secret("secret_key");
        if let Some(key) = &secret_key {
            if !(key.starts_with("sk_") || key.starts_with("rk_")) {
                s.problem("secret_key", "expected a Stripe secret key (sk_…) or restricted key (rk_…)");
            }
        }
        let stripe_version = s.string("stripe_version").unwrap_or_else(|| DEFAULT_STRIPE_VERSION.to_string());
        let connected_account = s.string("connected_account");
        check_prefix(&mut s, "connected_account", &connected_account, &["acct_"], "acct_1Nv0FGQ9RKHgCVdK");
        let charge_type = match s.string("charge_type").as_deref() {
            None | Some("direct") => ChargeType::Direct,
            Some("destination") => ChargeType::Destination,
            Some(other) => {
                s.problem("charge_type", format!("expected \"direct\" or \"destination\", found {other:?}"));
                ChargeType::Direct
            }
        };
        if charge_type == ChargeType::Destination && connected_account.is_none() {
            s.problem("charge_type", "destination charges need connected_account");
        }
        let reader = s.string("reader");
        check_prefix(&mut s, "reader", &reader, &["tmr_"], "tmr_FDOt2wlRZEdpd7");
        let readers: BTreeMap<String, String> = s.strings_by_name("readers").into_iter().collect();
        for (register, id) in &readers {
            check_prefix(&mut s, &format!("readers.{register}"), &Some(id.clone()), &["tmr_"], "tmr_FDOt2wlRZEdpd7");
        }
        let test_key = secret_key.as_deref().is_some_and(|key| key.starts_with("sk_test_") || key.starts_with("rk_test_"));
        let max_requests_per_second = match s.unsigned("max_requests_per_second") {
            Some(rate @ 1..=10_000) => rate as u32,
            Some(other) => {
                s.problem("max_requests_per_second", format!("expected 1 to 10000 requests per second, found {other}"));
                TEST_REQUESTS_PER_SECOND
            }
            None if test_key => TEST_REQUESTS_PER_SECOND,
            None => LIVE_REQUESTS_PER_SECOND,
        };
        let success_url = s.string("success_url").unwrap_or_else(|| "https://stripe.com/".to_string());
        let description = s.string("description").unwrap_or_else(|| "Purchase".to_string());
        s.finish()?;
        let secret_key = secret_key.ok_or_else(|| vec![MethodError::new("invalid_config", "incomplete settings")])?;
        Ok(StripeSettings {
            api_url: api_url.ok_or_else(|| vec![MethodError::new("invalid_config", "incomplete settings")])?,
            secret_key,
            stripe_version,
            connected_account,
            charge_type,
            reader,
            readers,
            max_requests_per_second,
            success_url,
            description,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let ok = StripeSettings::parse(r#"{"secret_key": "sk_test_123"}"#).unwrap();
        assert_eq!(ok.api_url, "https://api.stripe.com");
        assert_eq!(ok.stripe_version, DEFAULT_STRIPE_VERSION);
        assert!(!format!("{ok:?}").contains("sk_test_123"));
        let problems = StripeSettings::parse(r#"{"secret_key": "pk_live", "reader": "rdr_1"}"#).unwrap_err();
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn readers_by_register_and_the_request_budget() {
        let settings = StripeSettings::parse(
            r#"{"secret_key": "sk_test_1", "reader": "tmr_Default", "readers": {"till-2": "tmr_Two", "till-3": "tmr_Default"}}"#,
        )
        .unwrap();
        assert_eq!(settings.reader_for("till-2"), Some("tmr_Two"));
        assert_eq!(settings.reader_for("till-1"), Some("tmr_Default"));
        assert_eq!(settings.all_readers(), vec!["tmr_Default", "tmr_Two"]);
        assert_eq!(settings.max_requests_per_second, TEST_REQUESTS_PER_SECOND);
        let live = StripeSettings::parse(r#"{"secret_key": "rk_live_1", "readers": {"till-1": "tmr_One"}}"#).unwrap();
        assert_eq!(live.max_requests_per_second, LIVE_REQUESTS_PER_SECOND);
        assert_eq!(live.reader_for("till-9"), None, "a register without a reader gets a payment page");
        let chosen = StripeSettings::parse(r#"{"secret_key": "sk_live_1", "max_requests_per_second": 5}"#).unwrap();
        assert_eq!(chosen.max_requests_per_second, 5);
        let problems = StripeSettings::parse(
            r#"{"secret_key": "sk_test_1", "readers": {"till-1": "rdr_x", "till-2": 7}, "max_requests_per_second": 0}"#,
        )
        .unwrap_err();
        let fields: Vec<String> = problems.iter().map(|p| p.field.clone().unwrap().to_string()).collect();
        assert_eq!(fields, vec!["readers.till-2", "readers.till-1", "max_requests_per_second"]);
    }
}
