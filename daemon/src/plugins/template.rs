//! `posbridge plugin new`: a plugin crate from the template in `templates/plugin/`
//! (embedded here), with its names filled in and its SDK dependencies pointing at a
//! posbridge checkout. The template's placeholders are cargo-generate's
//! (`{{project-name}}`, `{{crate_name}}`) plus `{{posbridge_sdk}}`, so `cargo generate`
//! renders the same files the same way.

use std::path::{Path, PathBuf};

/// The template's files, relative to the new crate's directory.
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../templates/plugin/Cargo.toml")),
    ("README.md", include_str!("../../../templates/plugin/README.md")),
    (".gitignore", include_str!("../../../templates/plugin/.gitignore")),
    ("plugin-test.toml", include_str!("../../../templates/plugin/plugin-test.toml")),
    ("src/lib.rs", include_str!("../../../templates/plugin/src/lib.rs")),
    ("src/settings.rs", include_str!("../../../templates/plugin/src/settings.rs")),
    ("src/wire.rs", include_str!("../../../templates/plugin/src/wire.rs")),
    ("src/fake.rs", include_str!("../../../templates/plugin/src/fake.rs")),
    ("src/bin/fake-provider.rs", include_str!("../../../templates/plugin/src/bin/fake-provider.rs")),
    ("tests/flows.rs", include_str!("../../../templates/plugin/tests/flows.rs")),
    ("tests/conformance.rs", include_str!("../../../templates/plugin/tests/conformance.rs")),
];

/// The posbridge checkout this binary was built from, when it is still there.
pub fn default_sdk() -> Option<PathBuf> {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    checkout.join("plugin-api/Cargo.toml").is_file().then(|| checkout.canonicalize().unwrap_or(checkout))
}

/// Why no crate was made.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the plugin name {0:?} must be lowercase letters, digits and '-', starting with a letter")]
    BadName(String),
    #[error("{0} exists and is not empty; choose another --dir")]
    NotEmpty(PathBuf),
    #[error("{0} is not a posbridge checkout (no plugin-api/Cargo.toml); give --sdk DIR")]
    NoSdk(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes the crate for plugin `name` into `dir`, depending on the SDK crates of the
/// checkout at `sdk`. Answers the files written.
pub fn generate(name: &str, dir: &Path, sdk: &Path) -> Result<Vec<PathBuf>, TemplateError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(TemplateError::BadName(name.to_string()));
    }
    if !sdk.join("plugin-api/Cargo.toml").is_file() {
        return Err(TemplateError::NoSdk(sdk.to_path_buf()));
    }
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(TemplateError::NotEmpty(dir.to_path_buf()));
    }
    let sdk = sdk.canonicalize().unwrap_or_else(|_| sdk.to_path_buf());
    let mut written = Vec::new();
    for (relative, text) in FILES {
        let path = dir.join(relative);
        let rendered = render(text, name, &sdk.display().to_string());
        let write = |path: &Path| {
            std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
            std::fs::write(path, rendered)
        };
        write(&path).map_err(|source| TemplateError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

/// Fills in the placeholders.
fn render(text: &str, name: &str, sdk: &str) -> String {
    text.replace("{{project-name}}", name).replace("{{crate_name}}", &name.replace('-', "_")).replace("{{posbridge_sdk}}", sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled_and_no_other_braces_remain() {
        for (relative, text) in FILES {
            let rendered = render(text, "acme-voucher", "/src/posbridge");
            assert!(!rendered.contains("{{") && !rendered.contains("}}"), "{relative} keeps a placeholder");
        }
        let manifest = render(FILES[0].1, "acme-voucher", "/src/posbridge");
        assert!(manifest.contains("name = \"acme-voucher\""), "{manifest}");
        assert!(manifest.contains("path = \"/src/posbridge/plugin-api\""), "{manifest}");
    }

    #[test]
    fn names_that_cannot_be_plugin_ids_are_refused() {
        let sdk = default_sdk().expect("built from a checkout");
        for bad in ["Acme", "1acme", "acme_voucher", "acme-", ""] {
            assert!(matches!(generate(bad, Path::new("/nonexistent"), &sdk), Err(TemplateError::BadName(_))), "{bad}");
        }
    }
}
