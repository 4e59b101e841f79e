//! `posbridge doctor`: everything a technician checks when something is wrong, one line
//! each, `OK` or what to do: the config, the plugins, the store, the scanners, and each
//! provider reached with the configured credentials.

use std::path::Path;

use crate::config::{self, Config, ScannerSource, StoreBackend};
use crate::payments::model::now_ms;
use crate::payments::provider::ProviderError;
use crate::plugins::{Catalog, Methods};
use crate::runtime;
use crate::scanners::hid;
use crate::store::{Store, StoreError};

/// One finding.
pub struct Finding {
    pub ok: bool,
    pub subject: String,
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<4} {}: {}", if self.ok { "OK" } else { "FAIL" }, self.subject, self.detail)
    }
}

fn ok(subject: impl Into<String>, detail: impl Into<String>) -> Finding {
    Finding { ok: true, subject: subject.into(), detail: detail.into() }
}

fn fail(subject: impl Into<String>, detail: impl Into<String>) -> Finding {
    Finding { ok: false, subject: subject.into(), detail: detail.into() }
}

/// Runs every check; the findings in order.
pub async fn examine(config_path: &Path) -> Vec<Finding> {
    let prepared = match runtime::prepare(config_path) {
        Ok(prepared) => prepared,
        Err(error) => {
            let mut findings = vec![fail("config", format!("{error}\n     fix the lines above, then run `posbridge check`"))];
            if let Ok(config) = config::load(config_path) {
                findings.extend(store(&config).await);
            }
            return findings;
        }
    };
    let config = &prepared.config;
    let mut findings = vec![ok(
        "config",
        format!("{} is valid ({} client(s), {} method(s))", config_path.display(), config.clients.len(), config.methods.len()),
    )];
    findings.extend(config.warnings.iter().map(|warning| fail("config", warning.clone())));
    findings.extend(plugin_findings(&prepared.catalog));
    findings.extend(store(config).await);
    findings.extend(scanners(config));
    findings.extend(providers(&prepared.methods).await);
    findings.extend(offline(config).await);
    findings
}

/// Each method that takes receipts offline: its limits, and what it risks now (the open
/// total and the oldest unconfirmed receipt), read from the store, or from the running
/// daemon when it holds the store.
async fn offline(config: &Config) -> Vec<Finding> {
    let methods: Vec<_> = config.methods.values().filter_map(|method| method.offline.map(|policy| (method.id.clone(), policy))).collect();
    if methods.is_empty() {
        return Vec::new();
    }
    let exposures = match Store::open(&config.store.backend).await {
        Ok(store) => {
            let mut found = Vec::new();
            for (method, _) in &methods {
                found.extend(crate::payments::exposure_in(&store, method).await.ok());
            }
            Some(found)
        }
        Err(_) => from_running_daemon(config).await,
    };
    methods
        .iter()
        .map(|(method, policy)| {
            let limits = format!(
                "on: at most {} per receipt and {} unconfirmed in all, receipts issued at most {} min ago",
                policy.max_amount,
                policy.max_total,
                policy.max_age.as_secs() / 60
            );
            let exposure = exposures.as_ref().and_then(|found| found.iter().find(|exposure| &exposure.method == method));
            let subject = format!("offline {method}");
            match (exposures.is_some(), exposure) {
                (_, Some(exposure)) => {
                    let oldest = exposure.oldest_accepted_at.as_deref().map(|at| format!("; oldest taken {at}")).unwrap_or_default();
                    let line = format!(
                        "{limits}; open: {} receipt(s), {} of {}{oldest}",
                        exposure.open_receipts, exposure.open_amount, policy.max_total
                    );
                    let down = exposure
                        .provider_down_since
                        .as_deref()
                        .map(|since| format!("; the provider is DOWN since {since}"))
                        .unwrap_or_default();
                    if exposure.open_amount.0 >= policy.max_total {
                        fail(
                            subject,
                            format!("{line}{down}: the limit is reached, further receipts are refused until the provider answers"),
                        )
                    } else {
                        ok(subject, format!("{line}{down}"))
                    }
                }
                (true, None) => ok(subject, format!("{limits}; open: none")),
                (false, None) => ok(subject, format!("{limits}; the running daemon holds the store: its status page shows the open total")),
            }
        })
        .collect()
}

/// The offline status of the daemon serving this config, asked with a manager's or
/// technician's token written in it (a token given only as a digest cannot be used).
async fn from_running_daemon(config: &Config) -> Option<Vec<crate::payments::OfflineExposure>> {
    let token = config.clients.iter().find_map(|client| match (&client.token, client.role) {
        (config::ClientToken::Secret(secret), config::Role::Manager | config::Role::Technician) => Some(secret.expose().to_string()),
        _ => None,
    })?;
    let address = std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), config.server.listen.port());
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build().ok()?;
    let status: serde_json::Value = client
        .get(format!("http://{address}/v1/status"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()?;
    serde_json::from_value(status.get("offline")?.clone()).ok()
}

fn plugin_findings(catalog: &Catalog) -> Vec<Finding> {
    let mut findings: Vec<Finding> = catalog
        .plugins
        .values()
        .map(|plugin| ok(format!("plugin {}", plugin.id), format!("{} {}", plugin.version, plugin.file.display())))
        .collect();
    findings.extend(catalog.refused.iter().map(|refusal| {
        fail(format!("plugin file {}", refusal.file.display()), format!("{}; remove the file or replace it", refusal.reason))
    }));
    findings
}

async fn store(config: &Config) -> Option<Finding> {
    let path = match &config.store.backend {
        StoreBackend::Sled { path } => path,
        StoreBackend::Postgres(shared) => return Some(shared_store(shared).await),
    };
    Some(match Store::open_sled(path) {
        Ok(store) if store.health().await.is_ok() => ok("store", format!("{} opens and reads", path.display())),
        Ok(_) => fail("store", format!("{} opened but cannot be read; restore it from a backup", path.display())),
        Err(StoreError::Open { source, .. }) if source.to_string().contains("lock") => {
            ok("store", format!("{} is in use by a running posbridge (expected when the service runs)", path.display()))
        }
        Err(error) => fail("store", format!("{error}; check the directory exists and belongs to the posbridge user")),
    })
}

/// A shared store: reachable, at the schema this version knows, answering reads.
async fn shared_store(shared: &config::SharedStore) -> Finding {
    let backend = StoreBackend::Postgres(shared.clone());
    let node = &shared.node;
    match crate::store::PostgresStore::connect(shared).await.map(Store::Postgres) {
        Ok(store) => match store.health().await {
            Ok(()) => ok("store", format!("{} answers (node {node})", backend.describe())),
            Err(error) => fail("store", format!("{error}")),
        },
        Err(StoreError::Unavailable(why)) => {
            fail("store", format!("cannot reach {}: {why}; check the URL, the network and that PostgreSQL runs", backend.describe()))
        }
        Err(error) => fail("store", error.to_string()),
    }
}

fn scanners(config: &Config) -> Vec<Finding> {
    let present = if config.scanners.iter().any(|scanner| matches!(scanner.source, ScannerSource::Hid { .. })) {
        hid::open_api().and_then(|api| hid::list(&api))
    } else {
        Ok(Vec::new())
    };
    config
        .scanners
        .iter()
        .map(|scanner| {
            let subject = format!("scanner {}", scanner.id);
            match (&scanner.source, &present) {
                (ScannerSource::Replay { path }, _) if path.exists() => ok(subject, format!("replays {}", path.display())),
                (ScannerSource::Replay { path }, _) => fail(subject, format!("{} does not exist; create it (mkfifo for a FIFO)", path.display())),
                (ScannerSource::Hid { .. }, Err(error)) => fail(subject, format!("{error}; see docs/scanners.md (udev rule)")),
                (ScannerSource::Hid { vendor_id, product_id, serial, .. }, Ok(devices)) => {
                    let found = devices.iter().find(|device| device.vendor_id == *vendor_id && device.product_id == *product_id && serial.as_ref().is_none_or(|serial| device.serial.as_ref() == Some(serial)));
                    match found {
                        Some(device) => ok(subject, format!("{vendor_id:04x}:{product_id:04x} connected at {}", device.path)),
                        None => fail(subject, format!("{vendor_id:04x}:{product_id:04x} is not connected (or not readable by this user): plug it in, check the udev rule, run `posbridge scanners list`")),
                    }
                }
            }
        })
        .collect()
}

async fn providers(methods: &Methods) -> Vec<Finding> {
    let mut findings = Vec::new();
    for method in methods.iter() {
        let subject = format!("method {} ({})", method.id, method.plugin_id);
        let deadline = now_ms() + method.timeout.as_millis() as i64 - 500;
        let result = method.call("check_connection", move |plugin| plugin.check_connection(deadline)).await;
        findings.push(match result {
            Ok(line) => ok(subject, line.to_string()),
            Err(ProviderError::Failed(error)) if error.code == "unsupported" => ok(subject, "the plugin offers no connection check"),
            Err(error) => fail(subject, format!("{error}; check api_url, the credentials and this machine's network")),
        });
    }
    findings
}
