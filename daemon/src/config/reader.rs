//! Reading typed values out of a [`Table`], recording a problem for each bad or unknown
//! key instead of stopping at the first.

use std::path::PathBuf;
use std::time::Duration;

use super::problems::Problems;
use super::secret::Secret;
use super::tree::{Entry, Location, Node, Table, Value};

/// A table being read. Keys asked for are remembered, so [`Section::finish`] can report
/// the ones nobody asked for (typos) with a suggestion.
pub struct Section<'t> {
    table: &'t Table,
    path: String,
    at: Location,
    asked: Vec<&'static str>,
}

impl<'t> Section<'t> {
    /// Reads `table`, known by the dotted `path`, written at `at`.
    pub fn new(table: &'t Table, path: impl Into<String>, at: Location) -> Self {
        Section { table, path: path.into(), at, asked: Vec::new() }
    }

    /// Where the table starts (its header line).
    pub fn location(&self) -> &Location {
        &self.at
    }

    /// The dotted path of `key` in this table.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw entry under `key`, marking it as known.
    pub fn entry(&mut self, key: &'static str) -> Option<&'t Entry> {
        self.asked.push(key);
        self.table.get(key)
    }

    fn typed<T>(&mut self, p: &mut Problems, key: &'static str, expected: &str, pick: impl Fn(&Value) -> Option<T>) -> Option<T> {
        let entry = self.entry(key)?;
        let picked = pick(&entry.node.value);
        if picked.is_none() {
            let found = entry.node.value.type_name();
            p.add(&entry.node.at, &self.key_path(key), format!("expected {expected}, found {found}"));
        }
        picked
    }

    /// A string value.
    pub fn string(&mut self, p: &mut Problems, key: &'static str) -> Option<String> {
        self.typed(p, key, "a string", |value| match value {
            Value::String(text) => Some(text.clone()),
            _ => None,
        })
    }

    /// A string value that must be present.
    pub fn required_string(&mut self, p: &mut Problems, key: &'static str) -> Option<String> {
        let present = self.table.get(key).is_some();
        let value = self.string(p, key);
        if !present {
            self.missing(p, key, "a string");
        }
        value
    }

    /// Reports that `key` is required and absent.
    pub fn missing(&self, p: &mut Problems, key: &str, expected: &str) {
        p.add(&self.at, &self.key_path(key), format!("missing; expected {expected}"));
    }

    /// An integer value.
    pub fn integer(&mut self, p: &mut Problems, key: &'static str) -> Option<i64> {
        self.typed(p, key, "an integer", |value| match value {
            Value::Integer(number) => Some(*number),
            _ => None,
        })
    }

    /// A boolean value.
    pub fn boolean(&mut self, p: &mut Problems, key: &'static str) -> Option<bool> {
        self.typed(p, key, "true or false", |value| match value {
            Value::Boolean(flag) => Some(*flag),
            _ => None,
        })
    }

    /// An integer within `range`, e.g. a USB vendor id (`0x0c2e`).
    pub fn integer_in(&mut self, p: &mut Problems, key: &'static str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        let number = self.integer(p, key)?;
        if range.contains(&number) {
            return Some(number);
        }
        let at = self.table.get(key).map(|entry| entry.node.at.clone()).unwrap_or_else(|| self.at.clone());
        p.add(&at, &self.key_path(key), format!("expected an integer from {} to {}, found {number}", range.start(), range.end()));
        None
    }

    /// A duration written as `"30s"`, `"15m"`, `"2h"`, `"400d"` or `"250ms"`.
    pub fn duration(&mut self, p: &mut Problems, key: &'static str) -> Option<Duration> {
        let text = self.string(p, key)?;
        match parse_duration(&text) {
            Some(duration) => Some(duration),
            None => {
                let at = self.value_at(key);
                p.add(&at, &self.key_path(key), format!("expected a duration such as \"30s\", \"15m\" or \"400d\", found {text:?}"));
                None
            }
        }
    }

    /// A list of strings.
    pub fn string_list(&mut self, p: &mut Problems, key: &'static str) -> Option<Vec<String>> {
        let items = self.typed(p, key, "an array of strings", |value| match value {
            Value::Array(items) => Some(items.clone()),
            _ => None,
        })?;
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match &item.value {
                Value::String(text) => strings.push(text.clone()),
                other => {
                    p.add(&item.at, &format!("{}[{index}]", self.key_path(key)), format!("expected a string, found {}", other.type_name()))
                }
            }
        }
        Some(strings)
    }

    /// A path, resolved against the directory of the file that wrote it.
    pub fn path(&mut self, p: &mut Problems, key: &'static str) -> Option<PathBuf> {
        let text = self.string(p, key)?;
        Some(normalize(&self.value_at(key).base_dir().join(text)))
    }

    /// A secret given as `key = "env:NAME"`, `key = "literal"` or `key_file = "path"`;
    /// exactly one of the two keys.
    pub fn secret(&mut self, p: &mut Problems, key: &'static str, file_key: &'static str) -> Option<Secret> {
        let inline = self.entry(key).map(|entry| (entry, false));
        let from_file = self.entry(file_key).map(|entry| (entry, true));
        match (inline, from_file) {
            (Some(_), Some((entry, _))) => {
                p.add(&entry.key_at, &self.key_path(file_key), format!("set either `{key}` or `{file_key}`, not both"));
                None
            }
            (None, None) => {
                self.missing(p, key, &format!("`{key}` (a value or \"env:NAME\") or `{file_key}` (a path)"));
                None
            }
            (Some((entry, _)), None) | (None, Some((entry, _))) => {
                let key_path = self.key_path(&entry.key);
                let Value::String(text) = &entry.node.value else {
                    p.add(&entry.node.at, &key_path, format!("expected a string, found {}", entry.node.value.type_name()));
                    return None;
                };
                let resolved =
                    if entry.key == file_key { Secret::from_file(&entry.node.at.base_dir().join(text)) } else { Secret::from_value(text) };
                resolved.map_err(|message| p.add(&entry.node.at, &key_path, message)).ok()
            }
        }
    }

    /// A sub-table, such as `[plugins.pinned]`.
    pub fn table(&mut self, p: &mut Problems, key: &'static str) -> Option<Section<'t>> {
        let entry = self.entry(key)?;
        let path = self.key_path(key);
        match &entry.node.value {
            Value::Table(table) => Some(Section::new(table, path, entry.node.at.clone())),
            other => {
                p.add(&entry.node.at, &path, format!("expected a table, found {}", other.type_name()));
                None
            }
        }
    }

    /// An array of tables, such as `[[clients]]`.
    pub fn tables(&mut self, p: &mut Problems, key: &'static str) -> Vec<Section<'t>> {
        let Some(entry) = self.entry(key) else { return Vec::new() };
        let path = self.key_path(key);
        let Value::Array(items) = &entry.node.value else {
            p.add(&entry.node.at, &path, format!("expected an array of tables ([[{path}]]), found {}", entry.node.value.type_name()));
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| match &item.value {
                Value::Table(table) => Some(Section::new(table, format!("{path}[{index}]"), item.at.clone())),
                other => {
                    p.add(&item.at, &format!("{path}[{index}]"), format!("expected a table, found {}", other.type_name()));
                    None
                }
            })
            .collect()
    }

    /// The entries not asked for yet, for free-form tables (`[methods]`, `[plugins.pinned]`).
    pub fn remaining(&self) -> impl Iterator<Item = &'t Entry> + '_ {
        self.table.entries.iter().filter(|entry| !self.asked.contains(&entry.key.as_str()))
    }

    /// Where the value of `key` is written (or the table, when it is absent).
    pub fn value_at(&self, key: &str) -> Location {
        self.table.get(key).map(|entry| entry.node.at.clone()).unwrap_or_else(|| self.at.clone())
    }

    /// Reports every key nobody asked for, suggesting the nearest known one.
    pub fn finish(self, p: &mut Problems) {
        for entry in self.remaining() {
            let suggestion = nearest(&entry.key, &self.asked).map(|known| format!("; did you mean `{known}`?")).unwrap_or_default();
            let known = self.asked.join(", ");
            p.add(&entry.key_at, &self.key_path(&entry.key), format!("unknown key (known here: {known}){suggestion}"));
        }
    }
}

/// A node's string, or a problem.
pub fn node_string(node: &Node, key_path: &str, p: &mut Problems) -> Option<String> {
    match &node.value {
        Value::String(text) => Some(text.clone()),
        other => {
            p.add(&node.at, key_path, format!("expected a string, found {}", other.type_name()));
            None
        }
    }
}

/// Removes `.` and `name/..` from a path without touching the file system, so messages
/// show `target/debug` rather than `config/../target/debug`.
pub fn normalize(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Parses `"250ms"`, `"30s"`, `"15m"`, `"2h"`, `"400d"`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let count: u64 = digits.parse().ok()?;
    let seconds_per_unit = match unit.trim() {
        "ms" => return Some(Duration::from_millis(count)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    count.checked_mul(seconds_per_unit).map(Duration::from_secs)
}

fn nearest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min()
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("400d"), Some(Duration::from_secs(400 * 86_400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5 weeks"), None);
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(normalize(std::path::Path::new("config/../target/./debug")), PathBuf::from("target/debug"));
        assert_eq!(normalize(std::path::Path::new("../x")), PathBuf::from("../x"));
        assert_eq!(normalize(std::path::Path::new("a/..")), PathBuf::from("."));
    }

    #[test]
    fn suggestions() {
        assert_eq!(nearest("listn", &["listen", "allowed_origins"]), Some("listen"));
        assert_eq!(nearest("zzz", &["listen"]), None);
    }
}
