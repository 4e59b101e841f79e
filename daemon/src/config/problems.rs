//! Configuration problems: every one found, each with its file, line and key.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::tree::Location;

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where it was written; `None` when the key is missing from every file.
    pub at: Option<Location>,
    /// The dotted key path (`server.listen`, `clients[1].token`), empty for syntax errors.
    pub key: String,
    /// What is wrong and what was expected. Never contains a secret value.
    pub message: String,
    /// The file, when `at` has no line (a file that cannot be read).
    pub file: Option<Arc<PathBuf>>,
}

impl Problem {
    /// A problem with a key at a place.
    pub fn new(at: Option<Location>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { at, key: key.into(), message: message.into(), file: None }
    }

    /// A problem with a whole file.
    pub fn at_file(file: Arc<PathBuf>, message: impl Into<String>) -> Self {
        Problem { at: None, key: String::new(), message: message.into(), file: Some(file) }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.at, &self.file) {
            (Some(at), _) => write!(f, "{at}: ")?,
            (None, Some(file)) => write!(f, "{}: ", file.display())?,
            (None, None) => {}
        }
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// The problems found so far; validation goes on after each, so all are reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records a problem.
    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    /// Records a problem with `key` at `at`.
    pub fn add(&mut self, at: &Location, key: &str, message: impl Into<String>) {
        self.push(Problem::new(Some(at.clone()), key, message));
    }

    /// `true` while nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in the order found.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// A configuration that cannot be used, with every reason.
#[derive(Debug, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", .0.len(), list(.0))]
pub struct ConfigError(pub Vec<Problem>);

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|problem| format!("  {problem}")).collect::<Vec<_>>().join("\n")
}
