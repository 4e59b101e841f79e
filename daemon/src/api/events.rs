//! `GET /v1/events`: the journal as Server-Sent Events. `?after=N` or `Last-Event-ID`
//! resumes after event N; events survive restarts because the journal does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::Client;
use super::AppState;
use crate::store::{Event, Store};

/// Events read from the journal per step.
const BATCH: usize = 256;

/// `GET /v1/events` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this event id (`Last-Event-ID` does the same and wins).
    pub after: Option<u64>,
}

/// Streams events after the requested id, then new ones as they are committed.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    _client: Client,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let after_query = match query {
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
    Sse::new(events_after(state.payments.store().clone(), after))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

struct Cursor {
    store: Store,
    after: u64,
    pending: std::vec::IntoIter<Event>,
    changes: tokio::sync::watch::Receiver<u64>,
}

fn events_after(store: Store, after: u64) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let changes = store.subscribe();
    let cursor = Cursor { store, after, pending: Vec::new().into_iter(), changes };
    stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.pending.next() {
                cursor.after = event.id;
                let sse = SseEvent::default().id(event.id.to_string()).event(event.kind).data(event.data.to_string());
                return Some((Ok(sse), cursor));
            }
            cursor.changes.borrow_and_update();
            match cursor.store.events_after(cursor.after, BATCH) {
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
