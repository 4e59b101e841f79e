//! `Idempotency-Key` on every POST: the same key and body answer the stored response
//! (also after a restart, for at least 24 hours); the same key with another body is a
//! `409 idempotency_conflict`; a key whose first request is still running is a `409`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::payments::model::now_ms;
use crate::store::{Commit, IdempotencyRecord, Store};

/// How long stored responses are kept: more than the 24 hours promised.
pub const RETENTION_MS: i64 = 48 * 3_600_000;

/// A handler's answer: status and JSON body.
pub type Answer = Result<(StatusCode, Value), ApiError>;

/// Keys whose first request is still being handled.
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<String>>);

struct Claim<'a> {
    in_flight: &'a InFlight,
    key: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.in_flight.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.key);
    }
}

/// The `Idempotency-Key` header, validated (1–255 printable ASCII).
fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let text = value.to_str().unwrap_or("");
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|byte| (0x20..0x7f).contains(&byte)) {
        return Err(ApiError::invalid("Idempotency-Key must be 1 to 255 printable ASCII characters").field("Idempotency-Key"));
    }
    Ok(Some(text.to_string()))
}

/// Whether an answer may be replayed: a failure worth retrying (provider down) must
/// run again on retry, so it is not stored.
fn replayable(status: StatusCode, body: &Value) -> bool {
    let transient = ["provider_unavailable", "outcome_unknown", "plugin_timeout", "store_error"];
    let code = body.pointer("/error/code").or_else(|| body.pointer("/failure/code")).and_then(Value::as_str).unwrap_or("");
    let processing = body.get("status").and_then(Value::as_str) == Some("processing");
    !status.is_server_error() && !transient.contains(&code) && !processing
}

/// Runs `handler` under the request's idempotency key, if it has one.
pub async fn run<F, Fut>(
    store: &Store,
    in_flight: &InFlight,
    client: &str,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    handler: F,
) -> Answer
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Answer>,
{
    let Some(key) = key_of(headers)? else { return handler().await };
    let scoped = format!("{client}\u{1f}{key}");
    let fingerprint = hex::encode(Sha256::new().chain_update(route.as_bytes()).chain_update([0]).chain_update(body).finalize());
    if let Some(record) = store.idempotency(&scoped)? {
        return replay(record, &fingerprint);
    }
    let _claim = {
        let mut keys = in_flight.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !keys.insert(scoped.clone()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry shortly",
            ));
        }
        Claim { in_flight, key: scoped.clone() }
    };
    // A request with the same key may have finished between the lookup and the claim.
    if let Some(record) = store.idempotency(&scoped)? {
        return replay(record, &fingerprint);
    }
    let answer = handler().await;
    let (status, body) = match &answer {
        Ok((status, body)) => (*status, body.clone()),
        Err(error) => (error.status, error.body()),
    };
    if replayable(status, &body) {
        let record = IdempotencyRecord { fingerprint, status: status.as_u16(), body: body.to_string(), created_at: now_ms() };
        store.apply(&Commit { idempotency: vec![(scoped, record)], ..Commit::default() })?;
        store.flush().await?;
    }
    answer
}

fn replay(record: IdempotencyRecord, fingerprint: &str) -> Answer {
    if record.fingerprint != fingerprint {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        )
        .field("Idempotency-Key"));
    }
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    let body = serde_json::from_str(&record.body).unwrap_or(Value::Null);
    Ok((status, body))
}
