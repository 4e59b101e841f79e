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

#[derive(Default)]
struct Registry {
    http: BTreeMap<(String, String, u16), Timing>,
    plugin_calls: BTreeMap<(String, String, String), Timing>,
    reloads: BTreeMap<&'static str, u64>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(&mut REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// Counts one HTTP request by its route template (not its URL, so ids do not explode
/// the label set).
pub fn record_http(method: &str, route: &str, status: u16, seconds: f64) {
    with(|registry| {
        let timing = registry.http.entry((method.to_string(), route.to_string(), status)).or_default();
        timing.count += 1;
        timing.seconds += seconds;
    });
}

/// Counts one call into a plugin.
pub fn record_plugin_call(method: &str, operation: &str, outcome: &str, seconds: f64) {
    with(|registry| {
        let timing = registry.plugin_calls.entry((method.to_string(), operation.to_string(), outcome.to_string())).or_default();
        timing.count += 1;
        timing.seconds += seconds;
    });
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
    });
    for (name, help, value) in extra {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    out
}
