//! The durable store: payments, refunds, the journal of every change (which is also the
//! event stream), idempotency records and the receipts each payment holds.
//!
//! [`Store`] is the port the engine and the API use; it has two backends:
//! - [`sled_store`], embedded, one daemon per store directory (the default);
//! - [`postgres_store`], a PostgreSQL database shared by every daemon of a shop or a
//!   chain, with work handed between daemons under leases ([`Store::try_lease`]).
//!
//! Both keep the same rules: a [`Commit`] (payments, refunds, their journal events,
//! receipt reservations and idempotency records) lands whole or not at all; it is
//! durable before [`Store::commit`] returns; event ids increase by one in commit order;
//! a receipt is held by one payment at most; a payment's stored version only grows.

pub mod copy;
pub mod index;
mod postgres_schema;
pub mod postgres_store;
pub mod retention;
pub mod sled_store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::StoreBackend;
use crate::payments::model::{Millis, Payment, PaymentId, Refund, RefundId};
pub use index::{is_exception, PaymentIndex, RefundIndex};
pub use postgres_store::PostgresStore;
use retention::{Cutoffs, Totals};
pub use sled_store::SledStore;

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created or the database opened (another posbridge
    /// may hold it).
    #[error("cannot open the store at {}: {source}", path.display())]
    Open { path: PathBuf, source: sled::Error },
    /// A read, write or flush failed; the change is not durable.
    #[error("store failure: {0}")]
    Io(#[from] sled::Error),
    /// A stored record could not be decoded (written by an incompatible version).
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    /// A change to a payment that retention removed meanwhile (it is not written back).
    #[error("payment {0} was removed by retention")]
    Gone(PaymentId),
    /// A receipt reserved by another payment.
    #[error("receipt {transaction_id} is already used by {payment}")]
    ReceiptTaken { transaction_id: String, payment: PaymentId },
    /// Another daemon changed the payment since it was read here: read it again.
    #[error("payment {0} was changed meanwhile (by another daemon)")]
    Conflict(PaymentId),
    /// The shared database cannot be reached; nothing was written. The daemon keeps
    /// trying to reconnect.
    #[error("the store's database is unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error (a constraint, a permission, a bad query).
    #[error("store database error: {0}")]
    Database(String),
    /// The database holds a schema this version does not know.
    #[error("{0}")]
    Schema(String),
    /// This daemon no longer holds the lease on the work it tried to record (another
    /// daemon took it over after the lease expired): nothing was written.
    #[error("the lease on {0} is held by another daemon")]
    LeaseLost(String),
}

/// One journal entry: a change announced to event subscribers, kept across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increases by one per event.
    pub id: u64,
    /// `payment.updated`, `refund.updated`, `scan.unclaimed`…
    pub kind: String,
    pub at: Millis,
    pub data: serde_json::Value,
}

/// A stored response to a POST with an `Idempotency-Key`, written in the same
/// transaction as the change it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// Hash of the request (method, path, body): a different request with the same key
    /// is a conflict.
    pub fingerprint: String,
    pub status: u16,
    /// The answer; `None` while the work it started is still under way (`target`).
    #[serde(default)]
    pub body: Option<String>,
    /// The payment or refund the request's work is about (`pay_…`, `re_…`).
    #[serde(default)]
    pub target: Option<String>,
    pub created_at: Millis,
}

/// Everything one change writes, atomically.
#[derive(Debug, Default)]
pub struct Commit {
    pub payments: Vec<Payment>,
    pub refunds: Vec<Refund>,
    /// Events to append to the journal: (kind, data).
    pub events: Vec<(String, serde_json::Value)>,
    /// Receipts (provider transaction ids) to reserve for a payment; refused if another
    /// payment holds one.
    pub reserve: Vec<(String, PaymentId)>,
    /// Receipt reservations to drop (the attempt took nothing).
    pub release: Vec<String>,
    /// Idempotency records to store (`Some`) or forget (`None`: a transient answer whose
    /// retry must run again).
    pub idempotency: Vec<(String, Option<IdempotencyRecord>)>,
    /// The lease (a payment's or refund's id) this daemon must still hold for the commit
    /// to land: a job's changes are refused once another daemon took its work over.
    pub lease: Option<String>,
    /// The stored version each changed payment was read at: the change lands only over
    /// that very version (`Conflict` otherwise). A payment written without one lands
    /// over any older version.
    pub read_versions: Vec<(PaymentId, u64)>,
}

impl Commit {
    /// Notes that a change of `payment` was computed from this stored version of it.
    pub fn read_at(&mut self, payment: &Payment) {
        if !self.read_versions.iter().any(|(id, _)| id == &payment.id) {
            self.read_versions.push((payment.id.clone(), payment.version));
        }
    }

    /// The version `payment` was read at, if the change said.
    pub fn read_version(&self, payment: &PaymentId) -> Option<u64> {
        self.read_versions.iter().find(|(id, _)| id == payment).map(|(_, version)| *version)
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.payments.is_empty()
            && self.refunds.is_empty()
            && self.events.is_empty()
            && self.reserve.is_empty()
            && self.release.is_empty()
            && self.idempotency.is_empty()
    }
}

/// A time window over records keyed by time-ordered ids: `from` and `to` inclusive,
/// `before` exclusive.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Created at or after this time.
    pub from: Option<Millis>,
    /// Created at or before this time.
    pub to: Option<Millis>,
    /// Only records whose id sorts before this one (pagination).
    pub before: Option<String>,
}

/// The store, as the engine sees it: one of the backends, chosen by `[store] backend`.
#[derive(Clone)]
pub enum Store {
    Sled(SledStore),
    Postgres(PostgresStore),
}

/// Runs the same call on whichever backend the store is.
macro_rules! on_backend {
    ($store:expr, $backend:ident => $call:expr) => {
        match $store {
            Store::Sled($backend) => $call,
            Store::Postgres($backend) => $call,
        }
    };
}

impl Store {
    /// Opens the embedded store at `path` (created if missing).
    pub fn open_sled(path: &Path) -> Result<Store, StoreError> {
        SledStore::open(path).map(Store::Sled)
    }

    /// Opens the store `[store]` names. A shared database that cannot be reached is
    /// tried again every few seconds (logged) until it answers: a daemon without its
    /// store could only refuse every request.
    pub async fn open(backend: &StoreBackend) -> Result<Store, StoreError> {
        match backend {
            StoreBackend::Sled { path } => Store::open_sled(path),
            StoreBackend::Postgres(shared) => {
                let mut pause = Duration::from_millis(500);
                loop {
                    match PostgresStore::connect(shared).await {
                        Err(StoreError::Unavailable(why)) => {
                            tracing::error!(store = %backend.describe(), %why, "the store's database cannot be reached; trying again");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(10));
                        }
                        other => return other.map(Store::Postgres),
                    }
                }
            }
        }
    }

    /// The backend's name, for logs, `/readyz` and the status page.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sled(_) => "sled",
            Store::Postgres(_) => "postgres",
        }
    }

    /// A number never handed out before, also across crashes and daemons (for ids).
    pub async fn unique(&self) -> Result<u64, StoreError> {
        on_backend!(self, store => Backend::unique(store).await)
    }

    /// Writes `commit` atomically and durably: returns once it is durable, with the
    /// events it appended (then visible to event streams).
    pub async fn commit(&self, commit: &Commit) -> Result<Vec<Event>, StoreError> {
        let started = std::time::Instant::now();
        let committed = on_backend!(self, store => Backend::commit(store, commit).await);
        if committed.is_ok() {
            crate::metrics::record_store_commit(self.backend(), started.elapsed().as_secs_f64());
        }
        committed
    }

    /// Writes `commit` without waiting for durability: for bulk loads (benchmarks,
    /// `store copy`), which call [`Store::flush`] once at the end.
    pub async fn import(&self, commit: &Commit) -> Result<(), StoreError> {
        on_backend!(self, store => Backend::import(store, commit).await)
    }

    /// Returns once every change applied so far is durable: for answers that read
    /// records, so nobody is told of a change a crash could still undo.
    pub async fn settled(&self) -> Result<(), StoreError> {
        on_backend!(self, store => Backend::settled(store).await)
    }

    /// Makes every write so far durable (at shutdown, after an import).
    pub async fn flush(&self) -> Result<(), StoreError> {
        on_backend!(self, store => Backend::flush(store).await)
    }

    /// The payment with this id.
    pub async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>, StoreError> {
        on_backend!(self, store => Backend::payment(store, id).await)
    }

    /// The refund with this id.
    pub async fn refund(&self, id: &RefundId) -> Result<Option<Refund>, StoreError> {
        on_backend!(self, store => Backend::refund(store, id).await)
    }

    /// Up to `limit` payments held by any of `indexes` within `window`, newest first;
    /// each matches its index when read.
    pub async fn payments(&self, indexes: &[PaymentIndex<'_>], window: &Window, limit: usize) -> Result<Vec<Payment>, StoreError> {
        on_backend!(self, store => Backend::payments(store, indexes, window, limit).await)
    }

    /// Up to `limit` refunds held by any of `indexes` whose id sorts before `before`,
    /// newest first.
    pub async fn refunds(&self, indexes: &[RefundIndex<'_>], before: Option<&str>, limit: usize) -> Result<Vec<Refund>, StoreError> {
        on_backend!(self, store => Backend::refunds(store, indexes, before, limit).await)
    }

    /// Every payment with work left (not final, or a compensation under way).
    pub async fn unfinished_payments(&self) -> Result<Vec<Payment>, StoreError> {
        self.payments(&[PaymentIndex::Open], &Window::default(), usize::MAX).await
    }

    /// Refunds still `pending`, to be sent again.
    pub async fn pending_refunds(&self) -> Result<Vec<Refund>, StoreError> {
        self.refunds(&[RefundIndex::Pending], None, usize::MAX).await
    }

    /// The payment holding a receipt, if any.
    pub async fn redeemed_by(&self, transaction_id: &str) -> Result<Option<PaymentId>, StoreError> {
        on_backend!(self, store => Backend::redeemed_by(store, transaction_id).await)
    }

    /// The stored response for an idempotency key.
    pub async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        on_backend!(self, store => Backend::idempotency(store, key).await)
    }

    /// Durable journal entries after `after`, oldest first, at most `limit`.
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        on_backend!(self, store => Backend::events_after(store, after, limit).await)
    }

    /// The id of the oldest event the journal still holds; when retention emptied it,
    /// the id the next event will have.
    pub async fn oldest_event(&self) -> Result<u64, StoreError> {
        on_backend!(self, store => Backend::oldest_event(store).await)
    }

    /// Follows the id of the newest durable event (of every daemon sharing the store).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        on_backend!(self, store => Backend::subscribe(store))
    }

    /// Removes what retention no longer keeps (older than `cutoffs`), in small batches.
    pub async fn sweep(&self, cutoffs: &Cutoffs) -> Result<Totals, StoreError> {
        on_backend!(self, store => Backend::sweep(store, cutoffs).await)
    }

    /// Entries and bytes per table or tree, for diagnostics and the store benchmark.
    pub async fn logical_sizes(&self) -> Result<Vec<(&'static str, usize, usize)>, StoreError> {
        on_backend!(self, store => Backend::logical_sizes(store).await)
    }

    /// `Ok` when the store answers a read; else why not (for `/readyz`).
    pub async fn health(&self) -> Result<(), StoreError> {
        on_backend!(self, store => Backend::health(store).await)
    }

    /// Takes (or renews) the lease on `work` (a payment or refund id) for this daemon,
    /// for `ttl`: `true` when this daemon holds it. Only the holder runs the work's
    /// provider calls. The embedded store has one daemon, which always holds it.
    pub async fn try_lease(&self, work: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Sled(_) => Ok(true),
            Store::Postgres(store) => store.try_lease(work, ttl).await,
        }
    }

    /// Extends the lease this daemon holds on `work`: `false` once it no longer holds it.
    pub async fn renew_lease(&self, work: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Sled(_) => Ok(true),
            Store::Postgres(store) => store.renew_lease(work, ttl).await,
        }
    }

    /// Gives up the lease on `work` (its job ended here).
    pub async fn release_lease(&self, work: &str) -> Result<(), StoreError> {
        match self {
            Store::Sled(_) => Ok(()),
            Store::Postgres(store) => store.release_lease(work).await,
        }
    }

    /// Whether other daemons may share this store (work needs leases and adoption).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }
}

/// What a backend must provide: the port's operations, each with the rules the module
/// documentation names.
#[allow(async_fn_in_trait)]
pub trait Backend: Clone + Send + Sync {
    async fn unique(&self) -> Result<u64, StoreError>;
    async fn commit(&self, commit: &Commit) -> Result<Vec<Event>, StoreError>;
    async fn import(&self, commit: &Commit) -> Result<(), StoreError>;
    async fn settled(&self) -> Result<(), StoreError>;
    async fn flush(&self) -> Result<(), StoreError>;
    async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>, StoreError>;
    async fn refund(&self, id: &RefundId) -> Result<Option<Refund>, StoreError>;
    async fn payments(&self, indexes: &[PaymentIndex<'_>], window: &Window, limit: usize) -> Result<Vec<Payment>, StoreError>;
    async fn refunds(&self, indexes: &[RefundIndex<'_>], before: Option<&str>, limit: usize) -> Result<Vec<Refund>, StoreError>;
    async fn redeemed_by(&self, transaction_id: &str) -> Result<Option<PaymentId>, StoreError>;
    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError>;
    async fn oldest_event(&self) -> Result<u64, StoreError>;
    fn subscribe(&self) -> watch::Receiver<u64>;
    async fn sweep(&self, cutoffs: &Cutoffs) -> Result<Totals, StoreError>;
    async fn logical_sizes(&self) -> Result<Vec<(&'static str, usize, usize)>, StoreError>;
    async fn health(&self) -> Result<(), StoreError>;
}

/// Records are stored as JSON (sled values, PostgreSQL `jsonb`).
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// A stored record, decoded; an unreadable one names its key.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: error.to_string() })
}

/// The id range (`low` inclusive, `high` exclusive) of a window, for ids made by
/// `first_at` (prefix, creation time, counter).
pub(crate) fn id_bounds<Id: ToString>(window: &Window, first_at: fn(Millis) -> Id) -> (Vec<u8>, Vec<u8>) {
    let low = window.from.map(|from| first_at(from).to_string().into_bytes()).unwrap_or_default();
    let mut high = window.to.map(|to| first_at(to.saturating_add(1)).to_string().into_bytes()).unwrap_or_else(|| vec![0xff]);
    if let Some(before) = &window.before {
        high = high.min(before.clone().into_bytes());
    }
    if high < low {
        high = low.clone();
    }
    (low, high)
}
