//! The durable store (sled): payments, refunds, the journal of every change (which is
//! also the event stream), idempotency records and the index of redeemed receipts.
//!
//! Every change goes through [`Store::commit`]: one sled transaction across the trees, so
//! a payment, its index entries, its journal entry and its receipt reservation land
//! together or not at all; then a flush shared with every change applied meanwhile
//! (group commit) makes it durable, and only then does `commit` return and the event
//! stream see its events.
//!
//! Lists read secondary indexes ([`index`]); old records leave through [`retention`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio::sync::watch;

use super::index::{self, PaymentIndex, RefundIndex};
use super::retention::{Cutoffs, Totals};
use super::{decode, encode, id_bounds, Backend, Commit, Event, IdempotencyRecord, StoreError, Window};
use crate::payments::model::{Payment, PaymentId, Refund, RefundId};

/// The open sled database and its trees.
#[derive(Clone)]
pub struct SledStore {
    pub(super) db: sled::Db,
    pub(super) payments: sled::Tree,
    pub(super) refunds: sled::Tree,
    pub(super) journal: sled::Tree,
    pub(super) idempotency: sled::Tree,
    pub(super) redeemed: sled::Tree,
    pub(super) meta: sled::Tree,
    pub(super) index: sled::Tree,
    /// The id of the newest event known durable: what event streams may read up to.
    pub(super) last_event: watch::Sender<u64>,
    durability: Arc<Durability>,
}

/// Group commit: changes are numbered as they are applied; a flush covers every change
/// applied before it started. One waiter at a time flushes (the leader); the others
/// queue on `leader` and usually find their change already covered when their turn comes.
#[derive(Default)]
struct Durability {
    applied: AtomicU64,
    flushed: AtomicU64,
    leader: tokio::sync::Mutex<()>,
}

/// sled's page cache (its default is 1 GiB, more than a till PC should give a
/// background daemon; the pages a shop reads again are a small recent part).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Whether the store at `path` is compressed. New stores are not: sled's zstd makes a
/// new compression context for every page fragment it logs, ~0.2 ms of each commit
/// (three per payment, on its critical path), for a store about three times smaller.
/// A store an older posbridge created compressed stays so (sled cannot change it in
/// place, and refuses to open it otherwise).
fn compressed(path: &Path) -> bool {
    // sled's `conf` file: text lines, then a binary checksum.
    match std::fs::read(path.join("conf")) {
        Ok(conf) => String::from_utf8_lossy(&conf).lines().any(|line| line.trim() == "use_compression: true"),
        Err(_) => false,
    }
}

const NEXT_EVENT: &[u8] = b"next_event";
/// The version of the index layout the `index` tree holds; rebuilt from the records
/// when it differs (a store written before the indexes existed).
const INDEX_VERSION_KEY: &[u8] = b"index_version";
const INDEX_VERSION: u64 = 2;

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl SledStore {
    /// Opens (creating if missing) the store at `path`. sled holds a lock on the
    /// directory, so a second daemon on the same store is refused here.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .use_compression(compressed(path))
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        let tree = |name: &str| db.open_tree(name);
        let store = SledStore {
            payments: tree("payments")?,
            refunds: tree("refunds")?,
            journal: tree("journal")?,
            idempotency: tree("idempotency")?,
            redeemed: tree("redeemed")?,
            meta: tree("meta")?,
            index: tree("index")?,
            db,
            last_event: watch::channel(0).0,
            durability: Arc::default(),
        };
        // The counter, not the journal's newest entry: retention may have emptied it.
        let last = store.meta.get(NEXT_EVENT)?.map(|bytes| be_u64(&bytes).saturating_sub(1)).unwrap_or(0);
        store.last_event.send_replace(last);
        store.ensure_indexes()?;
        Ok(store)
    }

    /// Builds the indexes from the records when the store predates them (or their
    /// layout changed): one pass at the first start of a new version, then never.
    fn ensure_indexes(&self) -> Result<(), StoreError> {
        let version = self.meta.get(INDEX_VERSION_KEY)?.map(|bytes| be_u64(&bytes));
        if version == Some(INDEX_VERSION) {
            return Ok(());
        }
        self.index.clear()?;
        let mut registers = std::collections::HashMap::new();
        for entry in self.payments.iter() {
            let (key, value) = entry?;
            let payment: Payment = decode(&key, &value)?;
            for index_key in index::payment_keys(&payment) {
                self.index.insert(index_key, &[])?;
            }
            registers.insert(payment.id.clone(), payment.register);
        }
        for entry in self.refunds.iter() {
            let (key, value) = entry?;
            let refund: Refund = decode(&key, &value)?;
            let register = refund.payment.as_ref().and_then(|payment| registers.get(payment));
            for index_key in index::refund_keys(&refund, register.map(String::as_str)) {
                self.index.insert(index_key, &[])?;
            }
        }
        for entry in self.idempotency.iter() {
            let (key, value) = entry?;
            let record: IdempotencyRecord = decode(&key, &value)?;
            self.index.insert(index::idempotency_time_key(record.created_at, &String::from_utf8_lossy(&key)), &[])?;
        }
        self.meta.insert(INDEX_VERSION_KEY, &INDEX_VERSION.to_be_bytes())?;
        self.db.flush()?;
        tracing::info!(payments = registers.len(), "built the store's indexes");
        Ok(())
    }

    /// The id the next journal event gets.
    pub fn next_event_id(&self) -> Result<u64, StoreError> {
        Ok(self.meta.get(NEXT_EVENT)?.map(|bytes| be_u64(&bytes)).unwrap_or(1))
    }

    /// A number never handed out before, also across crashes (for ids).
    pub fn unique(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Writes `commit` atomically and durably: returns once a flush covered it, with the
    /// events it appended (then visible to event streams).
    pub async fn commit(&self, commit: &Commit) -> Result<Vec<Event>, StoreError> {
        let (events, sequence) = self.apply(commit)?;
        self.durable(sequence).await?;
        if let Some(last) = events.last() {
            self.last_event.send_if_modified(|newest| {
                let newer = last.id > *newest;
                *newest = (*newest).max(last.id);
                newer
            });
        }
        Ok(events)
    }

    /// Writes `commit` in one transaction; answers its events and its change number.
    fn apply(&self, commit: &Commit) -> Result<(Vec<Event>, u64), StoreError> {
        let trees = (&self.payments, &self.refunds, &self.journal, &self.idempotency, &self.redeemed, &self.meta, &self.index);
        let result = trees.transaction(|(payments, refunds, journal, idempotency, redeemed, meta, index)| {
            for (transaction_id, payment) in &commit.reserve {
                reserve(redeemed, transaction_id, payment)?;
            }
            for transaction_id in &commit.release {
                redeemed.remove(transaction_id.as_bytes())?;
            }
            for payment in &commit.payments {
                let key = payment.id.as_str().as_bytes();
                let old: Option<Payment> = stored(payments, key)?;
                match &old {
                    // Read before a retention sweep removed it: never bring it back
                    // (without its receipt reservation and refunds).
                    None if payment.version > 1 => return Err(abort(StoreError::Gone(payment.id.clone()))),
                    // Written from an older read: the newer change would be lost.
                    Some(old) if commit.read_version(&payment.id).map_or(old.version >= payment.version, |read| read != old.version) => {
                        return Err(abort(StoreError::Conflict(payment.id.clone())))
                    }
                    _ => {}
                }
                let old_keys = old.as_ref().map(index::payment_keys).unwrap_or_default();
                reindex(index, &old_keys, &index::payment_keys(payment))?;
                payments.insert(key, encode(payment))?;
            }
            for refund in &commit.refunds {
                let key = refund.id.as_str().as_bytes();
                let register = refund_register(commit, payments, refund)?;
                let old: Option<Refund> = stored(refunds, key)?;
                let old_keys = old.map(|old| index::refund_keys(&old, register.as_deref())).unwrap_or_default();
                reindex(index, &old_keys, &index::refund_keys(refund, register.as_deref()))?;
                refunds.insert(key, encode(refund))?;
            }
            for (key, record) in &commit.idempotency {
                let old: Option<IdempotencyRecord> = stored(idempotency, key.as_bytes())?;
                if let Some(old) = old {
                    index.remove(index::idempotency_time_key(old.created_at, key))?;
                }
                match record {
                    Some(record) => {
                        index.insert(index::idempotency_time_key(record.created_at, key), &[])?;
                        idempotency.insert(key.as_bytes(), encode(record))?
                    }
                    None => idempotency.remove(key.as_bytes())?,
                };
            }
            append_events(journal, meta, &commit.events)
        });
        let events = result.map_err(storage_error)?;
        let sequence = self.durability.applied.fetch_add(1, Ordering::SeqCst) + 1;
        Ok((events, sequence))
    }

    /// Returns once change `sequence` is on disk, flushing (for it and every change
    /// applied meanwhile) unless a flush already covered it.
    async fn durable(&self, sequence: u64) -> Result<(), StoreError> {
        let durability = &self.durability;
        loop {
            if durability.flushed.load(Ordering::SeqCst) >= sequence {
                return Ok(());
            }
            let _leader = durability.leader.lock().await;
            if durability.flushed.load(Ordering::SeqCst) >= sequence {
                return Ok(());
            }
            let covered = durability.applied.load(Ordering::SeqCst);
            #[cfg(feature = "failpoints")]
            fail::fail_point!("store-before-flush", |_| Err(StoreError::Corrupt {
                key: "failpoint".into(),
                reason: "injected between apply and flush".into()
            }));
            self.db.flush_async().await?;
            durability.flushed.fetch_max(covered, Ordering::SeqCst);
        }
    }

    /// Writes `commit` without waiting for a flush: for bulk loads (benchmarks, imports),
    /// which call [`Store::flush`] once at the end. Nothing is acknowledged from here.
    pub fn import(&self, commit: &Commit) -> Result<(), StoreError> {
        self.apply(commit).map(drop)
    }

    /// Returns once every change applied so far is durable: for answers that read
    /// records (an idempotent replay, a long poll), so nobody is told of a change a
    /// crash could still undo. Usually free: the flush is done or under way.
    pub async fn settled(&self) -> Result<(), StoreError> {
        let applied = self.durability.applied.load(Ordering::SeqCst);
        self.durable(applied).await
    }

    /// Makes every write so far durable (at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// The payment with this id.
    pub fn read_payment(&self, id: &PaymentId) -> Result<Option<Payment>, StoreError> {
        let key = id.as_str().as_bytes();
        self.payments.get(key)?.map(|bytes| decode(key, &bytes)).transpose()
    }

    /// The refund with this id.
    pub fn read_refund(&self, id: &RefundId) -> Result<Option<Refund>, StoreError> {
        let key = id.as_str().as_bytes();
        self.refunds.get(key)?.map(|bytes| decode(key, &bytes)).transpose()
    }

    /// The payments an index holds within `window`, newest first.
    pub fn payments_in(&self, index: PaymentIndex<'_>, window: &Window) -> Box<dyn Iterator<Item = Result<Payment, StoreError>> + '_> {
        self.payments_merged(&[index], window)
    }

    /// The payments of several indexes within `window`, merged newest first (a till's
    /// registers, each its own ranges).
    pub fn payments_merged<'a>(
        &'a self,
        indexes: &[PaymentIndex<'_>],
        window: &Window,
    ) -> Box<dyn Iterator<Item = Result<Payment, StoreError>> + 'a> {
        let (low, high) = id_bounds(window, PaymentId::first_at);
        let prefixes = indexes.iter().map(|index| index::payment_prefixes(*index)).collect::<Option<Vec<_>>>();
        self.records(&self.payments, prefixes.map(|prefixes| prefixes.into_iter().flatten().collect()), low, high)
    }

    /// The refunds an index holds, newest first.
    pub fn refunds_in(&self, index: RefundIndex<'_>) -> Box<dyn Iterator<Item = Result<Refund, StoreError>> + '_> {
        self.refunds_merged(vec![index])
    }

    /// The refunds of several indexes, merged newest first.
    pub fn refunds_merged(&self, indexes: Vec<RefundIndex<'_>>) -> Box<dyn Iterator<Item = Result<Refund, StoreError>> + '_> {
        let prefixes = indexes.into_iter().map(index::refund_prefix).collect::<Option<Vec<_>>>();
        self.records(&self.refunds, prefixes, Vec::new(), vec![0xff])
    }

    /// The records of `tree` with ids in `low..high`, newest first: those under the
    /// index `prefixes` (merged), or, without prefixes, the whole tree.
    fn records<'a, T: for<'de> Deserialize<'de> + 'a>(
        &'a self,
        tree: &'a sled::Tree,
        prefixes: Option<Vec<Vec<u8>>>,
        low: Vec<u8>,
        high: Vec<u8>,
    ) -> Box<dyn Iterator<Item = Result<T, StoreError>> + 'a> {
        let Some(prefixes) = prefixes else {
            return Box::new(tree.range(low..high).rev().map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            }));
        };
        let ids = NewestFirst::new(
            prefixes.into_iter().map(|prefix| Box::new(self.ids_in(prefix, low.clone(), high.clone())) as IdIter<'_>).collect(),
        );
        Box::new(ids.filter_map(move |id| match id {
            Ok(id) => read_indexed(tree, id),
            Err(error) => Some(Err(error)),
        }))
    }

    /// Record ids under an index prefix between `low` and `high`, newest first.
    fn ids_in(&self, prefix: Vec<u8>, low: Vec<u8>, high: Vec<u8>) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> + '_ {
        let start = [prefix.as_slice(), &low].concat();
        let end = [prefix.as_slice(), &high].concat();
        let skip = prefix.len();
        self.index.range(start..end).rev().map(move |entry| Ok(entry?.0[skip..].to_vec()))
    }

    /// Every payment with work left (not final, or a compensation under way).
    pub fn unfinished_payments(&self) -> Result<Vec<Payment>, StoreError> {
        self.payments_in(PaymentIndex::Open, &Window::default()).collect()
    }

    /// The payment holding a receipt, if any.
    pub fn holder_of(&self, transaction_id: &str) -> Result<Option<PaymentId>, StoreError> {
        Ok(self.redeemed.get(transaction_id.as_bytes())?.and_then(|bytes| PaymentId::parse(&String::from_utf8_lossy(&bytes))))
    }

    /// The stored response for an idempotency key.
    pub fn read_idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.idempotency.get(key.as_bytes())?.map(|bytes| decode(key.as_bytes(), &bytes)).transpose()
    }

    /// Durable journal entries after `after`, oldest first, at most `limit`.
    pub fn journal_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let durable = *self.last_event.borrow();
        if after >= durable {
            return Ok(Vec::new());
        }
        self.journal
            .range(after.saturating_add(1).to_be_bytes()..=durable.to_be_bytes())
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

    /// Entries and bytes (keys + values, before sled's own layout) per tree: what the
    /// records cost, for the store benchmark and diagnostics. Walks every tree.
    pub fn logical_sizes(&self) -> Result<Vec<(&'static str, usize, usize)>, StoreError> {
        let trees = [
            ("payments", &self.payments),
            ("refunds", &self.refunds),
            ("journal", &self.journal),
            ("idempotency", &self.idempotency),
            ("redeemed", &self.redeemed),
            ("index", &self.index),
        ];
        let mut sizes = Vec::new();
        for (name, tree) in trees {
            let (mut entries, mut bytes) = (0, 0);
            for entry in tree.iter() {
                let (key, value) = entry?;
                entries += 1;
                bytes += key.len() + value.len();
            }
            sizes.push((name, entries, bytes));
        }
        Ok(sizes)
    }
}

impl Backend for SledStore {
    async fn unique(&self) -> Result<u64, StoreError> {
        SledStore::unique(self)
    }

    async fn commit(&self, commit: &Commit) -> Result<Vec<Event>, StoreError> {
        SledStore::commit(self, commit).await
    }

    async fn import(&self, commit: &Commit) -> Result<(), StoreError> {
        SledStore::import(self, commit)
    }

    async fn settled(&self) -> Result<(), StoreError> {
        SledStore::settled(self).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        SledStore::flush(self).await
    }

    async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>, StoreError> {
        self.read_payment(id)
    }

    async fn refund(&self, id: &RefundId) -> Result<Option<Refund>, StoreError> {
        self.read_refund(id)
    }

    async fn payments(&self, indexes: &[PaymentIndex<'_>], window: &Window, limit: usize) -> Result<Vec<Payment>, StoreError> {
        // An index entry and its record are read one after the other: a record changed
        // in between (its status, say) is left out, as a later read would.
        let held = |payment: &Payment| indexes.iter().any(|index| index::holds_payment(*index, payment));
        self.payments_merged(indexes, window).filter(|found| found.as_ref().map_or(true, held)).take(limit).collect()
    }

    async fn refunds(&self, indexes: &[RefundIndex<'_>], before: Option<&str>, limit: usize) -> Result<Vec<Refund>, StoreError> {
        let before = before.map(|before| before.as_bytes().to_vec());
        self.refunds_merged(indexes.to_vec())
            .filter(|found| match (found, &before) {
                (Ok(refund), Some(before)) => refund.id.as_str().as_bytes() < before.as_slice(),
                _ => true,
            })
            .take(limit)
            .collect()
    }

    async fn redeemed_by(&self, transaction_id: &str) -> Result<Option<PaymentId>, StoreError> {
        self.holder_of(transaction_id)
    }

    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.read_idempotency(key)
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.journal_after(after, limit)
    }

    async fn oldest_event(&self) -> Result<u64, StoreError> {
        self.oldest_journal_event()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        SledStore::subscribe(self)
    }

    async fn sweep(&self, cutoffs: &Cutoffs) -> Result<Totals, StoreError> {
        super::retention::sweep_sled(self, cutoffs).await
    }

    async fn logical_sizes(&self) -> Result<Vec<(&'static str, usize, usize)>, StoreError> {
        SledStore::logical_sizes(self)
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.meta.get(NEXT_EVENT)?;
        Ok(())
    }
}

type IdIter<'a> = Box<dyn Iterator<Item = Result<Vec<u8>, StoreError>> + 'a>;

/// Merges id iterators that are each newest first into one newest-first iterator.
/// An id found in two ranges (a status changed while they were read, a register named
/// twice) is given once.
struct NewestFirst<'a> {
    sources: Vec<std::iter::Peekable<IdIter<'a>>>,
    last: Option<Vec<u8>>,
}

impl<'a> NewestFirst<'a> {
    fn new(sources: Vec<IdIter<'a>>) -> Self {
        NewestFirst { sources: sources.into_iter().map(Iterator::peekable).collect(), last: None }
    }

    fn newest(&mut self) -> Option<Result<Vec<u8>, StoreError>> {
        let mut newest: Option<(usize, Vec<u8>)> = None;
        for position in 0..self.sources.len() {
            match self.sources[position].peek() {
                Some(Err(_)) => return self.sources[position].next(),
                Some(Ok(id)) if newest.as_ref().is_none_or(|(_, best)| id > best) => newest = Some((position, id.clone())),
                _ => {}
            }
        }
        newest.and_then(|(position, _)| self.sources[position].next())
    }
}

impl Iterator for NewestFirst<'_> {
    type Item = Result<Vec<u8>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.newest()? {
                Ok(id) if self.last.as_ref() == Some(&id) => continue,
                Ok(id) => {
                    self.last = Some(id.clone());
                    return Some(Ok(id));
                }
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

pub(super) fn storage_error(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => StoreError::Io(error),
    }
}

/// The record an index entry names, or `None` when it was removed since the entry was
/// read (a retention sweep between the two reads).
fn read_indexed<T: for<'de> Deserialize<'de>>(tree: &sled::Tree, id: Vec<u8>) -> Option<Result<T, StoreError>> {
    match tree.get(&id) {
        Ok(Some(bytes)) => Some(decode(&id, &bytes)),
        Ok(None) => None,
        Err(error) => Some(Err(error.into())),
    }
}

fn abort(error: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error)
}

/// The record at `key` inside a transaction, decoded; an unreadable one aborts it.
pub(super) fn stored<T: for<'de> Deserialize<'de>>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    tree.get(key)?.map(|bytes| decode(key, &bytes)).transpose().map_err(abort)
}

/// Replaces a record's index keys.
fn reindex(index: &TransactionalTree, old: &[Vec<u8>], new: &[Vec<u8>]) -> TxResult<()> {
    let (gone, added) = index::difference(old, new);
    for key in gone {
        index.remove(key)?;
    }
    for key in added {
        index.insert(key, &[])?;
    }
    Ok(())
}

/// The register a refund belongs to: its payment's (staged in the same commit, or stored).
fn refund_register(commit: &Commit, payments: &TransactionalTree, refund: &Refund) -> TxResult<Option<String>> {
    let Some(payment_id) = &refund.payment else { return Ok(None) };
    if let Some(staged) = commit.payments.iter().find(|payment| &payment.id == payment_id) {
        return Ok(Some(staged.register.clone()));
    }
    let key = payment_id.as_str().as_bytes();
    let payment: Option<Payment> = stored(payments, key)?;
    Ok(payment.map(|payment| payment.register))
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
    let mut next = meta.get(NEXT_EVENT)?.map(|bytes| be_u64(&bytes)).unwrap_or(1);
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

/// A big-endian u64 as stored: journal keys, the event counter, the index version.
pub(super) fn be_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
#[path = "sled_tests.rs"]
mod tests;
