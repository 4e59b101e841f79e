//! Scanners: sources (hidapi devices, replayed recordings) → pure decoders (boot
//! keyboard, HID POS) → codes → the register's payment awaiting a scan, or a
//! `scan.unclaimed` event.
//!
//! Each source runs on a thread of its own and talks to the hub through a [`Feed`];
//! the hub runs on the async runtime and owns the status shown by `GET /v1/scanners`.

pub mod hid;
pub mod keyboard;
pub mod layout;
pub mod pos;
pub mod replay;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::config::{Config, KeyboardLayout, ScannerConfig, ScannerMode, ScannerSource, Terminator};
use crate::payments::model::{now_ms, rfc3339};
use crate::payments::Payments;
pub use keyboard::{KeyboardDecoder, Terminators};
pub use pos::PosDecoder;

/// A code read by a scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub text: String,
    /// The AIM symbology identifier, when the scanner reports one (HID POS).
    pub symbology: Option<String>,
}

/// A report that cannot be decoded. Never a panic: garbage is reported and skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("a keyboard report is 8 bytes (9 with a report id of 1), this one is {0}")]
    KeyboardLength(usize),
    #[error("a HID POS report is 64 bytes, this one is {0}")]
    PosLength(usize),
    #[error("a HID POS data report has report id 2, this one has {0}")]
    PosReportId(u8),
    #[error("a HID POS report carries at most 56 data bytes, this one says {0}")]
    PosDataLength(usize),
    #[error("the code is too long to be a receipt; dropped")]
    TooLong,
    #[error("the scanned data is not UTF-8 text")]
    NotUtf8,
}

/// A replay line that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not hex bytes: {0:?}")]
    NotHex(String),
    #[error("not a time in milliseconds: {0:?}")]
    BadTime(String),
    #[error("a time but no report")]
    MissingReport,
}

/// Either decoder, as a scanner's mode says.
#[derive(Debug, Clone)]
pub enum ScannerDecoder {
    Keyboard(KeyboardDecoder),
    Pos(PosDecoder),
}

impl ScannerDecoder {
    /// The decoder for a configured scanner.
    pub fn for_scanner(scanner: &ScannerConfig) -> Self {
        match scanner.mode {
            ScannerMode::Keyboard => {
                let terminators = match scanner.terminator {
                    Terminator::Enter => Terminators { enter: true, tab: false },
                    Terminator::Tab => Terminators { enter: false, tab: true },
                    Terminator::EnterOrTab => Terminators { enter: true, tab: true },
                    Terminator::None => Terminators { enter: false, tab: false },
                };
                ScannerDecoder::Keyboard(KeyboardDecoder::new(scanner.layout, terminators, scanner.char_timeout.as_millis() as u64))
            }
            ScannerMode::Pos => ScannerDecoder::Pos(PosDecoder::new()),
        }
    }

    /// Feeds one report; answers completed codes.
    pub fn feed(&mut self, at_ms: u64, report: &[u8]) -> Result<Vec<Code>, ReportError> {
        match self {
            ScannerDecoder::Keyboard(decoder) => decoder.feed(at_ms, report),
            ScannerDecoder::Pos(decoder) => decoder.feed(report).map(|code| code.into_iter().collect()),
        }
    }

    /// Lets a pause end a keyboard code.
    pub fn idle(&mut self, now_ms: u64) -> Option<Code> {
        match self {
            ScannerDecoder::Keyboard(decoder) => decoder.idle(now_ms),
            ScannerDecoder::Pos(_) => None,
        }
    }
}

/// What a source thread tells the hub.
pub trait Feed: Send {
    /// A raw report arrived at `at_ms` (milliseconds on the source's clock).
    fn report(&mut self, at_ms: u64, report: &[u8]);
    /// Nothing arrived for a while.
    fn idle(&mut self, now_ms: u64);
    /// The input ended (file read, writer gone, device lost): end a pending code.
    fn end_of_input(&mut self);
    fn connected(&mut self, device: &str);
    fn disconnected(&mut self, reason: &str);
    fn error(&mut self, message: &str);
    /// `false` once the daemon stops the scanners.
    fn keep_going(&self) -> bool;
}

enum HubEvent {
    Connected { scanner: String, device: String },
    Disconnected { scanner: String, reason: String },
    Scanned { scanner: String, code: Code },
    Error { scanner: String, message: String },
}

/// A source's feed: decodes on the source thread, sends codes to the hub.
struct DecodingFeed {
    scanner: String,
    decoder: ScannerDecoder,
    hub: mpsc::UnboundedSender<HubEvent>,
    stop: Arc<AtomicBool>,
}

impl DecodingFeed {
    fn send(&self, event: HubEvent) {
        let _ = self.hub.send(event);
    }

    fn scanned(&self, code: Code) {
        self.send(HubEvent::Scanned { scanner: self.scanner.clone(), code });
    }
}

impl Feed for DecodingFeed {
    fn report(&mut self, at_ms: u64, report: &[u8]) {
        match self.decoder.feed(at_ms, report) {
            Ok(codes) => codes.into_iter().for_each(|code| self.scanned(code)),
            Err(error) => self.error(&error.to_string()),
        }
    }

    fn idle(&mut self, now_ms: u64) {
        if let Some(code) = self.decoder.idle(now_ms) {
            self.scanned(code);
        }
    }

    fn end_of_input(&mut self) {
        self.idle(u64::MAX);
        if let ScannerDecoder::Pos(decoder) = &mut self.decoder {
            decoder.reset();
        }
    }

    fn connected(&mut self, device: &str) {
        self.send(HubEvent::Connected { scanner: self.scanner.clone(), device: device.to_string() });
    }

    fn disconnected(&mut self, reason: &str) {
        self.send(HubEvent::Disconnected { scanner: self.scanner.clone(), reason: reason.to_string() });
    }

    fn error(&mut self, message: &str) {
        self.send(HubEvent::Error { scanner: self.scanner.clone(), message: message.to_string() });
    }

    fn keep_going(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

/// A scanner as `GET /v1/scanners` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ScannerStatus {
    pub id: String,
    /// `hid` or `replay`.
    pub source: String,
    /// `keyboard` or `pos`.
    pub mode: String,
    /// `us` or `fi`.
    pub layout: String,
    /// The register its scans go to.
    pub register: Option<String>,
    pub connected: bool,
    /// The device path or file it reads.
    pub device: Option<String>,
    /// RFC 3339.
    pub last_scan_at: Option<String>,
    pub last_error: Option<String>,
}

/// The running scanners.
pub struct Scanners {
    statuses: Mutex<BTreeMap<String, ScannerStatus>>,
    stop: Arc<AtomicBool>,
}

/// How often a source lets a pause end a keyboard code.
const IDLE_EVERY: Duration = Duration::from_millis(25);

impl Scanners {
    /// Starts a source thread per configured scanner and the hub that routes their codes.
    pub fn start(config: &Config, payments: Arc<Payments>) -> Arc<Scanners> {
        let register_of: HashMap<String, String> = config
            .registers
            .iter()
            .flat_map(|register| register.scanners.iter().map(|scanner| (scanner.clone(), register.id.clone())))
            .collect();
        let statuses =
            config.scanners.iter().map(|scanner| (scanner.id.clone(), initial_status(scanner, register_of.get(&scanner.id)))).collect();
        let scanners = Arc::new(Scanners { statuses: Mutex::new(statuses), stop: Arc::new(AtomicBool::new(false)) });
        let (hub, events) = mpsc::unbounded_channel();
        let needs_hid = config.scanners.iter().any(|scanner| matches!(scanner.source, ScannerSource::Hid { .. }));
        let api = if needs_hid { Some(hid::open_api()) } else { None };
        for scanner in &config.scanners {
            let feed = DecodingFeed {
                scanner: scanner.id.clone(),
                decoder: ScannerDecoder::for_scanner(scanner),
                hub: hub.clone(),
                stop: scanners.stop.clone(),
            };
            spawn_source(scanner, feed, api.clone());
        }
        tokio::spawn(route(scanners.clone(), events, register_of, payments));
        scanners
    }

    /// Every configured scanner's status.
    pub fn statuses(&self) -> Vec<ScannerStatus> {
        self.statuses.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect()
    }

    /// Asks every source to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn update(&self, scanner: &str, change: impl FnOnce(&mut ScannerStatus)) {
        if let Some(status) = self.statuses.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get_mut(scanner) {
            change(status);
        }
    }
}

fn initial_status(scanner: &ScannerConfig, register: Option<&String>) -> ScannerStatus {
    let layout = match scanner.layout {
        KeyboardLayout::Us => "us",
        KeyboardLayout::Fi => "fi",
    };
    let (source, mode) = match (&scanner.source, scanner.mode) {
        (ScannerSource::Hid { .. }, ScannerMode::Keyboard) => ("hid", "keyboard"),
        (ScannerSource::Hid { .. }, ScannerMode::Pos) => ("hid", "pos"),
        (ScannerSource::Replay { .. }, ScannerMode::Keyboard) => ("replay", "keyboard"),
        (ScannerSource::Replay { .. }, ScannerMode::Pos) => ("replay", "pos"),
    };
    ScannerStatus {
        id: scanner.id.clone(),
        source: source.into(),
        mode: mode.into(),
        layout: layout.into(),
        register: register.cloned(),
        connected: false,
        device: None,
        last_scan_at: None,
        last_error: None,
    }
}

fn spawn_source(scanner: &ScannerConfig, mut feed: DecodingFeed, api: Option<Result<hid::SharedApi, String>>) {
    let name = format!("scanner-{}", scanner.id);
    let source = scanner.source.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || match source {
        ScannerSource::Replay { path } => replay::run(path, IDLE_EVERY, &mut feed),
        ScannerSource::Hid { vendor_id, product_id, serial, usage_page } => match api {
            Some(Ok(api)) => hid::run(api, hid::DeviceMatch { vendor_id, product_id, serial, usage_page }, IDLE_EVERY, &mut feed),
            Some(Err(error)) => feed.error(&error),
            None => feed.error("hidapi is not available"),
        },
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start a scanner thread");
    }
}

/// The hub: status, events, and routing of codes to payments.
async fn route(
    scanners: Arc<Scanners>,
    mut events: mpsc::UnboundedReceiver<HubEvent>,
    register_of: HashMap<String, String>,
    payments: Arc<Payments>,
) {
    while let Some(event) = events.recv().await {
        match event {
            HubEvent::Connected { scanner, device } => {
                crate::metrics::record_scanner(&scanner, "connected");
                let was_connected = scanners.statuses().iter().any(|status| status.id == scanner && status.connected);
                scanners.update(&scanner, |status| {
                    status.connected = true;
                    status.device = Some(device.clone());
                });
                if !was_connected {
                    tracing::info!(%scanner, %device, "scanner connected");
                    announce(&payments, "scanner.connected", json!({"scanner": scanner, "device": device})).await;
                }
            }
            HubEvent::Disconnected { scanner, reason } => {
                crate::metrics::record_scanner(&scanner, "disconnected");
                let was_connected = scanners.statuses().iter().any(|status| status.id == scanner && status.connected);
                scanners.update(&scanner, |status| status.connected = false);
                if was_connected {
                    tracing::warn!(%scanner, %reason, "scanner disconnected");
                    announce(&payments, "scanner.disconnected", json!({"scanner": scanner, "reason": reason})).await;
                }
            }
            HubEvent::Error { scanner, message } => {
                crate::metrics::record_scanner(&scanner, "error");
                tracing::warn!(%scanner, %message, "scanner report refused");
                scanners.update(&scanner, |status| status.last_error = Some(message.clone()));
            }
            HubEvent::Scanned { scanner, code } => {
                crate::metrics::record_scanner(&scanner, "scan");
                scanners.update(&scanner, |status| status.last_scan_at = Some(rfc3339(now_ms())));
                deliver(&payments, &scanner, register_of.get(&scanner), code).await;
            }
        }
    }
}

/// A code to its register's waiting payment, or a `scan.unclaimed` event.
async fn deliver(payments: &Payments, scanner: &str, register: Option<&String>, code: Code) {
    if let Some(register) = register {
        match payments.scan_waiting(register, &code.text).await {
            Ok(Some(payment)) => {
                tracing::info!(%scanner, %register, payment = %payment.id, status = %payment.status, "scan applied");
                return;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%scanner, %register, %error, "scan could not be applied");
                return;
            }
        }
    }
    tracing::info!(%scanner, register = register.map(String::as_str).unwrap_or("-"), "scan unclaimed: no payment awaits a scan");
    crate::metrics::record_scanner(scanner, "unclaimed");
    // The journal keeps a hash of the code (a receipt is a bearer instrument); the
    // register's tills get the code itself while the daemon runs.
    let code_sha256 = payments.remember_unclaimed(&code.text);
    let data = json!({"scanner": scanner, "register": register, "code_sha256": code_sha256, "symbology": code.symbology});
    announce(payments, "scan.unclaimed", data).await;
}

async fn announce(payments: &Payments, kind: &str, data: serde_json::Value) {
    if let Err(error) = payments.announce(kind, data).await {
        tracing::error!(%error, kind, "cannot record an event");
    }
}
