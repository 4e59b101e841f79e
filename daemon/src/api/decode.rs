//! `POST /v1/decode`: QR codes in a PNG or JPEG; `?payment=` applies the first as a scan.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Client, RawBody};
use super::AppState;
use crate::payments::view::{payment_view, PaymentView};
use crate::qr_images::{self, ImageError};

/// `POST /v1/decode` query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodeQuery {
    /// Apply the first code found as a scan of this payment.
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
            ImageError::UnknownFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ImageError::Corrupt(_) | ImageError::TooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let code = match error {
            ImageError::UnknownFormat => "unsupported_media_type",
            ImageError::Corrupt(_) => "invalid_image",
            ImageError::TooLarge { .. } => "image_too_large",
        };
        ApiError::new(status, code, error.to_string())
    }
}

/// Finds the codes (on the blocking pool: decoding is CPU work), and scans the first.
pub async fn decode(
    State(state): State<Arc<AppState>>,
    client: Client,
    query: Result<Query<DecodeQuery>, axum::extract::rejection::QueryRejection>,
    RawBody(body): RawBody,
) -> Response {
    let result = async {
        let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        if let Some(id) = &query.payment {
            client.may_move_money()?;
            super::payments::visible_payment(&state, &client, id)?;
        }
        let started = std::time::Instant::now();
        let found = tokio::task::spawn_blocking(move || qr_images::decode(&body))
            .await
            .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "decode_failed", error.to_string()))??;
        tracing::debug!(codes = found.codes.len(), by = ?found.by, elapsed_ms = started.elapsed().as_millis() as u64, "image decoded");
        let codes = found.codes;
        let payment = match (&query.payment, codes.first()) {
            (Some(id), Some(code)) => Some(payment_view(&state.payments.scan(id, code, Default::default()).await?)),
            (Some(id), None) => {
                state.payments.get(id)?; // an unknown payment is still a 404
                None
            }
            _ => None,
        };
        Ok::<_, ApiError>(Decoded { codes, payment })
    }
    .await;
    match result {
        Ok(decoded) => Json(decoded).into_response(),
        Err(error) => error.into_response(),
    }
}
