//! Configuration: TOML files → one validated, typed [`Config`] snapshot.
//!
//! Every problem is collected (syntax, types, unknown keys, cross-references, secrets
//! that cannot be read) and reported together with file, line and key, so a technician
//! fixes a file in one pass. Secrets are [`Secret`]s and never printed.

mod problems;
mod reader;
mod schema;
mod secret;
mod tree;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use problems::{ConfigError, Problem, Problems};
pub use reader::parse_duration;
pub use schema::*;
pub use secret::Secret;
pub use tree::Location;

use reader::{node_string, Section};
use tree::{Node, Table, Value};

/// Default per-call deadline for a plugin.
const DEFAULT_METHOD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default request body limit: receipts and carts are small; images for `/v1/decode`
/// are the largest legitimate bodies.
const DEFAULT_MAX_BODY_BYTES: i64 = 4 * 1024 * 1024;

/// Loads `path` and the `*.toml` files of `conf.d/` beside it (in name order), and
/// validates the result.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let (config, problems) = load_with_problems(path);
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError(problems)),
    }
}

/// Like [`load`], but a config with problems still comes back (invalid values replaced
/// by defaults), so later checks (plugins, methods) can add theirs and the technician
/// sees everything in one pass. `None` only when a file could not be parsed at all.
pub fn load_with_problems(path: &Path) -> (Option<Config>, Vec<Problem>) {
    let mut problems = Problems::default();
    let mut merged = Table::default();
    let files = config_files(path, &mut problems);
    for file in &files {
        if let Some(table) = tree::parse_file(file, &mut problems) {
            merged.merge(table);
        }
    }
    if !problems.is_empty() {
        return (None, problems.into_vec());
    }
    trust_problems(&files, &merged, &mut problems);
    let root_at = Location { file: Arc::new(path.to_path_buf()), line: 1 };
    let config = build(&merged, path, root_at, &mut problems);
    (Some(config), problems.into_vec())
}

/// The main file, then `conf.d/*.toml` in name order.
fn config_files(path: &Path, problems: &mut Problems) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    let conf_d = path.parent().unwrap_or_else(|| Path::new(".")).join("conf.d");
    match std::fs::read_dir(&conf_d) {
        Ok(entries) => {
            let mut extra: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|file| file.extension().is_some_and(|ext| ext == "toml"))
                .collect();
            extra.sort();
            files.extend(extra);
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => problems.push(Problem::at_file(Arc::new(conf_d), format!("cannot list the directory: {error}"))),
    }
    files
}

fn build(root: &Table, source: &Path, root_at: Location, p: &mut Problems) -> Config {
    let mut top = Section::new(root, "", root_at.clone());
    let server = server(top.table(p, "server"), &root_at, p);
    let store = store(top.table(p, "store"), &root_at, p);
    let plugins = plugins(top.table(p, "plugins"), &root_at, p);
    let payments = payments(top.table(p, "payments"), &root_at, p);
    let clients = clients(top.tables(p, "clients"), p);
    let scanners = scanners(top.tables(p, "scanners"), p);
    let registers = registers(top.tables(p, "registers"), &scanners, p);
    let methods = methods(top.table(p, "methods"), p);
    let sandbox = sandbox(top.table(p, "sandbox"), p);
    top.finish(p);
    let warnings = warnings(&server, &store, root);
    Config { source: source.to_path_buf(), server, store, plugins, payments, clients, registers, scanners, methods, sandbox, warnings }
}

/// What deserves a warning without stopping the daemon: a non-loopback address, and
/// secret files other users can read.
fn warnings(server: &ServerConfig, store: &StoreConfig, root: &Table) -> Vec<String> {
    let mut warnings = Vec::new();
    let store_table = root.entries.iter().find(|entry| entry.key == "store").map(|entry| &entry.node.value);
    if let (StoreBackend::Postgres(_), Some(Value::Table(table))) = (&store.backend, store_table) {
        if table.entries.iter().any(|entry| entry.key == "path") {
            warnings.push("store.path is the sled store's directory; with backend = \"postgres\" it is not used".to_string());
        }
    }
    if !server.listen.ip().is_loopback() {
        warnings.push(format!(
            "server.listen = {} is reachable from other machines; posbridge is meant for this machine's registers (bind 127.0.0.1 unless you mean it)",
            server.listen
        ));
    }
    if !crate::file_trust::running_as_service() {
        for (file, key, mode) in exposed_secret_files(root) {
            warnings.push(format!("{} (`{key}`) is readable by other users (mode {mode:o}); chmod 600 it", file.display()));
        }
    }
    warnings
}

/// Secret files group or others can read, with their key and mode.
fn exposed_secret_files(root: &Table) -> Vec<(PathBuf, String, u32)> {
    let mut secret_files = Vec::new();
    collect_secret_files(root, &mut secret_files);
    secret_files.into_iter().filter_map(|(file, key)| crate::file_trust::readable_by_others(&file).map(|mode| (file, key, mode))).collect()
}

/// Config files and `conf.d/` others could change, and (as a service) secret files
/// others can read, are problems: the daemon would obey or leak them.
fn trust_problems(files: &[PathBuf], root: &Table, problems: &mut Problems) {
    let conf_d = files.first().and_then(|main| main.parent()).map(|dir| dir.join("conf.d"));
    for path in files.iter().chain(conf_d.iter().filter(|dir| dir.is_dir())) {
        if let Some(reason) = crate::file_trust::untrusted(path, false) {
            problems.push(Problem::at_file(Arc::new(path.clone()), format!("not trusted: {reason}")));
        }
    }
    if crate::file_trust::running_as_service() {
        for (file, key, mode) in exposed_secret_files(root) {
            let message = format!("`{key}`: {} is readable by other users (mode {mode:o}); chmod 600 it", file.display());
            problems.push(Problem::at_file(Arc::new(file), message));
        }
    }
}

/// Every `*_file` value holding a secret (tokens, secrets; not public keys), with its key.
fn collect_secret_files(table: &Table, out: &mut Vec<(PathBuf, String)>) {
    for entry in &table.entries {
        match &entry.node.value {
            Value::String(path) if entry.key.ends_with("_file") && !entry.key.starts_with("pem") => {
                out.push((entry.node.at.base_dir().join(path), entry.key.clone()))
            }
            Value::Table(inner) => collect_secret_files(inner, out),
            Value::Array(items) => items.iter().for_each(|item| {
                if let Value::Table(inner) = &item.value {
                    collect_secret_files(inner, out);
                }
            }),
            _ => {}
        }
    }
}

/// An absent optional table reads as empty, located at the file's start.
fn or_empty<'t>(section: Option<Section<'t>>, empty: &'t Table, path: &str, at: &Location) -> Section<'t> {
    section.unwrap_or_else(|| Section::new(empty, path, at.clone()))
}

static EMPTY: std::sync::LazyLock<Table> = std::sync::LazyLock::new(Table::default);

fn server(section: Option<Section<'_>>, root_at: &Location, p: &mut Problems) -> ServerConfig {
    let mut s = or_empty(section, &EMPTY, "server", root_at);
    let listen_text = s.string(p, "listen").unwrap_or_else(|| "127.0.0.1:8787".to_string());
    let fallback = SocketAddr::from(([127, 0, 0, 1], 8787));
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(address) => address,
        Err(_) => {
            p.add(
                &s.value_at("listen"),
                &s.key_path("listen"),
                format!("expected an address such as \"127.0.0.1:8787\", found {listen_text:?}"),
            );
            fallback
        }
    };
    let allowed_origins = s.string_list(p, "allowed_origins").unwrap_or_default();
    let max_body = s.integer_in(p, "max_body_bytes", 1024..=64 * 1024 * 1024).unwrap_or(DEFAULT_MAX_BODY_BYTES);
    let allowed_hosts = s.string_list(p, "allowed_hosts").unwrap_or_default();
    let rate_limit = s.integer_in(p, "rate_limit", 1..=100_000).unwrap_or(50) as u32;
    let rate_burst = s.integer_in(p, "rate_burst", 1..=100_000).unwrap_or(100) as u32;
    let global_rate_limit = s.integer_in(p, "global_rate_limit", 1..=1_000_000).unwrap_or(2_000) as u32;
    let max_connections = s.integer_in(p, "max_connections", 16..=65_536).unwrap_or(4_096) as usize;
    let header_read_timeout = s.duration(p, "header_read_timeout").unwrap_or(Duration::from_secs(10));
    let max_concurrent_decodes = s.integer_in(p, "max_concurrent_decodes", 1..=64).unwrap_or(2) as usize;
    let proxy = s.string(p, "proxy");
    if let Some(proxy) = &proxy {
        if !(proxy.starts_with("http://") || proxy.starts_with("https://")) {
            p.add(&s.value_at("proxy"), &s.key_path("proxy"), "expected a proxy URL such as \"http://proxy.shop.lan:3128\"");
        }
    }
    s.finish(p);
    ServerConfig {
        listen,
        allowed_origins,
        max_body_bytes: max_body as usize,
        allowed_hosts,
        rate_limit,
        rate_burst,
        global_rate_limit,
        max_connections,
        header_read_timeout,
        max_concurrent_decodes,
        proxy,
    }
}

fn store(section: Option<Section<'_>>, root_at: &Location, p: &mut Problems) -> StoreConfig {
    let mut s = or_empty(section, &EMPTY, "store", root_at);
    let backend = match s.string(p, "backend").as_deref() {
        None | Some("sled") => {
            let path = s.path(p, "path").unwrap_or_else(|| root_at.base_dir().join("data"));
            StoreBackend::Sled { path }
        }
        Some("postgres") => postgres_store(&mut s, p),
        Some(other) => {
            p.add(&s.value_at("backend"), &s.key_path("backend"), format!("unknown backend {other:?}: \"sled\" or \"postgres\""));
            StoreBackend::Sled { path: root_at.base_dir().join("data") }
        }
    };
    let retention = s.duration(p, "retention").unwrap_or(Duration::from_secs(400 * 86_400));
    let journal_retention = s.duration(p, "journal_retention").unwrap_or(Duration::from_secs(7 * 86_400));
    let lease = s.duration(p, "lease").unwrap_or(Duration::from_secs(15));
    if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&lease) {
        p.add(&s.value_at("lease"), &s.key_path("lease"), "a lease lasts 1s to 10m");
    }
    s.finish(p);
    StoreConfig { backend, lease, retention, journal_retention }
}

/// `backend = "postgres"`: the database URL (checked here, so a typo is reported at its
/// line) and this daemon's node name.
fn postgres_store(s: &mut Section<'_>, p: &mut Problems) -> StoreBackend {
    // Read (and then unused: a warning says so) so a technician switching backends may
    // leave it in place.
    let _ = s.path(p, "path");
    let url = s.secret(p, "url", "url_file");
    if let Some(url) = &url {
        if let Err(error) = crate::store::postgres_store::parse_url(url.expose()) {
            let key = if s.entry("url").is_some() { "url" } else { "url_file" };
            p.add(&s.value_at(key), &s.key_path(key), format!("not a PostgreSQL URL (postgres://user@host:5432/database): {error}"));
        }
    }
    let node = s.string(p, "node").unwrap_or_else(host_name);
    if node.is_empty() || node.len() > 64 || !node.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        p.add(&s.value_at("node"), &s.key_path("node"), "a node name is 1 to 64 letters, digits, '-', '_' or '.'");
    }
    let ca_file = s.path(p, "ca_file");
    if let Some(file) = &ca_file {
        if let Err(error) = crate::store::postgres_store::read_ca_file(file) {
            p.add(&s.value_at("ca_file"), &s.key_path("ca_file"), error);
        }
    }
    let url = url.unwrap_or_else(|| Secret::from_value("postgres://invalid").expect("a literal"));
    StoreBackend::Postgres(SharedStore { url, node, ca_file })
}

/// This machine's host name, the default node name of a daemon on a shared store.
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let end = buffer.iter().position(|&byte| byte == 0).unwrap_or(buffer.len());
    match status {
        0 if end > 0 => String::from_utf8_lossy(&buffer[..end]).into_owned(),
        _ => "posbridge".to_string(),
    }
}

fn plugins(section: Option<Section<'_>>, root_at: &Location, p: &mut Problems) -> PluginsConfig {
    let mut s = or_empty(section, &EMPTY, "plugins", root_at);
    let dir = s.path(p, "dir").unwrap_or_else(|| root_at.base_dir().join("plugins"));
    // Reported here, at its line, with every other problem (not as a stop after them).
    if let Err(error) = std::fs::read_dir(&dir) {
        let why = match error.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_string(),
            std::io::ErrorKind::PermissionDenied => "cannot be read by this user".to_string(),
            _ if !dir.is_dir() => "is not a directory".to_string(),
            _ => format!("cannot be read ({error})"),
        };
        p.add(&s.value_at("dir"), &s.key_path("dir"), format!("the plugin directory {} {why}", dir.display()));
    }
    let mut pinned = BTreeMap::new();
    if let Some(pins) = s.table(p, "pinned") {
        for entry in pins.remaining() {
            let key_path = pins.key_path(&entry.key);
            let Some(text) = node_string(&entry.node, &key_path, p) else { continue };
            match parse_sha256(&text) {
                Some(digest) => {
                    pinned.insert(entry.key.clone(), digest);
                }
                None => p.add(&entry.node.at, &key_path, "expected \"sha256:\" followed by 64 hex digits"),
            }
        }
    }
    s.finish(p);
    PluginsConfig { dir, pinned }
}

fn payments(section: Option<Section<'_>>, root_at: &Location, p: &mut Problems) -> PaymentsConfig {
    let mut s = or_empty(section, &EMPTY, "payments", root_at);
    let scan_timeout = s.duration(p, "scan_timeout").unwrap_or(Duration::from_secs(15 * 60));
    let card_timeout = s.duration(p, "card_timeout").unwrap_or(Duration::from_secs(120));
    for (key, value) in [("scan_timeout", scan_timeout), ("card_timeout", card_timeout)] {
        if value < Duration::from_secs(1) {
            p.add(&s.value_at(key), &s.key_path(key), "must be at least \"1s\"");
        }
    }
    s.finish(p);
    PaymentsConfig { scan_timeout, card_timeout }
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let hex_digits = text.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_digits).ok()?;
    bytes.try_into().ok()
}

/// Reports a second use of an id within one kind of table.
fn check_unique(seen: &mut HashSet<String>, id: &str, section: &Section<'_>, key: &str, p: &mut Problems) {
    if !seen.insert(id.to_string()) {
        p.add(&section.value_at(key), &section.key_path(key), format!("{id:?} is used twice; ids must be unique"));
    }
}

fn clients(sections: Vec<Section<'_>>, p: &mut Problems) -> Vec<ClientConfig> {
    let mut seen = HashSet::new();
    let mut clients: Vec<ClientConfig> = Vec::new();
    for mut s in sections {
        let name = s.required_string(p, "name");
        if let Some(name) = &name {
            check_unique(&mut seen, name, &s, "name", p);
        }
        let token = client_token(&mut s, p);
        let role = match s.string(p, "role").as_deref() {
            None | Some("till") => Role::Till,
            Some("manager") => Role::Manager,
            Some("technician") => Role::Technician,
            Some(other) => {
                p.add(
                    &s.value_at("role"),
                    &s.key_path("role"),
                    format!("unknown role {other:?}; expected \"till\", \"manager\" or \"technician\""),
                );
                Role::Till
            }
        };
        let registers = s.string_list(p, "registers");
        if let Some(ClientToken::Secret(secret)) = &token {
            if secret.expose().len() < 16 {
                p.add(&s.location().clone(), &s.key_path("token"), "too short: a client token needs at least 16 characters");
            }
        }
        let (at, key) = (s.location().clone(), s.key_path("token"));
        s.finish(p);
        if let (Some(name), Some(token)) = (name, token) {
            let registers = registers.unwrap_or_else(|| vec![name.clone()]);
            let client = ClientConfig { name, token, role, registers };
            if let Some(other) = clients.iter().find(|known| known.token_digest() == client.token_digest()) {
                p.add(&at, &key, format!("the same token as client {:?}; each register needs its own", other.name));
            }
            clients.push(client);
        }
    }
    clients
}

/// `token`, `token_file` or `token_sha256` (hex): exactly one.
fn client_token(s: &mut Section<'_>, p: &mut Problems) -> Option<ClientToken> {
    let hashed = s.string(p, "token_sha256");
    let has_secret = s.entry("token").is_some() || s.entry("token_file").is_some();
    match (hashed, has_secret) {
        (Some(_), true) => {
            p.add(&s.value_at("token_sha256"), &s.key_path("token_sha256"), "set one of `token`, `token_file` and `token_sha256`");
            None
        }
        (Some(hex_digest), false) => match hex::decode(hex_digest.trim()).ok().and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) {
            Some(digest) => Some(ClientToken::Sha256(digest)),
            None => {
                p.add(&s.value_at("token_sha256"), &s.key_path("token_sha256"), "expected 64 hex digits (sha256sum of the token)");
                None
            }
        },
        (None, _) => s.secret(p, "token", "token_file").map(ClientToken::Secret),
    }
}

/// The address of an `http://` URL on this machine (`http://127.0.0.1:PORT`), where a
/// sandbox fake listens.
pub fn loopback_address(url: &str) -> Option<SocketAddr> {
    let host_port = url.strip_prefix("http://")?.trim_end_matches('/');
    host_port.parse().ok().filter(|address: &SocketAddr| address.ip().is_loopback())
}

/// `[sandbox]`: third-party fake providers `posbridge sandbox` runs beside its own.
fn sandbox(section: Option<Section<'_>>, p: &mut Problems) -> SandboxConfig {
    let Some(mut s) = section else { return SandboxConfig::default() };
    let mut seen = HashSet::new();
    let providers = s
        .tables(p, "providers")
        .into_iter()
        .filter_map(|mut provider| {
            let name = provider.required_string(p, "name");
            if let Some(name) = &name {
                check_unique(&mut seen, name, &provider, "name", p);
            }
            let url = provider.required_string(p, "url");
            let address = url.as_deref().and_then(|url| {
                let address = loopback_address(url);
                if address.is_none() {
                    p.add(
                        &provider.value_at("url"),
                        &provider.key_path("url"),
                        format!("expected http://127.0.0.1:PORT (a fake listens on this machine), found {url:?}"),
                    );
                }
                address
            });
            let command = provider.string_list(p, "command");
            if command.as_ref().is_some_and(Vec::is_empty) {
                p.add(
                    &provider.value_at("command"),
                    &provider.key_path("command"),
                    "expected the program and its arguments, found an empty list",
                );
            }
            let dir = provider.path(p, "dir").unwrap_or_else(|| provider.location().base_dir().to_path_buf());
            let startup_timeout = provider.duration(p, "startup_timeout").unwrap_or(Duration::from_secs(120));
            provider.finish(p);
            Some(FakeProviderConfig {
                name: name?,
                address: address?,
                command: command.filter(|command| !command.is_empty()),
                dir,
                startup_timeout,
            })
        })
        .collect();
    s.finish(p);
    SandboxConfig { providers }
}

fn scanners(sections: Vec<Section<'_>>, p: &mut Problems) -> Vec<ScannerConfig> {
    let mut seen = HashSet::new();
    let mut scanners = Vec::new();
    for mut s in sections {
        let id = s.required_string(p, "id");
        if let Some(id) = &id {
            check_unique(&mut seen, id, &s, "id", p);
        }
        let source = scanner_source(&mut s, p);
        let mode = match s.string(p, "mode").as_deref() {
            None | Some("keyboard") => Some(ScannerMode::Keyboard),
            Some("pos") => Some(ScannerMode::Pos),
            Some(other) => {
                p.add(&s.value_at("mode"), &s.key_path("mode"), format!("expected \"keyboard\" or \"pos\", found {other:?}"));
                None
            }
        };
        let layout = match s.string(p, "layout").as_deref() {
            None | Some("us") => Some(KeyboardLayout::Us),
            Some("fi") | Some("se") => Some(KeyboardLayout::Fi),
            Some(other) => {
                p.add(&s.value_at("layout"), &s.key_path("layout"), format!("expected \"us\" or \"fi\", found {other:?}"));
                None
            }
        };
        let terminator = match s.string(p, "terminator").as_deref() {
            None | Some("enter") => Some(Terminator::Enter),
            Some("tab") => Some(Terminator::Tab),
            Some("enter_or_tab") => Some(Terminator::EnterOrTab),
            Some("none") => Some(Terminator::None),
            Some(other) => {
                p.add(
                    &s.value_at("terminator"),
                    &s.key_path("terminator"),
                    format!("expected \"enter\", \"tab\", \"enter_or_tab\" or \"none\", found {other:?}"),
                );
                None
            }
        };
        let char_timeout = s.duration(p, "char_timeout").unwrap_or(Duration::from_millis(100));
        s.finish(p);
        if let (Some(id), Some(source), Some(mode), Some(layout), Some(terminator)) = (id, source, mode, layout, terminator) {
            scanners.push(ScannerConfig { id, source, mode, layout, terminator, char_timeout });
        }
    }
    scanners
}

fn scanner_source(s: &mut Section<'_>, p: &mut Problems) -> Option<ScannerSource> {
    let source = s.required_string(p, "source");
    // Read every source's keys, so none is reported as unknown; then insist on the
    // ones this source needs.
    let vendor_id = s.integer_in(p, "vendor_id", 0..=0xffff);
    let product_id = s.integer_in(p, "product_id", 0..=0xffff);
    let serial = s.string(p, "serial");
    let usage_page = s.integer_in(p, "usage_page", 0..=0xffff);
    let path = s.path(p, "path");
    match source.as_deref()? {
        "hid" => {
            for (key, value) in [("vendor_id", vendor_id), ("product_id", product_id)] {
                if value.is_none() && s.entry(key).is_none() {
                    s.missing(p, key, "an integer such as 0x0c2e");
                }
            }
            Some(ScannerSource::Hid {
                vendor_id: vendor_id? as u16,
                product_id: product_id? as u16,
                serial,
                usage_page: usage_page.map(|page| page as u16),
            })
        }
        "replay" => {
            if path.is_none() && s.entry("path").is_none() {
                s.missing(p, "path", "the path of a file or FIFO of hex reports");
            }
            Some(ScannerSource::Replay { path: path? })
        }
        other => {
            p.add(&s.value_at("source"), &s.key_path("source"), format!("expected \"hid\" or \"replay\", found {other:?}"));
            None
        }
    }
}

fn registers(sections: Vec<Section<'_>>, scanners: &[ScannerConfig], p: &mut Problems) -> Vec<RegisterConfig> {
    let mut seen = HashSet::new();
    let mut registers = Vec::new();
    for mut s in sections {
        let id = s.required_string(p, "id");
        if let Some(id) = &id {
            check_unique(&mut seen, id, &s, "id", p);
        }
        let assigned = s.string_list(p, "scanners").unwrap_or_default();
        for scanner in &assigned {
            if !scanners.iter().any(|known| &known.id == scanner) {
                p.add(&s.value_at("scanners"), &s.key_path("scanners"), format!("no [[scanners]] entry has id {scanner:?}"));
            }
        }
        s.finish(p);
        if let Some(id) = id {
            registers.push(RegisterConfig { id, scanners: assigned });
        }
    }
    registers
}

fn methods(section: Option<Section<'_>>, p: &mut Problems) -> BTreeMap<String, MethodConfig> {
    let mut methods = BTreeMap::new();
    let Some(section) = section else { return methods };
    for entry in section.remaining() {
        let key_path = section.key_path(&entry.key);
        let Value::Table(table) = &entry.node.value else {
            p.add(&entry.node.at, &key_path, format!("expected a table ([methods.{}]), found {}", entry.key, entry.node.value.type_name()));
            continue;
        };
        if !is_identifier(&entry.key) {
            p.add(&entry.key_at, &key_path, "a method id is lowercase letters, digits, '-' and '_'");
        }
        if let Some(method) = method(&entry.key, Section::new(table, key_path, entry.node.at.clone()), p) {
            methods.insert(entry.key.clone(), method);
        }
    }
    methods
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn method(id: &str, mut s: Section<'_>, p: &mut Problems) -> Option<MethodConfig> {
    let plugin = s.required_string(p, "plugin");
    let kind = s.string(p, "kind");
    let timeout = s.duration(p, "timeout").unwrap_or(DEFAULT_METHOD_TIMEOUT);
    let offline = s.table(p, "offline").and_then(|section| offline_policy(section, p));
    let mut settings = PluginSettings { json: serde_json::Value::Object(Default::default()), locations: HashMap::new() };
    let prefix = s.key_path("");
    let rest: Vec<_> = s.remaining().collect();
    let mut object = serde_json::Map::new();
    for entry in rest {
        plugin_setting(entry.key.as_str(), &entry.node, &entry.key, &prefix, &mut object, &mut settings.locations, p);
    }
    settings.json = serde_json::Value::Object(object);
    Some(MethodConfig { id: id.to_string(), plugin: plugin?, kind, timeout, offline, settings, at: s.location().clone() })
}

/// The longest `offline.max_age`: a receipt older than a day is no longer "the line
/// dropped a moment ago".
const MAX_OFFLINE_AGE: Duration = Duration::from_secs(24 * 3600);

/// `[methods.<id>.offline]`: `None` unless `enabled = true`. Both limits must be written
/// (no default can know what a shop may risk).
fn offline_policy(mut s: Section<'_>, p: &mut Problems) -> Option<OfflinePolicy> {
    let enabled = s.boolean(p, "enabled").unwrap_or(false);
    let limit = |s: &mut Section<'_>, p: &mut Problems, key: &'static str| {
        let present = s.entry(key).is_some();
        let value = s.integer_in(p, key, 1..=100_000_000).map(|cents| cents as u64);
        if enabled && !present {
            s.missing(p, key, "the most it may pay offline, in cents");
        }
        value
    };
    let max_amount = limit(&mut s, p, "max_amount");
    let max_total = limit(&mut s, p, "max_total");
    let max_age = s.duration(p, "max_age").unwrap_or(Duration::from_secs(2 * 3600));
    if max_age.is_zero() || max_age > MAX_OFFLINE_AGE {
        p.add(&s.value_at("max_age"), &s.key_path("max_age"), "expected a duration from 1s to 24h");
    }
    if let (Some(amount), Some(total)) = (max_amount, max_total) {
        if total < amount {
            p.add(&s.value_at("max_total"), &s.key_path("max_total"), format!("max_total ({total}) is below max_amount ({amount})"));
        }
    }
    s.finish(p);
    Some(OfflinePolicy { max_amount: max_amount?, max_total: max_total?, max_age }).filter(|_| enabled)
}

/// Converts one plugin setting to JSON, resolving `*_file` and `env:` secrets, and
/// records where it was written under its plugin-facing path.
fn plugin_setting(
    key: &str,
    node: &Node,
    field: &str,
    prefix: &str,
    out: &mut serde_json::Map<String, serde_json::Value>,
    locations: &mut HashMap<String, Location>,
    p: &mut Problems,
) {
    let file_key = key.strip_suffix("_file").filter(|_| matches!(node.value, Value::String(_)));
    let (name, field) = match file_key {
        Some(base) => (base.to_string(), field.strip_suffix("_file").unwrap_or(field).to_string()),
        None => (key.to_string(), field.to_string()),
    };
    locations.insert(field.clone(), node.at.clone());
    let resolved = match (&node.value, file_key) {
        (Value::String(path), Some(_)) => Secret::from_file(&node.at.base_dir().join(path)).map(|secret| secret.expose().into()),
        _ => plugin_value(node, &field, prefix, locations, p),
    };
    match resolved {
        Ok(value) => {
            out.insert(name, value);
        }
        Err(message) => p.add(&node.at, &format!("{prefix}{}", field_with_suffix(&field, file_key.is_some())), message),
    }
}

fn field_with_suffix(field: &str, was_file: bool) -> String {
    if was_file {
        format!("{field}_file")
    } else {
        field.to_string()
    }
}

fn plugin_value(
    node: &Node,
    field: &str,
    prefix: &str,
    locations: &mut HashMap<String, Location>,
    p: &mut Problems,
) -> Result<serde_json::Value, String> {
    Ok(match &node.value {
        Value::String(text) if text.starts_with("env:") => Secret::from_value(text)?.expose().into(),
        Value::String(text) | Value::Datetime(text) => text.clone().into(),
        Value::Integer(number) => (*number).into(),
        Value::Float(number) => serde_json::Number::from_f64(*number).map(serde_json::Value::Number).unwrap_or_default(),
        Value::Boolean(flag) => (*flag).into(),
        Value::Array(items) => {
            let mut values = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let item_field = format!("{field}[{index}]");
                locations.insert(item_field.clone(), item.at.clone());
                match plugin_value(item, &item_field, prefix, locations, p) {
                    Ok(value) => values.push(value),
                    Err(message) => p.add(&item.at, &format!("{prefix}{item_field}"), message),
                }
            }
            values.into()
        }
        Value::Table(table) => {
            let mut object = serde_json::Map::new();
            for entry in &table.entries {
                let child_field = format!("{field}.{}", entry.key);
                plugin_setting(&entry.key, &entry.node, &child_field, prefix, &mut object, locations, p);
            }
            object.into()
        }
    })
}
