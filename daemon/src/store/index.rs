//! Secondary indexes: one sled tree of empty-valued keys, each key a one-byte tag, the
//! indexed fields and the record's id. Ids sort by creation time, so every index range
//! is also a time range, read newest first without touching unrelated records.
//!
//! The keys of a record are a pure function of the record ([`payment_keys`],
//! [`refund_keys`]); the store writes the difference between a record's old and new keys
//! in the same transaction as the record, so an index never disagrees with the data.

use crate::payments::model::{Compensation, Millis, OfflineState, Payment, PaymentId, PaymentStatus, Refund, RefundStatus};

/// Which index a key belongs to (its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    Reference = 1,
    Status = 3,
    RegisterStatus = 4,
    Leg = 5,
    Open = 6,
    RefundOfPayment = 7,
    RefundOfRegister = 8,
    PendingRefund = 9,
    IdempotencyByTime = 10,
    Exception = 11,
}

/// A set of payments an index holds, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentIndex<'a> {
    /// Every payment (the payments tree itself).
    All,
    /// Payments with this POS reference.
    Reference(&'a str),
    /// Payments of one register (read as its register+status ranges, merged: one key
    /// fewer per payment).
    Register(&'a str),
    /// Payments in one status.
    Status(PaymentStatus),
    /// Payments of one register in one status.
    RegisterStatus(&'a str, PaymentStatus),
    /// The legs paid against one payment (`split_of`).
    LegsOf(&'a PaymentId),
    /// Payments with work left: not final, a compensation under way, or a receipt taken
    /// offline still owing its check.
    Open,
    /// Payments whose receipt, taken offline, the provider later refused.
    Exceptions,
}

/// A set of refunds an index holds, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundIndex<'a> {
    /// Every refund (the refunds tree itself).
    All,
    /// Refunds of one payment.
    OfPayment(&'a PaymentId),
    /// Refunds of one register's payments.
    OfRegister(&'a str),
    /// Refunds still `pending`.
    Pending,
}

fn with_text(tag: Tag, text: &str) -> Vec<u8> {
    let length = u16::try_from(text.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(3 + text.len() + 20);
    key.push(tag as u8);
    key.extend_from_slice(&length.to_be_bytes());
    key.extend_from_slice(&text.as_bytes()[..usize::from(length)]);
    key
}

fn status_byte(status: PaymentStatus) -> u8 {
    status as u8
}

/// The key prefixes under which an index's entries lie (the record id follows each);
/// `None` for the payments tree itself.
pub fn payment_prefixes(index: PaymentIndex<'_>) -> Option<Vec<Vec<u8>>> {
    match index {
        PaymentIndex::All => None,
        PaymentIndex::Register(register) => {
            Some(PaymentStatus::ALL.into_iter().map(|status| payment_prefix(PaymentIndex::RegisterStatus(register, status))).collect())
        }
        single => Some(vec![payment_prefix(single)]),
    }
}

/// The one key prefix of an index stored as such.
fn payment_prefix(index: PaymentIndex<'_>) -> Vec<u8> {
    match index {
        PaymentIndex::All | PaymentIndex::Register(_) => unreachable!("read through payment_prefixes"),
        PaymentIndex::Reference(reference) => with_text(Tag::Reference, reference),
        PaymentIndex::Status(status) => vec![Tag::Status as u8, status_byte(status)],
        PaymentIndex::RegisterStatus(register, status) => {
            let mut key = with_text(Tag::RegisterStatus, register);
            key.push(status_byte(status));
            key
        }
        PaymentIndex::LegsOf(parent) => {
            let mut key = vec![Tag::Leg as u8];
            key.extend_from_slice(parent.as_str().as_bytes());
            key
        }
        PaymentIndex::Open => vec![Tag::Open as u8],
        PaymentIndex::Exceptions => vec![Tag::Exception as u8],
    }
}

/// The key prefix of a refund index (the refund id follows).
pub fn refund_prefix(index: RefundIndex<'_>) -> Option<Vec<u8>> {
    Some(match index {
        RefundIndex::All => return None,
        RefundIndex::OfPayment(payment) => {
            let mut key = vec![Tag::RefundOfPayment as u8];
            key.extend_from_slice(payment.as_str().as_bytes());
            key
        }
        RefundIndex::OfRegister(register) => with_text(Tag::RefundOfRegister, register),
        RefundIndex::Pending => vec![Tag::PendingRefund as u8],
    })
}

fn keyed(mut prefix: Vec<u8>, id: &str) -> Vec<u8> {
    prefix.extend_from_slice(id.as_bytes());
    prefix
}

/// Whether a payment still has work: it is resumed at start-up.
pub fn is_open(payment: &Payment) -> bool {
    !payment.status.is_final()
        || payment.compensation == Some(Compensation::Pending)
        || payment.offline.as_ref().is_some_and(|check| check.state == OfflineState::Pending)
}

/// Whether the provider refused a receipt this payment took offline.
pub fn is_exception(payment: &Payment) -> bool {
    payment.offline.as_ref().is_some_and(|check| check.state == OfflineState::Refused)
}

/// Whether `payment` belongs to `index` as it is now: what an index entry claims, checked
/// against the record read after it.
pub fn holds_payment(index: PaymentIndex<'_>, payment: &Payment) -> bool {
    match index {
        PaymentIndex::All => true,
        PaymentIndex::Reference(reference) => payment.reference.as_deref() == Some(reference),
        PaymentIndex::Register(register) => payment.register == register,
        PaymentIndex::Status(status) => payment.status == status,
        PaymentIndex::RegisterStatus(register, status) => payment.register == register && payment.status == status,
        PaymentIndex::LegsOf(parent) => payment.split_of.as_ref() == Some(parent),
        PaymentIndex::Open => is_open(payment),
        PaymentIndex::Exceptions => is_exception(payment),
    }
}

/// Every index key of a payment.
pub fn payment_keys(payment: &Payment) -> Vec<Vec<u8>> {
    let id = payment.id.as_str();
    let mut keys = vec![
        keyed(payment_prefix(PaymentIndex::Status(payment.status)), id),
        keyed(payment_prefix(PaymentIndex::RegisterStatus(&payment.register, payment.status)), id),
    ];
    if let Some(reference) = &payment.reference {
        keys.push(keyed(payment_prefix(PaymentIndex::Reference(reference)), id));
    }
    if let Some(parent) = &payment.split_of {
        keys.push(keyed(payment_prefix(PaymentIndex::LegsOf(parent)), id));
    }
    if is_open(payment) {
        keys.push(keyed(payment_prefix(PaymentIndex::Open), id));
    }
    if is_exception(payment) {
        keys.push(keyed(payment_prefix(PaymentIndex::Exceptions), id));
    }
    keys
}

/// Every index key of a refund; `register` is its payment's register, if it has one.
pub fn refund_keys(refund: &Refund, register: Option<&str>) -> Vec<Vec<u8>> {
    let id = refund.id.as_str();
    let mut keys = Vec::with_capacity(3);
    if let Some(payment) = &refund.payment {
        keys.push(keyed(refund_prefix(RefundIndex::OfPayment(payment)).expect("a stored index"), id));
    }
    if let Some(register) = register {
        keys.push(keyed(refund_prefix(RefundIndex::OfRegister(register)).expect("a stored index"), id));
    }
    if refund.status == RefundStatus::Pending {
        keys.push(keyed(refund_prefix(RefundIndex::Pending).expect("a stored index"), id));
    }
    keys
}

/// The key ordering idempotency records by the time they were written, so expired ones
/// are found without reading the others.
pub fn idempotency_time_key(created_at: Millis, key: &str) -> Vec<u8> {
    let mut bytes = idempotency_time_bound(created_at);
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

/// Every idempotency time key before `at` sorts below this.
pub fn idempotency_time_bound(at: Millis) -> Vec<u8> {
    let mut bytes = vec![Tag::IdempotencyByTime as u8];
    bytes.extend_from_slice(&(at.max(0) as u64).to_be_bytes());
    bytes
}

/// The idempotency key inside a time key.
pub fn idempotency_key_of(time_key: &[u8]) -> &[u8] {
    time_key.get(9..).unwrap_or_default()
}

/// The keys in `old` and not in `new` (to remove), and those in `new` and not in `old`.
pub fn difference(old: &[Vec<u8>], new: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let gone = old.iter().filter(|key| !new.contains(key)).cloned().collect();
    let added = new.iter().filter(|key| !old.contains(key)).cloned().collect();
    (gone, added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_that_is_a_prefix_of_another_has_its_own_range() {
        let short = payment_prefix(PaymentIndex::Reference("R1"));
        let long = payment_prefix(PaymentIndex::Reference("R12"));
        assert!(!long.starts_with(&short), "length-prefixed: R12's entries are not under R1's prefix");
    }

    #[test]
    fn idempotency_time_keys_sort_by_time() {
        let early = idempotency_time_key(1_000, "zzz");
        let late = idempotency_time_key(2_000, "aaa");
        assert!(early < late);
        assert!(late < idempotency_time_bound(2_001));
        assert_eq!(idempotency_key_of(&late), b"aaa");
    }
}
