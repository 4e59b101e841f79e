//! The store's own rules: indexes agree with the records, lists read them, retention
//! removes only what is done, old stores get their indexes.

use super::*;
use crate::payments::model::{Amount, Millis, PaymentStatus, RefundStatus};

type Store = SledStore;

const DAY: Millis = 86_400_000;

fn payment(at: Millis, unique: u64, register: &str, reference: &str, status: PaymentStatus) -> Payment {
    Payment {
        register: register.into(),
        client: register.into(),
        reference: Some(reference.into()),
        transaction_id: (status == PaymentStatus::Succeeded).then(|| format!("tx_{unique}")),
        ..crate::payments::model::example_payment(at, unique, status)
    }
}

fn refund(at: Millis, unique: u64, of: &Payment, status: RefundStatus) -> Refund {
    Refund {
        id: RefundId::new(at, unique),
        status,
        payment: Some(of.id.clone()),
        method: of.method.clone(),
        transaction_id: of.transaction_id.clone(),
        amount: Amount(100),
        currency: of.currency.clone(),
        reason: None,
        failure: None,
        provider_refund_id: None,
        client: of.client.clone(),
        created_at: at,
        updated_at: at,
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    (dir, store)
}

fn save(store: &Store, payments: Vec<Payment>, refunds: Vec<Refund>) {
    let reserve = payments.iter().filter_map(|payment| payment.transaction_id.clone().map(|tx| (tx, payment.id.clone()))).collect();
    let commit = Commit { payments, refunds, reserve, ..Commit::default() };
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(store.commit(&commit)).unwrap();
}

fn ids(found: impl Iterator<Item = Result<Payment, StoreError>>) -> Vec<String> {
    found.map(|payment| payment.unwrap().id.to_string()).collect()
}

#[test]
fn a_status_change_moves_the_payment_between_index_ranges() {
    let (_dir, store) = open();
    let mut first = payment(1_000, 1, "till-1", "R1", PaymentStatus::AwaitingScan);
    save(&store, vec![first.clone()], vec![]);
    let all = Window::default();
    assert_eq!(ids(store.payments_in(PaymentIndex::Status(PaymentStatus::AwaitingScan), &all)), vec![first.id.to_string()]);
    assert_eq!(ids(store.payments_in(PaymentIndex::Open, &all)), vec![first.id.to_string()]);
    first.status = PaymentStatus::Succeeded;
    first.version = 2;
    save(&store, vec![first.clone()], vec![]);
    assert!(ids(store.payments_in(PaymentIndex::Status(PaymentStatus::AwaitingScan), &all)).is_empty(), "the old status entry is gone");
    assert!(ids(store.payments_in(PaymentIndex::Open, &all)).is_empty(), "no work left");
    assert_eq!(ids(store.payments_in(PaymentIndex::RegisterStatus("till-1", PaymentStatus::Succeeded), &all)), vec![first.id.to_string()]);
}

#[test]
fn lists_read_their_index_newest_first_within_the_window() {
    let (_dir, store) = open();
    let payments: Vec<Payment> = (0..30)
        .map(|n| {
            let register = if n % 3 == 0 { "till-2" } else { "till-1" };
            payment(1_000 + n as Millis * 10, n, register, &format!("R{}", n % 5), PaymentStatus::Succeeded)
        })
        .collect();
    save(&store, payments.clone(), vec![]);
    let window = Window { from: Some(1_050), to: Some(1_200), before: None };
    let expected: Vec<String> = payments
        .iter()
        .rev()
        .filter(|payment| payment.reference.as_deref() == Some("R2") && (1_050..=1_200).contains(&payment.created_at))
        .map(|payment| payment.id.to_string())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(ids(store.payments_in(PaymentIndex::Reference("R2"), &window)), expected);
    // Two registers merged newest first equal the whole list.
    let merged = ids(store.payments_merged(&[PaymentIndex::Register("till-1"), PaymentIndex::Register("till-2")], &Window::default()));
    assert_eq!(merged, ids(store.payments_in(PaymentIndex::All, &Window::default())));
    // Pagination: before an id.
    let before = Window { before: Some(payments[10].id.to_string()), ..Window::default() };
    assert_eq!(ids(store.payments_in(PaymentIndex::Register("till-2"), &before)).first(), Some(&payments[9].id.to_string()));
}

#[test]
fn retention_removes_settled_payments_with_their_refunds_and_keeps_open_work() {
    let (_dir, store) = open();
    let now = crate::payments::model::now_ms();
    let old_done = payment(now - 500 * DAY, 1, "till-1", "R1", PaymentStatus::Succeeded);
    let old_open = payment(now - 500 * DAY, 2, "till-1", "R2", PaymentStatus::Processing);
    let old_refunding = payment(now - 500 * DAY, 3, "till-1", "R3", PaymentStatus::Succeeded);
    let recent = payment(now - DAY, 4, "till-1", "R4", PaymentStatus::Succeeded);
    let done_refund = refund(now - 499 * DAY, 5, &old_done, RefundStatus::Succeeded);
    let pending_refund = refund(now - 499 * DAY, 6, &old_refunding, RefundStatus::Pending);
    save(
        &store,
        vec![old_done.clone(), old_open.clone(), old_refunding.clone(), recent.clone()],
        vec![done_refund.clone(), pending_refund],
    );

    let mut removed = 0;
    let mut cursor = None;
    loop {
        // A batch of one, so the cursor is exercised.
        let swept = store.remove_payments_before(now - 400 * DAY, cursor.as_deref(), 1).unwrap();
        removed += swept.removed;
        cursor = swept.cursor;
        if !swept.more {
            break;
        }
    }
    assert_eq!(removed, 1);
    assert!(store.read_payment(&old_done.id).unwrap().is_none());
    assert!(store.read_refund(&done_refund.id).unwrap().is_none(), "its refunds go with it");
    assert!(store.holder_of("tx_1").unwrap().is_none(), "its receipt reservation too");
    assert!(ids(store.payments_in(PaymentIndex::Reference("R1"), &Window::default())).is_empty(), "and its index entries");
    assert!(store.refunds_in(RefundIndex::OfRegister("till-1")).all(|refund| refund.unwrap().id != done_refund.id));
    for kept in [&old_open, &old_refunding, &recent] {
        assert!(store.read_payment(&kept.id).unwrap().is_some(), "{} stays", kept.id);
    }
    assert_eq!(store.holder_of("tx_3").unwrap(), Some(old_refunding.id.clone()));
}

#[test]
fn a_store_written_before_the_indexes_gets_them_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let first = payment(1_000, 1, "till-1", "R1", PaymentStatus::Processing);
    {
        // The layout of the previous version: records only.
        let db = sled::open(&path).unwrap();
        db.open_tree("payments").unwrap().insert(first.id.as_str(), serde_json::to_vec(&first).unwrap()).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(ids(store.payments_in(PaymentIndex::Reference("R1"), &Window::default())), vec![first.id.to_string()]);
    assert_eq!(store.unfinished_payments().unwrap().len(), 1, "resumed from the rebuilt open index");
}

#[test]
fn expired_idempotency_records_go_through_their_time_index() {
    let (_dir, store) = open();
    let record = |at| IdempotencyRecord { fingerprint: "f".into(), status: 201, body: Some("{}".into()), target: None, created_at: at };
    let commit =
        Commit { idempotency: vec![("old".into(), Some(record(1_000))), ("new".into(), Some(record(5_000)))], ..Commit::default() };
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(store.commit(&commit)).unwrap();
    let swept = store.forget_idempotency_before(2_000, 10).unwrap();
    assert_eq!(swept.removed, 1);
    assert!(store.read_idempotency("old").unwrap().is_none());
    assert!(store.read_idempotency("new").unwrap().is_some());
}

#[test]
fn events_are_readable_only_once_durable_and_old_ones_expire() {
    let (_dir, store) = open();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let commit = Commit { events: vec![("payment.updated".into(), serde_json::json!({}))], ..Commit::default() };
    let (applied, _) = store.apply(&commit).unwrap();
    assert!(store.journal_after(0, 10).unwrap().is_empty(), "applied, not yet flushed: not shown");
    runtime.block_on(store.commit(&commit)).unwrap();
    let shown = store.journal_after(0, 10).unwrap();
    assert_eq!(shown.len(), 2, "the flush covered both");
    assert_eq!(shown[0].id, applied[0].id);
    let removed = store.forget_events_before(crate::payments::model::now_ms() + 1, 10).unwrap().removed;
    assert_eq!(removed, 2);
    assert_eq!(store.oldest_journal_event().unwrap(), 3, "an empty journal: the next event's id");
}

#[test]
fn a_change_read_before_retention_removed_its_payment_is_refused() {
    let (_dir, store) = open();
    let now = crate::payments::model::now_ms();
    let old = payment(now - 500 * DAY, 1, "till-1", "R1", PaymentStatus::Succeeded);
    save(&store, vec![old.clone()], vec![]);
    // A refund reads the payment, then the sweep removes it, then the refund commits.
    let mut refunding = store.read_payment(&old.id).unwrap().unwrap();
    assert_eq!(store.remove_payments_before(now - 400 * DAY, None, 10).unwrap().removed, 1);
    refunding.refunded_amount = Amount(100);
    refunding.version += 1;
    let commit = Commit { payments: vec![refunding], ..Commit::default() };
    let result = tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(store.commit(&commit));
    assert!(matches!(result, Err(StoreError::Gone(_))), "{result:?}");
    assert!(store.read_payment(&old.id).unwrap().is_none(), "not written back");
    assert!(ids(store.payments_in(PaymentIndex::Reference("R1"), &Window::default())).is_empty(), "nor its index entries");
}

#[test]
fn a_register_listed_twice_gives_each_payment_once() {
    let (_dir, store) = open();
    let payments: Vec<Payment> = (0..5).map(|n| payment(1_000 + n, n as u64, "till-1", "R", PaymentStatus::Succeeded)).collect();
    save(&store, payments, vec![]);
    let merged = ids(store.payments_merged(&[PaymentIndex::Register("till-1"), PaymentIndex::Register("till-1")], &Window::default()));
    assert_eq!(merged.len(), 5, "{merged:?}");
}

#[test]
fn a_settled_refund_without_a_payment_goes_after_the_retention_and_a_pending_one_stays() {
    let (_dir, store) = open();
    let now = crate::payments::model::now_ms();
    let orphan = |unique, status| Refund {
        payment: None,
        ..refund(now - 500 * DAY, unique, &payment(now - 500 * DAY, 100, "till-1", "R", PaymentStatus::Succeeded), status)
    };
    let (done, pending) = (orphan(1, RefundStatus::Succeeded), orphan(2, RefundStatus::Pending));
    save(&store, vec![], vec![done.clone(), pending.clone()]);
    let swept = store.remove_refunds_before(now - 400 * DAY, None, 10).unwrap();
    assert_eq!(swept.removed, 1);
    assert!(store.read_refund(&done.id).unwrap().is_none());
    assert!(store.read_refund(&pending.id).unwrap().is_some());
    assert_eq!(store.refunds_in(RefundIndex::Pending).count(), 1, "its index entry stays too");
}

#[test]
fn new_stores_are_uncompressed_and_a_compressed_one_stays_compressed_with_its_records() {
    let conf = |path: &Path| String::from_utf8_lossy(&std::fs::read(path.join("conf")).unwrap()).into_owned();
    let (dir, store) = open();
    drop(store);
    assert!(conf(&dir.path().join("data")).contains("use_compression: false"), "a new store is written uncompressed");

    // A store as an older posbridge created it: compressed by sled, with a payment.
    let older = dir.path().join("older");
    let first = payment(1_000, 1, "till-1", "R1", PaymentStatus::Succeeded);
    {
        let db = sled::Config::new().path(&older).use_compression(true).open().unwrap();
        db.open_tree("payments").unwrap().insert(first.id.as_str().as_bytes(), encode(&first)).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(&older).expect("a compressed store opens");
    assert_eq!(store.read_payment(&first.id).unwrap().map(|payment| payment.id), Some(first.id.clone()));
    let second = payment(2_000, 2, "till-1", "R2", PaymentStatus::AwaitingScan);
    save(&store, vec![second.clone()], vec![]);
    drop(store);
    assert!(conf(&older).contains("use_compression: true"), "it stays compressed");
    let store = Store::open(&older).unwrap();
    assert!(store.read_payment(&second.id).unwrap().is_some());
}
