//! `posbridge token new`: a fresh random client token, printed once; the config keeps
//! only its SHA-256 (`token_sha256`), or the token goes to a mode-600 file the config
//! names (`token_file`). The edit touches only the client's token line (or appends the
//! client), and the result must pass the same validation as start-up, or the file is
//! left as it was.

use std::path::{Path, PathBuf};

use p521::elliptic_curve::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use toml::de::{DeTable, DeValue};

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} is not valid TOML; fix it first (posbridge check)", path.display())]
    Syntax { path: PathBuf },
    #[error("the config would not be valid with the new token, so it was left as it was:\n{0}")]
    Invalid(String),
}

/// A token made for a client.
pub struct NewToken {
    /// The token itself: shown once, stored nowhere (unless in `file`).
    pub token: String,
    /// Where the config was changed.
    pub config: PathBuf,
    /// The mode-600 token file, when asked for.
    pub file: Option<PathBuf>,
}

/// 32 random bytes, URL-safe base64 (43 characters).
fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Makes a token for `client` and records it in the main config at `config_path`.
pub fn new_token(config_path: &Path, client: &str, file: Option<&Path>) -> Result<NewToken, TokenError> {
    let original = std::fs::read_to_string(config_path).map_err(|source| TokenError::Read { path: config_path.to_path_buf(), source })?;
    let token = random_token();
    let line = match file {
        Some(file) => {
            write_private(file, &format!("{token}\n"))?;
            format!("token_file = {}", toml_string(&file.display().to_string()))
        }
        None => format!("token_sha256 = \"{}\"", hex::encode(Sha256::digest(token.as_bytes()))),
    };
    let edited = with_token_line(&original, client, &line).ok_or_else(|| TokenError::Syntax { path: config_path.to_path_buf() })?;
    let write =
        |text: &str| std::fs::write(config_path, text).map_err(|source| TokenError::Write { path: config_path.to_path_buf(), source });
    write(&edited)?;
    let (config, problems) = crate::config::load_with_problems(config_path);
    if config.is_none() || !problems.is_empty() {
        write(&original)?;
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(TokenError::Invalid(problems.join("\n")));
    }
    Ok(NewToken { token, config: config_path.to_path_buf(), file: file.map(Path::to_path_buf) })
}

/// Writes `contents` to a file only its owner may read.
fn write_private(path: &Path, contents: &str) -> Result<(), TokenError> {
    use std::io::Write;
    let failed = |source| TokenError::Write { path: path.to_path_buf(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut out = options.open(path).map_err(failed)?;
        out.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
        out.write_all(contents.as_bytes()).map_err(failed)
    }
    #[cfg(not(unix))]
    {
        let mut out = options.open(path).map_err(failed)?;
        out.write_all(contents.as_bytes()).map_err(failed)
    }
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// `text` with `client`'s token key (`token`, `token_file` or `token_sha256`) replaced
/// by `line`; a client not in the file is appended. `None` when `text` is not TOML.
fn with_token_line(text: &str, client: &str, line: &str) -> Option<String> {
    let document = DeTable::parse(text).ok()?;
    let clients = document.get_ref().get("clients").map(|clients| clients.get_ref());
    let blocks: Vec<&DeValue> = match clients {
        Some(DeValue::Array(blocks)) => blocks.iter().map(|block| block.get_ref()).collect(),
        _ => Vec::new(),
    };
    for block in blocks {
        let DeValue::Table(table) = block else { continue };
        let named =
            table.iter().any(|(key, value)| key.get_ref() == "name" && matches!(value.get_ref(), DeValue::String(name) if name == client));
        if !named {
            continue;
        }
        let token_keys: Vec<std::ops::Range<usize>> = table
            .iter()
            .filter(|(key, _)| matches!(key.get_ref().as_ref(), "token" | "token_file" | "token_sha256"))
            .map(|(key, value)| key.span().start..value.span().end)
            .collect();
        let mut edited = text.to_string();
        // Later ranges first, so earlier offsets stay valid; the first key becomes `line`.
        for (index, range) in token_keys.iter().enumerate().rev() {
            edited.replace_range(range.clone(), if index == 0 { line } else { "" });
        }
        if token_keys.is_empty() {
            let name_end = table.iter().find(|(key, _)| key.get_ref() == "name").map(|(_, value)| value.span().end)?;
            edited.insert_str(name_end, &format!("\n{line}"));
        }
        return Some(edited);
    }
    let separator = if text.ends_with('\n') || text.is_empty() { "" } else { "\n" };
    Some(format!("{text}{separator}\n[[clients]]\nname = {}\n{line}\n", toml_string(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "[server]\nlisten = \"127.0.0.1:8787\"\n\n[[clients]]\nname = \"till-1\"\ntoken_file = \"till-1.token\" # the register's\n\n[[clients]]\nname = \"office\"\nrole = \"manager\"\n";

    #[test]
    fn the_clients_token_line_is_replaced_and_the_rest_kept() {
        let edited = with_token_line(CONFIG, "till-1", "token_sha256 = \"ab\"").unwrap();
        assert!(edited.contains("name = \"till-1\"\ntoken_sha256 = \"ab\" # the register's\n"), "{edited}");
        assert!(!edited.contains("till-1.token"));
        assert!(edited.contains("[[clients]]\nname = \"office\"\nrole = \"manager\"\n"));
    }

    #[test]
    fn a_client_without_a_token_gets_one_after_its_name_and_a_new_client_is_appended() {
        let edited = with_token_line(CONFIG, "office", "token_sha256 = \"cd\"").unwrap();
        assert!(edited.contains("name = \"office\"\ntoken_sha256 = \"cd\"\nrole = \"manager\""), "{edited}");
        let appended = with_token_line(CONFIG, "till-2", "token_sha256 = \"ef\"").unwrap();
        assert!(appended.ends_with("\n[[clients]]\nname = \"till-2\"\ntoken_sha256 = \"ef\"\n"), "{appended}");
        assert_eq!(with_token_line("[server", "x", "y"), None);
    }

    #[test]
    fn tokens_are_long_and_fresh() {
        let (first, second) = (random_token(), random_token());
        assert_eq!(first.len(), 43);
        assert_ne!(first, second);
    }
}
