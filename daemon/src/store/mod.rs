//! The durable store (sled): payments, refunds, the journal of every change (which is
//! also the event stream), idempotency records and the index of redeemed receipts.
//!
//! Every change goes through [`Store::apply`]: one sled transaction across the trees, so
//! a payment, its journal entry and its receipt reservation land together or not at all.
//! [`Store::flush`] then makes it durable; callers answer the POS only after that.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio::sync::watch;

use crate::payments::model::{Millis, Payment, PaymentId, Refund, RefundId};

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
    /// A receipt reserved by another payment.
    #[error("receipt {transaction_id} is already used by {payment}")]
    ReceiptTaken { transaction_id: String, payment: PaymentId },
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
}

impl Commit {
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

const NEXT_EVENT: &[u8] = b"next_event";

/// The open sled database and its trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    payments: sled::Tree,
    refunds: sled::Tree,
    journal: sled::Tree,
    idempotency: sled::Tree,
    redeemed: sled::Tree,
    meta: sled::Tree,
    last_event: watch::Sender<u64>,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: error.to_string() })
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl Store {
    /// Opens (creating if missing) the store at `path`. sled holds a lock on the
    /// directory, so a second daemon on the same store is refused here.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new().path(path).open().map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        let tree = |name: &str| db.open_tree(name);
        let store = Store {
            payments: tree("payments")?,
            refunds: tree("refunds")?,
            journal: tree("journal")?,
            idempotency: tree("idempotency")?,
            redeemed: tree("redeemed")?,
            meta: tree("meta")?,
            db,
            last_event: watch::channel(0).0,
        };
        let last = store.journal.last()?.map(|(key, _)| event_id(&key)).unwrap_or(0);
        store.last_event.send_replace(last);
        Ok(store)
    }

    /// A number never handed out before, also across crashes (for ids).
    pub fn unique(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Writes `commit` atomically. Not yet durable: call [`Store::flush`].
    pub fn apply(&self, commit: &Commit) -> Result<Vec<Event>, StoreError> {
        let trees = (&self.payments, &self.refunds, &self.journal, &self.idempotency, &self.redeemed, &self.meta);
        let result = trees.transaction(|(payments, refunds, journal, idempotency, redeemed, meta)| {
            for (transaction_id, payment) in &commit.reserve {
                reserve(redeemed, transaction_id, payment)?;
            }
            for transaction_id in &commit.release {
                redeemed.remove(transaction_id.as_bytes())?;
            }
            for payment in &commit.payments {
                payments.insert(payment.id.as_str().as_bytes(), encode(payment))?;
            }
            for refund in &commit.refunds {
                refunds.insert(refund.id.as_str().as_bytes(), encode(refund))?;
            }
            for (key, record) in &commit.idempotency {
                match record {
                    Some(record) => idempotency.insert(key.as_bytes(), encode(record))?,
                    None => idempotency.remove(key.as_bytes())?,
                };
            }
            append_events(journal, meta, &commit.events)
        });
        let events = result.map_err(|error| match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => StoreError::Io(error),
        })?;
        if let Some(last) = events.last() {
            self.last_event.send_replace(last.id);
        }
        Ok(events)
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// The payment with this id.
    pub fn payment(&self, id: &PaymentId) -> Result<Option<Payment>, StoreError> {
        let key = id.as_str().as_bytes();
        self.payments.get(key)?.map(|bytes| decode(key, &bytes)).transpose()
    }

    /// The refund with this id.
    pub fn refund(&self, id: &RefundId) -> Result<Option<Refund>, StoreError> {
        let key = id.as_str().as_bytes();
        self.refunds.get(key)?.map(|bytes| decode(key, &bytes)).transpose()
    }

    /// Payments newest first (ids sort by creation time), after `starting_after` if given.
    pub fn payments_newest_first(&self, starting_after: Option<&PaymentId>) -> impl Iterator<Item = Result<Payment, StoreError>> + '_ {
        let range = match starting_after {
            Some(id) => self.payments.range(..id.as_str().as_bytes().to_vec()),
            None => self.payments.range::<Vec<u8>, _>(..),
        };
        range.rev().map(|entry| {
            let (key, value) = entry?;
            decode(&key, &value)
        })
    }

    /// Refunds newest first (ids sort by creation time).
    pub fn refunds_newest_first(&self) -> impl Iterator<Item = Result<Refund, StoreError>> + '_ {
        self.refunds.iter().rev().map(|entry| {
            let (key, value) = entry?;
            decode(&key, &value)
        })
    }

    /// Every payment with work left (not final, or a compensation under way), for
    /// recovery and expiry after a start.
    pub fn unfinished_payments(&self) -> Result<Vec<Payment>, StoreError> {
        let mut open = Vec::new();
        for entry in self.payments.iter() {
            let (key, value) = entry?;
            let payment: Payment = decode(&key, &value)?;
            let compensating = payment.compensation == Some(crate::payments::model::Compensation::Pending);
            if !payment.status.is_final() || compensating {
                open.push(payment);
            }
        }
        Ok(open)
    }

    /// Refunds still `pending`, to be sent again after a start.
    pub fn pending_refunds(&self) -> Result<Vec<Refund>, StoreError> {
        let mut pending = Vec::new();
        for entry in self.refunds.iter() {
            let (key, value) = entry?;
            let refund: Refund = decode(&key, &value)?;
            if refund.status == crate::payments::model::RefundStatus::Pending {
                pending.push(refund);
            }
        }
        Ok(pending)
    }

    /// The payment holding a receipt, if any.
    pub fn redeemed_by(&self, transaction_id: &str) -> Result<Option<PaymentId>, StoreError> {
        Ok(self.redeemed.get(transaction_id.as_bytes())?.and_then(|bytes| PaymentId::parse(&String::from_utf8_lossy(&bytes))))
    }

    /// The stored response for an idempotency key.
    pub fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.idempotency.get(key.as_bytes())?.map(|bytes| decode(key.as_bytes(), &bytes)).transpose()
    }

    /// Forgets idempotency records created before `before` (kept ≥ 24 h by the caller).
    pub fn forget_idempotency_before(&self, before: Millis) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.idempotency.iter() {
            let (key, value) = entry?;
            let record: IdempotencyRecord = decode(&key, &value)?;
            if record.created_at < before {
                self.idempotency.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Journal entries after `after`, oldest first, at most `limit`.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.journal
            .range(after.saturating_add(1).to_be_bytes()..)
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    /// Follows the id of the newest event.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last_event.subscribe()
    }

    /// `true` when the database answers a read.
    pub fn is_healthy(&self) -> bool {
        self.meta.get(NEXT_EVENT).is_ok()
    }
}

fn reserve(redeemed: &TransactionalTree, transaction_id: &str, payment: &PaymentId) -> TxResult<()> {
    if let Some(holder) = redeemed.get(transaction_id.as_bytes())? {
        let holder = String::from_utf8_lossy(&holder).into_owned();
        if holder != payment.as_str() {
            let payment = PaymentId::parse(&holder).unwrap_or_else(|| payment.clone());
            return Err(ConflictableTransactionError::Abort(StoreError::ReceiptTaken {
                transaction_id: transaction_id.to_string(),
                payment,
            }));
        }
    }
    redeemed.insert(transaction_id.as_bytes(), payment.as_str().as_bytes())?;
    Ok(())
}

fn append_events(journal: &TransactionalTree, meta: &TransactionalTree, drafts: &[(String, serde_json::Value)]) -> TxResult<Vec<Event>> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let mut next = meta.get(NEXT_EVENT)?.map(|bytes| event_id(&bytes)).unwrap_or(1);
    let at = crate::payments::model::now_ms();
    let mut events = Vec::with_capacity(drafts.len());
    for (kind, data) in drafts {
        let event = Event { id: next, kind: kind.clone(), at, data: data.clone() };
        journal.insert(&next.to_be_bytes(), encode(&event))?;
        events.push(event);
        next += 1;
    }
    meta.insert(NEXT_EVENT, &next.to_be_bytes())?;
    Ok(events)
}

fn event_id(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}
