//! The documentation stands alone: every relative link in the repository's Markdown
//! resolves to a file inside the repository, and nothing points at files a clone does
//! not have.

use std::path::{Path, PathBuf};

fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" && name != ".git" {
            markdown_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "md") {
            found.push(path);
        }
    }
}

/// The targets of `[text](target)` links in `text`.
fn link_targets(text: &str) -> Vec<&str> {
    text.match_indices("](").filter_map(|(at, _)| text[at + 2..].split(')').next()).collect()
}

#[test]
fn every_relative_link_stays_inside_the_repository_and_exists() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
    let mut files = Vec::new();
    markdown_files(&repo, &mut files);
    assert!(files.len() >= 8, "found the docs: {files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if text.contains("../shared") {
            broken.push(format!("{}: names ../shared, which a clone does not have", file.display()));
        }
        for target in link_targets(&text) {
            let path = target.split('#').next().unwrap_or_default().split_whitespace().next().unwrap_or_default();
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            let resolved = file.parent().unwrap().join(path).canonicalize();
            match resolved {
                Ok(resolved) if resolved.starts_with(&repo) => {}
                Ok(resolved) => broken.push(format!("{}: {target} leaves the repository ({})", file.display(), resolved.display())),
                Err(_) => broken.push(format!("{}: {target} does not exist", file.display())),
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
