//! Config hot reload: the files are watched (and SIGHUP asks too); a change is debounced,
//! then validated through the same steps as start-up (config → plugin directory →
//! methods). Valid: the new snapshot is swapped in whole (requests in flight finish on
//! the one they started with) and a `config.reloaded` event is recorded. Invalid: every
//! problem is logged with file and line, and the running config stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde_json::json;
use tokio::sync::mpsc;

use crate::api::AppState;
use crate::config::{self, Config, ConfigError};
use crate::payments::Payments;
use crate::plugins::{self, Catalog};
use crate::scanners::Scanners;

/// Changes closer together than this are one reload (editors write files in steps).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What a reload works from: the running config and plugin catalog.
pub struct Reloader {
    path: PathBuf,
    config: Config,
    catalog: Catalog,
    http: reqwest::Client,
    payments: Arc<Payments>,
    state: Arc<AppState>,
}

impl Reloader {
    /// A reloader for the daemon started from `config` and `catalog`.
    pub fn new(
        path: &Path,
        config: Config,
        catalog: Catalog,
        http: reqwest::Client,
        payments: Arc<Payments>,
        state: Arc<AppState>,
    ) -> Self {
        Reloader { path: path.to_path_buf(), config, catalog, http, payments, state }
    }

    /// Starts watching the config files and `conf.d/`, and SIGHUP, now (so no change
    /// made after start-up is missed), and answers the loop that reloads on changes
    /// until the daemon stops.
    pub fn start(mut self) -> impl std::future::Future<Output = ()> {
        let (changed, mut changes) = mpsc::unbounded_channel::<()>();
        let mut watcher = match self.watch(changed.clone()) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the config files; reload with SIGHUP");
                None
            }
        };
        let mut watching_conf_d = false;
        self.watch_conf_d(watcher.as_mut(), &mut watching_conf_d);
        spawn_sighup(changed);
        async move {
            while changes.recv().await.is_some() {
                // Let the burst of writes settle, then reload once.
                while tokio::time::timeout(DEBOUNCE, changes.recv()).await.is_ok_and(|more| more.is_some()) {}
                self.watch_conf_d(watcher.as_mut(), &mut watching_conf_d);
                self.reload().await;
            }
        }
    }

    /// `conf.d/` may appear after start-up: watch it before reading it, so no write is
    /// missed.
    fn watch_conf_d(&self, watcher: Option<&mut notify::RecommendedWatcher>, watching: &mut bool) {
        if let Some(watcher) = watcher.filter(|_| !*watching) {
            let conf_d = self.conf_d();
            *watching = conf_d.is_dir() && watcher.watch(&conf_d, RecursiveMode::NonRecursive).is_ok();
        }
    }

    fn config_dir(&self) -> PathBuf {
        self.path.parent().map(Path::to_path_buf).filter(|dir| !dir.as_os_str().is_empty()).unwrap_or_else(|| PathBuf::from("."))
    }

    fn conf_d(&self) -> PathBuf {
        self.config_dir().join("conf.d")
    }

    /// Watches the main file's directory for the main file and `conf.d` itself, and
    /// `conf.d/` (once it exists) for `*.toml`.
    fn watch(&self, changed: mpsc::UnboundedSender<()>) -> notify::Result<notify::RecommendedWatcher> {
        let file_name = self.path.file_name().map(|name| name.to_os_string());
        let conf_d = self.conf_d();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let relevant = event.paths.iter().any(|path| {
                path.file_name().map(|name| name.to_os_string()) == file_name
                    || path == &conf_d
                    || (path.starts_with(&conf_d) && path.extension().is_some_and(|ext| ext == "toml"))
            });
            if relevant && !event.kind.is_access() {
                let _ = changed.send(());
            }
        })?;
        watcher.watch(&self.config_dir(), RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }

    /// One reload attempt.
    pub async fn reload(&mut self) {
        match self.prepare() {
            Ok((config, catalog, methods)) => self.apply(config, catalog, methods).await,
            Err(error) => {
                for problem in &error.0 {
                    tracing::error!(problem = %problem, "config reload refused; the running config stays");
                }
                crate::metrics::record_reload(false);
                self.state.set_config_error(Some(error.to_string()));
            }
        }
    }

    fn prepare(&self) -> Result<(Config, Catalog, plugins::Methods), ConfigError> {
        let (config, mut problems) = config::load_with_problems(&self.path);
        let Some(config) = config else { return Err(ConfigError(problems)) };
        let catalog = plugins::load_directory_after(&config.plugins, &self.catalog)
            .map_err(|error| ConfigError(vec![config::Problem::new(None, "plugins.dir", error.to_string())]))?;
        for refusal in catalog.refused.iter().filter(|refusal| !self.catalog.refused.contains(refusal)) {
            tracing::warn!(file = %refusal.file.display(), reason = %refusal.reason, "plugin refused");
        }
        match plugins::create_methods(&catalog, &config, &self.http, &tokio::runtime::Handle::current()) {
            Ok(methods) if problems.is_empty() => Ok((config, catalog, methods)),
            Ok(_) => Err(ConfigError(problems)),
            Err(mut method_problems) => {
                problems.append(&mut method_problems);
                Err(ConfigError(problems))
            }
        }
    }

    async fn apply(&mut self, config: Config, catalog: Catalog, methods: plugins::Methods) {
        for (what, before, after) in [
            ("server.listen", self.config.server.listen.to_string(), config.server.listen.to_string()),
            ("store.path", self.config.store.path.display().to_string(), config.store.path.display().to_string()),
            ("server.max_body_bytes", self.config.server.max_body_bytes.to_string(), config.server.max_body_bytes.to_string()),
        ] {
            if before != after {
                tracing::warn!(key = what, "changed in the config; it takes effect after a restart");
            }
        }
        let method_ids: Vec<String> = methods.iter().map(|method| method.id.clone()).collect();
        self.payments.replace_methods(methods);
        let scanners_changed =
            format!("{:?}{:?}", self.config.scanners, self.config.registers) != format!("{:?}{:?}", config.scanners, config.registers);
        let scanners = scanners_changed.then(|| Scanners::start(&config, self.payments.clone()));
        self.state.reconfigure(&config, catalog.clone(), scanners);
        let plugins: Vec<String> = catalog.plugins.keys().cloned().collect();
        self.config = config;
        self.catalog = catalog;
        crate::metrics::record_reload(true);
        tracing::info!(methods = ?method_ids, plugins = ?plugins, "config reloaded");
        let event = json!({"file": self.path, "methods": method_ids, "plugins": plugins, "scanners_restarted": scanners_changed});
        if let Err(error) = self.payments.announce("config.reloaded", event).await {
            tracing::error!(%error, "cannot record the config.reloaded event");
        }
    }
}

#[cfg(unix)]
fn spawn_sighup(changed: mpsc::UnboundedSender<()>) {
    tokio::spawn(async move {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            if changed.send(()).is_err() {
                return;
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_sighup(_changed: mpsc::UnboundedSender<()>) {}
