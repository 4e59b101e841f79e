//! The `[methods.<id>]` keys this plugin reads. Every problem is reported at once, each
//! naming its key, so posbridge shows the technician the line.

use posbridge_plugin_api::MethodError;
use posbridge_plugin_helpers::Settings;

/// What one configured method needs.
#[derive(Debug, Clone)]
pub struct VoucherSettings {
    /// The provider's API root, `https://…` (plain `http://` only to this machine).
    pub api_url: String,
    /// The API key (write `api_key_file = "…"` in the config; posbridge reads the file).
    pub api_key: String,
}

impl VoucherSettings {
    /// Reads the JSON posbridge passes in `MethodSetup::config_json`.
    pub fn parse(json: &str) -> Result<VoucherSettings, Vec<MethodError>> {
        let mut settings = Settings::parse(json)?;
        let api_url = settings.provider_url("api_url", None);
        let api_key = settings.required_secret("api_key");
        settings.finish()?;
        match (api_url, api_key) {
            (Some(api_url), Some(api_key)) => Ok(VoucherSettings { api_url, api_key }),
            _ => unreachable!("finish() reports every missing key"),
        }
    }
}
