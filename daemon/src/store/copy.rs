//! `posbridge store copy --from sled:PATH --to postgres`: moves a shop's embedded store
//! into the shared database: every payment, refund, receipt reservation, idempotency
//! record and journal event, in batches, each row inserted unless already there (a copy
//! run again adds nothing and says so), then counted back.
//!
//! The sled store must not be in use (its daemon stopped: sled locks the directory).
//! The journal (event history) is copied only into a database whose journal is empty or
//! already holds this very history: event ids are one sequence per database, and a
//! shop's old stream cannot be spliced into another's.

use super::postgres_store::Rows;
use super::{decode, Event, IdempotencyRecord, PostgresStore, SledStore, StoreError};
use crate::payments::model::{Payment, Refund};

/// Rows per transaction.
const BATCH: usize = 500;

/// What one kind of record came to: in the source, and present in the database after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub kind: &'static str,
    pub in_source: usize,
    pub in_target: usize,
}

/// The outcome of a copy.
#[derive(Debug, Default)]
pub struct CopyReport {
    pub copied: Vec<Copied>,
    /// What was left out, and why (a journal already in use; a receipt held by another
    /// payment in the database).
    pub notes: Vec<String>,
}

impl CopyReport {
    /// Every record of the source is in the database, each receipt with its payment.
    pub fn complete(&self) -> bool {
        self.copied.iter().all(|copied| copied.in_source == copied.in_target)
    }
}

/// Copies everything in `source` into `target`; see the module documentation.
pub async fn sled_to_postgres(source: &SledStore, target: &PostgresStore) -> Result<CopyReport, StoreError> {
    let mut report = CopyReport::default();
    let payments = copy_tree(&source.payments, target, Rows::Payments, decode::<Payment>).await?;
    report.copied.push(Copied { kind: "payments", in_source: payments.0, in_target: payments.1 });
    let refunds = copy_tree(&source.refunds, target, Rows::Refunds, decode::<Refund>).await?;
    report.copied.push(Copied { kind: "refunds", in_source: refunds.0, in_target: refunds.1 });
    let receipts = copy_tree(&source.redeemed, target, Rows::Receipts, |key, value| {
        Ok((String::from_utf8_lossy(key).into_owned(), String::from_utf8_lossy(value).into_owned()))
    })
    .await?;
    if receipts.1 < receipts.0 {
        report.notes.push(format!(
            "{} receipt(s) are held by another payment in the database: the same receipt was used at two stores; compare them before going on",
            receipts.0 - receipts.1
        ));
    }
    report.copied.push(Copied { kind: "receipts", in_source: receipts.0, in_target: receipts.1 });
    let idempotency = copy_tree(&source.idempotency, target, Rows::Idempotency, |key, value| {
        Ok((String::from_utf8_lossy(key).into_owned(), decode::<IdempotencyRecord>(key, value)?))
    })
    .await?;
    report.copied.push(Copied { kind: "idempotency records", in_source: idempotency.0, in_target: idempotency.1 });
    // The journal is at most `journal_retention` of history: copied whole, at once.
    let events = source.journal.iter().map(|entry| entry.map_err(StoreError::from).and_then(|(key, value)| decode::<Event>(&key, &value)));
    let events: Vec<Event> = events.collect::<Result<_, _>>()?;
    let count = events.len();
    match target.copy_journal(events, source.next_event_id()?).await? {
        Some(present) => report.copied.push(Copied { kind: "journal events", in_source: count, in_target: present }),
        None => report.notes.push(
            "the event history was not copied: the database's journal already holds other events (POS event streams go on from the shared journal)".into(),
        ),
    }
    Ok(report)
}

/// Copies one tree in batches; answers how many records it holds and how many of them
/// the database holds after.
async fn copy_tree<T>(
    tree: &sled::Tree,
    target: &PostgresStore,
    rows: fn(Vec<T>) -> Rows,
    read: impl Fn(&[u8], &[u8]) -> Result<T, StoreError>,
) -> Result<(usize, usize), StoreError> {
    let (mut in_source, mut in_target) = (0, 0);
    let mut batch = Vec::with_capacity(BATCH);
    for entry in tree.iter() {
        let (key, value) = entry?;
        batch.push(read(&key, &value)?);
        if batch.len() == BATCH {
            in_source += batch.len();
            in_target += target.insert_missing(rows(std::mem::take(&mut batch))).await?;
        }
    }
    if !batch.is_empty() {
        in_source += batch.len();
        in_target += target.insert_missing(rows(batch)).await?;
    }
    Ok((in_source, in_target))
}
