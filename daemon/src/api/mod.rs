//! The localhost HTTP API (axum): routes, and the one place errors become HTTP answers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::runtime::Daemon;

/// The routes, over the shared daemon state.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(daemon)
}

/// The process is alive and serving HTTP.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready to take payments: store open, plugins loaded, config valid.
async fn readyz(State(daemon): State<Arc<Daemon>>) -> Response {
    let report = daemon.readiness();
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(json!({
            "status": if report.ready { "ready" } else { "not_ready" },
            "checks": {
                "store": report.store,
                "plugins": report.plugins,
                "config": report.config,
            }
        })),
    )
        .into_response()
}
