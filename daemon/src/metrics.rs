//! Prometheus metrics, kept in one process-wide registry: HTTP requests by route and
//! status, and plugin calls by method, operation and outcome.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

#[derive(Default, Clone, Copy)]
struct Timing {
    count: u64,
    seconds: f64,
}

/// Upper bounds (seconds) of the plugin call latency histogram.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Upper bounds (seconds) of the store commit histogram: a local flush takes a fraction
/// of a millisecond on a good disk, tens on a worn one; a shared database adds its
/// round trips.
const COMMIT_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0];

/// A latency histogram: counts per bucket (then +Inf) and the sum of what was counted.
#[derive(Default, Clone, Copy)]
struct Histogram {
    counts: [u64; 11],
    seconds: f64,
}

impl Histogram {
    fn record(&mut self, bounds: &[f64; 10], seconds: f64) {
        let slot = bounds.iter().position(|bound| seconds <= *bound).unwrap_or(bounds.len());
        self.counts[slot] += 1;
        self.seconds += seconds;
    }
}

#[derive(Default)]
struct Registry {
    http: BTreeMap<(String, String, u16), Timing>,
    plugin_calls: BTreeMap<(String, String, String), Timing>,
    /// (method, operation) → latency over `BUCKETS`.
    plugin_latency: BTreeMap<(String, String), Histogram>,
    reloads: BTreeMap<&'static str, u64>,
    payments: BTreeMap<(String, String), u64>,
    refunds: BTreeMap<(String, String), u64>,
    offline_receipts: BTreeMap<(String, String), u64>,
    scanner_events: BTreeMap<(String, String), u64>,
    connections_refused: u64,
    decodes_refused: BTreeMap<&'static str, u64>,
    /// Store backend → durable commits (write and flush, or the SQL transaction).
    store_commits: BTreeMap<&'static str, Histogram>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(&mut REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// Counts one HTTP request by its route template (not its URL, so ids do not explode
/// the label set).
pub fn record_http(method: &str, route: &str, status: u16, seconds: f64) {
    let method = http_method_label(method);
    with(|registry| {
        let timing = registry.http.entry((method.to_string(), route.to_string(), status)).or_default();
        timing.count += 1;
        timing.seconds += seconds;
    });
}

/// Counts one call into a plugin (which is where provider calls happen) and its latency.
pub fn record_plugin_call(method: &str, operation: &str, outcome: &str, seconds: f64) {
    with(|registry| {
        let outcome = &outcome_label(registry, method, operation, outcome);
        let timing = registry.plugin_calls.entry((method.to_string(), operation.to_string(), outcome.to_string())).or_default();
        timing.count += 1;
        timing.seconds += seconds;
        registry.plugin_latency.entry((method.to_string(), operation.to_string())).or_default().record(&BUCKETS, seconds);
    });
}

/// Times one durable store commit (every acknowledged change waits for one: a slow
/// disk or database shows here first).
pub fn record_store_commit(backend: &'static str, seconds: f64) {
    with(|registry| registry.store_commits.entry(backend).or_default().record(&COMMIT_BUCKETS, seconds));
}

/// Counts a payment reaching `status` (succeeded, failed, canceled, expired).
pub fn record_payment(method: &str, status: &str) {
    with(|registry| *registry.payments.entry((method.to_string(), status.to_string())).or_default() += 1);
}

/// Counts a refund reaching `status`.
pub fn record_refund(method: &str, status: &str) {
    with(|registry| *registry.refunds.entry((method.to_string(), status.to_string())).or_default() += 1);
}

/// Counts a receipt taken offline reaching `status` (accepted, confirmed, refused: an
/// exception, canceled).
pub fn record_offline_receipt(method: &str, status: &str) {
    with(|registry| *registry.offline_receipts.entry((method.to_string(), status.to_string())).or_default() += 1);
}

/// Counts a scanner event (connected, disconnected, scan, unclaimed, error).
pub fn record_scanner(scanner: &str, event: &str) {
    with(|registry| *registry.scanner_events.entry((scanner.to_string(), event.to_string())).or_default() += 1);
}

/// Counts a connection closed at once because the server was at `max_connections`.
pub fn record_connection_refused() {
    with(|registry| registry.connections_refused += 1);
}

/// Counts a `/v1/decode` refused before decoding (`busy`, `too_large`).
pub fn record_decode_refused(reason: &'static str) {
    with(|registry| *registry.decodes_refused.entry(reason).or_default() += 1);
}

/// The methods of HTTP; anything else a client sends counts as `other`, so the label
/// set stays bounded whatever arrives.
fn http_method_label(method: &str) -> &str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    KNOWN.into_iter().find(|known| *known == method).unwrap_or("other")
}

/// Distinct outcome codes kept per (method, operation); later new ones count as `other`.
const MAX_OUTCOMES: usize = 32;

/// A plugin's failure code as a label: `[a-z0-9_]`, at most 48 characters, and at most
/// [`MAX_OUTCOMES`] distinct ones per method and operation (a plugin cannot grow the
/// registry without bound).
fn outcome_label(registry: &Registry, method: &str, operation: &str, outcome: &str) -> String {
    let clean: String =
        outcome.chars().take(48).map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' }).collect();
    let known = registry.plugin_calls.keys().filter(|(m, o, _)| m == method && o == operation);
    let mut seen = 0;
    for (_, _, label) in known {
        if *label == clean {
            return clean;
        }
        seen += 1;
    }
    if seen >= MAX_OUTCOMES {
        "other".to_string()
    } else {
        clean
    }
}

/// Counts a config reload, applied or refused.
pub fn record_reload(applied: bool) {
    with(|registry| *registry.reloads.entry(if applied { "applied" } else { "refused" }).or_default() += 1);
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes one metric family: its help, its type, and a line per label set.
fn family(out: &mut String, name: &str, help: &str, kind: &str, series: impl Iterator<Item = (String, String)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in series {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// A family of Prometheus histograms (cumulative buckets, sum, count), one per label set.
fn histograms<'a>(out: &mut String, name: &str, help: &str, bounds: &[f64; 10], series: impl Iterator<Item = (String, &'a Histogram)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, histogram) in series {
        let bounds = bounds.iter().map(f64::to_string).chain(std::iter::once("+Inf".to_string()));
        let mut cumulative = 0;
        for (bound, count) in bounds.zip(histogram.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {:.6}\n{name}_count{{{labels}}} {cumulative}", histogram.seconds);
    }
}

/// The Prometheus text exposition, with `extra` gauges appended as (name, help, value).
pub fn render(extra: &[(&str, &str, f64)]) -> String {
    let mut out = String::new();
    with(|registry| {
        let http = |(method, route, status): &(String, String, u16)| {
            format!("method=\"{method}\",route=\"{}\",status=\"{status}\"", escape(route))
        };
        let calls = |(method, operation, outcome): &(String, String, String)| {
            format!("method=\"{}\",operation=\"{operation}\",outcome=\"{outcome}\"", escape(method))
        };
        family(
            &mut out,
            "posbridge_http_requests_total",
            "HTTP requests answered.",
            "counter",
            registry.http.iter().map(|(key, timing)| (http(key), timing.count.to_string())),
        );
        family(
            &mut out,
            "posbridge_http_request_seconds_sum",
            "Time spent answering HTTP requests.",
            "counter",
            registry.http.iter().map(|(key, timing)| (http(key), format!("{:.6}", timing.seconds))),
        );
        family(
            &mut out,
            "posbridge_plugin_calls_total",
            "Calls into payment-method plugins.",
            "counter",
            registry.plugin_calls.iter().map(|(key, timing)| (calls(key), timing.count.to_string())),
        );
        family(
            &mut out,
            "posbridge_plugin_call_seconds_sum",
            "Time spent in plugin calls.",
            "counter",
            registry.plugin_calls.iter().map(|(key, timing)| (calls(key), format!("{:.6}", timing.seconds))),
        );
        let by_method = |counts: &BTreeMap<(String, String), u64>| -> Vec<(String, String)> {
            counts
                .iter()
                .map(|((method, status), count)| (format!("method=\"{}\",status=\"{status}\"", escape(method)), count.to_string()))
                .collect()
        };
        family(
            &mut out,
            "posbridge_payments_total",
            "Payments that reached a status, by method.",
            "counter",
            by_method(&registry.payments).into_iter(),
        );
        family(
            &mut out,
            "posbridge_refunds_total",
            "Refunds that reached a status, by method.",
            "counter",
            by_method(&registry.refunds).into_iter(),
        );
        family(
            &mut out,
            "posbridge_offline_receipts_total",
            "Receipts taken offline (provider unreachable), and how their deferred checks ended; refused ones are exceptions.",
            "counter",
            by_method(&registry.offline_receipts).into_iter(),
        );
        let scanner_events = registry
            .scanner_events
            .iter()
            .map(|((scanner, event), count)| (format!("scanner=\"{}\",event=\"{event}\"", escape(scanner)), count.to_string()));
        family(&mut out, "posbridge_scanner_events_total", "Scanner connections, scans and errors.", "counter", scanner_events);
        let refused = std::iter::once((String::new(), registry.connections_refused.to_string()));
        family(
            &mut out,
            "posbridge_connections_refused_total",
            "Connections closed at once: the server was at max_connections.",
            "counter",
            refused,
        );
        let decodes = registry.decodes_refused.iter().map(|(reason, count)| (format!("reason=\"{reason}\""), count.to_string()));
        family(&mut out, "posbridge_decodes_refused_total", "Images refused before decoding (busy, too large).", "counter", decodes);
        let reloads = registry.reloads.iter().map(|(outcome, count)| (format!("outcome=\"{outcome}\""), count.to_string()));
        family(&mut out, "posbridge_config_reloads_total", "Config reloads, applied or refused.", "counter", reloads);
        let plugin_latency = registry
            .plugin_latency
            .iter()
            .map(|((method, operation), histogram)| (format!("method=\"{}\",operation=\"{operation}\"", escape(method)), histogram));
        histograms(&mut out, "posbridge_plugin_call_duration_seconds", "Plugin (provider) call latency.", &BUCKETS, plugin_latency);
        let commits = registry.store_commits.iter().map(|(backend, histogram)| (format!("backend=\"{backend}\""), histogram));
        histograms(
            &mut out,
            "posbridge_store_commit_duration_seconds",
            "Durable store commits (write and flush), each acknowledged change waits for one.",
            &COMMIT_BUCKETS,
            commits,
        );
    });
    for (name, help, value) in extra {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_http_methods_are_one_label() {
        assert_eq!(http_method_label("POST"), "POST");
        assert_eq!(http_method_label("XYZZY"), "other");
        assert_eq!(http_method_label("get"), "other", "methods are case-sensitive");
    }

    #[test]
    fn plugin_codes_are_cleaned_and_their_number_capped() {
        let mut registry = Registry::default();
        assert_eq!(outcome_label(&registry, "m", "redeem", "Weird Code\"}\n"), "weird_code___");
        assert_eq!(outcome_label(&registry, "m", "redeem", &"x".repeat(100)).len(), 48);
        for index in 0..MAX_OUTCOMES {
            registry.plugin_calls.insert(("m".into(), "redeem".into(), format!("code_{index}")), Timing::default());
        }
        assert_eq!(outcome_label(&registry, "m", "redeem", "code_3"), "code_3", "a known code keeps its label");
        assert_eq!(outcome_label(&registry, "m", "redeem", "brand_new"), "other");
        assert_eq!(outcome_label(&registry, "m", "refund", "brand_new"), "brand_new", "the cap is per operation");
    }
}
