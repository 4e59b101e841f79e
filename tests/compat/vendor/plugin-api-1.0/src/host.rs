//! What the daemon lends a plugin: HTTP, a clock and a logger.

use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RStr, RString, RVec};
use abi_stable::StableAbi;

use crate::types::Extensions;

/// One HTTP header.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name, case-insensitive.
    pub name: RString,
    /// Header value.
    pub value: RString,
}

impl Header {
    /// A header from a name and a value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header { name: RString::from(name.into()), value: RString::from(value.into()) }
    }
}

/// An outbound HTTP request, made by the host on the plugin's behalf.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// `GET`, `POST`, `DELETE`…
    pub method: RString,
    /// Absolute `http` or `https` URL.
    pub url: RString,
    /// Request headers. The host never logs the values of `Authorization`, nor any
    /// value listed in `redact`.
    pub headers: RVec<Header>,
    /// Request body (may be empty).
    pub body: RVec<u8>,
    /// The host gives up on the request after this many milliseconds.
    pub timeout_ms: u64,
    /// Strings (tokens, secrets) the host must mask wherever it logs this request.
    pub redact: RVec<RString>,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

/// The answer to an [`HttpRequest`]. Any status code is an answer, not an error.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers, names lowercase.
    pub headers: RVec<Header>,
    /// Response body.
    pub body: RVec<u8>,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

impl HttpResponse {
    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }
}

/// Why the host could not get an HTTP answer at all.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// `timeout`, `connect`, `invalid_request` or `io`.
    pub kind: RString,
    /// What happened, without secrets.
    pub message: RString,
    /// `true` when the request may have reached the provider (the connection was open
    /// and the request written, but no answer came back in time): a request that could
    /// take money is then an unknown outcome, not a failure. `false` when it surely did
    /// not (refused connection, unknown host, invalid request).
    pub maybe_sent: bool,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

impl HostError {
    /// A failure of `kind` (`timeout`, `connect`, `invalid_request`, `io`).
    pub fn new(kind: &str, message: impl Into<String>, maybe_sent: bool) -> Self {
        HostError { kind: RString::from(kind), message: RString::from(message.into()), maybe_sent, extensions: Extensions::default() }
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for HostError {}

/// Severity of a plugin's log line: an open enumeration (an unknown level is logged as
/// `INFO`).
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogLevel(pub u8);

impl LogLevel {
    /// Diagnostics for developers.
    pub const DEBUG: LogLevel = LogLevel(0);
    /// Normal operation.
    pub const INFO: LogLevel = LogLevel(1);
    /// Something a technician should look at.
    pub const WARN: LogLevel = LogLevel(2);
    /// Something failed.
    pub const ERROR: LogLevel = LogLevel(3);

    /// The level's lowercase name (`info` for an unknown one).
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::DEBUG => "debug",
            LogLevel::WARN => "warn",
            LogLevel::ERROR => "error",
            _ => "info",
        }
    }
}

/// Capabilities the host hands a plugin when it creates a payment method.
///
/// Plugins do no network I/O of their own: going through the host keeps every outbound
/// call timed, logged, redacted and testable in one place.
#[sabi_trait]
pub trait Host: Send + Sync {
    /// Performs an HTTP request and waits for the answer (at most `timeout_ms`).
    fn http(&self, request: HttpRequest) -> abi_stable::std_types::RResult<HttpResponse, HostError>;

    /// Current time, Unix milliseconds. Use this rather than the system clock, so tests
    /// and the host agree on "now".
    fn now_unix_ms(&self) -> i64;

    /// Writes a line to the daemon's log, tagged with the plugin and method id.
    #[sabi(last_prefix_field)]
    fn log(&self, level: LogLevel, message: RStr<'_>);
}

/// The host capabilities as an owned, thread-safe trait object.
pub type HostBox = Host_TO<'static, RBox<()>>;

impl HostBox {
    /// Boxes a [`Host`] implementation for [`MethodSetup::host`](crate::MethodSetup) —
    /// what a test host (see `posbridge-plugin-testkit`) or an embedding program hands a
    /// plugin.
    pub fn of<H: Host + 'static>(host: H) -> HostBox {
        Host_TO::from_value(host, abi_stable::sabi_trait::TD_Opaque)
    }
}
