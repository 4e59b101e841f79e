//! The one place where every module's errors become HTTP answers:
//! `{"error": {"code", "message", "field"}}` with a status code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

use crate::payments::failure::class_of;
use crate::payments::provider::ProviderError;
use crate::payments::PaymentError;
use crate::store::StoreError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    /// Seconds after which the same request may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
}

/// The error body's shape (for the OpenAPI document).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// snake_case, stable: program against this.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// The request field it is about (`amount`, `lines[1].amount`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, code: code.to_string(), message: message.into(), field: None, retry_after: None }
    }

    /// The same error, about `field`.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// `400 invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorDetail { code: self.code.clone(), message: self.message.clone(), field: self.field.clone() },
        })
        .unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

/// The HTTP status of a failure code: the failure table's (`payments/failure.rs`).
fn provider_status(code: &str) -> StatusCode {
    StatusCode::from_u16(class_of(code).http_status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
}

impl From<PaymentError> for ApiError {
    fn from(error: PaymentError) -> Self {
        use StatusCode as S;
        let message = error.to_string();
        match error {
            PaymentError::UnknownMethod(_) => ApiError::new(S::UNPROCESSABLE_ENTITY, "unknown_method", message).field("method"),
            PaymentError::MethodNotConfigured(_) => {
                ApiError::new(provider_status("method_not_configured"), "method_not_configured", message).field("payment")
            }
            PaymentError::UnknownRegister(_) => ApiError::new(S::UNPROCESSABLE_ENTITY, "unknown_register", message).field("register"),
            PaymentError::NothingEligible(_) => ApiError::new(S::UNPROCESSABLE_ENTITY, "nothing_eligible", message).field("lines"),
            PaymentError::LinesDoNotSum { .. } => ApiError::new(S::UNPROCESSABLE_ENTITY, "lines_do_not_sum", message).field("lines"),
            PaymentError::NotFound(_) | PaymentError::RefundNotFound(_) => ApiError::new(S::NOT_FOUND, "not_found", message),
            PaymentError::SplitParentNotFound(_) => ApiError::new(S::NOT_FOUND, "split_parent_not_found", message).field("split_of"),
            PaymentError::SplitNotPossible { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "split_not_possible", message).field("split_of")
            }
            PaymentError::InvalidState { .. } => ApiError::new(S::CONFLICT, "invalid_state", message),
            PaymentError::Unsupported { .. } => ApiError::new(S::UNPROCESSABLE_ENTITY, "unsupported_operation", message).field("method"),
            PaymentError::RefundExceedsPayment { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "refund_exceeds_payment", message).field("amount")
            }
            PaymentError::Invalid { field, .. } => ApiError::new(S::BAD_REQUEST, "invalid_request", message).field(field),
            PaymentError::Incomplete { field, .. } => ApiError::new(S::UNPROCESSABLE_ENTITY, "incomplete_request", message).field(field),
            PaymentError::Mismatch { field, .. } => ApiError::new(S::UNPROCESSABLE_ENTITY, "field_mismatch", message).field(field),
            PaymentError::Provider { code, message, field } => {
                let error = ApiError::new(provider_status(&code), &code, message);
                match field {
                    Some(field) => error.field(field),
                    None => error,
                }
            }
            PaymentError::NotConfirmedYet { retry_after, .. } => ApiError {
                retry_after: Some(retry_after.as_secs()),
                ..ApiError::new(S::CONFLICT, "not_confirmed_yet", message).field("payment")
            },
            PaymentError::OfflineRefused { .. } => ApiError::new(S::CONFLICT, "offline_check_refused", message).field("payment"),
            PaymentError::ReceiptAlreadyUsed { .. } => {
                ApiError::new(provider_status("receipt_already_used"), "receipt_already_used", message)
            }
            PaymentError::Plugin(call) => call.into(),
            PaymentError::Store(store) => store.into(),
        }
    }
}

impl From<ProviderError> for ApiError {
    fn from(error: ProviderError) -> Self {
        let message = error.to_string();
        match error {
            ProviderError::Failed(failure) => {
                let error = ApiError::new(provider_status(&failure.code), &failure.code, failure.message);
                match failure.field {
                    Some(field) => error.field(field),
                    None => error,
                }
            }
            other => ApiError::new(provider_status(other.code()), other.code(), message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Gone(id) => return ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no payment {id}")),
            StoreError::Unavailable(why) => {
                tracing::warn!(%why, "store unavailable: request refused");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the shared store cannot be reached; nothing was changed: try again shortly",
                );
            }
            StoreError::Conflict(id) => {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("payment {id} was changed at the same moment by another till; read it and try again"),
                )
            }
            _ => {}
        }
        tracing::error!(%error, "store failure");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", "the local store failed; nothing was changed (see the daemon log)")
    }
}
