//! TOML files as an owned tree whose every key and value knows its file and line, so
//! validation can point a technician at the exact place, and `conf.d/` files can be
//! merged without losing where each value came from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::problems::{Problem, Problems};

/// Where a key or value was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file, as the technician named it (or as found in `conf.d/`).
    pub file: Arc<PathBuf>,
    /// 1-based line number.
    pub line: usize,
}

impl Location {
    /// The directory relative paths in this file are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or_else(|| Path::new("."))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A TOML value with its location.
#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub at: Location,
}

/// A TOML value whose children are [`Node`]s.
#[derive(Clone, Debug)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
}

impl Value {
    /// The TOML type name, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// A table's entries, in file order.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub entries: Vec<Entry>,
}

/// One `key = value` of a table.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub key_at: Location,
    pub node: Node,
}

impl Table {
    /// The entry under `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    /// Merges `overlay` into this table: tables merge key by key, arrays of tables
    /// (`[[clients]]`) append, anything else in `overlay` replaces.
    pub fn merge(&mut self, overlay: Table) {
        for entry in overlay.entries {
            match self.entries.iter_mut().find(|existing| existing.key == entry.key) {
                None => self.entries.push(entry),
                Some(existing) => match (&mut existing.node.value, entry.node.value) {
                    (Value::Table(base), Value::Table(more)) => base.merge(more),
                    (Value::Array(base), Value::Array(more)) if is_array_of_tables(base) && is_array_of_tables(&more) => base.extend(more),
                    (_, value) => {
                        existing.key_at = entry.key_at;
                        existing.node = Node { value, at: entry.node.at };
                    }
                },
            }
        }
    }
}

fn is_array_of_tables(items: &[Node]) -> bool {
    items.iter().all(|item| matches!(item.value, Value::Table(_)))
}

/// Reads and parses one TOML file into a tree. Every syntax error is reported, with its
/// line; the tree holds what could be recovered.
pub fn parse_file(path: &Path, problems: &mut Problems) -> Option<Table> {
    let file = Arc::new(path.to_path_buf());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            problems.push(Problem::at_file(file, format!("cannot read the file: {error}")));
            return None;
        }
    };
    let lines = LineIndex::new(&text);
    let (document, errors) = DeTable::parse_recoverable(&text);
    let failed = !errors.is_empty();
    for error in errors {
        let line = error.span().map(|span| lines.line_of(span.start)).unwrap_or(1);
        let at = Location { file: file.clone(), line };
        problems.push(Problem::new(Some(at), "", format!("TOML syntax: {}", error.message().trim())));
    }
    if failed {
        return None;
    }
    let converter = Converter { file, lines };
    Some(converter.table(document.get_ref()))
}

/// Maps byte offsets to line numbers.
struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(at, _)| at + 1)).collect();
        LineIndex { line_starts }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset).max(1)
    }
}

struct Converter {
    file: Arc<PathBuf>,
    lines: LineIndex,
}

impl Converter {
    fn at(&self, span: std::ops::Range<usize>) -> Location {
        Location { file: self.file.clone(), line: self.lines.line_of(span.start) }
    }

    fn table(&self, table: &DeTable<'_>) -> Table {
        let entries = table
            .iter()
            .map(|(key, value)| Entry { key: key.get_ref().to_string(), key_at: self.at(key.span()), node: self.node(value) })
            .collect();
        Table { entries }
    }

    fn node(&self, value: &Spanned<DeValue<'_>>) -> Node {
        let converted = match value.get_ref() {
            DeValue::String(text) => Value::String(text.to_string()),
            DeValue::Integer(integer) => match i64::from_str_radix(integer.as_str(), integer.radix()) {
                Ok(number) => Value::Integer(number),
                Err(_) => Value::String(integer.as_str().to_string()),
            },
            DeValue::Float(float) => Value::Float(float.as_str().parse().unwrap_or(f64::NAN)),
            DeValue::Boolean(flag) => Value::Boolean(*flag),
            DeValue::Datetime(datetime) => Value::Datetime(datetime.to_string()),
            DeValue::Array(items) => Value::Array(items.iter().map(|item| self.node(item)).collect()),
            DeValue::Table(table) => Value::Table(self.table(table)),
        };
        Node { value: converted, at: self.at(value.span()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_counts_from_one() {
        let index = LineIndex::new("a\nbb\n\nc");
        assert_eq!(index.line_of(0), 1);
        assert_eq!(index.line_of(2), 2);
        assert_eq!(index.line_of(5), 3);
        assert_eq!(index.line_of(6), 4);
    }
}
