//! Test-only plugin: every payment operation panics. The host must turn each panic into
//! an error and keep serving. `eligible_amount` answers normally unless a line carries
//! the label `panic`, so a test can tell a working call from a panicking one. With
//! `http_on_create = "<url>"` it GETs the URL through the host while it is created (a
//! plugin may check its credentials there): the host must allow it.

use posbridge_plugin_api::{
    export_plugin, Capabilities, CartLine, HttpRequest, InspectedCode, Manifest, MethodError, MethodInfo, MethodSetup, PaymentContext,
    PaymentMethod, Plugin, RString, RVec,
};

pub struct PanickyPlugin;
pub struct PanickyMethod;

impl Plugin for PanickyPlugin {
    type Method = PanickyMethod;

    fn manifest() -> Manifest {
        Manifest {
            id: RString::from("panicky"),
            version: RString::from(env!("CARGO_PKG_VERSION")),
            methods: RVec::from(vec![MethodInfo {
                kind: RString::from("panicky"),
                capabilities: Capabilities::SCAN,
                description: RString::from("test plugin that panics"),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn create(setup: MethodSetup) -> Result<PanickyMethod, Vec<MethodError>> {
        if setup.config_json.contains("\"panic_on_create\":true") {
            panic!("panicky plugin refuses to be created");
        }
        let settings: serde_json::Value = serde_json::from_str(setup.config_json.as_str()).unwrap_or_default();
        if let Some(url) = settings.get("http_on_create").and_then(|url| url.as_str()) {
            let request = HttpRequest {
                method: RString::from("GET"),
                url: RString::from(url),
                headers: RVec::new(),
                body: RVec::new(),
                timeout_ms: 5000,
                ..Default::default()
            };
            let answer = setup.host.http(request).into_result();
            let status = answer.map_err(|error| vec![MethodError::new("provider_unavailable", format!("{error:?}"))])?.status;
            setup.host.log(posbridge_plugin_api::LogLevel::INFO, format!("create reached {url}: HTTP {status}").as_str().into());
        }
        Ok(PanickyMethod)
    }
}

impl PaymentMethod for PanickyMethod {
    fn eligible_amount(&self, lines: &[CartLine]) -> Result<u64, MethodError> {
        if lines.iter().any(|line| line.labels.iter().any(|label| label.as_str() == "panic")) {
            panic!("panicky plugin panicked in eligible_amount");
        }
        Ok(lines.iter().map(|line| line.amount).sum())
    }

    fn inspect_code(&self, _payment: &PaymentContext, code: &str) -> Result<InspectedCode, MethodError> {
        panic!("panicky plugin panicked on code {code:?}");
    }
}

export_plugin!(PanickyPlugin);
