//! Start-up and shutdown: config → plugins → methods → store → HTTP server.
//! `check` and `plugins` go through the same path, so what they accept the daemon runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use std::time::Duration;

use crate::api::AppState;
use crate::config::{self, Config, ConfigError, Problem};
use crate::payments::Payments;
use crate::plugins::{self, Catalog, DirectoryError, Methods};
use crate::reload::Reloader;
use crate::scanners::Scanners;
use crate::snapshot::Snapshot;
use crate::store::{Store, StoreError};

/// Why the daemon (or `check`) could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    PluginDirectory(#[from] DirectoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("cannot resume unfinished payments: {0}")]
    Recovery(String),
}

/// Config, plugins and methods: everything `check` validates.
pub struct Prepared {
    pub config: Config,
    pub catalog: Catalog,
    pub methods: Methods,
}

/// Loads and validates the config, loads the plugin directory and creates every
/// configured method. Needs a tokio runtime (plugins' HTTP runs on it).
pub fn prepare(config_path: &Path) -> Result<Prepared, StartError> {
    let (config, catalog, methods) = prepare_config(config_path, None)?;
    Ok(Prepared { config, catalog, methods })
}

/// The steps start-up and reload share: config → plugin directory (after `previous`,
/// at a reload) → methods. Plugins' `create` runs on a thread of its own, never on an
/// async worker, so a plugin may use the host's HTTP while it is created.
pub fn prepare_config(config_path: &Path, previous: Option<&Catalog>) -> Result<(Config, Catalog, Methods), StartError> {
    let (config, mut problems) = config::load_with_problems(config_path);
    let Some(config) = config else { return Err(ConfigError(problems).into()) };
    let http = plugins::http_client(config.server.proxy.as_deref())
        .map_err(|error| ConfigError(vec![Problem::new(None, "server.proxy", format!("cannot set up HTTPS: {error}"))]))?;
    let http = &http;
    let catalog = match previous {
        Some(previous) => {
            let catalog = plugins::load_directory_after(&config.plugins, previous)?;
            for refusal in catalog.refused.iter().filter(|refusal| !previous.refused.contains(refusal)) {
                tracing::warn!(file = %refusal.file.display(), reason = %refusal.reason, "plugin refused");
            }
            catalog
        }
        None => match plugins::load_directory(&config.plugins) {
            Ok(catalog) => catalog,
            // The config already placed an unreadable directory at its line; without
            // plugins no method can be checked, so report what is known, together.
            Err(_) if !problems.is_empty() => return Err(ConfigError(problems).into()),
            Err(error) => return Err(error.into()),
        },
    };
    let runtime = tokio::runtime::Handle::current();
    let created = std::thread::scope(|scope| {
        let creating = std::thread::Builder::new()
            .name("plugin-create".into())
            .spawn_scoped(scope, || plugins::create_methods(&catalog, &config, http, &runtime));
        match creating.map(|thread| thread.join()) {
            Ok(Ok(created)) => created,
            _ => Err(vec![Problem::new(None, "methods", "creating the payment methods failed (see the log)".to_string())]),
        }
    });
    match created {
        Ok(methods) if problems.is_empty() => Ok((config, catalog, methods)),
        Ok(_) => Err(ConfigError(problems).into()),
        Err(mut method_problems) => {
            problems.append(&mut method_problems);
            Err(ConfigError(problems).into())
        }
    }
}

/// Lifts the soft limit on open files to the hard one (at most 65,536), so
/// `max_connections` is not cut short by a low default of the shell or the unit.
fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit read and write the struct given; no other effect.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max.min(65_536);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}

/// Runs the daemon until SIGTERM or Ctrl-C, then finishes requests in flight.
pub async fn serve(config_path: &Path) -> Result<(), StartError> {
    raise_open_files_limit();
    let Prepared { config, catalog, methods } = prepare(config_path)?;
    for refusal in &catalog.refused {
        tracing::warn!(file = %refusal.file.display(), reason = %refusal.reason, "plugin refused");
    }
    for warning in &config.warnings {
        tracing::warn!(%warning, "configuration warning");
    }
    let store = Store::open(&config.store.backend).await?;
    tracing::info!(store = %config.store.backend.describe(), "store open");
    let live = Snapshot::build(config.clone(), catalog, methods, None).into_live();
    let payments = Payments::new(store.clone(), live.clone());
    payments.resume().await.map_err(|error| StartError::Recovery(error.to_string()))?;
    let address = config.server.listen;
    let listener = TcpListener::bind(address).await.map_err(|source| StartError::Bind { address, source })?;
    let bound = listener.local_addr().map_err(StartError::Serve)?;
    let housekeeping = tokio::spawn(housekeeping(payments.clone(), store.is_shared().then_some(config.store.lease)));
    let retention = tokio::spawn(crate::store::retention::run(store.clone(), retention_policy(&config)));
    let scanners = Scanners::start(&config, payments.clone());
    let shutdown = shutdown_signal();
    let state = AppState::new(live.clone(), payments.clone(), scanners, &format!("http://{bound}"));
    let reloader = Reloader::new(config_path, live, payments.clone(), state.clone());
    let reloading = tokio::spawn(reloader.start());
    tracing::info!(address = %bound, methods = config.methods.len(), "listening");
    let limits = crate::api::server::Limits {
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
    };
    crate::api::server::serve(listener, crate::api::router(state.clone()), limits, shutdown).await.map_err(StartError::Serve)?;
    housekeeping.abort();
    retention.abort();
    reloading.abort();
    state.scanners().stop();
    payments.shutdown(SHUTDOWN_GRACE).await;
    store.flush().await?;
    tracing::info!("stopped");
    Ok(())
}

/// What the store keeps, from `[store]`.
fn retention_policy(config: &Config) -> crate::store::retention::Policy {
    crate::store::retention::Policy {
        payments: config.store.retention,
        journal: config.store.journal_retention,
        idempotency: Duration::from_millis(crate::api::IDEMPOTENCY_RETENTION_MS as u64),
    }
}

/// How long calls in flight at shutdown get to finish (their write-ahead records are
/// resumed at the next start either way).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Periodic work: expiring payments nobody scanned.
async fn housekeeping(payments: Arc<Payments>, lease: Option<Duration>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // On a shared store: look for work a stopped daemon left, twice per lease time.
    let adopt_every = lease.map(|lease| (lease / 2).max(Duration::from_millis(500)));
    let mut last_adoption = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if let Err(error) = payments.expire_due().await {
            tracing::error!(%error, "expiring payments failed");
        }
        if adopt_every.is_some_and(|every| last_adoption.elapsed() >= every) {
            last_adoption = tokio::time::Instant::now();
            if let Err(error) = payments.adopt().await {
                tracing::warn!(%error, "looking for work left by other daemons failed");
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called (not
/// when first polled), so a signal right after the `listening` line is not missed.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let (mut terminate, mut interrupt) = streams;
            let terminated = async {
                match terminate.as_mut() {
                    Some(stream) => stream.recv().await,
                    None => std::future::pending().await,
                }
            };
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(stream) => stream.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = terminated => tracing::info!("SIGTERM received, shutting down"),
                _ = interrupted => tracing::info!("Ctrl-C received, shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received, shutting down");
        }
    }
}
