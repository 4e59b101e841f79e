//! The payment state machine as pure functions: (payment, event, now) → the payment's
//! next state, or why the event is refused. No I/O, no clock of its own: the engine
//! reads, calls [`next`], and commits what it answers.

use super::model::{Amount, Attempt, Compensation, Failure, Millis, NextAction, OfflineCheck, OfflineState, Payment, PaymentStatus};
use super::provider::Settlement;
use super::PaymentError;

/// Something that happens to a payment.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentEvent {
    /// A scanned code's attempt begins (write-ahead, before the provider hears of it).
    AttemptStarted(Attempt),
    /// The provider took the payment (scan, manual entry, card, or found by lookup).
    Settled(Settlement),
    /// The attempt failed and took nothing.
    AttemptFailed(Failure),
    /// A waiting card payment's progress.
    CardWaiting { processing: bool, plugin_data: String, next_action: Option<NextAction> },
    /// The card payment failed at the provider.
    CardFailed { failure: Failure, plugin_data: String },
    /// The POS canceled it.
    Canceled,
    /// The POS asked to cancel a waiting card payment: recorded, so the card job cancels
    /// it at the provider wherever it runs.
    CancelRequested,
    /// Its time to be scanned ran out.
    Expired,
    /// A refund reserved part of what it took.
    RefundReserved(Amount),
    /// A refund the provider refused gives its amount back.
    RefundReleased(Amount),
    /// A later leg of this purchase started, finished or gave up (see [`leg_effect`]).
    Leg(LegEffect),
    /// Canceling this leg abandoned the purchase: its other legs are to be refunded.
    CompensationStarted,
    /// Every leg that took money was refunded.
    CompensationDone,
    /// The provider could not be reached and the attempt's receipt was taken offline,
    /// within the method's limits; `sent`: the attempt's check may have reached it;
    /// `verified`: its signature was checked (after the write-ahead recorded the code
    /// as read, when the plugin reads codes apart).
    AcceptedOffline { sent: bool, verified: bool },
    /// The deferred check of a receipt taken offline is about to be sent.
    OfflineCheckSent,
    /// The provider confirmed a receipt taken offline.
    OfflineConfirmed(Settlement),
    /// The provider refused a receipt taken offline: an exception for the shop.
    OfflineRefused(Failure),
    /// A full refund before the deferred check was ever sent: it is not sent at all.
    OfflineCanceled,
}

/// What a leg's change does to its parent payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegEffect {
    /// Amount newly held by the leg.
    pub reserve: Amount,
    /// Amount the leg no longer holds.
    pub release: Amount,
    /// Amount the leg took.
    pub capture: Amount,
}

/// The outcome of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing to store (already so, or a late event for a settled payment).
    Unchanged,
    /// The payment's next state, version bumped.
    Changed(Box<Payment>),
}

fn refuse(payment: &Payment, action: &'static str) -> PaymentError {
    PaymentError::InvalidState { status: payment.status, action }
}

/// Checks that a scan or manual entry may pay `payment` at `now`.
pub fn check_scannable(payment: &Payment, now: Millis, action: &'static str) -> Result<(), PaymentError> {
    if !payment.status.accepts_scan() {
        return Err(refuse(payment, action));
    }
    if payment.expires_at <= now {
        return Err(PaymentError::InvalidState { status: PaymentStatus::Expired, action });
    }
    Ok(())
}

fn waiting_for_card(payment: &Payment) -> bool {
    matches!(payment.status, PaymentStatus::AwaitingCard | PaymentStatus::Processing)
}

/// The payment after `event` at `now`.
pub fn next(payment: &Payment, event: PaymentEvent, now: Millis) -> Result<Next, PaymentError> {
    let mut after = payment.clone();
    match event {
        PaymentEvent::AttemptStarted(attempt) => {
            check_scannable(payment, now, "scanned")?;
            after.status = PaymentStatus::Processing;
            after.failure = None;
            after.attempts = after.attempts.max(attempt.number);
            after.attempt = Some(attempt);
        }
        PaymentEvent::Settled(settlement) => {
            if payment.status == PaymentStatus::Succeeded {
                return Ok(Next::Unchanged); // a lookup and the original call raced: the first won
            }
            if !payment.status.can_become(PaymentStatus::Succeeded) {
                return Err(refuse(payment, "completed"));
            }
            after.status = PaymentStatus::Succeeded;
            after.captured_amount = Amount(settlement.captured_amount);
            after.receipt_key =
                payment.attempt.as_ref().map(|attempt| attempt.key.clone()).filter(|key| Some(key) != settlement.transaction_id.as_ref());
            after.transaction_id = settlement.transaction_id;
            after.verified = Some(settlement.verified);
            after.benefit = settlement.benefit;
            after.plugin_data = Some(settlement.plugin_data);
            after.captured_at = Some(now);
            after.failure = None;
            after.attempt = None;
            after.next_action = None;
        }
        PaymentEvent::AttemptFailed(failure) => {
            if payment.status.is_final() {
                return Ok(Next::Unchanged);
            }
            after.status = PaymentStatus::Failed;
            after.failure = Some(failure);
            after.attempt = None;
            after.next_action = None;
        }
        PaymentEvent::CardWaiting { processing, plugin_data, next_action } => {
            let status = if processing { PaymentStatus::Processing } else { PaymentStatus::AwaitingCard };
            let plugin_data = Some(plugin_data);
            let same = payment.status == status && payment.plugin_data == plugin_data && payment.next_action == next_action;
            if same || !waiting_for_card(payment) {
                return Ok(Next::Unchanged);
            }
            after.status = status;
            after.plugin_data = plugin_data;
            after.next_action = next_action;
        }
        PaymentEvent::CardFailed { failure, plugin_data } => {
            if !waiting_for_card(payment) {
                return Ok(Next::Unchanged);
            }
            after.status = PaymentStatus::Failed;
            after.failure = Some(failure);
            after.plugin_data = Some(plugin_data);
            after.next_action = None;
        }
        PaymentEvent::Canceled => {
            if payment.status == PaymentStatus::Canceled {
                return Ok(Next::Unchanged);
            }
            if !payment.status.can_become(PaymentStatus::Canceled) {
                return Err(refuse(payment, "canceled"));
            }
            after.status = PaymentStatus::Canceled;
            after.next_action = None;
        }
        PaymentEvent::CancelRequested => {
            if !waiting_for_card(payment) || payment.cancel_requested_at.is_some() {
                return Ok(Next::Unchanged);
            }
            after.cancel_requested_at = Some(now);
        }
        PaymentEvent::Expired => {
            if !payment.status.accepts_scan() || payment.expires_at > now {
                return Ok(Next::Unchanged);
            }
            after.status = PaymentStatus::Expired;
        }
        PaymentEvent::RefundReserved(amount) => {
            if payment.status != PaymentStatus::Succeeded {
                return Err(refuse(payment, "refunded"));
            }
            let refundable = payment.refundable_amount();
            if amount > refundable || amount.0 == 0 {
                return Err(PaymentError::RefundExceedsPayment { refundable });
            }
            after.refunded_amount = Amount(payment.refunded_amount.0 + amount.0);
        }
        PaymentEvent::RefundReleased(amount) => {
            after.refunded_amount = payment.refunded_amount.saturating_sub(amount);
        }
        PaymentEvent::Leg(effect) => {
            let open = payment.open_for_split().0 + effect.release.0;
            if effect.reserve.0 > open {
                return Err(PaymentError::SplitNotPossible {
                    parent: payment.id.clone(),
                    reason: format!("only {open} of the purchase is open (other payments of it are under way)"),
                });
            }
            after.split_reserved_amount = Amount(payment.split_reserved_amount.0 + effect.reserve.0).saturating_sub(effect.release);
            after.split_captured_amount = Amount(payment.split_captured_amount.0.saturating_add(effect.capture.0));
        }
        PaymentEvent::CompensationStarted => after.compensation = Some(Compensation::Pending),
        PaymentEvent::CompensationDone => after.compensation = Some(Compensation::Done),
        PaymentEvent::AcceptedOffline { sent, verified } => accept_offline(payment, &mut after, sent, verified, now)?,
        PaymentEvent::OfflineCheckSent => {
            let Some(check) = pending_check(&mut after) else { return Ok(Next::Unchanged) };
            check.sent = true;
            check.tries += 1;
        }
        PaymentEvent::OfflineConfirmed(settlement) => {
            let captured = payment.captured_amount;
            let Some(check) = pending_check(&mut after) else { return Ok(Next::Unchanged) };
            check.settled_at = Some(now);
            if settlement.captured_amount != captured.0 {
                // Kept: the provider took money under this transaction; the shop follows
                // it up with what the provider said.
                check.state = OfflineState::Refused;
                check.reason = Some(Failure {
                    code: "amount_mismatch".into(),
                    message: format!("the provider confirmed {} cents, the receipt said {captured}", settlement.captured_amount),
                    retryable: false,
                });
                after.transaction_id = settlement.transaction_id.or(after.transaction_id);
                after.plugin_data = Some(settlement.plugin_data);
                return Ok(changed(payment, after, now));
            }
            check.state = OfflineState::Confirmed;
            after.verified = Some(settlement.verified);
            after.transaction_id = settlement.transaction_id.or(after.transaction_id);
            after.benefit = settlement.benefit.or(after.benefit);
            after.plugin_data = Some(settlement.plugin_data);
        }
        PaymentEvent::OfflineRefused(failure) => {
            let Some(check) = pending_check(&mut after) else { return Ok(Next::Unchanged) };
            check.state = OfflineState::Refused;
            check.reason = Some(failure);
            check.settled_at = Some(now);
        }
        PaymentEvent::OfflineCanceled => match pending_check(&mut after) {
            Some(check) if !check.sent => {
                check.state = OfflineState::Canceled;
                check.settled_at = Some(now);
            }
            _ => return Err(refuse(payment, "refunded before its receipt is confirmed")),
        },
    }
    Ok(changed(payment, after, now))
}

fn changed(before: &Payment, mut after: Payment, now: Millis) -> Next {
    after.version += 1;
    after.updated_at = now.max(before.updated_at);
    Next::Changed(Box::new(after))
}

/// The deferred check of `payment`, while it is still owed.
fn pending_check(payment: &mut Payment) -> Option<&mut OfflineCheck> {
    payment.offline.as_mut().filter(|check| check.state == OfflineState::Pending)
}

/// An attempt `processing` ends taken offline: `succeeded` with what the signed
/// receipt says, unverified, its receipt kept reserved, its check owed.
fn accept_offline(payment: &Payment, after: &mut Payment, sent: bool, verified: bool, now: Millis) -> Result<(), PaymentError> {
    let mut attempt = match (&payment.status, &payment.attempt) {
        (PaymentStatus::Processing, Some(attempt)) if attempt.amount.is_some() => attempt.clone(),
        _ => return Err(refuse(payment, "taken offline")),
    };
    attempt.signature_verified |= verified;
    after.status = PaymentStatus::Succeeded;
    after.captured_amount = attempt.amount.unwrap_or_default();
    after.transaction_id = attempt.transaction.clone();
    after.receipt_key = Some(attempt.key.clone()).filter(|key| Some(key) != attempt.transaction.as_ref());
    after.verified = Some(false);
    after.captured_at = Some(now);
    after.failure = None;
    after.attempt = None;
    after.next_action = None;
    after.offline =
        Some(OfflineCheck { state: OfflineState::Pending, attempt, accepted_at: now, sent, tries: 0, settled_at: None, reason: None });
    Ok(())
}

/// What a leg's change from `before` (`None`: just created) to `after` does to its
/// parent: a leg holds its amount while it may still take money, and adds what it took.
pub fn leg_effect(before: Option<&Payment>, after: &Payment) -> Option<LegEffect> {
    after.split_of.as_ref()?;
    let held_before = before.is_some_and(Payment::holds_split_reservation);
    let held_after = after.holds_split_reservation();
    let newly_succeeded = after.status == PaymentStatus::Succeeded && before.is_none_or(|before| before.status != PaymentStatus::Succeeded);
    let effect = LegEffect {
        reserve: if held_after && !held_before { after.amount } else { Amount(0) },
        release: if held_before && !held_after { before.map(|before| before.amount).unwrap_or_default() } else { Amount(0) },
        capture: if newly_succeeded { after.captured_amount } else { Amount(0) },
    };
    (effect != LegEffect::default()).then_some(effect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus::*;

    const NOW: Millis = 1_795_000_000_000;

    fn payment(status: PaymentStatus) -> Payment {
        Payment { eligible_amount: Amount(3000), ..crate::payments::model::example_payment(NOW - 1000, 1, status) }
    }

    fn attempt() -> Attempt {
        Attempt { number: 1, code: "code".into(), key: "tx_1".into(), amount: Some(Amount(3000)), started_at: NOW, ..Default::default() }
    }

    fn settlement(captured: u64) -> Settlement {
        Settlement {
            transaction_id: Some("tx_1".into()),
            captured_amount: captured,
            verified: true,
            benefit: None,
            plugin_data: "{}".into(),
        }
    }

    fn failure(code: &str) -> Failure {
        Failure { code: code.into(), message: "m".into(), retryable: false }
    }

    fn changed(result: Result<Next, PaymentError>) -> Payment {
        match result {
            Ok(Next::Changed(payment)) => *payment,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    fn all() -> [PaymentStatus; 7] {
        [AwaitingScan, AwaitingCard, Processing, Succeeded, Failed, Canceled, Expired]
    }

    #[test]
    fn an_attempt_starts_only_on_a_payment_awaiting_a_scan_and_in_time() {
        for status in all() {
            let result = next(&payment(status), PaymentEvent::AttemptStarted(attempt()), NOW);
            if status.accepts_scan() {
                let after = changed(result);
                assert_eq!((after.status, after.version, after.attempt.is_some()), (Processing, 2, true));
            } else {
                assert!(matches!(result, Err(PaymentError::InvalidState { .. })), "{status}");
            }
        }
        let late = next(&payment(AwaitingScan), PaymentEvent::AttemptStarted(attempt()), NOW + 60_000);
        assert!(matches!(late, Err(PaymentError::InvalidState { status: Expired, .. })));
    }

    #[test]
    fn settling_records_the_capture_once() {
        let mut processing = payment(Processing);
        processing.attempt = Some(attempt());
        let after = changed(next(&processing, PaymentEvent::Settled(settlement(3000)), NOW));
        assert_eq!((after.status, after.captured_amount, after.attempt.clone()), (Succeeded, Amount(3000), None));
        assert_eq!(after.captured_at, Some(NOW));
        assert_eq!(next(&after, PaymentEvent::Settled(settlement(3000)), NOW).unwrap(), Next::Unchanged);
        for status in [Canceled, Expired] {
            assert!(next(&payment(status), PaymentEvent::Settled(settlement(1)), NOW).is_err(), "{status}");
        }
    }

    #[test]
    fn a_failed_attempt_clears_it_but_never_undoes_a_final_state() {
        let mut processing = payment(Processing);
        processing.attempt = Some(attempt());
        let after = changed(next(&processing, PaymentEvent::AttemptFailed(failure("bad_signature")), NOW));
        assert_eq!((after.status, after.attempt.clone()), (Failed, None));
        for status in [Succeeded, Canceled, Expired] {
            assert_eq!(next(&payment(status), PaymentEvent::AttemptFailed(failure("x")), NOW).unwrap(), Next::Unchanged);
        }
    }

    #[test]
    fn card_progress_applies_only_while_waiting_and_only_when_it_changes() {
        let waiting = payment(AwaitingCard);
        let event = || PaymentEvent::CardWaiting { processing: true, plugin_data: "pi_1".into(), next_action: None };
        let after = changed(next(&waiting, event(), NOW));
        assert_eq!(after.status, Processing);
        assert_eq!(next(&after, event(), NOW).unwrap(), Next::Unchanged);
        assert_eq!(next(&payment(Canceled), event(), NOW).unwrap(), Next::Unchanged);
        let failed = changed(next(&after, PaymentEvent::CardFailed { failure: failure("card_declined"), plugin_data: "pi_1".into() }, NOW));
        assert_eq!(failed.status, Failed);
        let late = PaymentEvent::CardFailed { failure: failure("card_declined"), plugin_data: "pi_1".into() };
        assert_eq!(next(&payment(Succeeded), late, NOW).unwrap(), Next::Unchanged);
    }

    #[test]
    fn a_cancel_request_is_recorded_once_and_only_while_a_card_waits() {
        let waiting = payment(AwaitingCard);
        let requested = changed(next(&waiting, PaymentEvent::CancelRequested, NOW));
        assert_eq!((requested.status, requested.cancel_requested_at), (AwaitingCard, Some(NOW)));
        assert_eq!(requested.version, waiting.version + 1);
        assert_eq!(next(&requested, PaymentEvent::CancelRequested, NOW + 1).unwrap(), Next::Unchanged, "once");
        assert_eq!(next(&payment(Succeeded), PaymentEvent::CancelRequested, NOW).unwrap(), Next::Unchanged);
    }

    #[test]
    fn cancel_is_refused_once_money_may_have_moved() {
        for status in [AwaitingScan, AwaitingCard, Failed] {
            assert_eq!(changed(next(&payment(status), PaymentEvent::Canceled, NOW)).status, Canceled);
        }
        for status in [Processing, Succeeded, Expired] {
            assert!(matches!(next(&payment(status), PaymentEvent::Canceled, NOW), Err(PaymentError::InvalidState { .. })), "{status}");
        }
        assert_eq!(next(&payment(Canceled), PaymentEvent::Canceled, NOW).unwrap(), Next::Unchanged);
    }

    #[test]
    fn expiry_takes_only_unpaid_payments_whose_time_is_up() {
        assert_eq!(next(&payment(AwaitingScan), PaymentEvent::Expired, NOW).unwrap(), Next::Unchanged, "not yet");
        assert_eq!(changed(next(&payment(Failed), PaymentEvent::Expired, NOW + 60_000)).status, Expired);
        for status in [AwaitingCard, Processing, Succeeded, Canceled] {
            assert_eq!(next(&payment(status), PaymentEvent::Expired, NOW + 60_000).unwrap(), Next::Unchanged, "{status}");
        }
    }

    #[test]
    fn refunds_reserve_at_most_what_was_taken_and_a_refusal_gives_it_back() {
        let mut paid = payment(Succeeded);
        paid.captured_amount = Amount(3000);
        let reserved = changed(next(&paid, PaymentEvent::RefundReserved(Amount(1000)), NOW));
        assert_eq!(reserved.refundable_amount(), Amount(2000));
        assert!(matches!(
            next(&reserved, PaymentEvent::RefundReserved(Amount(2001)), NOW),
            Err(PaymentError::RefundExceedsPayment { refundable: Amount(2000) })
        ));
        assert!(next(&payment(Processing), PaymentEvent::RefundReserved(Amount(1)), NOW).is_err());
        let released = changed(next(&reserved, PaymentEvent::RefundReleased(Amount(1000)), NOW));
        assert_eq!(released.refundable_amount(), Amount(3000));
    }

    #[test]
    fn legs_reserve_their_amount_and_never_sum_above_the_purchase() {
        let mut parent = payment(Succeeded);
        parent.captured_amount = Amount(3000); // 1500 remains
        let mut leg = payment(AwaitingCard);
        leg.split_of = Some(parent.id.clone());
        leg.amount = Amount(1500);
        let effect = leg_effect(None, &leg).expect("a new leg reserves");
        assert_eq!(effect, LegEffect { reserve: Amount(1500), ..LegEffect::default() });
        let held = changed(next(&parent, PaymentEvent::Leg(effect), NOW));
        assert_eq!(held.open_for_split(), Amount(0));
        assert!(matches!(next(&held, PaymentEvent::Leg(effect), NOW), Err(PaymentError::SplitNotPossible { .. })), "a second leg");

        let mut paid = leg.clone();
        paid.status = Succeeded;
        paid.captured_amount = Amount(1500);
        let captured = leg_effect(Some(&leg), &paid).unwrap();
        assert_eq!(captured, LegEffect { reserve: Amount(0), release: Amount(1500), capture: Amount(1500) });
        let done = changed(next(&held, PaymentEvent::Leg(captured), NOW));
        assert_eq!((done.split_reserved_amount, done.remaining_amount()), (Amount(0), Amount(0)));

        let mut declined = leg.clone();
        declined.status = Failed;
        let released = changed(next(&held, PaymentEvent::Leg(leg_effect(Some(&leg), &declined).unwrap()), NOW));
        assert_eq!(released.open_for_split(), Amount(1500), "a failed leg gives its amount back");
        assert_eq!(leg_effect(Some(&declined), &declined), None);
        assert_eq!(leg_effect(None, &payment(AwaitingScan)), None, "not a leg");
    }

    #[test]
    fn every_change_bumps_the_version_and_never_moves_time_back() {
        let mut earlier = payment(AwaitingScan);
        earlier.updated_at = NOW + 5;
        let after = changed(next(&earlier, PaymentEvent::Canceled, NOW));
        assert_eq!((after.version, after.updated_at), (2, NOW + 5));
        let compensating = changed(next(&after, PaymentEvent::CompensationStarted, NOW));
        assert_eq!((compensating.compensation, compensating.version), (Some(Compensation::Pending), 3));
    }

    fn taken_offline(sent: bool) -> Payment {
        let processing = Payment { attempt: Some(attempt()), ..payment(Processing) };
        changed(next(&processing, PaymentEvent::AcceptedOffline { sent, verified: true }, NOW))
    }

    #[test]
    fn a_receipt_taken_offline_succeeds_unverified_and_owes_its_check() {
        let paid = taken_offline(false);
        assert_eq!(paid.status, Succeeded);
        assert_eq!(paid.captured_amount, Amount(3000));
        assert_eq!(paid.verified, Some(false));
        assert_eq!(paid.transaction_id, None, "the attempt named no transaction");
        assert!(paid.attempt.is_none());
        let check = paid.offline.as_ref().expect("a check is owed");
        assert_eq!((check.state, check.sent, check.attempt.key.as_str()), (OfflineState::Pending, false, "tx_1"));
        assert_eq!(check.open_amount(), Amount(3000));
        // Only an attempt under way, stating its amount, can be taken offline.
        let unsigned = Payment { attempt: Some(Attempt { amount: None, ..attempt() }), ..payment(Processing) };
        assert!(next(&unsigned, PaymentEvent::AcceptedOffline { sent: false, verified: true }, NOW).is_err());
        assert!(next(&payment(AwaitingScan), PaymentEvent::AcceptedOffline { sent: false, verified: true }, NOW).is_err());
    }

    #[test]
    fn the_deferred_check_confirms_or_refuses_once() {
        let confirmed = changed(next(&taken_offline(false), PaymentEvent::OfflineConfirmed(settlement(3000)), NOW));
        assert_eq!(confirmed.offline.as_ref().map(|check| check.state), Some(OfflineState::Confirmed));
        assert_eq!((confirmed.verified, confirmed.transaction_id.as_deref()), (Some(true), Some("tx_1")));
        assert_eq!(confirmed.offline.as_ref().map(OfflineCheck::open_amount), Some(Amount(0)));
        assert!(matches!(next(&confirmed, PaymentEvent::OfflineRefused(failure("receipt_already_used")), NOW), Ok(Next::Unchanged)));

        let refused = changed(next(&taken_offline(true), PaymentEvent::OfflineRefused(failure("receipt_already_used")), NOW));
        assert_eq!(refused.status, Succeeded, "the goods are gone: the payment stays succeeded");
        let check = refused.offline.as_ref().expect("kept");
        assert_eq!(
            (check.state, check.reason.as_ref().map(|reason| reason.code.as_str())),
            (OfflineState::Refused, Some("receipt_already_used"))
        );
        assert!(matches!(next(&refused, PaymentEvent::OfflineConfirmed(settlement(3000)), NOW), Ok(Next::Unchanged)));

        let mismatch = changed(next(&taken_offline(false), PaymentEvent::OfflineConfirmed(settlement(2000)), NOW));
        assert_eq!(mismatch.offline.as_ref().map(|check| check.state), Some(OfflineState::Refused));
        assert_eq!(mismatch.verified, Some(false));
    }

    #[test]
    fn an_offline_check_is_canceled_only_if_it_was_never_sent() {
        let canceled = changed(next(&taken_offline(false), PaymentEvent::OfflineCanceled, NOW));
        assert_eq!(canceled.offline.as_ref().map(|check| check.state), Some(OfflineState::Canceled));
        let sent = changed(next(&taken_offline(false), PaymentEvent::OfflineCheckSent, NOW));
        assert_eq!(sent.offline.as_ref().map(|check| (check.sent, check.tries)), Some((true, 1)));
        assert!(next(&sent, PaymentEvent::OfflineCanceled, NOW).is_err());
        assert!(next(&taken_offline(true), PaymentEvent::OfflineCanceled, NOW).is_err());
        assert!(matches!(next(&canceled, PaymentEvent::OfflineCheckSent, NOW), Ok(Next::Unchanged)));
    }
}
