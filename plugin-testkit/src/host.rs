//! A scripted host: HTTP through a chosen transport and injected faults, a clock that
//! tests can drive, and a record of every request and log line.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use posbridge_plugin_api::{Header, Host, HostBox, HostError, HttpRequest, HttpResponse, LogLevel, RResult, RStr, RVec};

/// Where a [`FakeHost`] sends the requests that no fault stops: a function that plays
/// the provider, or a client that forwards to a real (fake) server.
pub type Transport = Arc<dyn Fn(&HttpRequest) -> Result<HttpResponse, HostError> + Send + Sync>;

/// Something that goes wrong with one request, as a plugin meets it in a shop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The connection is refused: the provider never saw the request (`maybe_sent` false).
    Refused,
    /// No answer within the request's timeout; the provider did not act on it, but the
    /// plugin cannot know that (`maybe_sent` true).
    Timeout,
    /// The provider received the request and acted on it; its answer is lost on the way
    /// back (a `timeout` with `maybe_sent` true). The case that loses money when a plugin
    /// reports it as "nothing happened".
    DropAnswer,
    /// As [`Fault::DropAnswer`], and then the line stays down: every later request is
    /// refused until [`FakeHost::clear_faults`]. A plugin that retries cannot learn the
    /// outcome within the call.
    DropAnswerThenOutage,
    /// The provider answers this status (a 5xx) without acting.
    Status(u16),
    /// The provider answers 429 with `Retry-After` (seconds) without acting.
    RateLimited {
        /// The `Retry-After` value.
        retry_after_secs: u64,
    },
    /// The answer comes after this delay (at most the request's timeout; past it, the
    /// request times out as [`Fault::Timeout`]). With a manual [`Clock`] the clock moves
    /// on instead of the test sleeping.
    Slow {
        /// How late the answer is.
        delay_ms: u64,
    },
}

/// The host's clock: the system's, or one a test moves by hand.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock (the default).
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands still at `unix_ms` until moved.
    pub fn manual(unix_ms: i64) -> Clock {
        Clock { manual: Some(Arc::new(AtomicI64::new(unix_ms))) }
    }

    /// Now, in Unix milliseconds.
    pub fn now_unix_ms(&self) -> i64 {
        match &self.manual {
            Some(now) => now.load(Ordering::SeqCst),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64),
        }
    }

    /// Lets `ms` pass: moves a manual clock, sleeps on the system one.
    pub fn advance(&self, ms: u64) {
        match &self.manual {
            Some(now) => {
                now.fetch_add(ms as i64, Ordering::SeqCst);
            }
            None => std::thread::sleep(Duration::from_millis(ms)),
        }
    }
}

/// A request as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`…
    pub method: String,
    /// The full URL.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body, as text (lossy).
    pub body: String,
    /// The timeout the plugin gave the request.
    pub timeout_ms: u64,
    /// The strings the plugin asked the host to mask in logs.
    pub redact: Vec<String>,
    /// When it was made.
    pub at_unix_ms: i64,
    /// The fault applied to it, if any.
    pub fault: Option<Fault>,
}

impl RecordedRequest {
    /// The URL's path (and query), without scheme and authority.
    pub fn path(&self) -> &str {
        let after_scheme = self.url.split_once("://").map_or(self.url.as_str(), |(_, rest)| rest);
        after_scheme.find('/').map_or("/", |at| &after_scheme[at..])
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

/// A line the plugin logged through the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its severity.
    pub level: LogLevel,
    /// Its text.
    pub message: String,
}

struct Armed {
    method: Option<String>,
    path_contains: String,
    fault: Fault,
    /// Matching requests to let through first.
    skip: usize,
    remaining: Option<usize>,
}

impl Armed {
    fn matches(&self, request: &HttpRequest) -> bool {
        self.method.as_deref().is_none_or(|method| method.eq_ignore_ascii_case(request.method.as_str()))
            && request.url.contains(self.path_contains.as_str())
    }
}

struct State {
    transport: Transport,
    clock: Clock,
    faults: Mutex<Vec<Armed>>,
    requests: Mutex<Vec<RecordedRequest>>,
    logs: Mutex<Vec<LogLine>>,
}

/// The host a plugin under test is created with. Cheap to clone (clones share state):
/// keep one to script faults and read what happened, and hand [`FakeHost::boxed`] to the
/// method.
#[derive(Clone)]
pub struct FakeHost {
    state: Arc<State>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeHost {
    /// A host whose HTTP goes to `transport` (a function playing the provider).
    pub fn new(transport: impl Fn(&HttpRequest) -> Result<HttpResponse, HostError> + Send + Sync + 'static) -> FakeHost {
        FakeHost::with_transport(Arc::new(transport))
    }

    /// A host over a shared transport (a client towards a real server, say).
    pub fn with_transport(transport: Transport) -> FakeHost {
        FakeHost {
            state: Arc::new(State {
                transport,
                clock: Clock::system(),
                faults: Mutex::new(Vec::new()),
                requests: Mutex::new(Vec::new()),
                logs: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The same host with `clock` (call before handing it to a method).
    pub fn with_clock(self, clock: Clock) -> FakeHost {
        let state = State {
            transport: self.state.transport.clone(),
            clock,
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
        };
        FakeHost { state: Arc::new(state) }
    }

    /// The host as [`MethodSetup::host`](posbridge_plugin_api::MethodSetup) takes it.
    pub fn boxed(&self) -> HostBox {
        HostBox::of(self.clone())
    }

    /// The host's clock.
    pub fn clock(&self) -> &Clock {
        &self.state.clock
    }

    /// The next request whose method is `method` (any, if empty) and whose URL contains
    /// `path_contains` meets `fault`, once.
    pub fn fail_next(&self, method: &str, path_contains: &str, fault: Fault) {
        self.arm(method, path_contains, fault, Some(1));
    }

    /// Every matching request meets `fault` until [`FakeHost::clear_faults`].
    pub fn fail_all(&self, method: &str, path_contains: &str, fault: Fault) {
        self.arm(method, path_contains, fault, None);
    }

    /// The request `index` places from now (0: the next one), whatever it is, meets
    /// `fault`, once: for walking a fault through every request of an operation.
    pub fn fail_request(&self, index: usize, fault: Fault) {
        lock(&self.state.faults).push(Armed { method: None, path_contains: String::new(), fault, skip: index, remaining: Some(1) });
    }

    fn arm(&self, method: &str, path_contains: &str, fault: Fault, remaining: Option<usize>) {
        let method = (!method.is_empty()).then(|| method.to_string());
        lock(&self.state.faults).push(Armed { method, path_contains: path_contains.to_string(), fault, skip: 0, remaining });
    }

    /// Removes every scripted fault.
    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }

    /// Every request made so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Every line logged so far, oldest first.
    pub fn logs(&self) -> Vec<LogLine> {
        lock(&self.state.logs).clone()
    }

    /// The fault the next request meets, used up if it was armed once.
    fn take_fault(&self, request: &HttpRequest) -> Option<Fault> {
        let mut faults = lock(&self.state.faults);
        // Every armed fault this request matches counts it; the first one due fires.
        let mut chosen = None;
        for (at, armed) in faults.iter_mut().enumerate().filter(|(_, armed)| armed.matches(request)) {
            match armed.skip {
                0 if chosen.is_none() => chosen = Some(at),
                0 => {}
                _ => armed.skip -= 1,
            }
        }
        let at = chosen?;
        let fault = faults[at].fault.clone();
        if fault == Fault::DropAnswerThenOutage {
            // The outage comes first from now on, before any fault armed earlier.
            faults.insert(0, Armed { method: None, path_contains: String::new(), fault: Fault::Refused, skip: 0, remaining: None });
        }
        let at = if fault == Fault::DropAnswerThenOutage { at + 1 } else { at };
        if let Some(remaining) = faults[at].remaining.as_mut() {
            *remaining -= 1;
            if *remaining == 0 {
                faults.remove(at);
            }
        }
        Some(fault)
    }

    fn record(&self, request: &HttpRequest, fault: Option<Fault>) {
        let recorded = RecordedRequest {
            method: request.method.to_string(),
            url: request.url.to_string(),
            headers: request.headers.iter().map(|header| (header.name.to_string(), header.value.to_string())).collect(),
            body: String::from_utf8_lossy(request.body.as_slice()).into_owned(),
            timeout_ms: request.timeout_ms,
            redact: request.redact.iter().map(|secret| secret.to_string()).collect(),
            at_unix_ms: self.state.clock.now_unix_ms(),
            fault,
        };
        lock(&self.state.requests).push(recorded);
    }

    fn answer(&self, request: &HttpRequest, fault: Option<&Fault>) -> Result<HttpResponse, HostError> {
        let timeout = HostError::new("timeout", format!("no answer within {} ms", request.timeout_ms), true);
        match fault {
            None => (self.state.transport)(request),
            Some(Fault::Refused) => Err(HostError::new("connect", "connection refused", false)),
            Some(Fault::Timeout) => {
                self.state.clock.advance(request.timeout_ms.min(50));
                Err(timeout)
            }
            Some(Fault::DropAnswer | Fault::DropAnswerThenOutage) => {
                let _lost = (self.state.transport)(request);
                Err(timeout)
            }
            Some(Fault::Status(status)) => Ok(status_answer(*status, Vec::new())),
            Some(Fault::RateLimited { retry_after_secs }) => {
                Ok(status_answer(429, vec![Header::new("retry-after", retry_after_secs.to_string())]))
            }
            Some(Fault::Slow { delay_ms }) if *delay_ms > request.timeout_ms => {
                self.state.clock.advance(request.timeout_ms);
                Err(timeout)
            }
            Some(Fault::Slow { delay_ms }) => {
                self.state.clock.advance(*delay_ms);
                (self.state.transport)(request)
            }
        }
    }
}

fn status_answer(status: u16, headers: Vec<Header>) -> HttpResponse {
    let body = format!(r#"{{"error":{{"code":"injected","message":"fault injected by the test host: HTTP {status}"}}}}"#);
    let mut headers = headers;
    headers.push(Header::new("content-type", "application/json"));
    HttpResponse { status, headers: RVec::from(headers), body: RVec::from(body.into_bytes()), ..Default::default() }
}

impl Host for FakeHost {
    fn http(&self, request: HttpRequest) -> RResult<HttpResponse, HostError> {
        let fault = self.take_fault(&request);
        self.record(&request, fault.clone());
        self.answer(&request, fault.as_ref()).into()
    }

    fn now_unix_ms(&self) -> i64 {
        self.state.clock.now_unix_ms()
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        lock(&self.state.logs).push(LogLine { level, message: message.to_string() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posbridge_plugin_api::RString;

    fn ok_host(counter: Arc<AtomicI64>) -> FakeHost {
        FakeHost::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(status_answer(200, Vec::new()))
        })
        .with_clock(Clock::manual(1_000))
    }

    fn request(method: &str, url: &str) -> HttpRequest {
        HttpRequest { method: RString::from(method), url: RString::from(url), timeout_ms: 500, ..Default::default() }
    }

    #[test]
    fn a_dropped_answer_reaches_the_provider_and_reports_a_maybe_sent_timeout() {
        let reached = Arc::new(AtomicI64::new(0));
        let host = ok_host(reached.clone());
        host.fail_next("POST", "/pay", Fault::DropAnswer);
        let error = host.http(request("POST", "http://fake/pay")).into_result().unwrap_err();
        assert_eq!((error.kind.as_str(), error.maybe_sent, reached.load(Ordering::SeqCst)), ("timeout", true, 1));
        assert_eq!(host.http(request("POST", "http://fake/pay")).into_result().unwrap().status, 200, "armed once");
        assert_eq!(host.requests()[0].fault, Some(Fault::DropAnswer));
    }

    #[test]
    fn refused_and_status_faults_never_reach_the_provider() {
        let reached = Arc::new(AtomicI64::new(0));
        let host = ok_host(reached.clone());
        host.fail_all("", "/", Fault::Refused);
        let error = host.http(request("GET", "http://fake/x")).into_result().unwrap_err();
        assert!(!error.maybe_sent);
        host.clear_faults();
        host.fail_next("GET", "/x", Fault::RateLimited { retry_after_secs: 3 });
        let limited = host.http(request("GET", "http://fake/x")).into_result().unwrap();
        assert_eq!((limited.status, limited.header("Retry-After")), (429, Some("3")));
        assert_eq!(reached.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn indexed_faults_count_every_request_whatever_order_they_were_armed_in() {
        let host = ok_host(Arc::new(AtomicI64::new(0)));
        host.fail_request(1, Fault::Refused);
        host.fail_request(0, Fault::Status(503));
        host.fail_request(2, Fault::DropAnswerThenOutage);
        let statuses: Vec<String> = (0..5)
            .map(|_| match host.http(request("POST", "http://fake/x")).into_result() {
                Ok(answer) => answer.status.to_string(),
                Err(error) => error.kind.to_string(),
            })
            .collect();
        assert_eq!(statuses, ["503", "connect", "timeout", "connect", "connect"], "the line stays down after the drop");
        host.clear_faults();
        assert!(host.http(request("POST", "http://fake/x")).into_result().is_ok());
    }

    #[test]
    fn a_slow_answer_moves_a_manual_clock_and_times_out_past_the_request_timeout() {
        let host = ok_host(Arc::new(AtomicI64::new(0)));
        host.fail_next("GET", "", Fault::Slow { delay_ms: 200 });
        assert!(host.http(request("GET", "http://fake/a")).into_result().is_ok());
        assert_eq!(host.now_unix_ms(), 1_200);
        host.fail_next("GET", "", Fault::Slow { delay_ms: 2_000 });
        assert!(host.http(request("GET", "http://fake/a")).into_result().is_err());
        assert_eq!(host.now_unix_ms(), 1_700, "gave up at the request's 500 ms timeout");
    }
}
