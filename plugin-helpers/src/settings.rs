//! Reading a method's settings (`MethodSetup::config_json`) with every problem reported
//! at once, each naming its key, so the host can show the technician the line.

use serde_json::{Map, Value};

use posbridge_plugin_api::MethodError;

/// A settings object being read. Keys asked for are remembered; [`Settings::finish`]
/// reports the rest as unknown (usually typos).
pub struct Settings {
    object: Map<String, Value>,
    path: String,
    asked: Vec<String>,
    problems: Vec<MethodError>,
}

impl Settings {
    /// Parses the JSON the host passed in [`MethodSetup::config_json`](posbridge_plugin_api::MethodSetup).
    pub fn parse(json: &str) -> Result<Settings, Vec<MethodError>> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(object)) => Ok(Settings::from_object(object, String::new())),
            _ => Err(vec![MethodError::new("invalid_config", "the host passed settings that are not a JSON object")]),
        }
    }

    fn from_object(object: Map<String, Value>, path: String) -> Settings {
        Settings { object, path, asked: Vec::new(), problems: Vec::new() }
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Records a problem with `key`.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let field = self.field(key);
        self.problems.push(MethodError::new("invalid_config", message).with_field(field));
    }

    fn value(&mut self, key: &str) -> Option<Value> {
        self.asked.push(key.to_string());
        self.object.get(key).cloned()
    }

    /// Whether the technician wrote `key` (for keys that are optional as a group).
    pub fn has(&self, key: &str) -> bool {
        self.object.contains_key(key)
    }

    /// An optional string.
    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.value(key)? {
            Value::String(text) => Some(text),
            other => {
                self.problem(key, format!("expected a string, found {}", type_name(&other)));
                None
            }
        }
    }

    /// A string that must be present and non-empty.
    pub fn required_string(&mut self, key: &str) -> Option<String> {
        let present = self.object.contains_key(key);
        let value = self.string(key);
        if !present {
            self.problem(key, "missing; this plugin needs it");
        } else if value.as_deref() == Some("") {
            self.problem(key, "must not be empty");
            return None;
        }
        value
    }

    /// A provider's base URL: `https://`, or `http://` to this machine only (a sandbox).
    /// The host refuses anything else at request time; this says so at the config line.
    /// `default` applies when the key is absent.
    pub fn provider_url(&mut self, key: &str, default: Option<&str>) -> Option<String> {
        let url = match (self.object.contains_key(key), default) {
            (false, Some(default)) => default.to_string(),
            _ => self.required_string(key)?,
        };
        if !is_provider_url(&url) {
            self.problem(key, format!("expected an https:// URL (http:// only to this machine), found {url:?}"));
            return None;
        }
        Some(url.trim_end_matches('/').to_string())
    }

    /// A secret that must be present: the host resolves `key_file = "path"` and
    /// `key = "env:NAME"` into `key`, so the message names both ways to set it.
    pub fn required_secret(&mut self, key: &str) -> Option<String> {
        if !self.object.contains_key(key) {
            self.asked.push(key.to_string());
            self.problem(key, format!("missing; set `{key}_file = \"path\"` or `{key} = \"env:NAME\"`"));
            return None;
        }
        self.required_string(key)
    }

    /// An optional non-negative integer.
    pub fn unsigned(&mut self, key: &str) -> Option<u64> {
        match self.value(key)? {
            Value::Number(number) if number.as_u64().is_some() => number.as_u64(),
            other => {
                self.problem(key, format!("expected a non-negative integer, found {}", type_name(&other)));
                None
            }
        }
    }

    /// An optional boolean.
    pub fn boolean(&mut self, key: &str) -> Option<bool> {
        match self.value(key)? {
            Value::Bool(flag) => Some(flag),
            other => {
                self.problem(key, format!("expected true or false, found {}", type_name(&other)));
                None
            }
        }
    }

    /// A table of strings by name (`readers = { "till-1" = "tmr_…" }`), in name order;
    /// a value that is not a string is reported as `key.name`.
    pub fn strings_by_name(&mut self, key: &str) -> Vec<(String, String)> {
        let Some(value) = self.value(key) else { return Vec::new() };
        let Value::Object(entries) = value else {
            self.problem(key, format!("expected a table of names to strings, found {}", type_name(&value)));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, value) in entries {
            match value {
                Value::String(text) => out.push((name, text)),
                other => self.problem(&format!("{key}.{name}"), format!("expected a string, found {}", type_name(&other))),
            }
        }
        out.sort();
        out
    }

    /// An array of tables (`[[methods.x.keys]]`), each read with `read`; problems inside
    /// are named `key[index].inner`.
    pub fn tables<T>(&mut self, key: &str, mut read: impl FnMut(&mut Settings) -> Option<T>) -> Vec<T> {
        let Some(value) = self.value(key) else { return Vec::new() };
        let Value::Array(items) = value else {
            self.problem(key, format!("expected an array of tables, found {}", type_name(&value)));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let item_path = format!("{}[{index}]", self.field(key));
            let Value::Object(object) = item else {
                self.problems.push(MethodError::new("invalid_config", "expected a table").with_field(item_path));
                continue;
            };
            let mut inner = Settings::from_object(object, item_path);
            let read_value = read(&mut inner);
            inner.report_unknown();
            self.problems.append(&mut inner.problems);
            out.extend(read_value);
        }
        out
    }

    fn report_unknown(&mut self) {
        let unknown: Vec<String> = self.object.keys().filter(|key| !self.asked.contains(key)).cloned().collect();
        for key in unknown {
            let known = self.asked.join(", ");
            self.problem(&key, format!("unknown key (known here: {known})"));
        }
    }

    /// Ends reading: `Ok(())` when nothing was wrong, else every problem found.
    pub fn finish(mut self) -> Result<(), Vec<MethodError>> {
        self.report_unknown();
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.problems)
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_all_problems_with_fields() {
        let mut settings = Settings::parse(r#"{"a": 1, "typo": true, "keys": [{"kid": 5}]}"#).unwrap();
        assert_eq!(settings.string("a"), None);
        assert_eq!(settings.required_string("b"), None);
        let kids = settings.tables("keys", |key| key.required_string("kid"));
        assert!(kids.is_empty());
        let problems = settings.finish().unwrap_err();
        let fields: Vec<String> = problems.iter().map(|p| p.field.clone().unwrap().to_string()).collect();
        assert_eq!(fields, vec!["a", "b", "keys[0].kid", "typo"]);
    }
}

/// `https://…`, or `http://` to `localhost`, `127.x.x.x` or `[::1]`.
pub fn is_provider_url(url: &str) -> bool {
    if let Some(rest) = url.strip_prefix("https://") {
        return !rest.is_empty();
    }
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod provider_url_tests {
    use super::is_provider_url;

    #[test]
    fn https_anywhere_http_only_here() {
        for good in ["https://api.smartum.fi", "http://127.0.0.1:8788", "http://localhost/x", "http://[::1]:9"] {
            assert!(is_provider_url(good), "{good}");
        }
        for bad in ["http://api.smartum.fi", "http://10.0.0.2", "http://127.0.0.1.evil.example", "ftp://x", "https://"] {
            assert!(!is_provider_url(bad), "{bad}");
        }
    }
}
