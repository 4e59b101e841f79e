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

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition, with `extra` gauges appended as (name, help, value).
pub fn render(extra: &[(&str, &str, f64)]) -> String {
    let mut out = String::new();
    with(|registry| {
        out.push_str("# HELP posbridge_http_requests_total HTTP requests answered.\n# TYPE posbridge_http_requests_total counter\n");
        for ((method, route, status), timing) in &registry.http {
            let _ = writeln!(
                out,
                "posbridge_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
                escape(route),
                timing.count
            );
        }
        out.push_str("# HELP posbridge_http_request_seconds_sum Time spent answering HTTP requests.\n# TYPE posbridge_http_request_seconds_sum counter\n");
        for ((method, route, status), timing) in &registry.http {
            let _ = writeln!(
                out,
                "posbridge_http_request_seconds_sum{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {:.6}",
                escape(route),
                timing.seconds
            );
        }
        out.push_str(
            "# HELP posbridge_plugin_calls_total Calls into payment-method plugins.\n# TYPE posbridge_plugin_calls_total counter\n",
        );
        for ((method, operation, outcome), timing) in &registry.plugin_calls {
            let _ = writeln!(
                out,
                "posbridge_plugin_calls_total{{method=\"{}\",operation=\"{operation}\",outcome=\"{outcome}\"}} {}",
                escape(method),
                timing.count
            );
        }
        out.push_str(
            "# HELP posbridge_plugin_call_seconds_sum Time spent in plugin calls.\n# TYPE posbridge_plugin_call_seconds_sum counter\n",
        );
        for ((method, operation, outcome), timing) in &registry.plugin_calls {
            let _ = writeln!(
                out,
                "posbridge_plugin_call_seconds_sum{{method=\"{}\",operation=\"{operation}\",outcome=\"{outcome}\"}} {:.6}",
                escape(method),
                timing.seconds
            );
        }
    });
    for (name, help, value) in extra {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    out
}
