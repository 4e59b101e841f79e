//! The host side of the ABI: the capabilities lent to each payment method.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use posbridge_plugin_api::{Header, Host, HostError, HttpRequest, HttpResponse, LogLevel, RResult, RStr, RString, RVec};

/// HTTP, clock and logging for one configured method. Every outbound call is timed,
/// logged with secrets masked, and bounded by the request's timeout.
pub struct HostServices {
    plugin_id: String,
    method_id: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl HostServices {
    /// Services for `method_id` of `plugin_id`, doing HTTP on `runtime`.
    pub fn new(plugin_id: &str, method_id: &str, http: reqwest::Client, runtime: tokio::runtime::Handle) -> Self {
        HostServices { plugin_id: plugin_id.to_string(), method_id: method_id.to_string(), http, runtime }
    }

    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HostError> {
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| host_error("invalid_request", "not an HTTP method"))?;
        check_url(request.url.as_str())?;
        let mut builder = self.http.request(method, request.url.as_str()).timeout(Duration::from_millis(request.timeout_ms.max(1)));
        for header in request.headers.iter() {
            builder = builder.header(header.name.as_str(), header.value.as_str());
        }
        let response = builder.body(request.body.to_vec()).send().await.map_err(|error| classify(&error))?;
        let status = response.status().as_u16();
        let headers: RVec<Header> =
            response.headers().iter().map(|(name, value)| Header::new(name.as_str(), String::from_utf8_lossy(value.as_bytes()))).collect();
        let body = read_capped(response).await?;
        Ok(HttpResponse { status, headers, body: body.into(), ..Default::default() })
    }
}

/// The largest provider answer read; a longer one is an error, not a memory hog.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Reads a response body up to [`MAX_RESPONSE_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, HostError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| classify(&error))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            // The provider received the request and answered: the request was sent.
            return Err(HostError::new("io", format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"), true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Provider traffic is `https://`; plain `http://` only to this machine (sandboxes).
fn check_url(url: &str) -> Result<(), HostError> {
    match reqwest::Url::parse(url) {
        Ok(url) if url.scheme() == "https" || (url.scheme() == "http" && is_loopback_url(&url)) => Ok(()),
        Ok(_) => Err(host_error("invalid_request", "provider requests must use https:// (http:// only to this machine)")),
        Err(_) => Err(host_error("invalid_request", "not a URL")),
    }
}

/// The URL names this machine (`localhost`, `127.0.0.0/8`, `[::1]`).
fn is_loopback_url(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
}

/// The HTTP client lent to plugins: no redirects (a provider's answer is the answer),
/// no proxy unless `[server] proxy` names one (environment variables are ignored).
pub fn http_client(proxy: Option<&str>) -> Result<reqwest::Client, reqwest::Error> {
    let builder =
        reqwest::Client::builder().user_agent(concat!("posbridge/", env!("CARGO_PKG_VERSION"))).redirect(reqwest::redirect::Policy::none());
    let builder = match proxy {
        Some(proxy) => builder.proxy(reqwest::Proxy::all(proxy)?),
        None => builder.no_proxy(),
    };
    builder.build()
}

impl Host for HostServices {
    fn http(&self, request: HttpRequest) -> RResult<HttpResponse, HostError> {
        let started = Instant::now();
        let url = redact(request.url.as_str(), &request.redact);
        let result = self.runtime.block_on(self.send(&request));
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(response) => {
                tracing::debug!(plugin = %self.plugin_id, method_id = %self.method_id, http.method = %request.method, %url, status = response.status, elapsed_ms, "plugin http")
            }
            Err(error) => {
                tracing::warn!(plugin = %self.plugin_id, method_id = %self.method_id, http.method = %request.method, %url, error = %redact(&error.to_string(), &request.redact), elapsed_ms, "plugin http failed")
            }
        }
        result.into()
    }

    fn now_unix_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|since| since.as_millis() as i64).unwrap_or(0)
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        let (plugin, method_id, message) = (&self.plugin_id, &self.method_id, message.as_str());
        match level {
            LogLevel::DEBUG => tracing::debug!(plugin, method_id, "{message}"),
            LogLevel::WARN => tracing::warn!(plugin, method_id, "{message}"),
            LogLevel::ERROR => tracing::error!(plugin, method_id, "{message}"),
            _ => tracing::info!(plugin, method_id, "{message}"),
        }
    }
}

/// A request that surely never left this machine.
fn host_error(kind: &str, message: impl Into<String>) -> HostError {
    HostError::new(kind, message, false)
}

/// What went wrong, and whether the request may have reached the provider: only a
/// failed connection (or a request never built) surely did not.
fn classify(error: &reqwest::Error) -> HostError {
    let (kind, maybe_sent) = if error.is_connect() {
        ("connect", false)
    } else if error.is_builder() {
        ("invalid_request", false)
    } else if error.is_timeout() {
        ("timeout", true)
    } else {
        ("io", true)
    };
    // reqwest's Display includes the URL; the caller masks secrets in it.
    HostError::new(kind, error.to_string(), maybe_sent)
}

/// Masks each of `secrets` in `text`.
pub fn redact(text: &str, secrets: &[RString]) -> String {
    secrets.iter().filter(|secret| !secret.is_empty()).fold(text.to_string(), |masked, secret| masked.replace(secret.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_leaves_this_machine() {
        assert!(check_url("https://api.smartum.fi/v1").is_ok());
        for local in ["http://127.0.0.1:8788/x", "http://localhost/x", "http://[::1]:9/x"] {
            assert!(check_url(local).is_ok(), "{local}");
        }
        for remote in ["http://api.smartum.fi/v1", "http://10.0.0.1/x", "ftp://127.0.0.1/x", "not a url"] {
            assert!(check_url(remote).is_err(), "{remote}");
        }
    }

    #[test]
    fn redact_masks_every_occurrence() {
        let secrets = [RString::from("s3cr3t"), RString::from("")];
        assert_eq!(redact("a=s3cr3t&b=s3cr3t", &secrets), "a=***&b=***");
    }
}
