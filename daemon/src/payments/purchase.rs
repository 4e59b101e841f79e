//! Purchases paid in several legs (`split_of`): cancel, and the compensation saga that
//! refunds the legs that took money when the purchase is abandoned. Compensation is
//! marked on the canceled leg in the cancel's own commit, so it finishes after a crash,
//! and it is refused when a later leg paid the rest (the purchase was completed).

use std::sync::Arc;

use tokio::sync::oneshot;

use super::machine::{Next, PaymentEvent};
use super::model::{now_ms, Compensation, Payment, PaymentStatus, Refund};
use super::supervisor::JobKey;
use super::{await_answer, view, Asked, Canceled, NewRefund, PaymentError, Payments, Record, Ticket};
use crate::store::{Commit, PaymentIndex, Window};

/// Why compensation refunds are made.
const REASON: &str = "purchase_canceled";

impl Payments {
    /// Cancels a payment that has taken nothing (a waiting card is canceled at the
    /// provider first). When it belongs to an unfinished split purchase, the purchase is
    /// abandoned: the legs that took money are refunded (compensation) and returned.
    pub async fn cancel(&self, id: &str, asked: Asked) -> Result<Canceled, PaymentError> {
        let current = self.get(id).await?;
        if matches!(current.status, PaymentStatus::AwaitingCard | PaymentStatus::Processing) && self.is_card_payment(&current) {
            self.cancel_card_at_provider(&current).await?;
        }
        let ticket = asked.ticket.as_ref();
        let payment = {
            let _guard = self.lock_purchase(&current.id).await?;
            let before = self.load(&current.id).await?;
            let now = now_ms();
            let mut after = match super::machine::next(&before, PaymentEvent::Canceled, now)? {
                Next::Changed(after) => *after,
                Next::Unchanged => before.clone(),
            };
            let compensate =
                after.status == PaymentStatus::Canceled && after.compensation.is_none() && self.abandons_purchase(&after).await?;
            if compensate {
                if let Next::Changed(marked) = super::machine::next(&after, PaymentEvent::CompensationStarted, now)? {
                    after = *marked;
                }
            }
            let mut commit = Commit::default();
            if after != before {
                self.stage(&mut commit, Some(&before), after.clone()).await?;
            }
            let record = if after.compensation == Some(Compensation::Pending) {
                Record::open(ticket, 200, after.id.as_str())
            } else {
                Record::answer(ticket, 200)
            };
            // A cancel repeated after its compensation finished answers that compensation.
            let done = after.compensation == Some(Compensation::Done);
            let body = if done { Some(canceled_body(&after, &self.compensation_refunds(&after).await?)) } else { None };
            Self::record(&mut commit, record, &after, body);
            if !commit.is_empty() {
                self.save(commit).await?;
            }
            after
        };
        if payment.compensation != Some(Compensation::Pending) {
            let compensation =
                if payment.compensation == Some(Compensation::Done) { self.compensation_refunds(&payment).await? } else { Vec::new() };
            return Ok(Canceled { payment, compensation });
        }
        let (reply, answer) = oneshot::channel();
        start_compensation(self, payment.clone(), asked.ticket.clone(), Some(reply));
        match await_answer(answer, asked.patience).await {
            Some(result) => result,
            None => Ok(Canceled { payment: self.load(&payment.id).await?, compensation: self.compensation_refunds(&payment).await? }),
        }
    }

    /// Canceling `leg` abandons its purchase: it is a leg, the purchase is not complete,
    /// and no leg created after it took money.
    async fn abandons_purchase(&self, leg: &Payment) -> Result<bool, PaymentError> {
        if leg.split_of.is_none() {
            return Ok(false);
        }
        let legs = self.purchase_legs(leg).await?;
        let root = &legs[0];
        let completed = root.remaining_amount().0 == 0;
        let later_paid =
            legs.iter().any(|other| other.created_at > leg.created_at && other.id != leg.id && other.status == PaymentStatus::Succeeded);
        Ok(!completed && !later_paid)
    }

    /// The saga: refund what is refundable of every leg (a re-run after a crash refunds
    /// only what is still refundable), then mark the compensation done, answering the
    /// cancel in the same commit.
    async fn compensate(&self, leg: &Payment, ticket: Option<&Ticket>) -> Result<Canceled, PaymentError> {
        // A leg whose receipt was taken offline refunds only once the provider confirmed
        // it: the other legs are refunded meanwhile, and that one when it may be.
        let mut delays = super::supervisor::backoff(std::time::Duration::from_secs(2), std::time::Duration::from_secs(30));
        loop {
            match self.refund_purchase(leg, Some(REASON.into()), &leg.client).await {
                Err(PaymentError::NotConfirmedYet { payment, .. }) => {
                    tracing::info!(leg = %payment, "compensation waits for the provider to confirm a receipt taken offline");
                    tokio::time::sleep(delays.next().unwrap_or(std::time::Duration::from_secs(30))).await;
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        let compensation = self.compensation_refunds(leg).await?;
        let _guard = self.lock_purchase(&leg.id).await?;
        let before = self.load(&leg.id).await?;
        let mut commit = Commit::default();
        let after = match super::machine::next(&before, PaymentEvent::CompensationDone, now_ms())? {
            Next::Changed(after) => *after,
            Next::Unchanged => before.clone(),
        };
        if before.compensation != Some(Compensation::Done) {
            self.stage(&mut commit, Some(&before), after.clone()).await?;
        }
        let body = canceled_body(&after, &compensation);
        Self::record(&mut commit, Record::answer(ticket, 200), &after, Some(body));
        self.save(commit).await?;
        Ok(Canceled { payment: after, compensation })
    }

    /// The compensation refunds of a canceled leg's purchase.
    async fn compensation_refunds(&self, leg: &Payment) -> Result<Vec<Refund>, PaymentError> {
        let mut refunds = Vec::new();
        for other in self.purchase_legs(leg).await? {
            let (found, _) = self.list_refunds(usize::MAX, Some(other.id.as_str()), None).await?;
            refunds.extend(found.into_iter().filter(|refund| refund.reason.as_deref() == Some(REASON)));
        }
        refunds.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(refunds)
    }

    /// The first payment of the purchase `payment` belongs to.
    async fn purchase_root(&self, payment: &Payment) -> Result<Payment, PaymentError> {
        let mut root = payment.clone();
        while let Some(parent) = root.split_of.clone() {
            // A parent past its retention is gone: the purchase starts at what is left.
            let Some(found) = self.store.payment(&parent).await? else { break };
            root = found;
        }
        Ok(root)
    }

    /// Every payment of the purchase `payment` belongs to, first one first: the root,
    /// then its legs (and theirs) through the legs index.
    async fn purchase_legs(&self, payment: &Payment) -> Result<Vec<Payment>, PaymentError> {
        let root = self.purchase_root(payment).await?;
        let mut legs = vec![root];
        let mut next = 0;
        while next < legs.len() {
            let parent = legs[next].id.clone();
            let mut children: Vec<Payment> = self.store.payments(&[PaymentIndex::LegsOf(&parent)], &Window::default(), usize::MAX).await?;
            children.reverse(); // oldest first
            legs.extend(children);
            next += 1;
        }
        Ok(legs)
    }

    /// Refunds what is refundable of every succeeded leg of a purchase. A leg whose
    /// receipt taken offline is not confirmed yet does not stop the others: its
    /// `not_confirmed_yet` is answered after them.
    pub async fn refund_purchase(&self, payment: &Payment, reason: Option<String>, client: &str) -> Result<Vec<Refund>, PaymentError> {
        let mut refunds = Vec::new();
        let mut waiting = None;
        for leg in self.purchase_legs(payment).await? {
            if leg.status == PaymentStatus::Succeeded && leg.refundable_amount().0 > 0 {
                let request = NewRefund {
                    payment: Some(leg.id.to_string()),
                    method: None,
                    transaction_id: None,
                    amount: None,
                    currency: None,
                    reason: reason.clone(),
                    client: client.to_string(),
                };
                match self.refund(request, Asked::default()).await {
                    Err(error @ PaymentError::NotConfirmedYet { .. }) => waiting = waiting.or(Some(error)),
                    other => refunds.push(other?),
                }
            }
        }
        match waiting {
            Some(error) => Err(error),
            None => Ok(refunds),
        }
    }
}

/// The cancel's answer: the payment and its compensation refunds.
pub fn canceled_body(payment: &Payment, compensation: &[Refund]) -> serde_json::Value {
    let mut body = view::payment(payment);
    if !compensation.is_empty() {
        body["compensation"] = compensation.iter().map(view::refund).collect();
    }
    body
}

type Reply = oneshot::Sender<Result<Canceled, PaymentError>>;

fn start_compensation(payments: &Payments, leg: Payment, ticket: Option<Ticket>, reply: Option<Reply>) {
    let me: Arc<Payments> = payments.owned();
    let key = JobKey::Payment(leg.id.clone());
    let started = payments.jobs.start(key, move |_| async move {
        let result = me.compensate(&leg, ticket.as_ref()).await;
        if let Err(error) = &result {
            tracing::error!(payment = %leg.id, %error, "compensation of a canceled purchase did not finish; it resumes at the next start");
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    });
    if started.is_err() {
        tracing::debug!("compensation already under way");
    }
}

/// Finishes a compensation a crash interrupted.
pub(super) fn resume_compensation(payments: &Payments, leg: Payment) {
    start_compensation(payments, leg, None, None);
}
