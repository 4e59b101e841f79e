//! What every request passes before a handler: the `Host` check (DNS rebinding), the
//! CORS origin allowlist, and bearer-token authentication of `/v1` routes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, AUTHORIZATION, HOST, ORIGIN, VARY,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;

/// `true` for `127.0.0.1`, `localhost` and `[::1]`, with any port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().map(|inside| format!("[{inside}]")).unwrap_or_default()
    } else {
        host.rsplit_once(':')
            .map(|(name, port)| if port.chars().all(|c| c.is_ascii_digit()) { name } else { host })
            .unwrap_or(host)
            .to_string()
    };
    matches!(name.to_ascii_lowercase().as_str(), "127.0.0.1" | "localhost" | "[::1]")
}

/// The host name of a `Host` header, lowercase, without the port.
fn host_name(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.strip_prefix('[') {
        Some(rest) => format!("[{}]", rest.split(']').next().unwrap_or("")),
        None => host.rsplit_once(':').map(|(name, _)| name.to_string()).unwrap_or(host),
    }
}

/// Refuses requests whose `Host` is not a loopback name (or one the config allows): a
/// web page that rebinds its DNS name to 127.0.0.1 must not reach the API.
pub async fn host_check(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let mut hosts = request.headers().get_all(HOST).iter();
    let host = hosts.next().and_then(|value| value.to_str().ok()).unwrap_or("");
    if hosts.next().is_some() {
        return ApiError::invalid("more than one Host header").field("Host").into_response();
    }
    let snapshot = state.snapshot();
    let allowed = |host: &str| is_loopback_host(host) || snapshot.access.allowed_hosts.contains(&host_name(host));
    // An absolute-form target (`GET http://other/…`) names its host too: both must pass.
    let target = request.uri().authority().map(|authority| authority.as_str().to_string());
    if !allowed(host) || target.as_deref().is_some_and(|target| !allowed(target)) {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden_host", "requests must be addressed to 127.0.0.1, localhost or [::1]")
            .into_response();
    }
    next.run(request).await
}

/// Refuses browser requests from origins not in `server.allowed_origins`, answers
/// preflights for allowed ones, and marks their responses.
pub async fn cors(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(ORIGIN).cloned() else { return next.run(request).await };
    let allowed = origin.to_str().is_ok_and(|origin| state.snapshot().access.allowed_origins.iter().any(|allowed| allowed == origin));
    if !allowed {
        return ApiError::new(StatusCode::FORBIDDEN, "origin_not_allowed", "this browser origin is not in server.allowed_origins")
            .into_response();
    }
    let mut response = if request.method() == Method::OPTIONS { StatusCode::NO_CONTENT.into_response() } else { next.run(request).await };
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Authorization, Content-Type, Idempotency-Key, Last-Event-ID"));
    response
}

/// The client a request's bearer token names, if any.
pub fn client_of(state: &AppState, headers: &axum::http::HeaderMap) -> Option<super::extract::Client> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(|token| Sha256::digest(token.trim().as_bytes()))?;
    let snapshot = state.snapshot();
    let found = snapshot.access.clients.iter().find(|(_, known)| constant_time_eq(known, &presented));
    found.map(|(client, _)| client.clone())
}

/// Everyone together, before authentication: a flood of requests (whatever their
/// token, method or path) answers `429` instead of reaching the handlers.
pub async fn admit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let per_second = state.snapshot().access.global_rate;
    let limit = RateLimit { per_second, burst: per_second };
    match state.global_bucket.take("", limit) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let mut response =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; retry shortly").into_response();
            response.headers_mut().insert("Retry-After", HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64));
            response
        }
    }
}

/// Names the client from its bearer token, or answers `401`.
pub async fn authenticate(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let client = client_of(&state, request.headers());
    let rate = state.snapshot().access.rate;
    match client {
        Some(client) => {
            let name = client.name.clone();
            if let Err(wait) = state.buckets.take(&name, rate) {
                let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                let mut response = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many requests from {name}; retry in {seconds} s"),
                )
                .into_response();
                response.headers_mut().insert("Retry-After", HeaderValue::from(seconds));
                return response;
            }
            request.extensions_mut().insert(client);
            next.run(request).await
        }
        None => {
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or unknown bearer token").into_response();
            response.headers_mut().insert("WWW-Authenticate", HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// A client's allowance: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// One token bucket per client.
#[derive(Default)]
pub struct Buckets(Mutex<HashMap<String, (f64, Instant)>>);

impl Buckets {
    /// Takes one request from `client`'s bucket, or answers how long until one is free.
    pub fn take(&self, client: &str, limit: RateLimit) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, since) = buckets.entry(client.to_string()).or_insert((f64::from(limit.burst), now));
        let refill = now.duration_since(*since).as_secs_f64() * f64::from(limit.per_second);
        *tokens = (*tokens + refill).min(f64::from(limit.burst));
        *since = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / f64::from(limit.per_second)))
        }
    }
}

/// Compares token digests without an early exit, so timing tells nothing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_comparison() {
        assert!(constant_time_eq(b"same-digest", b"same-digest"));
        assert!(!constant_time_eq(b"same-digest", b"same-digesT"));
        assert!(!constant_time_eq(b"short", b"longer"));
    }

    #[test]
    fn buckets_refill() {
        let buckets = Buckets::default();
        let limit = RateLimit { per_second: 1, burst: 2 };
        assert!(buckets.take("a", limit).is_ok());
        assert!(buckets.take("a", limit).is_ok());
        let wait = buckets.take("a", limit).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(500), "{wait:?}");
        assert!(buckets.take("b", limit).is_ok(), "buckets are per client");
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("POS.shop.lan:8787"), "pos.shop.lan");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("10.0.0.5"), "10.0.0.5");
    }

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "127.0.0.1:8787", "localhost", "LOCALHOST:80", "[::1]", "[::1]:8787"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["", "evil.example", "evil.example:8787", "127.0.0.1.evil.example", "10.0.0.1:8787", "[::2]:80", "localhost.evil"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
