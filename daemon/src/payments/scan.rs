//! Scanned codes and manual entries: offline inspection, write-ahead, redemption at
//! the provider, all inside the payment's job, so a POS that hangs up mid-scan never
//! strands the payment. An outcome the provider could not confirm keeps the payment
//! `processing` and the same job looks it up (`recovery.rs`).

use std::sync::Arc;

use tokio::sync::oneshot;

use super::machine::{self, PaymentEvent};
use super::model::{now_ms, Amount, Attempt, Failure, Payment, PaymentId, PaymentStatus};
use super::provider::{CallContext, Inspected, ManualEntry, Provider, ProviderError, Settlement};
use super::supervisor::{JobControl, JobKey};
use super::{await_answer, failure_of, offline, outcome_unknown, receipt_used_by, recovery, Asked, PaymentError, Payments, Record, Ticket};
use crate::plugins::Method;

type Reply = oneshot::Sender<Result<Payment, PaymentError>>;

impl Payments {
    /// Applies a scanned code. A refused code leaves the payment `failed` (answered, not
    /// an error); an outcome the provider could not confirm leaves it `processing` while
    /// its job looks it up.
    pub async fn scan(&self, id: &str, code: &str, asked: Asked) -> Result<Payment, PaymentError> {
        let current = self.get(id).await?;
        let method = self.method(&current.method)?;
        Self::require(&method, |able| able.scan, "scanned codes")?;
        let (reply, answer) = oneshot::channel();
        self.start_scan(current.id.clone(), method, code.to_string(), asked.ticket.clone(), reply, true).await?;
        match await_answer(answer, asked.patience).await {
            Some(result) => result,
            None => self.get(id).await,
        }
    }

    /// Hands a code from a register's scanner to that register's newest payment awaiting
    /// a scan, without waiting for the provider (one slow provider must not hold other
    /// registers' scans). `None` when no payment awaits one.
    pub async fn scan_waiting(&self, register: &str, code: &str) -> Result<Option<Payment>, PaymentError> {
        let now = now_ms();
        let candidates: Vec<PaymentId> = {
            let expiring = self.expiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            expiring.iter().rev().filter(|(_, expires_at)| **expires_at > now).map(|(id, _)| id.clone()).collect()
        };
        for id in candidates {
            let Some(payment) = self.store.payment(&id).await? else { continue };
            if payment.register == register && payment.status.accepts_scan() {
                let method = self.method(&payment.method)?;
                Self::require(&method, |able| able.scan, "scanned codes")?;
                let (reply, _answer) = oneshot::channel();
                self.start_scan(id, method, code.to_string(), None, reply, false).await?;
                return Ok(Some(payment));
            }
        }
        Ok(None)
    }

    /// Starts the payment's scan job. A job still live for it (a concurrent scan, or
    /// one just ending) is waited for when the payment still takes scans and the caller
    /// may wait (`wait_if_busy`; the scanner hub may not: it is refused instead).
    async fn start_scan(
        &self,
        id: PaymentId,
        method: Method,
        code: String,
        ticket: Option<Ticket>,
        reply: Reply,
        wait_if_busy: bool,
    ) -> Result<(), PaymentError> {
        let mut job = Some((method, code, ticket, reply));
        loop {
            machine::check_scannable(&self.load(&id).await?, now_ms(), "scanned")?;
            let me = self.owned();
            let key = JobKey::Payment(id.clone());
            let job_id = id.clone();
            let mut parts = job.take();
            let started = self.jobs.start(key, |control| {
                let (method, code, ticket, reply) = parts.take().expect("started once");
                async move { me.scan_job(method, job_id, code, ticket, reply, control).await }
            });
            match started {
                Ok(_) => return Ok(()),
                Err(_) if !wait_if_busy => return Err(PaymentError::InvalidState { status: PaymentStatus::Processing, action: "scanned" }),
                Err(busy) => {
                    job = parts.take();
                    busy.finished().await;
                }
            }
        }
    }

    async fn scan_job(
        self: Arc<Self>,
        method: Method,
        id: PaymentId,
        code: String,
        ticket: Option<Ticket>,
        reply: Reply,
        control: JobControl,
    ) {
        let outcome = self.attempt(&method, &id, code, ticket.as_ref()).await;
        let unresolved = match &outcome {
            Ok(payment) => payment.status == PaymentStatus::Processing,
            Err(error) => is_unrecorded(error),
        };
        let owes_check = matches!(&outcome, Ok(payment) if offline::owes_check(payment));
        let _ = reply.send(outcome);
        if unresolved {
            recovery::follow(&self, &method, &id, ticket.as_ref(), &control).await;
        }
        if owes_check {
            self.follow_offline_check(&method, &id, &control).await;
        }
    }

    /// Inspect offline → write-ahead → redeem → settle. A plugin that can read a code
    /// without its signature check (`read_code`) has what it read written ahead while
    /// `inspect_code` checks the signature beside it: the scan waits for the longer of
    /// the two, not both.
    async fn attempt(&self, method: &Method, id: &PaymentId, code: String, ticket: Option<&Ticket>) -> Result<Payment, PaymentError> {
        let payment = self.load(id).await?;
        machine::check_scannable(&payment, now_ms(), "scanned")?;
        // Every call of this attempt carries the next attempt's id (the payment's
        // context before the write-ahead names it).
        let context = Self::context(&payment, method);
        // While the provider is known to be down, whether a receipt is taken offline is
        // decided on the checked code, before the write-ahead: no overlap then.
        let offline_now = method.offline.is_some() && self.line_down(&method.id);
        let inspected =
            if offline_now { method.inspect_code(context, code.clone()).await } else { method.read_code(context, code.clone()).await };
        let inspected = match inspected {
            Ok(read) if read.signature_deferred => return self.attempt_overlapped(method, &payment, code, read, ticket).await,
            Ok(inspected) => inspected,
            Err(error) => return self.refused_code(&payment, &code, error, ticket).await,
        };
        if let Some(refused) = self.redeemed_elsewhere(id, &inspected, ticket).await? {
            return Ok(refused);
        }
        // The provider is known to be down: a receipt within the offline limits is taken
        // without asking it (the decision held until it is committed); any other tries
        // online, as the provider may be back.
        let mut offline_gate = None;
        if let Some(policy) = method.offline.filter(|_| offline_now) {
            let gate = self.offline_gate().await;
            if self.offline_verdict(&method.id, &policy, &inspected).await?.is_ok() {
                offline_gate = Some(gate);
            }
        }
        let payment = match self.write_ahead(method, &payment, code.clone(), &inspected, ticket).await? {
            Ok(payment) => payment,
            Err(refused) => return Ok(refused),
        };
        if offline_gate.is_some() {
            return self.take_offline(id, false, inspected.signature_verified, ticket).await;
        }
        self.redeem_attempt(method, &payment, code, inspected, ticket).await
    }

    /// The write-ahead of what the plugin read, and `inspect_code`, together; the
    /// provider is asked only once both are done and the inspection agrees.
    async fn attempt_overlapped(
        &self,
        method: &Method,
        payment: &Payment,
        code: String,
        read: Inspected,
        ticket: Option<&Ticket>,
    ) -> Result<Payment, PaymentError> {
        let id = &payment.id;
        if let Some(refused) = self.redeemed_elsewhere(id, &read, ticket).await? {
            return Ok(refused);
        }
        let (checked, written) = tokio::join!(
            method.inspect_code(Self::context(payment, method), code.clone()),
            self.write_ahead(method, payment, code.clone(), &read, ticket)
        );
        let payment = match written? {
            Ok(payment) => payment,
            Err(refused) => return Ok(refused),
        };
        let inspected = match checked {
            Ok(inspected) if inspected.agrees_with(&read) => inspected,
            Ok(_) => {
                let failure = Failure {
                    code: "plugin_error".into(),
                    message: "the plugin read the code differently before and after checking its signature; it was not redeemed".into(),
                    retryable: false,
                };
                return self.fail_attempt(id, failure, ticket).await;
            }
            // Refused before the provider was asked: the write-ahead's reservation goes.
            Err(error) => return self.refused_code(&payment, &code, error, ticket).await,
        };
        self.redeem_attempt(method, &payment, code, inspected, ticket).await
    }

    /// A code the plugin refused offline: the attempt fails with the plugin's reason.
    async fn refused_code(
        &self,
        payment: &Payment,
        code: &str,
        error: ProviderError,
        ticket: Option<&Ticket>,
    ) -> Result<Payment, PaymentError> {
        let failure = failure_of(&error);
        if matches!(error, ProviderError::Failed(_)) && !error.retryable() {
            self.note_refused_code(&payment.method, &payment.register, code, &failure);
        }
        self.fail_attempt(&payment.id, failure, ticket).await
    }

    /// Ends the attempt failed with `failure` (its receipt reservation released), the
    /// POS's answer recorded.
    async fn fail_attempt(&self, id: &PaymentId, failure: Failure, ticket: Option<&Ticket>) -> Result<Payment, PaymentError> {
        self.transition(id, PaymentEvent::AttemptFailed(failure), Record::answer(ticket, 200)).await
    }

    /// The attempt's failure when another payment already holds its receipt.
    async fn redeemed_elsewhere(
        &self,
        id: &PaymentId,
        inspected: &Inspected,
        ticket: Option<&Ticket>,
    ) -> Result<Option<Payment>, PaymentError> {
        let Some(holder) = self.store.redeemed_by(&inspected.receipt_key).await?.filter(|holder| holder != id) else {
            return Ok(None);
        };
        self.fail_attempt(id, receipt_used_by(&holder), ticket).await.map(Some)
    }

    /// Records the attempt durably (its receipt reserved) before the provider is asked:
    /// `Ok(Ok(processing))`, or `Ok(Err(failed))` when another payment took the receipt
    /// meanwhile.
    async fn write_ahead(
        &self,
        method: &Method,
        payment: &Payment,
        code: String,
        inspected: &Inspected,
        ticket: Option<&Ticket>,
    ) -> Result<Result<Payment, Payment>, PaymentError> {
        let started_at = now_ms();
        let attempt = Attempt {
            number: payment.attempts + 1,
            code,
            key: inspected.receipt_key.clone(),
            transaction: inspected.transaction_id.clone(),
            amount: inspected.amount.map(Amount),
            signature_verified: inspected.signature_verified,
            plugin_data: inspected.plugin_data.clone(),
            started_at,
            deadline_at: started_at + Self::plugin_budget(method),
            issued_at: inspected.issued_at_unix_ms,
        };
        let id = &payment.id;
        match self.transition(id, PaymentEvent::AttemptStarted(attempt), Record::open(ticket, 200, id.as_str())).await {
            Ok(payment) => Ok(Ok(payment)),
            Err(PaymentError::ReceiptAlreadyUsed { holder }) => self.fail_attempt(id, receipt_used_by(&holder), ticket).await.map(Err),
            Err(error) => Err(error),
        }
    }

    /// Asks the provider to redeem the written-ahead attempt and records the outcome.
    async fn redeem_attempt(
        &self,
        method: &Method,
        payment: &Payment,
        code: String,
        inspected: Inspected,
        ticket: Option<&Ticket>,
    ) -> Result<Payment, PaymentError> {
        let deadline = payment.attempt.as_ref().map_or(0, |attempt| attempt.deadline_at);
        let context = CallContext { deadline_unix_ms: deadline, ..Self::context(payment, method) };
        match method.redeem(context, code, inspected.clone()).await {
            Err(error) if method.offline.is_some() && offline::unreachable(&error) => {
                self.redeem_unreachable(method, &payment.id, &inspected, error, ticket).await
            }
            answered => {
                if answered.is_ok() {
                    self.mark_up(&method.id);
                }
                self.finish_attempt(&payment.id, answered, ticket).await
            }
        }
    }

    /// The provider could not be reached for this attempt: its receipt (`inspected`, as
    /// checked) is taken offline if it is within the method's limits. Otherwise it fails
    /// with the limit's code, or (when the check may have reached the provider) stays
    /// `processing` and is looked up.
    async fn redeem_unreachable(
        &self,
        method: &Method,
        id: &PaymentId,
        inspected: &Inspected,
        error: ProviderError,
        ticket: Option<&Ticket>,
    ) -> Result<Payment, PaymentError> {
        self.mark_down(method);
        let policy = method.offline.expect("called for a method with offline acceptance");
        let _gate = self.offline_gate().await;
        let sent = outcome_unknown(&error);
        match self.offline_verdict(&method.id, &policy, inspected).await? {
            Ok(()) => self.take_offline(id, sent, inspected.signature_verified, ticket).await,
            Err(failure) if !sent => self.fail_attempt(id, failure, ticket).await,
            Err(_) => self.finish_attempt(id, Err(error), ticket).await,
        }
    }

    /// Records the end of an attempt: success, failure, or (unknown outcome) nothing yet.
    async fn finish_attempt(
        &self,
        id: &PaymentId,
        outcome: Result<Settlement, ProviderError>,
        ticket: Option<&Ticket>,
    ) -> Result<Payment, PaymentError> {
        match outcome {
            Ok(settlement) => match self.transition(id, PaymentEvent::Settled(settlement), Record::answer(ticket, 200)).await {
                // The provider took it; the store could not say so yet (a shared store's
                // database away, say). Never "nothing happened": the job looks the
                // payment up until the store records it.
                Err(PaymentError::Store(error)) => {
                    tracing::error!(payment = %id, %error, "the provider took the payment but the store could not record it yet; its job keeps trying");
                    Err(unrecorded())
                }
                other => other,
            },
            Err(error) if outcome_unknown(&error) => {
                tracing::warn!(payment = %id, %error, "provider outcome unknown; the payment's job looks it up");
                self.load(id).await
            }
            Err(error) => self.fail_attempt(id, failure_of(&error), ticket).await,
        }
    }

    /// A payment the cashier entered by hand (unverified). A refused entry leaves the
    /// payment as it was and answers the reason (a typo is not a failed payment).
    pub async fn manual(&self, id: &str, amount: Amount, transaction_id: Option<String>, asked: Asked) -> Result<Payment, PaymentError> {
        let current = self.get(id).await?;
        let method = self.method(&current.method)?;
        Self::require(&method, |able| able.manual_entry, "manual entry")?;
        let holder = match transaction_id.as_deref() {
            Some(transaction_id) => self.store.redeemed_by(transaction_id).await?,
            None => None,
        };
        if let Some(holder) = holder {
            return Err(PaymentError::Provider {
                code: "receipt_already_used".into(),
                message: format!("this transaction already paid {holder}"),
                field: Some("transaction_id".into()),
            });
        }
        machine::check_scannable(&current, now_ms(), "entered by hand")?;
        let (reply, answer) = oneshot::channel();
        let me = self.owned();
        let entry = ManualEntry { amount: amount.0, transaction_id };
        let ticket = asked.ticket.clone();
        let payment_id = current.id.clone();
        self.jobs
            .start(JobKey::Payment(current.id.clone()), move |_| async move {
                let _ = reply.send(me.enter(&method, &payment_id, entry, ticket.as_ref()).await);
            })
            .map_err(|_| PaymentError::InvalidState { status: PaymentStatus::Processing, action: "entered by hand" })?;
        match await_answer(answer, asked.patience).await {
            Some(result) => result,
            None => self.get(id).await,
        }
    }

    async fn enter(&self, method: &Method, id: &PaymentId, entry: ManualEntry, ticket: Option<&Ticket>) -> Result<Payment, PaymentError> {
        let payment = self.load(id).await?;
        machine::check_scannable(&payment, now_ms(), "entered by hand")?;
        match method.accept_manual(Self::context(&payment, method), entry).await {
            Ok(settlement) => self.transition(id, PaymentEvent::Settled(settlement), Record::answer(ticket, 200)).await,
            Err(ProviderError::Failed(refusal)) => {
                Err(PaymentError::Provider { code: refusal.code, message: refusal.message, field: refusal.field })
            }
            Err(other) => Err(other.into()),
        }
    }
}

/// The answer when the provider took a payment the store could not record yet: the
/// `outcome_unknown` failure (the payment stays `processing`; follow it).
fn unrecorded() -> PaymentError {
    PaymentError::Provider {
        code: "outcome_unknown".into(),
        message: "the provider took this payment but posbridge could not record it yet; it keeps trying: follow the payment".into(),
        field: None,
    }
}

fn is_unrecorded(error: &PaymentError) -> bool {
    matches!(error, PaymentError::Provider { code, .. } if code == "outcome_unknown")
}
