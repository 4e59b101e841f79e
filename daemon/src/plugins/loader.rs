//! Finding and loading plugin libraries, and refusing the ones that must not run.
//!
//! Each file is loaded with `lib_header_from_path` + `init_root_module` (never
//! `load_from_*`, which caches one module per root type per process, so a second plugin
//! would silently be the first one again). Libraries are never unloaded.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError};
use posbridge_plugin_api::{Capabilities, Manifest, PluginModV1Ref, ABI_VERSION};
use sha2::{Digest, Sha256};

use crate::config::PluginsConfig;

/// A plugin library that loaded and passed every check.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub id: String,
    pub version: String,
    pub methods: Vec<MethodKind>,
    pub file: PathBuf,
    pub sha256: [u8; 32],
    pub(super) module: PluginModV1Ref,
}

/// One kind of payment method a plugin provides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodKind {
    pub kind: String,
    pub capabilities: Capabilities,
    pub description: String,
}

/// A library file that was not loaded, and why, in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub file: PathBuf,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: refused: {}", self.file.display(), self.reason)
    }
}

/// What a plugin directory held.
#[derive(Clone, Default)]
pub struct Catalog {
    pub plugins: BTreeMap<String, LoadedPlugin>,
    pub refused: Vec<Refusal>,
}

/// The plugin directory itself could not be read.
#[derive(Debug, thiserror::Error)]
#[error("plugin directory {}: {source}", dir.display())]
pub struct DirectoryError {
    dir: PathBuf,
    source: std::io::Error,
}

/// Loads every library in `config.dir`. Files that fail a check are refused (listed in
/// [`Catalog::refused`]) and never run; the rest are keyed by plugin id.
pub fn load_directory(config: &PluginsConfig) -> Result<Catalog, DirectoryError> {
    load_directory_after(config, &Catalog::default())
}

/// Loads the directory again for a config reload: files loaded before are kept as they
/// are (libraries are never unloaded), new files are loaded, and a file that changed
/// since it was loaded is refused until a restart.
pub fn load_directory_after(config: &PluginsConfig, previous: &Catalog) -> Result<Catalog, DirectoryError> {
    let mut catalog = Catalog::default();
    let mut loaded: BTreeMap<String, Vec<LoadedPlugin>> = BTreeMap::new();
    let files = library_files(&config.dir)?;
    // A directory others can write to lets them swap what runs: nothing in it loads.
    if let Some(reason) = crate::file_trust::untrusted(&config.dir, false) {
        catalog.refused.extend(
            files.into_iter().map(|file| Refusal { file, reason: format!("refused: the plugin directory is not trusted: {reason}") }),
        );
        return Ok(catalog);
    }
    for file in files {
        let before = previous.plugins.values().find(|plugin| plugin.file == file);
        let result = match before {
            Some(plugin) => reuse(plugin, &file, config),
            None => load_file(&file, config),
        };
        match result {
            Ok(plugin) => loaded.entry(plugin.id.clone()).or_default().push(plugin),
            Err(reason) => catalog.refused.push(Refusal { file, reason }),
        }
    }
    for (id, mut candidates) in loaded {
        if candidates.len() == 1 {
            catalog.plugins.insert(id, candidates.remove(0));
        } else {
            // Two files with one id: neither is trusted, since which would run is a guess.
            refuse_duplicates(&mut catalog, &id, &candidates);
        }
    }
    Ok(catalog)
}

fn refuse_duplicates(catalog: &mut Catalog, id: &str, candidates: &[LoadedPlugin]) {
    for plugin in candidates {
        let others: Vec<String> =
            candidates.iter().filter(|other| other.file != plugin.file).map(|other| other.file.display().to_string()).collect();
        let reason = format!("plugin id {id:?} is also provided by {}; keep only one", others.join(", "));
        catalog.refused.push(Refusal { file: plugin.file.clone(), reason });
    }
}

/// The platform's library files in `dir`, sorted by name so loading is repeatable.
fn library_files(dir: &Path) -> Result<Vec<PathBuf>, DirectoryError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DirectoryError { dir: dir.to_path_buf(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            // Links are listed too, to be refused by name rather than followed.
            let is_file_or_link = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file() || meta.file_type().is_symlink());
            is_file_or_link && path.extension().is_some_and(|ext| ext == std::env::consts::DLL_EXTENSION)
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A library loaded before: still the same file, and still allowed by the pins?
fn reuse(plugin: &LoadedPlugin, file: &Path, config: &PluginsConfig) -> Result<LoadedPlugin, String> {
    let (_, sha256) = open_trusted(file)?;
    if sha256 != plugin.sha256 {
        return Err("changed since posbridge loaded it; libraries are never unloaded, so restart posbridge to use the new file".to_string());
    }
    check_pin_before_load(&sha256, config)?;
    Ok(plugin.clone())
}

/// Opens a plugin file once, refusing links and files others could change, and hashes
/// it from that descriptor. The same descriptor is what gets loaded.
fn open_trusted(file: &Path) -> Result<(std::fs::File, [u8; 32]), String> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    let mut opened = options.open(file).map_err(|error| match error.raw_os_error() {
        #[cfg(unix)]
        Some(libc::ELOOP) => "refused: it is a symbolic link; copy the library into the plugin directory".to_string(),
        _ => format!("cannot read the file: {error}"),
    })?;
    let metadata = opened.metadata().map_err(|error| format!("cannot read the file: {error}"))?;
    if !metadata.is_file() {
        return Err("refused: not a regular file".to_string());
    }
    if let Some(reason) = crate::file_trust::others_can_write(file, &metadata) {
        return Err(format!("refused: {reason}"));
    }
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = opened.read(&mut buffer).map_err(|error| format!("cannot read the file: {error}"))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok((opened, hasher.finalize().into()))
}

/// The path the dynamic loader opens for an open file: the descriptor itself on Linux,
/// so the bytes loaded are the bytes hashed even if the path is replaced meanwhile.
fn loadable_path(opened: &std::fs::File, file: &Path) -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let _ = file;
        PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = opened;
        file.to_path_buf()
    }
}

fn load_file(file: &Path, config: &PluginsConfig) -> Result<LoadedPlugin, String> {
    let (opened, sha256) = open_trusted(file)?;
    tracing::info!(file = %file.display(), sha256 = %hex::encode(sha256), "plugin file opened and hashed");
    // Pins are checked before the library is opened: opening runs its initialisers.
    let pinned_as = check_pin_before_load(&sha256, config)?;
    #[cfg(feature = "failpoints")]
    fail::fail_point!("loader-between-hash-and-load");
    let header = lib_header_from_path(&loadable_path(&opened, file)).map_err(|error| describe(&error))?;
    // The descriptor stays open for good, like the library (never unloaded): its number
    // is then never reused, so no later `/proc/self/fd/N` names a library loaded before
    // (the dynamic loader knows libraries by that name).
    std::mem::forget(opened);
    let module = header.init_root_module::<PluginModV1Ref>().map_err(|error| {
        tracing::debug!(file = %file.display(), report = %error, "abi_stable's full report on a refused plugin");
        describe(&error)
    })?;
    let manifest = module.manifest()().into_result().map_err(|error| format!("its manifest failed: {error}"))?;
    let plugin = from_manifest(manifest, file, sha256, module)?;
    if let Some(pinned_id) = pinned_as {
        if pinned_id != plugin.id {
            return Err(format!("its hash is pinned for plugin {pinned_id:?}, but the file is plugin {:?}", plugin.id));
        }
    }
    Ok(plugin)
}

/// With pinning on, the file's hash must be one of the pins; answers the pinned id.
fn check_pin_before_load(sha256: &[u8; 32], config: &PluginsConfig) -> Result<Option<String>, String> {
    if config.pinned.is_empty() {
        return Ok(None);
    }
    match config.pinned.iter().find(|(_, pin)| *pin == sha256) {
        Some((id, _)) => Ok(Some(id.clone())),
        None => Err(format!(
            "its SHA-256 sha256:{} matches no [plugins.pinned] entry (pinning is on: every plugin file must be pinned)",
            hex::encode(sha256)
        )),
    }
}

fn from_manifest(manifest: Manifest, file: &Path, sha256: [u8; 32], module: PluginModV1Ref) -> Result<LoadedPlugin, String> {
    let id = manifest.id.to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(format!("its manifest id {id:?} is not lowercase letters, digits and '-'"));
    }
    if manifest.methods.is_empty() {
        return Err(format!("plugin {id:?} declares no payment methods"));
    }
    let methods = manifest
        .methods
        .iter()
        .map(|info| MethodKind { kind: info.kind.to_string(), capabilities: info.capabilities, description: info.description.to_string() })
        .collect();
    Ok(LoadedPlugin { id, version: manifest.version.to_string(), methods, file: file.to_path_buf(), sha256, module })
}

/// abi_stable's errors run to a page; a technician needs one line.
fn describe(error: &LibraryError) -> String {
    let ours = format!("{}.x", ABI_VERSION);
    match error {
        LibraryError::OpenError { err, .. } => format!("not a loadable library ({})", first_line(&err.to_string())),
        LibraryError::GetSymbolError { .. } => "not a posbridge plugin (it exports no plugin root module)".to_string(),
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            format!("built for posbridge plugin ABI {actual_version}, but this posbridge speaks plugin ABI {ours}; rebuild it against posbridge-plugin-api {ours}")
        }
        LibraryError::AbiInstability(report) => format!(
            "its plugin ABI layout differs from posbridge plugin ABI {ours}{} (built against a modified or mismatched posbridge-plugin-api, or not a posbridge plugin)",
            first_difference(&report.to_string()).map(|found| format!(": {found}")).unwrap_or_default()
        ),
        LibraryError::InvalidAbiHeader(header) => {
            format!("built with an incompatible abi_stable (header {}.{}); rebuild it against posbridge-plugin-api {ours}", header.abi_major, header.abi_minor)
        }
        LibraryError::InvalidCAbi { .. } => "built by a Rust compiler with an incompatible C ABI".to_string(),
        LibraryError::RootModule { err, .. } => format!("failed while initialising: {}", first_line(&err.to_string())),
        LibraryError::ParseVersionError(error) => format!("declares an unreadable ABI version ({})", first_line(&error.to_string())),
        LibraryError::Many(errors) => errors.iter().map(describe).collect::<Vec<_>>().join("; "),
    }
}

/// The type whose layout differs, from abi_stable's report: the most specific error
/// (a field added or missing rather than a container's size that follows from it), as
/// `Settlement (too many fields)`. `None` when the report's shape is not recognised.
fn first_difference(report: &str) -> Option<String> {
    const FOLLOWS: &str = "incompatible type size";
    let findings: Vec<(&str, Vec<&str>)> = report
        .split("Layout of expected type:")
        .skip(1)
        .filter_map(|block| {
            let type_name = block.lines().find_map(|line| line.trim().strip_prefix("type:"))?;
            let errors: Vec<&str> = block.lines().filter_map(|line| line.trim().strip_prefix("Error:")).map(str::trim).collect();
            Some((type_name.trim(), errors))
        })
        .filter(|(_, errors)| !errors.is_empty())
        .collect();
    let specific =
        findings.iter().find_map(|(type_name, errors)| errors.iter().find(|error| **error != FOLLOWS).map(|error| (*type_name, *error)));
    let (type_name, error) = specific.or_else(|| findings.first().map(|(type_name, errors)| (*type_name, errors[0])))?;
    Some(format!("{type_name} ({error})"))
}

fn first_line(text: &str) -> String {
    text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("unknown error").to_string()
}

#[cfg(test)]
mod tests {
    use super::first_difference;

    #[test]
    fn the_most_specific_layout_error_names_the_type() {
        let report = "Layout of expected type:\n  type:ROption\nError:incompatible type size\n\
                      Layout of expected type:\n  type:Settlement\nLayout of found type:\n  type:Settlement\n\
                      Error:incompatible type size\nError:too many fields\nExpected:\n 7\n";
        assert_eq!(first_difference(report).as_deref(), Some("Settlement (too many fields)"));
        assert_eq!(
            first_difference("Layout of expected type:\n type:X\nError:incompatible type size\n").as_deref(),
            Some("X (incompatible type size)")
        );
        assert_eq!(first_difference("something else entirely"), None);
    }
}
