//! Request extractors: the authenticated client, and strict JSON bodies whose every
//! mistake names its field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::config::Role;

/// The API client the bearer token named, with what it may do.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub role: Role,
    /// The registers a till acts for (ignored for other roles).
    pub registers: Vec<String>,
}

impl Client {
    /// The client may see and act on `register`'s payments. Others' answer `404`, so
    /// their ids do not leak.
    pub fn sees(&self, register: &str) -> bool {
        self.role != Role::Till || self.registers.iter().any(|own| own == register)
    }

    /// The registers whose payments this client may list (`None`: all).
    pub fn visible_registers(&self) -> Option<&[String]> {
        (self.role == Role::Till).then_some(self.registers.as_slice())
    }

    /// Technicians read but move no money: `403 forbidden_role`.
    pub fn may_move_money(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Technician => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_role",
                "a technician's token reads status and history but moves no money",
            )),
            _ => Ok(()),
        }
    }

    /// Only managers refund by transaction id without a posbridge payment.
    pub fn may_refund_by_transaction(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Manager => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_role",
                "only a manager's token refunds by transaction id without a posbridge payment",
            )
            .field("transaction_id")),
        }
    }

    /// The exceptions list (receipts the provider refused after they were taken offline)
    /// is the shop's follow-up, not a till's: `403 forbidden_role` for tills.
    pub fn may_read_exceptions(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Till => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_role",
                "the exceptions list is for a manager's (or technician's) token",
            )),
            _ => Ok(()),
        }
    }

    /// The register a payment is for when the request names none: the till's first.
    pub fn default_register(&self) -> String {
        self.registers.first().cloned().unwrap_or_else(|| self.name.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Client>()
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a bearer token is required"))
    }
}

/// The configured request body limit, attached to each request by the router.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A body this much over the limit is cut off rather than read to its end.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// Reads the body up to `limit`. A longer body is read to its end (up to
/// [`DRAIN_CAP`]) and dropped, so the client gets its `413` instead of a reset connection.
async fn read_limited(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut stream = request.into_body().into_data_stream();
    let mut body = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| ApiError::invalid(format!("the request body could not be read: {error}")))?;
        seen += chunk.len();
        if seen <= limit {
            body.extend_from_slice(&chunk);
        } else if seen > DRAIN_CAP {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the configured limit ({limit} bytes)"),
        ));
    }
    Ok(Bytes::from(body))
}

/// A body of any type, bounded by the configured limit (`413` beyond it).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = request.extensions().get::<BodyLimit>().map(|limit| limit.0).unwrap_or(1024 * 1024);
        read_limited(request, limit).await.map(RawBody)
    }
}

/// A JSON body, parsed strictly: unknown fields and wrong types are `400
/// invalid_request` naming the field; a body over the limit is `413`.
pub struct StrictJson<T> {
    pub value: T,
    /// The raw body, for idempotency fingerprints.
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request.headers().get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let limit = request.extensions().get::<BodyLimit>().map(|limit| limit.0).unwrap_or(1024 * 1024);
        let raw = read_limited(request, limit).await?;
        let empty = raw.iter().all(u8::is_ascii_whitespace);
        let json = content_type.split(';').next().is_some_and(|media| media.trim() == "application/json");
        if !empty && !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let body: &[u8] = if empty { b"{}" } else { &raw };
        if body.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("the body must be a JSON object ({...})"));
        }
        let value = parse(body)?;
        Ok(StrictJson { value, raw })
    }
}

/// Parses JSON, naming the field of the first mistake.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => {
            deserializer.end().map_err(|error| ApiError::invalid(format!("malformed JSON: {error}")))?;
            Ok(value)
        }
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::invalid(format!("malformed JSON: {inner}")));
            }
            let message = inner.to_string();
            let message = plain_words(message.split(" at line ").next().unwrap_or(&message));
            let error = ApiError::invalid(message);
            Err(if path == "." { error } else { error.field(path) })
        }
    }
}

/// serde's messages in the API's words: JSON types, not Rust ones.
fn plain_words(message: &str) -> String {
    let replacements = [
        ("expected struct ", "expected an object "),
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("invalid type: map", "invalid type: object"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: unit value", "invalid type: null"),
    ];
    let mut text = replacements.iter().fold(message.to_string(), |text, (rust, json)| text.replace(rust, json));
    // "expected an object CancelBody": the Rust type's name means nothing to a POS.
    if let Some(at) = text.find("expected an object ") {
        text.truncate(at + "expected an object".len());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        amount: u64,
        lines: Option<Vec<Line>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        amount: u64,
    }

    #[test]
    fn errors_name_fields() {
        let error = parse::<Body>(br#"{"amount": 5, "colour": "red"}"#).unwrap_err();
        assert_eq!((error.code.as_str(), error.field.as_deref()), ("invalid_request", Some("colour")));
        let error = parse::<Body>(br#"{"amount": 5, "lines": [{"amount": 1}, {"amount": "x"}]}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("lines[1].amount"));
        let error = parse::<Body>(br#"{"amount": 5, "lines": [{"amount": 1, "x": 2}]}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("lines[0].x"));
        let error = parse::<Body>(br#"{"amount": "#).unwrap_err();
        assert!(error.message.starts_with("malformed JSON"), "{}", error.message);
        assert!(parse::<Body>(br#"{"amount": 5} trailing"#).is_err());
        let error = parse::<Body>(br#"{"amount": "5"}"#).unwrap_err();
        assert!(!error.message.contains("u64"), "{}", error.message);
    }

    #[test]
    fn messages_name_json_types() {
        assert_eq!(plain_words("invalid type: sequence, expected struct CancelBody"), "invalid type: array, expected an object");
        assert_eq!(plain_words("invalid type: string \"x\", expected i64"), "invalid type: string \"x\", expected an integer");
    }
}
