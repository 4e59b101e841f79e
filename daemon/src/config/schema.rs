//! The typed configuration, as the rest of the daemon sees it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::secret::Secret;
use super::tree::Location;

/// A validated configuration snapshot. Built whole or not at all, so a running daemon
/// swaps one valid snapshot for another and never sees half a config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file, as given on the command line.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub plugins: PluginsConfig,
    pub payments: PaymentsConfig,
    pub clients: Vec<ClientConfig>,
    pub registers: Vec<RegisterConfig>,
    pub scanners: Vec<ScannerConfig>,
    /// Payment methods by the id the POS uses.
    pub methods: BTreeMap<String, MethodConfig>,
    /// What `posbridge sandbox` runs besides its own fakes.
    pub sandbox: SandboxConfig,
    /// Things worth a technician's attention that do not stop the daemon.
    pub warnings: Vec<String>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Browser origins allowed by CORS; empty denies every cross-origin request.
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Host names (besides loopback ones) requests may be addressed to, for a daemon
    /// deliberately bound to another address.
    pub allowed_hosts: Vec<String>,
    /// Requests per second each client may make, sustained.
    pub rate_limit: u32,
    /// Requests a client may make in a burst.
    pub rate_burst: u32,
    /// Requests per second from everyone together, before authentication.
    pub global_rate_limit: u32,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// A connection that has not sent a request's headers within this is closed.
    pub header_read_timeout: Duration,
    /// `/v1/decode` images decoded at once; more answer `429`.
    pub max_concurrent_decodes: usize,
    /// The proxy for provider requests (`http://host:port`); none by default, whatever
    /// the environment says.
    pub proxy: Option<String>,
}

/// `[store]`
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where payments live: sled on this machine, or a PostgreSQL database shared by
    /// several daemons.
    pub backend: StoreBackend,
    /// How long a daemon's hold on a payment's work lasts unless renewed (shared store):
    /// how long a crashed daemon's work waits before another takes it over.
    pub lease: Duration,
    /// How long settled payments stay for refunds and reports.
    pub retention: Duration,
    /// How long the journal (the event stream's history) keeps events.
    pub journal_retention: Duration,
}

/// `[store] backend`, with what each needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// The embedded store in a directory of this machine (`path`).
    Sled { path: PathBuf },
    /// A PostgreSQL database shared by several daemons.
    Postgres(SharedStore),
}

/// `[store] backend = "postgres"`: where the database is and who this daemon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStore {
    /// `url` or `url_file`: `postgres://user:password@host:5432/database`.
    pub url: Secret,
    /// This daemon's name in leases and logs.
    pub node: String,
    /// CA certificates (PEM) a remote database's certificate may chain to, besides the
    /// public roots: a managed service's own CA.
    pub ca_file: Option<PathBuf>,
}

impl StoreBackend {
    /// Where the store is, for logs and reload messages (never the URL's password).
    pub fn describe(&self) -> String {
        match self {
            StoreBackend::Sled { path } => format!("sled at {}", path.display()),
            StoreBackend::Postgres(shared) => {
                let place = crate::store::postgres_store::parse_url(shared.url.expose())
                    .map(|config| crate::store::postgres_store::place(&config))
                    .unwrap_or_default();
                format!("postgres {place} as node {}", shared.node)
            }
        }
    }
}

/// `[plugins]`
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    pub dir: PathBuf,
    /// Plugin id → expected SHA-256 of its file. Non-empty turns pinning on: every
    /// loaded file must be listed and match.
    pub pinned: BTreeMap<String, [u8; 32]>,
}

/// `[payments]`
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// How long a payment waits for a scan before it expires.
    pub scan_timeout: Duration,
    /// How long a card payment waits for the customer before it is canceled.
    pub card_timeout: Duration,
}

/// `[[clients]]`: who may call the API, and what it may do.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: String,
    pub token: ClientToken,
    pub role: Role,
    /// The registers a till acts for (`registers`, default: the register of its name).
    /// Managers and technicians see every register.
    pub registers: Vec<String>,
}

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A cash register: creates, reads and refunds the payments of its own registers.
    Till,
    /// Acts on every register; the only role that refunds by transaction id alone.
    Manager,
    /// Reads status, scanners, methods, plugins and history; moves no money.
    Technician,
}

/// A client's token: the secret itself, or only its SHA-256 (so the config file holds
/// nothing that opens the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientToken {
    Secret(Secret),
    Sha256([u8; 32]),
}

impl ClientConfig {
    /// The SHA-256 of the token, which is all the API compares.
    pub fn token_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        match &self.token {
            ClientToken::Secret(secret) => Sha256::digest(secret.expose().as_bytes()).into(),
            ClientToken::Sha256(digest) => *digest,
        }
    }
}

/// `[[registers]]`
#[derive(Debug, Clone)]
pub struct RegisterConfig {
    pub id: String,
    pub scanners: Vec<String>,
}

/// `[[scanners]]`
#[derive(Debug, Clone)]
pub struct ScannerConfig {
    pub id: String,
    pub source: ScannerSource,
    pub mode: ScannerMode,
    pub layout: KeyboardLayout,
    /// Which key ends a code in keyboard mode.
    pub terminator: Terminator,
    /// A pause this long between keys ends a code too.
    pub char_timeout: Duration,
}

/// The key a keyboard-wedge scanner sends after a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminator {
    Enter,
    Tab,
    EnterOrTab,
    /// Only the pause ends a code.
    None,
}

/// Where a scanner's raw reports come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScannerSource {
    /// A USB HID device through hidapi.
    Hid { vendor_id: u16, product_id: u16, serial: Option<String>, usage_page: Option<u16> },
    /// Recorded reports, one hex line each, from a file or FIFO.
    Replay { path: PathBuf },
}

/// How a scanner talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScannerMode {
    /// Boot keyboard reports (keyboard wedge).
    Keyboard,
    /// HID point-of-sale barcode scanner reports (usage page 0x8C).
    Pos,
}

/// The keyboard layout a keyboard-wedge scanner emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyboardLayout {
    Us,
    /// Finnish/Swedish.
    Fi,
}

/// `[methods.<id>]`: a payment method provided by a plugin.
#[derive(Debug, Clone)]
pub struct MethodConfig {
    pub id: String,
    pub plugin: String,
    /// Which of the plugin's kinds; `None` when it provides one.
    pub kind: Option<String>,
    /// How long one plugin call may take.
    pub timeout: Duration,
    /// `[methods.<id>.offline]`: when signed receipts are taken while the provider
    /// cannot be reached; `None` (the default) never.
    pub offline: Option<OfflinePolicy>,
    /// The rest of the section, secrets resolved, for the plugin.
    pub settings: PluginSettings,
    /// The section header, for errors about the method as a whole.
    pub at: Location,
}

/// The limits within which a method takes signed receipts offline (the provider
/// unreachable), each checked before a receipt is taken: they bound what the shop risks
/// if the provider later refuses receipts it could not confirm at the till.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflinePolicy {
    /// The most one receipt taken offline may pay (minor units).
    pub max_amount: u64,
    /// The most all receipts taken offline and not yet confirmed may pay together.
    pub max_total: u64,
    /// Receipts issued longer ago than this are not taken offline.
    pub max_age: Duration,
}

/// A method's plugin-specific settings, with where each key was written so the plugin's
/// complaints about a key can be shown with its line.
#[derive(Clone)]
pub struct PluginSettings {
    pub json: serde_json::Value,
    pub locations: HashMap<String, Location>,
}

impl std::fmt::Debug for PluginSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may hold resolved secrets: show only the keys.
        let mut keys: Vec<&String> = self.locations.keys().collect();
        keys.sort();
        f.debug_struct("PluginSettings").field("keys", &keys).finish_non_exhaustive()
    }
}

/// `[sandbox]`
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    /// `[[sandbox.providers]]`: an integrator's fake providers.
    pub providers: Vec<FakeProviderConfig>,
}

/// One `[[sandbox.providers]]`: a fake provider `posbridge sandbox` starts (with
/// `command`) or expects already running, and waits for before starting the daemon.
#[derive(Debug, Clone)]
pub struct FakeProviderConfig {
    /// Shown in the sandbox's banner.
    pub name: String,
    /// Where it listens (loopback only).
    pub address: std::net::SocketAddr,
    /// The program and its arguments; `None` when it runs on its own.
    pub command: Option<Vec<String>>,
    /// The command's working directory (default: the config file's).
    pub dir: std::path::PathBuf,
    /// How long it may take to listen (a `cargo run` may build first).
    pub startup_timeout: Duration,
}
