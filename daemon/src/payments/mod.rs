//! Payments: the engine. It owns every payment's lifecycle: the state machine
//! (`machine.rs`, pure), the write-ahead protocol around provider calls, and the jobs
//! (`supervisor.rs`) that carry each provider interaction to its end whatever happens
//! to the request that asked for it.
//!
//! Every change is one [`Commit`](crate::store::Commit) (payment + journal event +
//! receipt reservation + leg reservation on the parent + the idempotency record that
//! answers it), applied under its purchase's lock after re-reading the payment, and flushed
//! before anyone is answered. Provider calls happen outside the lock, inside jobs.

mod card;
pub mod error;
pub mod failure;
mod locks;
pub mod machine;
pub mod model;
mod offline;
pub mod provider;
mod purchase;
mod recovery;
mod refunds;
mod scan;
pub mod supervisor;
pub mod view;

pub use offline::{exposure_in, OfflineExposure};
pub use purchase::canceled_body;
pub use refunds::NewRefund;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub use error::PaymentError;
use machine::{Next, PaymentEvent};
use model::{now_ms, Amount, Currency, Failure, Line, Millis, Payment, PaymentId, PaymentStatus, Refund};
use provider::{Abilities, CallContext, CartItem, Provider, ProviderError};
use supervisor::{JobKey, Supervisor};

use crate::plugins::Method;
use crate::snapshot::Live;
use crate::store::{Commit, Event, IdempotencyRecord, PaymentIndex, Store, StoreError, Window};

/// Settings of the payment sessions.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// How long a payment waits for a scan before it expires.
    pub scan_timeout: Duration,
    /// How long a card payment waits for the customer before it is canceled.
    pub card_timeout: Duration,
    /// Registers known to the config; empty accepts any register name.
    pub registers: Vec<String>,
}

/// A request to create a payment.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub method: String,
    pub amount: Amount,
    pub currency: Currency,
    pub reference: Option<String>,
    pub register: String,
    pub lines: Option<Vec<Line>>,
    pub split_of: Option<PaymentId>,
    /// The API client creating it.
    pub client: String,
}

/// A canceled payment and the refunds that undid the rest of its purchase.
#[derive(Debug, Clone)]
pub struct Canceled {
    pub payment: Payment,
    pub compensation: Vec<Refund>,
}

/// Filters of the payment history.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only these registers' payments (a till's view); `None`: every register.
    pub registers: Option<Vec<String>>,
    pub register: Option<String>,
    /// The POS's reference (receipt number).
    pub reference: Option<String>,
    pub status: Option<PaymentStatus>,
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    pub limit: usize,
    pub starting_after: Option<PaymentId>,
}

/// A request's `Idempotency-Key`, scoped to its client, with the request's fingerprint:
/// the engine writes the answer in the commit that makes it true.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub key: String,
    pub fingerprint: String,
}

/// How a request asks the engine: its idempotency ticket, and how long the POS waits
/// for the job's answer before it takes the current state instead.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    pub ticket: Option<Ticket>,
    pub patience: Option<Duration>,
}

/// What a commit does with a request's idempotency record.
#[derive(Clone, Copy)]
enum Record<'a> {
    /// Not asked with a key (or not the commit that answers).
    Nothing,
    /// The work started: a retry joins it instead of starting it again.
    Open { ticket: &'a Ticket, status: u16, target: &'a str },
    /// The commit answers the request with the payment it stores (HTTP `status`).
    Answer { ticket: &'a Ticket, status: u16 },
}

impl<'a> Record<'a> {
    fn open(ticket: Option<&'a Ticket>, status: u16, target: &'a str) -> Record<'a> {
        ticket.map_or(Record::Nothing, |ticket| Record::Open { ticket, status, target })
    }

    fn answer(ticket: Option<&'a Ticket>, status: u16) -> Record<'a> {
        ticket.map_or(Record::Nothing, |ticket| Record::Answer { ticket, status })
    }
}

fn stored_record(ticket: &Ticket, status: u16, body: Option<String>, target: &str) -> (String, Option<IdempotencyRecord>) {
    let record =
        IdempotencyRecord { fingerprint: ticket.fingerprint.clone(), status, body, target: Some(target.to_string()), created_at: now_ms() };
    (ticket.key.clone(), Some(record))
}

/// The idempotency entry for an answer `body` about `target`: stored when the failure
/// table says it may be replayed, still open while the work goes on, else forgotten.
fn answering(
    ticket: &Ticket,
    status: u16,
    target: &str,
    body: serde_json::Value,
    failure: Option<&Failure>,
    open: bool,
) -> (String, Option<IdempotencyRecord>) {
    if open {
        return stored_record(ticket, status, None, target);
    }
    match failure {
        Some(failure) if !failure::class_of(&failure.code).replayable => (ticket.key.clone(), None),
        _ => stored_record(ticket, status, Some(body.to_string()), target),
    }
}

/// Work the engine could not resume because its method is not configured (after a
/// restart without it): shown on `/readyz` and the status page until it comes back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Orphan {
    /// `card_payment`, `lookup`, `refund` or `compensation`.
    pub work: String,
    /// The payment or refund.
    pub id: String,
    /// The method it needs.
    pub method: String,
}

pub(crate) fn failure_of(error: &ProviderError) -> Failure {
    match error {
        ProviderError::Failed(refusal) => {
            Failure { code: refusal.code.clone(), message: refusal.message.clone(), retryable: error.retryable() }
        }
        other => Failure { code: "provider_error".into(), message: other.to_string(), retryable: true },
    }
}

/// The provider may have acted: the attempt stays open and is looked up.
pub(crate) fn outcome_unknown(error: &ProviderError) -> bool {
    failure::class_of(error.code()).outcome_unknown
}

/// Logs every stored change with the ids a technician searches by (posbridge's, the
/// POS's reference, the provider's transaction), and counts outcomes.
fn observe(commit: &Commit) {
    for payment in &commit.payments {
        tracing::info!(
            payment = %payment.id,
            reference = payment.reference.as_deref().unwrap_or("-"),
            transaction_id = payment.transaction_id.as_deref().or(payment.attempt.as_ref().map(|attempt| attempt.transaction.as_deref().unwrap_or(&attempt.key))).unwrap_or("-"),
            method = %payment.method,
            register = %payment.register,
            status = %payment.status,
            version = payment.version,
            failure = payment.failure.as_ref().map(|failure| failure.code.as_str()).unwrap_or("-"),
            "payment updated"
        );
        if payment.status.is_final() || payment.status == PaymentStatus::Failed {
            crate::metrics::record_payment(&payment.method, payment.status.as_str());
        }
    }
    for refund in &commit.refunds {
        let status = serde_json::to_value(refund.status).ok().and_then(|value| value.as_str().map(str::to_string)).unwrap_or_default();
        tracing::info!(refund = %refund.id, payment = refund.payment.as_ref().map(|id| id.as_str()).unwrap_or("-"), transaction_id = refund.transaction_id.as_deref().unwrap_or("-"), method = %refund.method, amount = refund.amount.0, status = %status, "refund updated");
        if refund.status != model::RefundStatus::Pending {
            crate::metrics::record_refund(&refund.method, &status);
        }
    }
}

/// The first `limit` records that `keep` accepts, and whether one more exists: a page
/// of a list read newest first.
fn page<T>(mut records: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let more = records.len() > limit;
    records.truncate(limit);
    (records, more)
}

/// The payment service: owns the payment lifecycle.
/// How many refused codes the status page shows.
pub const REFUSED_CODES_KEPT: usize = 20;

/// A scanned code a plugin refused, as the status page shows it: never the code itself
/// (a receipt is a bearer token until redeemed), only the start of its SHA-256.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct RefusedCode {
    /// RFC 3339.
    pub at: String,
    pub method: String,
    pub register: String,
    /// The first 16 hex digits of the SHA-256 of the code as scanned (trimmed).
    pub code_sha256: String,
    /// The failure code (`invalid_code`, `bad_signature`, `wrong_venue`…).
    pub reason: String,
    pub message: String,
}

pub struct Payments {
    store: Store,
    live: Live,
    /// Serializes changes per purchase.
    locks: locks::PurchaseLocks,
    /// Payments that can still expire: id → expires_at.
    expiring: Mutex<BTreeMap<PaymentId, Millis>>,
    jobs: Arc<Supervisor>,
    /// Work waiting for its method to be configured again, by payment or refund id.
    orphans: Mutex<BTreeMap<String, Orphan>>,
    /// Recent unclaimed scan codes by their SHA-256 (never stored).
    unclaimed: Mutex<std::collections::VecDeque<(String, String)>>,
    /// The last codes a plugin could not read, for the status page (hashed, never the code).
    refused_codes: Mutex<std::collections::VecDeque<RefusedCode>>,
    /// Which providers are down, and the one-at-a-time offline decision.
    offline: offline::OfflineDesk,
    /// This service, for the jobs it starts.
    me: Weak<Payments>,
}

impl Payments {
    /// The service over an open store and the live config snapshot.
    pub fn new(store: Store, live: Live) -> Arc<Payments> {
        let jobs = Arc::new(match store.is_shared() {
            true => Supervisor::leased(supervisor::Leases { store: store.clone(), ttl: live.load().config.store.lease }),
            false => Supervisor::default(),
        });
        Arc::new_cyclic(|me| Payments {
            store,
            live,
            locks: locks::PurchaseLocks::default(),
            expiring: Mutex::new(BTreeMap::new()),
            jobs,
            orphans: Mutex::new(BTreeMap::new()),
            unclaimed: Mutex::default(),
            refused_codes: Mutex::default(),
            offline: offline::OfflineDesk::default(),
            me: me.clone(),
        })
    }

    /// The store, for readers (events, idempotency).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This service as an owned handle, for a job.
    fn owned(&self) -> Arc<Payments> {
        self.me.upgrade().expect("the service outlives its requests")
    }

    /// A method of the current config, for new payments.
    fn current_method(&self, id: &str) -> Result<Method, PaymentError> {
        self.live.load().methods.get(id).cloned().ok_or_else(|| PaymentError::UnknownMethod(id.to_string()))
    }

    /// The method of existing work: current, or retired by a reload. After a restart
    /// without it, the work waits: `method_not_configured`.
    fn method(&self, id: &str) -> Result<Method, PaymentError> {
        self.live.load().methods.get_any(id).cloned().ok_or_else(|| PaymentError::MethodNotConfigured(id.to_string()))
    }

    fn require(method: &Method, able: impl Fn(&Abilities) -> bool, operation: &'static str) -> Result<(), PaymentError> {
        if able(&method.abilities) {
            Ok(())
        } else {
            Err(PaymentError::Unsupported { method: method.id.clone(), operation })
        }
    }

    /// What a provider call about `payment` needs to know.
    fn context(payment: &Payment, method: &Method) -> CallContext {
        CallContext {
            payment_id: payment.id.to_string(),
            attempt_id: payment.attempt_id(),
            register: payment.register.clone(),
            reference: payment.reference.clone(),
            currency: payment.currency.as_str().to_string(),
            amount_due: payment.remaining_amount().0,
            eligible_amount: payment.eligible_due().0,
            deadline_unix_ms: now_ms() + Self::plugin_budget(method),
        }
    }

    /// How long a plugin may work on a call: the method's timeout less a margin, so the
    /// plugin gives up (and says why) before the host stops waiting.
    fn plugin_budget(method: &Method) -> i64 {
        let timeout = method.timeout.as_millis() as i64;
        timeout - (timeout / 10).min(1000)
    }

    /// Reads a payment.
    pub async fn get(&self, id: &str) -> Result<Payment, PaymentError> {
        let parsed = PaymentId::parse(id).ok_or_else(|| PaymentError::NotFound(id.to_string()))?;
        self.load(&parsed).await
    }

    async fn load(&self, id: &PaymentId) -> Result<Payment, PaymentError> {
        self.store.payment(id).await?.ok_or_else(|| PaymentError::NotFound(id.to_string()))
    }

    /// Applies and flushes a commit, keeping the expiry index in step.
    async fn save(&self, mut commit: Commit) -> Result<Vec<Event>, PaymentError> {
        commit.lease = supervisor::current_lease();
        let events = self.store.commit(&commit).await?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("engine-after-commit", |_| Err(PaymentError::Store(StoreError::Corrupt {
            key: "failpoint".into(),
            reason: "injected after the commit".into()
        })));
        observe(&commit);
        for payment in &commit.payments {
            self.offline.note(payment);
        }
        let mut expiring = self.expiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for payment in &commit.payments {
            // Card payments time out through their job, which cancels at the provider.
            if payment.status.accepts_scan() {
                expiring.insert(payment.id.clone(), payment.expires_at);
            } else {
                expiring.remove(&payment.id);
            }
        }
        Ok(events)
    }

    /// Adds `after` (the next state of `before`) to `commit` with its event, its receipt
    /// reservations and what it does to its parent's leg reservations.
    async fn stage(&self, commit: &mut Commit, before: Option<&Payment>, after: Payment) -> Result<(), PaymentError> {
        if let Some(effect) = machine::leg_effect(before, &after) {
            let parent_id = after.split_of.clone().expect("a leg has a parent");
            let parent = match commit.payments.iter().find(|staged| staged.id == parent_id) {
                Some(staged) => staged.clone(),
                None => {
                    let parent = self.load(&parent_id).await?;
                    commit.read_at(&parent);
                    parent
                }
            };
            if let Next::Changed(parent) = machine::next(&parent, PaymentEvent::Leg(effect), now_ms())? {
                commit.payments.retain(|staged| staged.id != parent_id);
                commit.events.push(("payment.updated".into(), view::payment(&parent)));
                commit.payments.push(*parent);
            }
        }
        if let Some(before) = before {
            commit.read_at(before);
        }
        let attempt_before = before.and_then(|before| before.attempt.as_ref());
        if let Some(attempt) = after.attempt.as_ref().filter(|attempt| attempt_before != Some(*attempt)) {
            commit.reserve.push((attempt.key.clone(), after.id.clone()));
        }
        if let Some(attempt) = attempt_before.filter(|_| after.attempt.is_none() && after.status != PaymentStatus::Succeeded) {
            commit.release.push(attempt.key.clone());
        }
        if let Some(transaction_id) =
            after.transaction_id.as_ref().filter(|_| before.is_none_or(|before| before.transaction_id != after.transaction_id))
        {
            commit.reserve.push((transaction_id.clone(), after.id.clone()));
        }
        commit.events.push(("payment.updated".into(), view::payment(&after)));
        if crate::store::is_exception(&after) && !before.is_some_and(crate::store::is_exception) {
            commit.events.push(("exception.created".into(), view::exception(&after)));
        }
        commit.payments.push(after);
        Ok(())
    }

    /// Applies `event` to payment `id` under its purchase's lock and commits it with the
    /// request's idempotency `record`. Answers the payment as stored.
    async fn transition(&self, id: &PaymentId, event: PaymentEvent, record: Record<'_>) -> Result<Payment, PaymentError> {
        let _guard = self.lock_purchase(id).await?;
        let before = self.load(id).await?;
        let mut commit = Commit::default();
        let after = match machine::next(&before, event, now_ms())? {
            Next::Unchanged => before.clone(),
            Next::Changed(after) => {
                let after = *after;
                self.stage(&mut commit, Some(&before), after.clone()).await?;
                after
            }
        };
        Self::record(&mut commit, record, &after, None);
        if !commit.is_empty() {
            self.save(commit).await.map_err(receipt_taken)?;
        }
        Ok(after)
    }

    /// Locks the purchase `id` belongs to (its first payment's id: a payment's parent
    /// never changes, so the key is known before the lock is held).
    async fn lock_purchase(&self, id: &PaymentId) -> Result<tokio::sync::OwnedMutexGuard<()>, PaymentError> {
        let mut root = id.clone();
        while let Some(parent) = self.store.payment(&root).await?.and_then(|payment| payment.split_of) {
            root = parent;
        }
        Ok(self.locks.lock(root.as_str()).await)
    }

    /// Adds the request's idempotency entry for `payment` to `commit`.
    fn record(commit: &mut Commit, record: Record<'_>, payment: &Payment, body: Option<serde_json::Value>) {
        match record {
            Record::Nothing => {}
            Record::Open { ticket, status, target } => commit.idempotency.push(stored_record(ticket, status, None, target)),
            Record::Answer { ticket, status } => {
                let open = payment.status == PaymentStatus::Processing;
                let body = body.unwrap_or_else(|| view::payment(payment));
                commit.idempotency.push(answering(ticket, status, payment.id.as_str(), body, payment.failure.as_ref(), open));
            }
        }
    }

    /// Creates a payment: awaiting a scan, or (a card method) handed to its card job.
    pub async fn create(&self, request: NewPayment, asked: Asked) -> Result<Payment, PaymentError> {
        let snapshot = self.live.load_full();
        let method = self.current_method(&request.method)?;
        let settings = &snapshot.payments;
        if !settings.registers.is_empty() && !settings.registers.contains(&request.register) {
            return Err(PaymentError::UnknownRegister(request.register));
        }
        if request.amount.0 == 0 {
            return Err(PaymentError::Invalid { field: "amount", message: "the amount must be more than zero".into() });
        }
        let eligible = self.eligible(&method, &request).await?;
        if eligible.0 == 0 {
            return Err(PaymentError::NothingEligible(method.id.clone()));
        }
        let is_card = method.abilities.is_card_only();
        let now = now_ms();
        let timeout = if is_card { settings.card_timeout } else { settings.scan_timeout };
        let payment = Payment {
            id: PaymentId::new(now, self.store.unique().await?),
            status: if is_card { PaymentStatus::AwaitingCard } else { PaymentStatus::AwaitingScan },
            method: method.id.clone(),
            register: request.register,
            client: request.client,
            reference: request.reference,
            amount: request.amount,
            currency: request.currency,
            eligible_amount: eligible.min(request.amount),
            captured_amount: Amount(0),
            split_captured_amount: Amount(0),
            split_reserved_amount: Amount(0),
            refunded_amount: Amount(0),
            transaction_id: None,
            receipt_key: None,
            verified: None,
            benefit: None,
            failure: None,
            split_of: request.split_of,
            lines: request.lines.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            expires_at: now + timeout.as_millis() as i64,
            captured_at: None,
            version: 1,
            attempt: None,
            attempts: 0,
            plugin_data: None,
            next_action: None,
            cancel_requested_at: None,
            compensation: None,
            offline: None,
        };
        {
            let _guard = match &payment.split_of {
                Some(parent_id) => Some(self.lock_purchase(parent_id).await?),
                None => None, // a new purchase: nobody else knows its id yet
            };
            if let Some(parent_id) = &payment.split_of {
                self.split_parent(parent_id, &payment).await?;
            }
            let mut commit = Commit::default();
            self.stage(&mut commit, None, payment.clone()).await?;
            let ticket = asked.ticket.as_ref();
            let record = if is_card { Record::open(ticket, 201, payment.id.as_str()) } else { Record::answer(ticket, 201) };
            Self::record(&mut commit, record, &payment, None);
            // Write-ahead: the payment (and its leg's reservation) exists before any
            // provider hears of it.
            self.save(commit).await?;
        }
        if is_card {
            return card::begin(self, method, payment, asked).await;
        }
        Ok(payment)
    }

    async fn eligible(&self, method: &Method, request: &NewPayment) -> Result<Amount, PaymentError> {
        let Some(lines) = &request.lines else { return Ok(request.amount) };
        let sum = lines.iter().try_fold(Amount(0), |sum, line| sum.checked_add(line.amount));
        if sum != Some(request.amount) {
            return Err(PaymentError::LinesDoNotSum { lines: sum.unwrap_or(Amount(u64::MAX)), amount: request.amount });
        }
        let cart = lines
            .iter()
            .map(|line| CartItem { sku: line.sku.clone(), name: line.name.clone(), amount: line.amount.0, labels: line.labels.clone() })
            .collect();
        Ok(Amount(method.eligible_amount(cart).await?))
    }

    /// Checks a `split_of` parent: it exists, took part of the purchase, is in the same
    /// currency. (Whether the amount is still open is checked by the leg reservation in
    /// the same commit.)
    async fn split_parent(&self, parent_id: &PaymentId, leg: &Payment) -> Result<(), PaymentError> {
        let parent = self.store.payment(parent_id).await?.ok_or_else(|| PaymentError::SplitParentNotFound(parent_id.to_string()))?;
        let refuse = |reason: String| PaymentError::SplitNotPossible { parent: parent_id.clone(), reason };
        if parent.status != PaymentStatus::Succeeded {
            return Err(refuse(format!("it is {}, not succeeded", parent.status.as_str())));
        }
        if parent.currency != leg.currency {
            return Err(refuse("it is in another currency".into()));
        }
        if leg.amount > parent.remaining_amount() {
            return Err(refuse(format!("only {} of the purchase remains", parent.remaining_amount())));
        }
        Ok(())
    }

    /// Waits until the payment's version exceeds `version` or `wait` passes.
    pub async fn wait(&self, id: &str, version: u64, wait: Duration) -> Result<Payment, PaymentError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.store.subscribe();
        loop {
            changes.borrow_and_update();
            self.store.settled().await?;
            let payment = self.get(id).await?;
            if payment.version > version {
                return Ok(payment);
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                return Ok(payment);
            }
        }
    }

    /// Lists payments newest first, reading the narrowest index the query allows (never
    /// a walk over every payment): its reference, else its registers (with its status),
    /// else its status, else the time window of all payments.
    pub async fn list(&self, query: &ListQuery) -> Result<(Vec<Payment>, bool), PaymentError> {
        let registers: Option<Vec<&str>> = match (&query.register, &query.registers) {
            (Some(register), Some(allowed)) if !allowed.contains(register) => return Ok((Vec::new(), false)),
            (Some(register), _) => Some(vec![register.as_str()]),
            (None, Some(allowed)) => Some(allowed.iter().map(String::as_str).collect()),
            (None, None) => None,
        };
        let indexes: Vec<PaymentIndex<'_>> = match (&query.reference, &registers, query.status) {
            (Some(reference), _, _) => vec![PaymentIndex::Reference(reference)],
            (None, Some(registers), Some(status)) => {
                registers.iter().map(|register| PaymentIndex::RegisterStatus(register, status)).collect()
            }
            (None, Some(registers), None) => registers.iter().map(|register| PaymentIndex::Register(register)).collect(),
            (None, None, Some(status)) => vec![PaymentIndex::Status(status)],
            (None, None, None) => vec![PaymentIndex::All],
        };
        let mut window = Window { from: query.from, to: query.to, before: query.starting_after.as_ref().map(|id| id.to_string()) };
        let wanted = |payment: &Payment| {
            registers.as_ref().is_none_or(|registers| registers.contains(&payment.register.as_str()))
                && query.status.is_none_or(|status| payment.status == status)
        };
        // Every index but a reference's holds only what the query asks for; a
        // reference's spans registers and statuses, so read on until the page is full.
        let batch = query.limit.saturating_add(1);
        let mut kept = Vec::new();
        loop {
            let found = self.store.payments(&indexes, &window, batch).await?;
            let exhausted = found.len() < batch;
            window.before = found.last().map(|payment| payment.id.to_string());
            kept.extend(found.into_iter().filter(|payment| wanted(payment)));
            if exhausted || kept.len() > query.limit {
                return Ok(page(kept, query.limit));
            }
        }
    }

    /// Keeps an unclaimed scan's code in memory (the last few) and answers its SHA-256,
    /// which is all the journal keeps.
    pub fn remember_unclaimed(&self, code: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(code.as_bytes()));
        let mut recent = self.unclaimed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if recent.len() == UNCLAIMED_KEPT {
            recent.pop_front();
        }
        recent.push_back((digest.clone(), code.to_string()));
        digest
    }

    /// Notes a code the method's plugin refused to read (a receipt that does not parse,
    /// verify or match), keeping the last [`REFUSED_CODES_KEPT`]: a technician meeting a
    /// first real receipt sees why without anyone copying the code.
    pub(crate) fn note_refused_code(&self, method: &str, register: &str, code: &str, failure: &Failure) {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(code.trim().as_bytes()));
        let refused = RefusedCode {
            at: model::rfc3339(now_ms()),
            method: method.to_string(),
            register: register.to_string(),
            code_sha256: digest[..16].to_string(),
            reason: failure.code.clone(),
            message: failure.message.clone(),
        };
        let mut recent = self.refused_codes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if recent.len() == REFUSED_CODES_KEPT {
            recent.pop_front();
        }
        recent.push_back(refused);
    }

    /// The codes refused lately, newest first.
    pub fn refused_codes(&self) -> Vec<RefusedCode> {
        self.refused_codes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().rev().cloned().collect()
    }

    /// The code of a recent unclaimed scan, by its SHA-256.
    pub fn unclaimed_code(&self, digest: &str) -> Option<String> {
        let recent = self.unclaimed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        recent.iter().rev().find(|(known, _)| known == digest).map(|(_, code)| code.clone())
    }

    /// Records an event that is not a payment change (scanner connected, unclaimed scan).
    pub async fn announce(&self, kind: &str, data: serde_json::Value) -> Result<(), PaymentError> {
        self.save(Commit { events: vec![(kind.to_string(), data)], ..Commit::default() }).await?;
        Ok(())
    }

    /// Expires every payment whose time is up. Called periodically.
    pub async fn expire_due(&self) -> Result<usize, PaymentError> {
        let now = now_ms();
        let due: Vec<PaymentId> = {
            let expiring = self.expiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            expiring.iter().filter(|(_, at)| **at <= now).map(|(id, _)| id.clone()).collect()
        };
        let mut expired = 0;
        for id in due {
            if self.jobs.live(&JobKey::Payment(id.clone())).is_some() {
                continue; // an attempt that started in time finishes first
            }
            match self.transition(&id, PaymentEvent::Expired, Record::Nothing).await {
                Ok(payment) if payment.status == PaymentStatus::Expired => expired += 1,
                Ok(payment) if payment.status.accepts_scan() => {}
                Ok(_) => {
                    self.expiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
                }
                // On a shared store another daemon may have settled or expired it first.
                Err(PaymentError::InvalidState { .. } | PaymentError::NotFound(_) | PaymentError::Store(StoreError::Conflict(_))) => {
                    self.expiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(expired)
    }

    /// Loads unfinished work after a start: the expiry index, and a job for every
    /// attempt left `processing`, card payment still waiting, compensation under way
    /// and refund left `pending`. Work whose method is not configured waits as an orphan.
    pub async fn resume(&self) -> Result<(), PaymentError> {
        self.take_up_work(None).await
    }

    /// On a store shared with other daemons: takes over the work a daemon left (it
    /// stopped or crashed, and its lease expired). Every open payment not worked on here
    /// and unchanged for a lease's time gets a job, which runs only if it wins the lease;
    /// payments awaiting a scan are expired here too. Called periodically.
    pub async fn adopt(&self) -> Result<(), PaymentError> {
        let Some(ttl) = self.jobs.lease_ttl() else { return Ok(()) };
        self.take_up_work(Some(now_ms() - ttl.as_millis() as Millis)).await
    }

    /// Takes up the open work the store holds: payments awaiting a scan into the expiry
    /// index, a job for every other payment with work left and every pending refund.
    /// Work of a method this daemon does not have waits here as an orphan (listed until
    /// the method is configured again). With `quiet_since` (adoption, repeated on a
    /// shared store), only work unchanged since then, without a live job here and of a
    /// method this daemon has: the rest is another daemon's.
    async fn take_up_work(&self, quiet_since: Option<Millis>) -> Result<(), PaymentError> {
        let ours = |method: &str| quiet_since.is_none() || self.method(method).is_ok();
        let due = |updated_at: Millis, key: JobKey| quiet_since.is_none_or(|since| updated_at < since && self.jobs.live(&key).is_none());
        for payment in self.store.unfinished_payments().await? {
            self.offline.note(&payment);
            if !ours(&payment.method) {
                continue;
            }
            if payment.status.accepts_scan() {
                self.expiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(payment.id.clone(), payment.expires_at);
            } else if due(payment.updated_at, JobKey::Payment(payment.id.clone())) {
                self.resume_payment(&payment);
            }
        }
        for refund in self.store.pending_refunds().await? {
            if ours(&refund.method) && due(refund.updated_at, JobKey::Refund(refund.id.clone())) {
                self.resume_refund(&refund);
            }
        }
        Ok(())
    }

    /// Starts the job that finishes `payment`'s open work, or files it as an orphan.
    fn resume_payment(&self, payment: &Payment) {
        let work = match (payment.status, payment.compensation) {
            (_, Some(model::Compensation::Pending)) => "compensation",
            (PaymentStatus::AwaitingCard | PaymentStatus::Processing, _) if self.is_card_payment(payment) => "card_payment",
            (PaymentStatus::Processing, _) => "lookup",
            _ if offline::owes_check(payment) => "offline_check",
            _ => return,
        };
        let Ok(method) = self.method(&payment.method) else {
            return self.orphan(work, payment.id.as_str(), &payment.method);
        };
        match work {
            "compensation" => purchase::resume_compensation(self, payment.clone()),
            "card_payment" => card::resume(self, method, payment.id.clone()),
            "offline_check" => offline::resume(self, method, payment.id.clone()),
            _ => recovery::resume(self, method, payment.id.clone()),
        }
    }

    fn resume_refund(&self, refund: &Refund) {
        match self.method(&refund.method) {
            Ok(method) => refunds::resume(self, method, refund.id.clone()),
            Err(_) => self.orphan("refund", refund.id.as_str(), &refund.method),
        }
    }

    /// A card payment: its method is a card method (or, with the method gone, it holds
    /// a card's provider data while waiting).
    fn is_card_payment(&self, payment: &Payment) -> bool {
        match self.method(&payment.method) {
            Ok(method) => method.abilities.is_card_only(),
            Err(_) => payment.status == PaymentStatus::AwaitingCard || payment.attempt.is_none(),
        }
    }

    fn orphan(&self, work: &str, id: &str, method: &str) {
        tracing::warn!(work, id, method, "work waits for its method: it is not configured");
        let orphan = Orphan { work: work.to_string(), id: id.to_string(), method: method.to_string() };
        self.orphans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id.to_string(), orphan);
    }

    /// Work waiting for a method that is not configured.
    pub fn orphans(&self) -> Vec<Orphan> {
        self.orphans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect()
    }

    /// After a reload: resumes the orphans whose method is configured again.
    pub async fn resume_orphans(&self) {
        let orphans = std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        for (id, orphan) in orphans {
            let resumed = match orphan.work.as_str() {
                "refund" => match model::RefundId::parse(&id) {
                    Some(refund_id) => self.store.refund(&refund_id).await.ok().flatten().map(|refund| self.resume_refund(&refund)),
                    None => None,
                },
                _ => match PaymentId::parse(&id) {
                    Some(payment_id) => self.store.payment(&payment_id).await.ok().flatten().map(|payment| self.resume_payment(&payment)),
                    None => None,
                },
            };
            if resumed.is_none() {
                tracing::warn!(%id, "orphaned work vanished from the store");
            }
        }
    }

    /// Stops every job at its next wait; calls in flight get `grace` to finish. What
    /// is left is in the store and resumes at the next start.
    pub async fn shutdown(&self, grace: Duration) {
        if !self.jobs.shutdown(grace).await {
            tracing::warn!("provider calls still in flight at shutdown; they resume from the store at the next start");
        }
    }

    /// Waits until the first request's answer is stored or its job ends, at most the
    /// POS's patience (default [`JOIN_AT_MOST`]: a card payment's job lasts as long as
    /// the customer takes); answers the record as it then stands. For a retry that
    /// found an open idempotency record.
    pub async fn settle_open_record(
        &self,
        key: &str,
        target: &str,
        patience: Option<Duration>,
    ) -> Result<Option<IdempotencyRecord>, PaymentError> {
        let job = match (PaymentId::parse(target), model::RefundId::parse(target)) {
            (Some(id), _) => self.jobs.live(&JobKey::Payment(id)),
            (_, Some(id)) => self.jobs.live(&JobKey::Refund(id)),
            _ => None,
        };
        let Some(job) = job else { return Ok(self.store.idempotency(key).await?) };
        let deadline = tokio::time::Instant::now() + patience.unwrap_or(JOIN_AT_MOST);
        let finished = job.finished();
        tokio::pin!(finished);
        let mut changes = self.store.subscribe();
        loop {
            changes.borrow_and_update();
            let record = self.store.idempotency(key).await?;
            if record.as_ref().is_none_or(|record| record.body.is_some()) {
                return Ok(record);
            }
            tokio::select! {
                _ = &mut finished => return Ok(self.store.idempotency(key).await?),
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(record),
            }
        }
    }

    /// The current API view of a payment or refund, by id.
    pub async fn view_of(&self, target: &str) -> Result<serde_json::Value, PaymentError> {
        match model::RefundId::parse(target) {
            Some(_) => self.get_refund(target).await.map(|refund| view::refund(&refund)),
            None => self.get(target).await.map(|payment| view::payment(&payment)),
        }
    }
}

/// How long a retry waits for the first request's work before it answers the current
/// state (a POS may say otherwise with `Prefer: wait=N`).
pub const JOIN_AT_MOST: Duration = Duration::from_secs(10);

/// How many unclaimed scan codes are kept in memory for their register's tills.
const UNCLAIMED_KEPT: usize = 64;

/// A receipt another payment took in the meantime.
fn receipt_taken(error: PaymentError) -> PaymentError {
    match error {
        PaymentError::Store(StoreError::ReceiptTaken { payment, .. }) => PaymentError::ReceiptAlreadyUsed { holder: payment },
        other => other,
    }
}

/// The failure a payment records when its receipt paid `holder`.
fn receipt_used_by(holder: &PaymentId) -> Failure {
    Failure { code: "receipt_already_used".into(), message: format!("this receipt already paid {holder}"), retryable: false }
}

/// Awaits a job's answer for a request, up to the POS's patience; `None` when the POS
/// stops waiting first (or the job ended without answering, at shutdown).
async fn await_answer<T>(answer: tokio::sync::oneshot::Receiver<T>, patience: Option<Duration>) -> Option<T> {
    match patience {
        Some(patience) => tokio::time::timeout(patience, answer).await.ok()?.ok(),
        None => answer.await.ok(),
    }
}
