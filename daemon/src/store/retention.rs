//! Forgetting what the shop no longer needs, in small batches so writers never wait
//! long: payments past their retention (with their refunds, index entries and receipt
//! reservations), journal entries past the journal's retention, expired idempotency
//! records. Each batch is one transaction; a payment changed since it was chosen is
//! kept, and a change read before its removal is refused at its commit
//! (`StoreError::Gone`), so a removed payment never comes back half.

use std::time::Duration;

use sled::transaction::TransactionalTree;
use sled::Transactional;

use super::index::{self, RefundIndex};
use super::sled_store::{be_u64, stored, SledStore, TxResult};
use super::{decode, Event, IdempotencyRecord, Store, StoreError, Window};
use crate::payments::model::{Millis, Payment, PaymentId, Refund, RefundId, RefundStatus};

/// What one batch removed, and whether more may be left.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub removed: usize,
    /// `true` when the batch was full: call again.
    pub more: bool,
    /// Where the next batch of a sweep over records starts (after this key).
    pub cursor: Option<Vec<u8>>,
}

impl SledStore {
    /// Looks at up to `batch` payments created before `before` (after `cursor`, oldest
    /// first) and removes those with no work left and no refund still pending, with
    /// everything that belongs to them. Payments that must stay are skipped.
    pub fn remove_payments_before(&self, before: Millis, cursor: Option<&[u8]>, batch: usize) -> Result<Swept, StoreError> {
        let (scanned, cursor) = oldest_before::<Payment, _>(&self.payments, before, cursor, batch, PaymentId::first_at)?;
        let mut chosen: Vec<(Payment, Vec<Refund>)> = Vec::with_capacity(scanned.len());
        for payment in scanned {
            // Open work, or a later leg of its purchase still under way.
            if index::is_open(&payment) || payment.split_reserved_amount.0 > 0 {
                continue;
            }
            let refunds: Vec<Refund> = self.refunds_in(RefundIndex::OfPayment(&payment.id)).collect::<Result<_, _>>()?;
            if refunds.iter().any(|refund| refund.status == RefundStatus::Pending) {
                continue;
            }
            chosen.push((payment, refunds));
        }
        let trees = (&self.payments, &self.refunds, &self.redeemed, &self.index);
        let removed = trees
            .transaction(|(payments, refunds, redeemed, index)| {
                let mut removed = 0;
                for (payment, its_refunds) in &chosen {
                    if remove_payment(payments, refunds, redeemed, index, payment, its_refunds)? {
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .map_err(super::sled_store::storage_error)?;
        Ok(Swept { removed, more: cursor.is_some(), cursor })
    }

    /// Looks at up to `batch` refunds created before `before` (after `cursor`) and
    /// removes those made without a payment (by transaction id) that are settled; a
    /// payment's refunds go with their payment.
    pub fn remove_refunds_before(&self, before: Millis, cursor: Option<&[u8]>, batch: usize) -> Result<Swept, StoreError> {
        let (scanned, cursor) = oldest_before::<Refund, _>(&self.refunds, before, cursor, batch, RefundId::first_at)?;
        let chosen: Vec<Refund> =
            scanned.into_iter().filter(|refund| refund.payment.is_none() && refund.status != RefundStatus::Pending).collect();
        let trees = (&self.refunds, &self.index);
        let removed = trees
            .transaction(|(refunds, index)| {
                let mut removed = 0;
                for refund in &chosen {
                    let key = refund.id.as_str().as_bytes();
                    let Some(current) = stored::<Refund>(refunds, key)? else { continue };
                    if current != *refund {
                        continue; // changed since it was chosen
                    }
                    refunds.remove(key)?;
                    for index_key in index::refund_keys(refund, None) {
                        index.remove(index_key)?;
                    }
                    removed += 1;
                }
                Ok(removed)
            })
            .map_err(super::sled_store::storage_error)?;
        Ok(Swept { removed, more: cursor.is_some(), cursor })
    }

    /// Removes up to `batch` journal entries written before `before`, oldest first.
    pub fn forget_events_before(&self, before: Millis, batch: usize) -> Result<Swept, StoreError> {
        let mut expired = Vec::new();
        for entry in self.journal.iter().take(batch) {
            let (key, value) = entry?;
            let event: Event = decode(&key, &value)?;
            if event.at >= before {
                break;
            }
            expired.push(key);
        }
        let mut removals = sled::Batch::default();
        for key in &expired {
            removals.remove(key.clone());
        }
        self.journal.apply_batch(removals)?;
        Ok(Swept { removed: expired.len(), more: expired.len() == batch, cursor: None })
    }

    /// Removes up to `batch` idempotency records written before `before`, found through
    /// their time index (never a walk over the records).
    pub fn forget_idempotency_before(&self, before: Millis, batch: usize) -> Result<Swept, StoreError> {
        let start = index::idempotency_time_bound(0);
        let end = index::idempotency_time_bound(before);
        let mut time_keys = Vec::new();
        for entry in self.index.range(start..end).take(batch) {
            time_keys.push(entry?.0.to_vec());
        }
        let trees = (&self.idempotency, &self.index);
        let removed = trees
            .transaction(|(idempotency, index)| {
                let mut removed = 0;
                for time_key in &time_keys {
                    index.remove(time_key.as_slice())?;
                    let key = index::idempotency_key_of(time_key);
                    let Some(record) = stored::<IdempotencyRecord>(idempotency, key)? else { continue };
                    if record.created_at < before {
                        idempotency.remove(key)?;
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .map_err(super::sled_store::storage_error)?;
        Ok(Swept { removed, more: time_keys.len() == batch, cursor: None })
    }

    /// The id of the oldest event the journal still holds; when retention emptied it,
    /// the id the next event will have.
    pub fn oldest_journal_event(&self) -> Result<u64, StoreError> {
        match self.journal.first()? {
            Some((key, _)) => Ok(be_u64(&key)),
            None => Ok(*self.last_event.borrow() + 1),
        }
    }
}

/// Up to `batch` records of a tree keyed by time-ordered ids, created before `before`,
/// after `cursor`, oldest first; and the cursor of the next batch when this one was full.
fn oldest_before<T: for<'de> serde::Deserialize<'de>, Id: ToString>(
    tree: &sled::Tree,
    before: Millis,
    cursor: Option<&[u8]>,
    batch: usize,
    first_at: fn(Millis) -> Id,
) -> Result<(Vec<T>, Option<Vec<u8>>), StoreError> {
    let window = Window { to: Some(before.saturating_sub(1)), ..Window::default() };
    let (low, high) = super::id_bounds(&window, first_at);
    let low = match cursor {
        Some(after) => [after, &[0]].concat().max(low),
        None => low,
    };
    let mut scanned = Vec::with_capacity(batch);
    let mut last = None;
    for entry in tree.range(low..high).take(batch) {
        let (key, value) = entry?;
        scanned.push(decode::<T>(&key, &value)?);
        last = Some(key.to_vec());
    }
    let cursor = if scanned.len() == batch { last } else { None };
    Ok((scanned, cursor))
}

/// Removes one payment, its refunds, index entries and receipt reservations, unless it
/// changed since it was chosen. Answers whether it was removed.
fn remove_payment(
    payments: &TransactionalTree,
    refunds: &TransactionalTree,
    redeemed: &TransactionalTree,
    index: &TransactionalTree,
    chosen: &Payment,
    its_refunds: &[Refund],
) -> TxResult<bool> {
    let key = chosen.id.as_str().as_bytes();
    let Some(current) = stored::<Payment>(payments, key)? else { return Ok(false) };
    if current.version != chosen.version {
        return Ok(false); // touched meanwhile (a refund, say): look again next time
    }
    payments.remove(key)?;
    for index_key in index::payment_keys(&current) {
        index.remove(index_key)?;
    }
    let receipts = current.transaction_id.iter().chain(&current.receipt_key).chain(current.attempt.iter().map(|attempt| &attempt.key));
    for transaction_id in receipts {
        if redeemed.get(transaction_id.as_bytes())?.is_some_and(|holder| holder == key) {
            redeemed.remove(transaction_id.as_bytes())?;
        }
    }
    for refund in its_refunds {
        refunds.remove(refund.id.as_str().as_bytes())?;
        for index_key in index::refund_keys(refund, Some(&current.register)) {
            index.remove(index_key)?;
        }
    }
    Ok(true)
}

/// How long the store keeps what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Payments (and their refunds) older than this, with no work left, are removed:
    /// the shop's refund window and bookkeeping period (`[store] retention`).
    pub payments: Duration,
    /// Journal entries (the event stream's history) older than this are removed
    /// (`[store] journal_retention`).
    pub journal: Duration,
    /// Idempotency records older than this are forgotten.
    pub idempotency: Duration,
}

/// Payments, journal entries or idempotency records looked at per transaction: small,
/// so a payment committed meanwhile waits at most one short batch.
const BATCH: usize = 64;
/// After each batch the sweep rests this many times as long as the batch took: it uses
/// at most a fifth of one core, and the shop's payments the rest.
const REST_FACTOR: u32 = 4;

/// Sweeps periodically (every quarter of the shortest retention, between one second and
/// one hour; the first sweep a minute at most after the start), for as long as the
/// daemon runs.
pub async fn run(store: Store, policy: Policy) {
    let every = (policy.payments.min(policy.journal) / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    tokio::time::sleep(every.min(Duration::from_secs(60))).await;
    loop {
        let totals = store.sweep(&policy.cutoffs()).await;
        match totals {
            Ok(totals) if totals == Totals::default() => {}
            Ok(totals) => tracing::info!(
                payments = totals.payments,
                refunds = totals.refunds,
                events = totals.events,
                idempotency = totals.idempotency,
                "retention removed old records"
            ),
            Err(error) => tracing::error!(%error, "retention sweep failed; trying again later"),
        }
        tokio::time::sleep(every).await;
    }
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub payments: usize,
    /// Refunds made without a payment (a payment's refunds count with it).
    pub refunds: usize,
    pub events: usize,
    pub idempotency: usize,
}

/// The times before which records go, from a [`Policy`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Payments (with their refunds) and refunds without a payment created before this.
    pub payments: Millis,
    /// Journal entries written before this.
    pub journal: Millis,
    /// Idempotency records written before this.
    pub idempotency: Millis,
}

impl Policy {
    /// The cutoffs of a sweep starting now.
    pub fn cutoffs(&self) -> Cutoffs {
        let now = crate::payments::model::now_ms();
        let age = |kept: Duration| now.saturating_sub(i64::try_from(kept.as_millis()).unwrap_or(i64::MAX));
        Cutoffs { payments: age(self.payments), journal: age(self.journal), idempotency: age(self.idempotency) }
    }
}

/// One pass of the embedded store over everything older than `cutoffs`, batch by batch,
/// each batch on a blocking thread (sled reads and writes block).
pub(super) async fn sweep_sled(store: &SledStore, cutoffs: &Cutoffs) -> Result<Totals, StoreError> {
    let Cutoffs { payments, journal, idempotency } = *cutoffs;
    Ok(Totals {
        payments: drain(store, move |store, cursor| store.remove_payments_before(payments, cursor, BATCH)).await?,
        refunds: drain(store, move |store, cursor| store.remove_refunds_before(payments, cursor, BATCH)).await?,
        events: drain(store, move |store, _| store.forget_events_before(journal, BATCH)).await?,
        idempotency: drain(store, move |store, _| store.forget_idempotency_before(idempotency, BATCH)).await?,
    })
}

/// Runs `step` batch after batch until a batch says nothing is left; answers how many
/// records went.
async fn drain<F>(store: &SledStore, step: F) -> Result<usize, StoreError>
where
    F: Fn(&SledStore, Option<&[u8]>) -> Result<Swept, StoreError> + Send + Copy + 'static,
{
    let mut removed = 0;
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let started = std::time::Instant::now();
        let batch = blocking(store, move |store| step(store, cursor.as_deref())).await?;
        removed += batch.removed;
        cursor = batch.cursor;
        if !batch.more {
            return Ok(removed);
        }
        tokio::time::sleep(started.elapsed() * REST_FACTOR).await;
    }
}

async fn blocking<T: Send + 'static>(
    store: &SledStore,
    work: impl FnOnce(&SledStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    // Each batch flushes its own removals, so a payment's flush never carries them.
    let flushed = move || {
        let done = work(&store)?;
        store.db.flush()?;
        Ok(done)
    };
    tokio::task::spawn_blocking(flushed)
        .await
        .unwrap_or_else(|panic| Err(StoreError::Corrupt { key: "retention".into(), reason: panic.to_string() }))
}
