//! The localhost HTTP API (axum). The route table in [`routes`] is the single source of
//! both the router and `/openapi.json`, so the document cannot drift from the code.
//! Errors become answers in one place, `error.rs`.

mod decode;
mod error;
mod events;
mod extract;
mod guard;
mod idempotency;
mod openapi;
mod payments;
pub mod server;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Value};

pub use error::ApiError;
pub use guard::is_loopback_host;
pub use idempotency::RETENTION_MS as IDEMPOTENCY_RETENTION_MS;
use openapi::{schema, RouteDoc};

use crate::config::Config;
use crate::payments::view::{PaymentView, RefundView};
use crate::payments::Payments;
use crate::scanners::{ScannerStatus, Scanners};
use crate::snapshot::{Live, Snapshot};

/// The largest integer a JSON number holds exactly (2^53 - 1): the bound of every id
/// and counter the API takes.
pub const MAX_JSON_INTEGER: u64 = 9_007_199_254_740_991;

/// What the handlers share.
pub struct AppState {
    pub payments: Arc<Payments>,
    scanners: RwLock<Arc<Scanners>>,
    in_flight: idempotency::InFlight,
    /// The running config: access, methods, catalog (swapped whole by reloads).
    live: Live,
    buckets: guard::Buckets,
    /// The one bucket every request takes from before authentication.
    global_bucket: guard::Buckets,
    /// `/v1/decode` images being decoded (at most `server.max_concurrent_decodes`).
    decodes: Arc<tokio::sync::Semaphore>,
    /// The last reload's problems, shown by `/readyz` and the status page until a reload
    /// succeeds.
    last_config_error: RwLock<Option<String>>,
    max_body_bytes: usize,
    openapi: Value,
    started_at: crate::payments::model::Millis,
}

/// Who may call, from where: part of the config snapshot.
pub struct Access {
    /// Each client with the SHA-256 of its token (tokens themselves are not kept here).
    clients: Vec<(extract::Client, Vec<u8>)>,
    allowed_origins: Vec<String>,
    allowed_hosts: Vec<String>,
    rate: guard::RateLimit,
    /// Requests per second from everyone, before authentication.
    global_rate: u32,
    /// Methods the config names; all must have been created for `/readyz`.
    configured_methods: usize,
}

impl Access {
    /// The access rules of a config.
    pub fn of(config: &Config) -> Access {
        Access {
            clients: config
                .clients
                .iter()
                .map(|client| {
                    let caller = extract::Client { name: client.name.clone(), role: client.role, registers: client.registers.clone() };
                    (caller, client.token_digest().to_vec())
                })
                .collect(),
            allowed_origins: config.server.allowed_origins.clone(),
            allowed_hosts: config.server.allowed_hosts.iter().map(|host| host.to_ascii_lowercase()).collect(),
            rate: guard::RateLimit { per_second: config.server.rate_limit, burst: config.server.rate_burst },
            global_rate: config.server.global_rate_limit,
            configured_methods: config.methods.len(),
        }
    }
}

impl AppState {
    /// The state for a validated config and a running payment service.
    pub fn new(live: Live, payments: Arc<Payments>, scanners: Arc<Scanners>, base_url: &str) -> Arc<AppState> {
        let max_body_bytes = live.load().config.server.max_body_bytes;
        let max_decodes = live.load().config.server.max_concurrent_decodes;
        Arc::new(AppState {
            payments,
            scanners: RwLock::new(scanners),
            in_flight: Default::default(),
            live,
            buckets: Default::default(),
            global_bucket: Default::default(),
            decodes: Arc::new(tokio::sync::Semaphore::new(max_decodes)),
            last_config_error: RwLock::new(None),
            max_body_bytes,
            openapi: openapi::document(&routes(), base_url),
            started_at: crate::payments::model::now_ms(),
        })
    }

    /// The running config snapshot.
    fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Scanner id → the register it serves (for filtering scanner events).
    fn scanner_registers(&self) -> std::collections::HashMap<String, String> {
        let snapshot = self.snapshot();
        let registers = &snapshot.config.registers;
        registers.iter().flat_map(|register| register.scanners.iter().map(|scanner| (scanner.clone(), register.id.clone()))).collect()
    }

    /// The running scanners.
    pub fn scanners(&self) -> Arc<Scanners> {
        self.scanners.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// After a reload swapped the snapshot: its scanners (when they changed), and the
    /// reload error cleared.
    pub fn reconfigure(&self, scanners: Option<Arc<Scanners>>) {
        if let Some(scanners) = scanners {
            let previous = std::mem::replace(&mut *self.scanners.write().unwrap_or_else(|poisoned| poisoned.into_inner()), scanners);
            previous.stop();
        }
        self.set_config_error(None);
    }

    /// Records (or clears) the last reload's problems.
    pub fn set_config_error(&self, error: Option<String>) {
        *self.last_config_error.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    /// The last reload's problems, if it failed.
    pub fn config_error(&self) -> Option<String> {
        self.last_config_error.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// Every route, with its documentation.
fn routes() -> Vec<(RouteDoc, MethodRouter<Arc<AppState>>)> {
    use openapi::RouteDoc as D;
    vec![
        (D::public("GET", "/healthz", "The process is alive").ok(schema::<HealthView>), get(healthz)),
        (
            D::public("GET", "/readyz", "Ready to take payments (details with a manager's or technician's token)")
                .ok(schema::<ReadyView>)
                .also(&[503]),
            get(readyz),
        ),
        (D::public("GET", "/metrics", "Prometheus metrics (text exposition)").text("text/plain"), get(metrics)),
        (D::public("GET", "/openapi.json", "This document").ok(schema::<serde_json::Map<String, Value>>), get(openapi_json)),
        (D::public("GET", "/", "The technicians' status page (its data needs a client token)").text("text/html"), get(status_page)),
        (
            D::new("GET", "/v1/status", "Version, plugins (and refused files), store health, the last config error")
                .ok(schema::<StatusView>),
            get(status),
        ),
        (
            D::new("GET", "/v1/refunds", "Refunds, newest first").query(schema::<payments::RefundListParams>).ok(schema::<RefundList>),
            get(payments::list_refunds),
        ),
        (D::new("GET", "/v1/methods", "The payment methods the POS may use").ok(schema::<MethodsView>), get(methods)),
        (
            D::new("POST", "/v1/payments", "Create a payment")
                .request(schema::<payments::CreatePayment>)
                .created(schema::<PaymentView>)
                .with_links(),
            post(payments::create),
        ),
        (
            D::new("GET", "/v1/payments", "Payment history, newest first").query(schema::<payments::ListParams>).ok(schema::<PaymentList>),
            get(payments::list),
        ),
        (
            D::new("GET", "/v1/payments/{id}", "Read a payment; ?wait=S&version=V holds until it changes")
                .query(schema::<payments::WaitQuery>)
                .ok(schema::<PaymentView>),
            get(payments::get),
        ),
        (
            D::new("POST", "/v1/payments/{id}/scan", "Apply a scanned receipt code")
                .request(schema::<payments::ScanBody>)
                .ok(schema::<PaymentView>),
            post(payments::scan),
        ),
        (
            D::new("POST", "/v1/payments/{id}/manual", "Record a receipt entered by hand (unverified)")
                .request(schema::<payments::ManualBody>)
                .ok(schema::<PaymentView>),
            post(payments::manual),
        ),
        (
            D::new("POST", "/v1/payments/{id}/cancel", "Cancel a payment that took nothing (a split purchase's legs are refunded)")
                .request(schema::<payments::CancelBody>)
                .optional_request()
                .ok(schema::<CanceledView>),
            post(payments::cancel),
        ),
        (
            D::new("POST", "/v1/refunds", "Refund a payment, a whole split purchase (include_splits), or a transaction by id")
                .request(schema::<payments::CreateRefund>)
                .created(schema::<RefundCreated>),
            post(payments::refund),
        ),
        (D::new("GET", "/v1/refunds/{id}", "Read a refund").ok(schema::<RefundView>), get(payments::get_refund)),
        (
            D::new("GET", "/v1/exceptions", "Receipts taken offline that the provider later refused, newest first (managers)")
                .query(schema::<payments::ExceptionListParams>)
                .ok(schema::<ExceptionList>),
            get(payments::list_exceptions),
        ),
        (D::new("GET", "/v1/scanners", "Configured scanners: register, connection, last scan").ok(schema::<ScannersView>), get(scanners)),
        (
            D::new("POST", "/v1/decode", "QR codes in a PNG or JPEG image; ?payment= applies the first as a scan")
                .query(schema::<decode::DecodeQuery>)
                .binary_request(&["image/png", "image/jpeg"])
                .ok(schema::<decode::Decoded>),
            post(decode::decode),
        ),
        (
            D::new("GET", "/v1/events", "Server-Sent Events: payment.updated, refund.updated, …")
                .query(schema::<events::EventsQuery>)
                .event_stream(),
            get(events::stream),
        ),
    ]
}

/// `GET /healthz`
#[derive(serde::Serialize, schemars::JsonSchema)]
struct HealthView {
    /// Always `ok` while the process serves.
    status: String,
}

/// `GET /readyz`: `status` for everyone; the rest for managers and technicians.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct ReadyView {
    /// `ready` or `not_ready`.
    status: String,
    checks: Option<ReadyChecks>,
    last_reload_error: Option<String>,
    waiting_for_method: Option<Vec<crate::payments::Orphan>>,
}

/// What readiness is made of.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct ReadyChecks {
    store: bool,
    plugins: bool,
    config: bool,
}

/// `GET /v1/methods`
#[derive(serde::Serialize, schemars::JsonSchema)]
struct MethodsView {
    data: Vec<MethodView>,
}

/// A payment method the POS may use.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct MethodView {
    id: String,
    plugin: String,
    version: String,
    kind: String,
    capabilities: Vec<String>,
}

/// A page of payments.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct PaymentList {
    data: Vec<PaymentView>,
    has_more: bool,
}

/// A page of exceptions.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct ExceptionList {
    data: Vec<crate::payments::view::ExceptionView>,
    has_more: bool,
}

/// A page of refunds.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct RefundList {
    data: Vec<RefundView>,
    has_more: bool,
}

/// A canceled payment; `compensation` lists the refunds that undid the rest of its
/// purchase, when it had other legs.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct CanceledView {
    #[serde(flatten)]
    payment: PaymentView,
    #[serde(skip_serializing_if = "Option::is_none")]
    compensation: Option<Vec<RefundView>>,
}

/// A refund; with `include_splits`, `{"data": [refunds]}` (one per leg that took money).
#[derive(serde::Serialize, schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)] // the shape is for the document; the handler builds the same JSON
enum RefundCreated {
    One(RefundView),
    Purchase { data: Vec<RefundView> },
}

pub fn router(state: Arc<AppState>) -> Router {
    let mut public = Router::new();
    let mut private = Router::new();
    for (doc, handler) in routes() {
        if doc.auth {
            private = private.route(doc.path, handler);
        } else {
            public = public.route(doc.path, handler);
        }
    }
    let private = private.route_layer(middleware::from_fn_with_state(state.clone(), guard::authenticate));
    public
        .merge(private)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(extract::BodyLimit(state.max_body_bytes)))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), guard::cors))
        .layer(middleware::from_fn_with_state(state.clone(), guard::host_check))
        .layer(middleware::from_fn_with_state(state.clone(), guard::admit))
        .layer(middleware::from_fn(track))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that HTTP method (see /openapi.json)")
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route (see /openapi.json)")
}

/// Gives each request an id (the caller's `X-Request-Id`, or a new one) carried by every
/// log line written while it is handled and returned in the answer; counts requests by
/// route template and status.
async fn track(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|byte| byte.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    let span = tracing::info_span!("request", request_id = %request_id, http.method = %method, route = %route);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| tracing::debug!(status, elapsed_ms = started.elapsed().as_millis() as u64, "answered"));
    crate::metrics::record_http(&method, &route, status, started.elapsed().as_secs_f64());
    if let Ok(value) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// A request id: time and a counter, unique within the process.
fn new_request_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!("req_{:x}_{:x}", crate::payments::model::now_ms(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> Response {
    let store_health = state.payments.store().health().await;
    let store = store_health.is_ok();
    let snapshot = state.snapshot();
    let plugins = snapshot.methods.iter().count() == snapshot.access.configured_methods;
    let ready = store && plugins;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let status_name = if ready { "ready" } else { "not_ready" };
    // Without a manager's or technician's token: ready or not, nothing about the shop.
    let detailed = guard::client_of(&state, &headers).is_some_and(|client| client.role != crate::config::Role::Till);
    if !detailed {
        return (status, Json(json!({"status": status_name}))).into_response();
    }
    let mut body = json!({"status": status_name, "checks": {"store": store, "plugins": plugins, "config": true}});
    if let Err(error) = &store_health {
        body["store_error"] = json!(error.to_string());
    }
    // A refused reload leaves the running config in force: still ready, and said so.
    if let Some(error) = state.config_error() {
        body["last_reload_error"] = json!(error);
    }
    // Work that waits for a method no longer configured: ready, but a technician must act.
    let orphans = state.payments.orphans();
    if !orphans.is_empty() {
        body["waiting_for_method"] = json!(orphans);
    }
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let last_event = *state.payments.store().subscribe().borrow() as f64;
    let body = crate::metrics::render(&[
        ("posbridge_last_event_id", "Id of the newest journal event.", last_event),
        ("posbridge_up", "The daemon is serving.", 1.0),
    ]);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn openapi_json(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(openapi_now(&state))
}

/// The document with what the running config allows: the method ids and registers a
/// request may name (a reload changes them).
fn openapi_now(state: &AppState) -> Value {
    let snapshot = state.snapshot();
    let mut document = state.openapi.clone();
    let methods: Vec<Value> = snapshot.methods.iter().map(|method| json!(method.id)).collect();
    let registers: Vec<Value> = snapshot.config.registers.iter().map(|register| json!(register.id)).collect();
    let mut restrict = |schema: &str, field: &str, values: &[Value], nullable: bool| {
        let property = &mut document["components"]["schemas"][schema]["properties"][field];
        if property.is_object() && !values.is_empty() {
            let mut values = values.to_vec();
            if nullable {
                values.push(Value::Null);
            }
            property["enum"] = Value::Array(values);
        }
    };
    restrict("CreatePayment", "method", &methods, false);
    restrict("CreateRefund", "method", &methods, true);
    restrict("CreatePayment", "register", &registers, true);
    document
}

/// The status page: static, no external assets; it reads the API with the token the
/// technician gives it.
async fn status_page() -> Response {
    let headers = [
        (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (axum::http::header::CACHE_CONTROL, "no-store"),
        (axum::http::header::CONTENT_SECURITY_POLICY, "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'"),
    ];
    (headers, include_str!("assets/status.html")).into_response()
}

/// `GET /v1/status`
#[derive(serde::Serialize, schemars::JsonSchema)]
struct StatusView {
    version: String,
    /// RFC 3339.
    started_at: String,
    store_ok: bool,
    /// Which store: `sled` (this machine) or `postgres` (shared by several daemons).
    store_backend: String,
    /// Why the store is failing (the shared database cannot be reached, say), when it is.
    store_error: Option<String>,
    /// Loaded plugins and refused files.
    plugins: Vec<PluginStatus>,
    /// The last config reload's problems, until a reload succeeds.
    last_config_error: Option<String>,
    /// Work (card payments, lookups, refunds, compensations) waiting for a method that
    /// is not configured since the last start.
    waiting_for_method: Vec<crate::payments::Orphan>,
    /// The last 20 scanned codes a method's plugin could not read (hashed, with why),
    /// newest first: a first real receipt that differs from what the plugin expects.
    refused_codes: Vec<crate::payments::RefusedCode>,
    /// Methods that take signed receipts offline: their limits, the open total and the
    /// oldest receipt still unconfirmed, and whether the provider is down now.
    offline: Vec<crate::payments::OfflineExposure>,
    /// How many receipts taken offline the provider refused (`GET /v1/exceptions`), as
    /// far as the newest 100 go.
    exceptions: usize,
}

/// A plugin library as the status shows it.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct PluginStatus {
    id: Option<String>,
    version: Option<String>,
    file: String,
    /// Why the file was refused, if it was.
    refused: Option<String>,
}

async fn status(State(state): State<Arc<AppState>>, _client: extract::Client) -> Json<StatusView> {
    let snapshot = state.snapshot();
    let catalog = &snapshot.catalog;
    let mut plugins: Vec<PluginStatus> = catalog
        .plugins
        .values()
        .map(|plugin| PluginStatus {
            id: Some(plugin.id.clone()),
            version: Some(plugin.version.clone()),
            file: plugin.file.display().to_string(),
            refused: None,
        })
        .collect();
    plugins.extend(catalog.refused.iter().map(|refusal| PluginStatus {
        id: None,
        version: None,
        file: refusal.file.display().to_string(),
        refused: Some(refusal.reason.clone()),
    }));
    let store_health = state.payments.store().health().await;
    Json(StatusView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: crate::payments::model::rfc3339(state.started_at),
        store_ok: store_health.is_ok(),
        store_backend: state.payments.store().backend().to_string(),
        store_error: store_health.err().map(|error| error.to_string()),
        plugins,
        last_config_error: state.config_error(),
        waiting_for_method: state.payments.orphans(),
        refused_codes: state.payments.refused_codes(),
        offline: state.payments.offline_status().await.unwrap_or_default(),
        exceptions: state.payments.exceptions(100, None).await.map(|(found, _)| found.len()).unwrap_or_default(),
    })
}

/// `GET /v1/scanners`
#[derive(serde::Serialize, schemars::JsonSchema)]
struct ScannersView {
    data: Vec<ScannerStatus>,
}

async fn scanners(State(state): State<Arc<AppState>>, _client: extract::Client) -> Json<ScannersView> {
    Json(ScannersView { data: state.scanners().statuses() })
}

async fn methods(State(state): State<Arc<AppState>>, _client: extract::Client) -> Json<Value> {
    let data: Vec<Value> = state
        .snapshot()
        .methods
        .iter()
        .map(|method| json!({"id": method.id, "plugin": method.plugin_id, "version": method.plugin_version, "kind": method.kind, "capabilities": method.capabilities.names()}))
        .collect();
    Json(json!({"data": data}))
}
