//! Start-up and shutdown: config → plugins → methods → store → HTTP server.
//! `check` and `plugins` go through the same path, so what they accept the daemon runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use std::time::Duration;

use crate::api::AppState;
use crate::config::{self, Config, ConfigError, Problem};
use crate::payments::{PaymentSettings, Payments};
use crate::plugins::{self, Catalog, DirectoryError, Methods};
use crate::scanners::Scanners;
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
    let (config, mut problems) = config::load_with_problems(config_path);
    let Some(config) = config else { return Err(ConfigError(problems).into()) };
    let catalog = plugins::load_directory(&config.plugins)?;
    let http = reqwest::Client::builder()
        .user_agent(concat!("posbridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| ConfigError(vec![Problem::new(None, "", format!("cannot set up HTTPS: {error}"))]))?;
    match plugins::create_methods(&catalog, &config, &http, &tokio::runtime::Handle::current()) {
        Ok(methods) if problems.is_empty() => Ok(Prepared { config, catalog, methods }),
        Ok(_) => Err(ConfigError(problems).into()),
        Err(mut method_problems) => {
            problems.append(&mut method_problems);
            Err(ConfigError(problems).into())
        }
    }
}

/// Runs the daemon until SIGTERM or Ctrl-C, then finishes requests in flight.
pub async fn serve(config_path: &Path) -> Result<(), StartError> {
    let Prepared { config, catalog, methods } = prepare(config_path)?;
    for refusal in &catalog.refused {
        tracing::warn!(file = %refusal.file.display(), reason = %refusal.reason, "plugin refused");
    }
    let store = Store::open(&config.store.path)?;
    let settings = PaymentSettings {
        scan_timeout: config.payments.scan_timeout,
        card_timeout: config.payments.card_timeout,
        registers: config.registers.iter().map(|register| register.id.clone()).collect(),
    };
    let payments = Payments::new(store.clone(), methods, settings);
    payments.resume().map_err(|error| StartError::Recovery(error.to_string()))?;
    let address = config.server.listen;
    let listener = TcpListener::bind(address).await.map_err(|source| StartError::Bind { address, source })?;
    let bound = listener.local_addr().map_err(StartError::Serve)?;
    let housekeeping = tokio::spawn(housekeeping(payments.clone()));
    let scanners = Scanners::start(&config, payments.clone());
    let state = AppState::new(&config, payments.clone(), scanners.clone());
    tracing::info!(address = %bound, methods = config.methods.len(), "listening");
    axum::serve(listener, crate::api::router(state)).with_graceful_shutdown(shutdown_signal()).await.map_err(StartError::Serve)?;
    housekeeping.abort();
    scanners.stop();
    store.flush().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Periodic work: expiring payments nobody scanned, forgetting old idempotency records.
async fn housekeeping(payments: Arc<Payments>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        if let Err(error) = payments.expire_due().await {
            tracing::error!(%error, "expiring payments failed");
        }
        if ticks % 7200 == 0 {
            let before = crate::payments::model::now_ms() - crate::api::IDEMPOTENCY_RETENTION_MS;
            match payments.store().forget_idempotency_before(before) {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "forgot old idempotency records"),
                Err(error) => tracing::error!(%error, "forgetting idempotency records failed"),
            }
        }
        ticks += 1;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
