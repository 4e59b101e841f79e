//! `Idempotency-Key` on every POST: the same key and body answer the stored response
//! (also after a restart, for at least 24 hours); the same key with another body is a
//! `409 idempotency_conflict`; a key whose first request is still running is a `409`.
//! A retry of a request whose work is still under way (its record is open) waits for
//! that work and answers its outcome: never a second effect.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::payments::failure::class_of;
use crate::payments::model::now_ms;
use crate::payments::{Asked, Payments, Ticket};
use crate::store::{Commit, IdempotencyRecord};

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

/// Whether an answer that changed nothing may be replayed: a failure worth retrying
/// (provider down) must run again on retry, so it is not stored (the failure table).
fn replayable(status: StatusCode, body: &Value) -> bool {
    let code = body.pointer("/error/code").or_else(|| body.pointer("/failure/code")).and_then(Value::as_str).unwrap_or("");
    let processing = body.get("status").and_then(Value::as_str) == Some("processing");
    !status.is_server_error() && (code.is_empty() || class_of(code).replayable) && !processing
}

/// `Prefer: wait=N` (RFC 7240; N above 999 counts as 999): the POS waits at most N seconds for the answer; after
/// that it gets the current state and the work goes on.
fn patience_of(headers: &HeaderMap) -> Option<Duration> {
    // RFC 7240: a preference the server does not understand is ignored, not an error.
    let text = headers.get("prefer")?.to_str().ok()?;
    let seconds = text.split([',', ';']).find_map(|preference| preference.trim().strip_prefix("wait="))?;
    let seconds: u64 = seconds.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(MAX_PATIENCE_SECONDS)))
}

/// The longest a POS may ask to wait before the current state is answered.
const MAX_PATIENCE_SECONDS: u64 = 999;

/// Runs `handler` under the request's idempotency key, if it has one. The engine
/// writes the record in the commit that makes the answer true (or opens it with the
/// work it starts); answers that changed nothing are stored here.
pub async fn run<F, Fut>(
    payments: &Payments,
    in_flight: &InFlight,
    client: &str,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    handler: F,
) -> Answer
where
    F: FnOnce(Asked) -> Fut,
    Fut: Future<Output = Answer>,
{
    let patience = patience_of(headers);
    let Some(key) = key_of(headers)? else { return handler(Asked { ticket: None, patience }).await };
    let store = payments.store();
    let scoped = format!("{client}\u{1f}{key}");
    let fingerprint = hex::encode(Sha256::new().chain_update(route.as_bytes()).chain_update([0]).chain_update(body).finalize());
    if let Some(record) = store.idempotency(&scoped).await? {
        return replay(payments, &scoped, record, &fingerprint, patience).await;
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
    if let Some(record) = store.idempotency(&scoped).await? {
        return replay(payments, &scoped, record, &fingerprint, patience).await;
    }
    let ticket = Ticket { key: scoped.clone(), fingerprint: fingerprint.clone() };
    let answer = handler(Asked { ticket: Some(ticket), patience }).await;
    let (status, body) = match &answer {
        Ok((status, body)) => (*status, body.clone()),
        Err(error) => (error.status, error.body()),
    };
    if store.idempotency(&scoped).await?.is_none() && replayable(status, &body) {
        let record =
            IdempotencyRecord { fingerprint, status: status.as_u16(), body: Some(body.to_string()), target: None, created_at: now_ms() };
        store.commit(&Commit { idempotency: vec![(scoped, Some(record))], ..Commit::default() }).await?;
    }
    // Test builds: the answer is lost after everything was committed (a crash, a dropped
    // connection); the retry must replay it.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("api-before-answer", |_| Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_error",
        "injected fault: the answer was lost after the commit"
    )));
    answer
}

async fn replay(payments: &Payments, key: &str, record: IdempotencyRecord, fingerprint: &str, patience: Option<Duration>) -> Answer {
    if record.fingerprint != fingerprint {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        )
        .field("Idempotency-Key"));
    }
    // The record may be applied and not yet flushed (its request is still waiting for
    // the flush): never replay an answer a crash could undo.
    payments.store().settled().await?;
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    let record = match (&record.body, &record.target) {
        // The first request's work is under way (or was interrupted): join it.
        (None, Some(target)) => payments.settle_open_record(key, target, patience).await?.unwrap_or(record),
        _ => record,
    };
    match (record.body, record.target) {
        (Some(body), _) => Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null))),
        (None, Some(target)) => Ok((status, payments.view_of(&target).await?)),
        (None, None) => Ok((status, Value::Null)),
    }
}
