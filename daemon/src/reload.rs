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
use crate::config::ConfigError;
use crate::payments::Payments;
use crate::runtime::{self, StartError};
use crate::scanners::Scanners;
use crate::snapshot::{Live, Snapshot};

/// Changes closer together than this are one reload (editors write files in steps).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What a reload works from: the running snapshot.
pub struct Reloader {
    path: PathBuf,
    live: Live,
    payments: Arc<Payments>,
    state: Arc<AppState>,
}

impl Reloader {
    /// A reloader for the daemon running `live`.
    pub fn new(path: &Path, live: Live, payments: Arc<Payments>, state: Arc<AppState>) -> Self {
        Reloader { path: path.to_path_buf(), live, payments, state }
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
        let previous = self.live.load_full();
        // Off the async workers: a plugin's `create` may wait on the host's HTTP, whose
        // I/O these workers drive.
        let (path, before) = (self.path.clone(), previous.clone());
        let prepared = tokio::task::spawn_blocking(move || runtime::prepare_config(&path, Some(&before.catalog))).await;
        let prepared = prepared.unwrap_or_else(|error| Err(StartError::Recovery(format!("the reload stopped: {error}"))));
        match prepared {
            Ok((config, catalog, methods)) => self.apply(&previous, Snapshot::build(config, catalog, methods, Some(&previous))).await,
            Err(error) => {
                let problems = match &error {
                    StartError::Config(ConfigError(problems)) => problems.iter().map(ToString::to_string).collect(),
                    other => vec![other.to_string()],
                };
                for problem in &problems {
                    tracing::error!(problem = %problem, "config reload refused; the running config stays");
                }
                crate::metrics::record_reload(false);
                self.state.set_config_error(Some(problems.join("\n")));
            }
        }
    }

    async fn apply(&mut self, previous: &Snapshot, next: Snapshot) {
        let (before, after) = (&previous.config, &next.config);
        for (what, old, new) in [
            ("server.listen", before.server.listen.to_string(), after.server.listen.to_string()),
            ("store", before.store.backend.describe(), after.store.backend.describe()),
            ("server.max_body_bytes", before.server.max_body_bytes.to_string(), after.server.max_body_bytes.to_string()),
        ] {
            if old != new {
                tracing::warn!(key = what, "changed in the config; it takes effect after a restart");
            }
        }
        let method_ids: Vec<String> = next.methods.iter().map(|method| method.id.clone()).collect();
        let plugins: Vec<String> = next.catalog.plugins.keys().cloned().collect();
        let scanners_changed =
            format!("{:?}{:?}", before.scanners, before.registers) != format!("{:?}{:?}", after.scanners, after.registers);
        let scanners = scanners_changed.then(|| Scanners::start(after, self.payments.clone()));
        self.live.store(Arc::new(next));
        self.state.reconfigure(scanners);
        self.payments.resume_orphans().await;
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
