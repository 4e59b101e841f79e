//! What the tool commands (`posbridge plugin test`, `posbridge inspect`) work on: one
//! configured method's plugin, loaded through the real loader (trust and ABI checks),
//! with the host services the daemon would lend it.

use std::path::{Path, PathBuf};

use super::{http_client, load_directory, resolve, HostServices, LoadedPlugin, MethodKind};
use crate::config::MethodConfig;

/// Why a tool command could not run at all (a refused code or a failed rule is its
/// answer instead).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    PluginDirectory(#[from] super::DirectoryError),
    #[error("no method {wanted:?} in the config (methods: {known})")]
    UnknownMethod { wanted: String, known: String },
    #[error("{0}")]
    Method(String),
    #[error("cannot write the report to {path}: {source}")]
    Report { path: PathBuf, source: std::io::Error },
    #[error("the command did not finish: {0}")]
    Aborted(String),
}

/// One configured method's loaded plugin and its host services.
pub struct ToolTarget {
    pub method: MethodConfig,
    pub plugin: LoadedPlugin,
    pub kind: MethodKind,
    /// HTTP (the daemon's client and proxy), clock and log, as the daemon lends them.
    pub services: HostServices,
}

impl ToolError {
    /// The problems a method's section has, in one line.
    pub fn problems(problems: Vec<crate::config::Problem>) -> ToolError {
        ToolError::Method(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    }
}

/// Loads the config and the plugin directory, and finds `method`'s plugin and kind.
/// Needs a tokio runtime (the host services run HTTP on it).
pub fn target(config_path: &Path, method: &str) -> Result<ToolTarget, ToolError> {
    let config = crate::config::load(config_path)?;
    let catalog = load_directory(&config.plugins)?;
    let method_config = config.methods.get(method).ok_or_else(|| ToolError::UnknownMethod {
        wanted: method.to_string(),
        known: config.methods.keys().cloned().collect::<Vec<_>>().join(", "),
    })?;
    let (plugin, kind) = resolve(&catalog, method_config).map_err(ToolError::problems)?;
    let http = http_client(config.server.proxy.as_deref()).map_err(|error| ToolError::Method(error.to_string()))?;
    let services = HostServices::new(&plugin.id, &method_config.id, http, tokio::runtime::Handle::current());
    Ok(ToolTarget { method: method_config.clone(), plugin: plugin.clone(), kind: kind.clone(), services })
}
