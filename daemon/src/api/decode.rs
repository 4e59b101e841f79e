//! `POST /v1/decode`: QR codes in a PNG or JPEG; `?payment=` applies the first as a scan.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Client, RawBody};
use super::AppState;
use crate::payments::view::{payment_view, PaymentView};
use crate::payments::Asked;
use crate::qr_images::{self, ImageError};

/// `POST /v1/decode` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodeQuery {
    /// Apply the first code found as a scan of this payment.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]{1,64}$"))]
    pub payment: Option<String>,
}

/// The codes found.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Decoded {
    /// Every QR code's text, in the order found.
    pub codes: Vec<String>,
    /// With `?payment=`: the payment after the scan (absent when no code was found).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentView>,
}

impl From<ImageError> for ApiError {
    fn from(error: ImageError) -> Self {
        let status = match error {
            // The Content-Type was an image's (checked first); the bytes are not one.
            ImageError::UnknownFormat | ImageError::Corrupt(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ImageError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        };
        let code = match error {
            ImageError::UnknownFormat | ImageError::Corrupt(_) => "invalid_image",
            ImageError::TooLarge { .. } => "image_too_large",
        };
        ApiError::new(status, code, error.to_string())
    }
}

/// Decodes on a thread of its own (never the pool that runs plugin calls), at most
/// `server.max_concurrent_decodes` at once (`429 decoder_busy` beyond), and never an
/// image whose header says it is too large (`413 image_too_large`, before decoding).
async fn decode_bounded(state: &AppState, body: axum::body::Bytes) -> Result<qr_images::Found, ApiError> {
    // Other header problems are the decoder's to report (`invalid_image`).
    if let Err(too_large @ ImageError::TooLarge { .. }) = qr_images::size_within_limits(&body) {
        crate::metrics::record_decode_refused("too_large");
        return Err(too_large.into());
    }
    let Ok(slot) = state.decodes.clone().try_acquire_owned() else {
        crate::metrics::record_decode_refused("busy");
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "decoder_busy", "other images are being decoded; retry in a second"));
    };
    let (tell, told) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("decode".into()).spawn(move || {
        let _ = tell.send(qr_images::decode(&body));
        drop(slot);
    });
    spawned.map_err(|error| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "decoder_busy", format!("cannot start a decoder: {error}")))?;
    let decoded = told.await.map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "decode_failed", "the decoder stopped"))?;
    Ok(decoded?)
}

/// Finds the codes (on a decoder thread: decoding is CPU work), and scans the first.
pub async fn decode(
    State(state): State<Arc<AppState>>,
    client: Client,
    headers: HeaderMap,
    query: Result<Query<DecodeQuery>, axum::extract::rejection::QueryRejection>,
    RawBody(body): RawBody,
) -> Response {
    let media = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let media = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media != "image/png" && media != "image/jpeg" {
        let error =
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the image as image/png or image/jpeg");
        return error.field("Content-Type").into_response();
    }
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return ApiError::invalid(rejection.body_text()).into_response(),
    };
    if let Err(error) = super::payments::bounded(query.payment.as_deref(), "payment", 1, 64) {
        return error.into_response();
    }
    let route = format!("POST /v1/decode?payment={}", query.payment.as_deref().unwrap_or(""));
    let raw = body.clone();
    // With `payment`, decoding scans: a retry with the same Idempotency-Key replays it.
    super::payments::idempotent(&state, &client.name, &headers, &route, &raw, |asked| async {
        let decoded = decode_and_scan(&state, &client, query.payment.as_deref(), body, asked).await?;
        Ok((StatusCode::OK, serde_json::to_value(decoded).unwrap_or_default()))
    })
    .await
}

async fn decode_and_scan(
    state: &AppState,
    client: &Client,
    payment: Option<&str>,
    body: axum::body::Bytes,
    asked: Asked,
) -> Result<Decoded, ApiError> {
    if let Some(id) = payment {
        client.may_move_money()?;
        super::payments::visible_payment(state, client, id).await?;
    }
    let started = std::time::Instant::now();
    let found = decode_bounded(state, body).await?;
    tracing::debug!(codes = found.codes.len(), by = ?found.by, elapsed_ms = started.elapsed().as_millis() as u64, "image decoded");
    let codes = found.codes;
    // The answer is {codes, payment}, so the engine does not store the payment alone as
    // the answer: the API stores this one.
    let asked = Asked { ticket: None, ..asked };
    let payment = match (payment, codes.first()) {
        (Some(id), Some(code)) => Some(payment_view(&state.payments.scan(id, code, asked).await?)),
        _ => None,
    };
    Ok(Decoded { codes, payment })
}
