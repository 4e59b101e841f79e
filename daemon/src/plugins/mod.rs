//! Plugins: loading libraries, creating the configured payment methods, and calling
//! them safely (on the blocking pool, with a deadline, panics already turned into
//! errors by the plugin side of the ABI).

mod adapter;
pub mod conformance;
mod host;
pub mod inspect;
mod loader;
pub mod template;
pub mod tool;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use posbridge_plugin_api::{Capabilities, HostBox, MethodError, MethodSetup, PaymentMethodBox, RResult, RString};

use crate::config::{Config, Problem};
use crate::payments::provider::{self, Abilities, ProviderError};
pub use host::{http_client, redact, HostServices};
pub use loader::{load_directory, load_directory_after, Catalog, DirectoryError, LoadedPlugin, MethodKind, Refusal};

/// A configured, created payment method, ready to be called.
#[derive(Clone)]
pub struct Method {
    pub id: String,
    pub plugin_id: String,
    pub plugin_version: String,
    pub kind: String,
    pub capabilities: Capabilities,
    /// The capabilities as the payment engine reads them (no ABI types).
    pub abilities: Abilities,
    pub timeout: Duration,
    /// Whether (and within which limits) signed receipts are taken while the provider
    /// cannot be reached.
    pub offline: Option<crate::config::OfflinePolicy>,
    inner: Arc<PaymentMethodBox>,
}

/// A plugin's failure, as the engine's plain [`provider::Refusal`].
pub(crate) fn refusal(error: MethodError) -> provider::Refusal {
    provider::Refusal {
        code: error.code.into_string(),
        message: error.message.into_string(),
        field: error.field.into_option().map(RString::into_string),
        retryable: error.retryable,
    }
}

impl Method {
    /// Calls the plugin on the blocking pool, bounded by the method's timeout.
    pub async fn call<T, F>(&self, operation: &'static str, call: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&PaymentMethodBox) -> RResult<T, MethodError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let started = std::time::Instant::now();
        let task = tokio::task::spawn_blocking(move || call(&inner).into_result());
        let result = match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(failure))) => Err(ProviderError::Failed(refusal(failure))),
            Ok(Err(join)) => Err(ProviderError::Aborted { method: self.id.clone(), operation, reason: join.to_string() }),
            Err(_) => Err(ProviderError::TimedOut { method: self.id.clone(), operation, after: self.timeout }),
        };
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(ProviderError::Failed(failure)) => failure.code.clone(),
            Err(ProviderError::TimedOut { .. }) => "timeout".to_string(),
            Err(ProviderError::Aborted { .. }) => "aborted".to_string(),
        };
        crate::metrics::record_plugin_call(&self.id, operation, &outcome, started.elapsed().as_secs_f64());
        result
    }
}

/// The payment methods of a configuration, by the id the POS uses, and the methods a
/// reload removed: those take no new payments but still refund and recover theirs.
#[derive(Clone, Default)]
pub struct Methods {
    by_id: BTreeMap<String, Method>,
    retired: BTreeMap<String, Method>,
}

impl Methods {
    /// The method the POS calls `id`, if the current config has it.
    pub fn get(&self, id: &str) -> Option<&Method> {
        self.by_id.get(id)
    }

    /// The method `id`, current or retired by a reload (for refunds and recovery of the
    /// payments it took).
    pub fn get_any(&self, id: &str) -> Option<&Method> {
        self.by_id.get(id).or_else(|| self.retired.get(id))
    }

    /// Every current method, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Method> {
        self.by_id.values()
    }

    /// These methods, keeping every method of `previous` that they drop as retired.
    pub fn succeeding(mut self, previous: &Methods) -> Methods {
        for (id, method) in previous.by_id.iter().chain(previous.retired.iter()) {
            if !self.by_id.contains_key(id) {
                self.retired.entry(id.clone()).or_insert_with(|| method.clone());
            }
        }
        self
    }
}

/// Creates every `[methods.<id>]` of `config` from the loaded plugins. Problems (missing
/// plugin, unknown kind, the plugin's complaints about its settings) come back together,
/// each at the line where the technician wrote the key.
pub fn create_methods(
    catalog: &Catalog,
    config: &Config,
    http: &reqwest::Client,
    runtime: &tokio::runtime::Handle,
) -> Result<Methods, Vec<Problem>> {
    let mut methods = Methods::default();
    let mut problems = Vec::new();
    for method_config in config.methods.values() {
        match create_method(catalog, method_config, http, runtime) {
            Ok(method) => {
                methods.by_id.insert(method.id.clone(), method);
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    if problems.is_empty() {
        Ok(methods)
    } else {
        Err(problems)
    }
}

fn create_method(
    catalog: &Catalog,
    config: &crate::config::MethodConfig,
    http: &reqwest::Client,
    runtime: &tokio::runtime::Handle,
) -> Result<Method, Vec<Problem>> {
    let (plugin, kind) = resolve(catalog, config)?;
    let abilities = adapter::abilities(kind.capabilities);
    if config.offline.is_some() && !abilities.scan {
        let key = format!("methods.{}.offline", config.id);
        return Err(vec![Problem::new(Some(config.at.clone()), key, "offline acceptance is for methods that take scanned receipts")]);
    }
    let host = HostBox::of(HostServices::new(&plugin.id, &config.id, http.clone(), runtime.clone()));
    let inner = instantiate(plugin, kind, config, host)?;
    Ok(Method {
        id: config.id.clone(),
        plugin_id: plugin.id.clone(),
        plugin_version: plugin.version.clone(),
        kind: kind.kind.clone(),
        capabilities: kind.capabilities,
        abilities,
        timeout: config.timeout,
        offline: config.offline,
        inner: Arc::new(inner),
    })
}

/// The loaded plugin and the kind a `[methods.<id>]` section names.
pub(crate) fn resolve<'a>(
    catalog: &'a Catalog,
    config: &crate::config::MethodConfig,
) -> Result<(&'a LoadedPlugin, &'a MethodKind), Vec<Problem>> {
    let key = |name: &str| format!("methods.{}.{name}", config.id);
    let problem = |name: &str, message: String| Problem::new(Some(config.at.clone()), key(name), message);
    let Some(plugin) = catalog.plugins.get(&config.plugin) else {
        let why = catalog.refused.iter().map(|refusal| refusal.to_string()).collect::<Vec<_>>();
        let detail = if why.is_empty() { String::new() } else { format!(" (refused files: {})", why.join("; ")) };
        return Err(vec![problem("plugin", format!("no loaded plugin has id {:?}{detail}", config.plugin))]);
    };
    let kind = match (&config.kind, plugin.methods.as_slice()) {
        (Some(kind), kinds) => kinds.iter().find(|known| &known.kind == kind).ok_or_else(|| {
            let known: Vec<&str> = kinds.iter().map(|known| known.kind.as_str()).collect();
            vec![problem("kind", format!("plugin {:?} provides no kind {kind:?} (it provides: {})", plugin.id, known.join(", ")))]
        })?,
        (None, [only]) => only,
        (None, kinds) => {
            let known: Vec<&str> = kinds.iter().map(|known| known.kind.as_str()).collect();
            return Err(vec![problem(
                "kind",
                format!("plugin {:?} provides several kinds; choose one with kind = one of {}", plugin.id, known.join(", ")),
            )]);
        }
    };
    Ok((plugin, kind))
}

/// The setup a plugin creates the method of `config` from, on `host`.
pub(crate) fn setup(config: &crate::config::MethodConfig, kind: &MethodKind, host: HostBox) -> MethodSetup {
    MethodSetup {
        method_id: RString::from(config.id.as_str()),
        kind: RString::from(kind.kind.as_str()),
        config_json: RString::from(config.settings.json.to_string()),
        host,
        extensions: Default::default(),
    }
}

/// Asks the plugin to create the method; its complaints come back at their lines.
pub(crate) fn instantiate(
    plugin: &LoadedPlugin,
    kind: &MethodKind,
    config: &crate::config::MethodConfig,
    host: HostBox,
) -> Result<PaymentMethodBox, Vec<Problem>> {
    plugin.module.create()(setup(config, kind, host))
        .into_result()
        .map_err(|complaints| complaints.iter().map(|complaint| locate(config, complaint)).collect())
}

/// A plugin's complaint about its settings, placed at the line of the key it names.
fn locate(config: &crate::config::MethodConfig, complaint: &MethodError) -> Problem {
    let field = complaint.field.as_ref().map(|field| field.to_string()).into_option();
    let at = field.as_ref().and_then(|field| config.settings.locations.get(field)).cloned().unwrap_or_else(|| config.at.clone());
    let key = match &field {
        Some(field) => format!("methods.{}.{field}", config.id),
        None => format!("methods.{}", config.id),
    };
    Problem::new(Some(at), key, format!("{} (plugin {:?}: {})", complaint.message, config.plugin, complaint.code))
}
