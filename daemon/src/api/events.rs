//! `GET /v1/events`: the journal as Server-Sent Events. `?after=N` or `Last-Event-ID`
//! resumes after event N; events survive restarts because the journal does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::Client;
use super::AppState;
use crate::payments::Payments;
use crate::store::{Event, Store};
use serde_json::Value;
use std::collections::HashMap;

/// Events read from the journal per step.
const BATCH: usize = 256;

/// `GET /v1/events` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this event id (`Last-Event-ID` does the same and wins).
    #[schemars(range(min = 0, max = 9_007_199_254_740_991u64))]
    pub after: Option<u64>,
}

/// Streams events after the requested id, then new ones as they are committed.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let after_query = match query {
        Ok(Query(query)) if query.after.is_some_and(|after| after > super::MAX_JSON_INTEGER) => {
            return ApiError::invalid("after is at most 2^53 - 1").field("after").into_response()
        }
        Ok(Query(query)) => query.after,
        Err(rejection) => return ApiError::invalid(rejection.body_text()).into_response(),
    };
    let last_event_id = match headers.get("last-event-id").map(|value| value.to_str().ok().and_then(|text| text.trim().parse::<u64>().ok()))
    {
        Some(None) => return ApiError::invalid("Last-Event-ID must be an event id (an integer)").field("Last-Event-ID").into_response(),
        Some(Some(id)) => Some(id),
        None => None,
    };
    let after = last_event_id.or(after_query).unwrap_or(0);
    let audience = Audience { client, scanner_registers: state.scanner_registers(), payments: state.payments.clone() };
    let store = state.payments.store().clone();
    let notice = match store.oldest_event().await {
        Ok(oldest) if after > 0 && after.saturating_add(1) < oldest => Some(truncated(after, oldest)),
        Ok(_) => None,
        Err(error) => return ApiError::from(error).into_response(),
    };
    Sse::new(stream::iter(notice.map(Ok)).chain(events_after(store, after, audience)))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The first event of a stream resumed after events the journal no longer keeps
/// (`[store] journal_retention`): the reader missed changes and should re-read the
/// payments it follows. It has no id, so the reader's `Last-Event-ID` is unchanged.
fn truncated(after: u64, oldest: u64) -> SseEvent {
    let data = serde_json::json!({
        "after": after,
        "oldest_kept": oldest,
        "message": "events up to oldest_kept - 1 are no longer kept; re-read the payments you follow",
    });
    SseEvent::default().event("events.truncated").data(data.to_string())
}

/// Who reads a stream: a till gets its registers' events only (and the code of an
/// unclaimed scan at its register); managers and technicians get every event.
struct Audience {
    client: Client,
    scanner_registers: HashMap<String, String>,
    payments: Arc<Payments>,
}

impl Audience {
    /// The event as this reader may see it, or `None`.
    async fn shown(&self, mut event: Event) -> Option<Event> {
        let Some(registers) = self.client.visible_registers() else { return Some(event) };
        let register = match event.kind.as_str() {
            "payment.updated" | "scan.unclaimed" => event.data.get("register").and_then(Value::as_str).map(str::to_string),
            "refund.updated" => {
                let payment = event.data.get("payment").and_then(Value::as_str)?;
                self.payments.get(payment).await.ok().map(|payment| payment.register)
            }
            kind if kind.starts_with("scanner.") => {
                event.data.get("scanner").and_then(Value::as_str).and_then(|scanner| self.scanner_registers.get(scanner).cloned())
            }
            _ => None,
        }?;
        if !registers.contains(&register) {
            return None;
        }
        if event.kind == "scan.unclaimed" {
            let code = event.data.get("code_sha256").and_then(Value::as_str).and_then(|digest| self.payments.unclaimed_code(digest));
            event.data["code"] = code.map_or(Value::Null, Value::String);
        }
        Some(event)
    }
}

struct Cursor {
    store: Store,
    after: u64,
    pending: std::vec::IntoIter<Event>,
    changes: tokio::sync::watch::Receiver<u64>,
    audience: Audience,
}

fn events_after(store: Store, after: u64, audience: Audience) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let changes = store.subscribe();
    let cursor = Cursor { store, after, pending: Vec::new().into_iter(), changes, audience };
    stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.pending.next() {
                cursor.after = event.id;
                let Some(event) = cursor.audience.shown(event).await else { continue };
                let sse = SseEvent::default().id(event.id.to_string()).event(event.kind).data(event.data.to_string());
                return Some((Ok(sse), cursor));
            }
            cursor.changes.borrow_and_update();
            match cursor.store.events_after(cursor.after, BATCH).await {
                Ok(batch) if !batch.is_empty() => cursor.pending = batch.into_iter(),
                Ok(_) => {
                    if cursor.changes.changed().await.is_err() {
                        return None;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read the journal for an event stream");
                    return None;
                }
            }
        }
    })
}
