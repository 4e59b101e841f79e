//! Secrets: read from files or the environment, never printed.

use std::fmt;
use std::path::Path;

/// A secret value (token, client secret, API key). `Debug` and `Display` print a
/// placeholder, so a secret cannot reach a log line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A value written in the config: `"env:NAME"` reads the environment variable,
    /// anything else is the secret itself.
    pub fn from_value(text: &str) -> Result<Secret, String> {
        match text.strip_prefix("env:") {
            Some(name) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(Secret(value)),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(_) => Err(format!("environment variable {name} is not set")),
            },
            None => Ok(Secret(text.to_string())),
        }
    }

    /// The contents of a file, without the trailing newline.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let contents = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let value = contents.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(Secret(value))
    }

    /// The secret itself, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let secret = Secret::from_value("hunter2-very-secret").unwrap();
        assert!(!format!("{secret:?} {secret}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }
}
