//! Payments: the session state machine, the write-ahead protocol around provider calls,
//! refunds, expiry and crash recovery.
//!
//! Every change is one [`Commit`](crate::store::Commit) (payment + journal event +
//! receipt reservation), applied under `write_lock` after re-reading the payment, and
//! flushed before the caller answers. Plugin calls happen outside the lock, while the
//! payment is `processing`, which keeps a second attempt out.

mod card;
pub mod error;
pub mod model;
mod recovery;
mod refunds;

pub use refunds::NewRefund;
pub mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use posbridge_plugin_api::{Capabilities, CartLine, InspectedCode, ManualEntry, MethodError, PaymentContext, RString, RVec, Settlement};

pub use error::PaymentError;
use model::{now_ms, Amount, Attempt, Currency, Failure, Line, Millis, Payment, PaymentId, PaymentStatus, Refund};

use crate::plugins::{CallError, Method, Methods};
use crate::store::{Commit, Event, Store};

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
    pub register: Option<String>,
    /// The POS's reference (receipt number).
    pub reference: Option<String>,
    pub status: Option<PaymentStatus>,
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    pub limit: usize,
    pub starting_after: Option<PaymentId>,
}

/// The payment service: owns the payment lifecycle.
pub struct Payments {
    store: Store,
    methods: std::sync::RwLock<Arc<Methods>>,
    settings: PaymentSettings,
    write_lock: tokio::sync::Mutex<()>,
    /// Payments that can still expire: id → expires_at.
    expiring: Mutex<BTreeMap<PaymentId, Millis>>,
    /// This service, for the background tasks it starts (recovery, refund resends).
    me: Weak<Payments>,
}

fn failure_of(error: &MethodError) -> Failure {
    Failure { code: error.code.to_string(), message: error.message.to_string(), retryable: error.retryable }
}

fn call_failure(error: &CallError) -> Failure {
    match error {
        CallError::Failed(error) => failure_of(error),
        other => Failure { code: "provider_error".into(), message: other.to_string(), retryable: true },
    }
}

/// Logs every stored change with the ids a technician searches by (posbridge's, the
/// POS's reference, the provider's transaction), and counts outcomes.
fn observe(commit: &Commit) {
    for payment in &commit.payments {
        tracing::info!(
            payment = %payment.id,
            reference = payment.reference.as_deref().unwrap_or("-"),
            transaction_id = payment.transaction_id.as_deref().or(payment.attempt.as_ref().map(|attempt| attempt.transaction_id.as_str())).unwrap_or("-"),
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

/// The code a plugin uses when a provider may or may not have acted.
const OUTCOME_UNKNOWN: &str = "outcome_unknown";

fn outcome_unknown(error: &CallError) -> bool {
    match error {
        CallError::Failed(error) => error.code.as_str() == OUTCOME_UNKNOWN,
        CallError::TimedOut { .. } | CallError::Aborted { .. } => true,
    }
}

impl Payments {
    /// The service over an open store and the configured methods.
    pub fn new(store: Store, methods: Methods, settings: PaymentSettings) -> Arc<Payments> {
        Arc::new_cyclic(|me| Payments {
            store,
            methods: std::sync::RwLock::new(Arc::new(methods)),
            settings,
            write_lock: tokio::sync::Mutex::new(()),
            expiring: Mutex::new(BTreeMap::new()),
            me: me.clone(),
        })
    }

    /// The store, for readers (events, idempotency).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current methods. A request keeps the snapshot it started with, so a reload
    /// never changes a method under a call in flight.
    pub fn methods(&self) -> Arc<Methods> {
        self.methods.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Swaps in the methods of a reloaded config (those it drops stay, retired).
    pub fn replace_methods(&self, methods: Methods) {
        let mut current = self.methods.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::new(methods.succeeding(&current));
    }

    /// A method of the current config, for new payments.
    fn current_method(&self, id: &str) -> Result<Method, PaymentError> {
        self.methods().get(id).cloned().ok_or_else(|| PaymentError::UnknownMethod(id.to_string()))
    }

    /// The method of an existing payment: current, or retired by a reload.
    fn method(&self, id: &str) -> Result<Method, PaymentError> {
        self.methods().get_any(id).cloned().ok_or_else(|| PaymentError::UnknownMethod(id.to_string()))
    }

    fn require(method: &Method, capability: Capabilities, operation: &'static str) -> Result<(), PaymentError> {
        if method.capabilities.contains(capability) {
            Ok(())
        } else {
            Err(PaymentError::Unsupported { method: method.id.clone(), operation })
        }
    }

    /// What a plugin call about `payment` needs to know.
    fn context(payment: &Payment, method: &Method) -> PaymentContext {
        PaymentContext {
            payment_id: RString::from(payment.id.as_str()),
            register: RString::from(payment.register.as_str()),
            reference: payment.reference.clone().map(RString::from).into(),
            currency: RString::from(payment.currency.as_str()),
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
    pub fn get(&self, id: &str) -> Result<Payment, PaymentError> {
        let parsed = PaymentId::parse(id).ok_or_else(|| PaymentError::NotFound(id.to_string()))?;
        self.store.payment(&parsed)?.ok_or_else(|| PaymentError::NotFound(id.to_string()))
    }

    /// Applies and flushes a commit, keeping the expiry index in step.
    async fn save(&self, commit: Commit) -> Result<Vec<Event>, PaymentError> {
        let events = self.store.apply(&commit)?;
        self.store.flush().await?;
        observe(&commit);
        let mut expiring = self.expiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for payment in &commit.payments {
            // Card payments time out through their watcher, which cancels at the provider.
            if payment.status.accepts_scan() {
                expiring.insert(payment.id.clone(), payment.expires_at);
            } else {
                expiring.remove(&payment.id);
            }
        }
        Ok(events)
    }

    /// A commit of `payment`'s new state with its `payment.updated` event.
    fn commit_of(payment: &Payment) -> Commit {
        Commit { payments: vec![payment.clone()], events: vec![("payment.updated".into(), view::payment(payment))], ..Commit::default() }
    }

    /// Moves `payment` to `next` (checked against the state machine), bumping version.
    fn advance(payment: &mut Payment, next: PaymentStatus, action: &'static str) -> Result<(), PaymentError> {
        if payment.status != next && !payment.status.can_become(next) {
            return Err(PaymentError::InvalidState { status: payment.status, action });
        }
        payment.status = next;
        payment.version += 1;
        payment.updated_at = now_ms().max(payment.updated_at);
        Ok(())
    }

    /// Creates a payment awaiting a scan.
    pub async fn create(&self, request: NewPayment) -> Result<Payment, PaymentError> {
        let method = self.current_method(&request.method)?;
        if !self.settings.registers.is_empty() && !self.settings.registers.contains(&request.register) {
            return Err(PaymentError::UnknownRegister(request.register));
        }
        if request.amount.0 == 0 {
            return Err(PaymentError::Invalid { field: "amount", message: "the amount must be more than zero".into() });
        }
        let eligible = self.eligible(&method, &request).await?;
        if eligible.0 == 0 {
            return Err(PaymentError::NothingEligible(method.id.clone()));
        }
        let is_card = method.capabilities.contains(Capabilities::CARD) && !method.capabilities.contains(Capabilities::SCAN);
        let guard = self.write_lock.lock().await;
        if let Some(parent_id) = &request.split_of {
            self.split_parent(parent_id, &request)?;
        }
        let now = now_ms();
        let payment = Payment {
            id: PaymentId::new(now, self.store.unique()?),
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
            refunded_amount: Amount(0),
            transaction_id: None,
            verified: None,
            benefit: None,
            failure: None,
            split_of: request.split_of,
            lines: request.lines.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            expires_at: now + if is_card { self.settings.card_timeout } else { self.settings.scan_timeout }.as_millis() as i64,
            captured_at: None,
            version: 1,
            attempt: None,
            plugin_data: None,
            next_action: None,
        };
        // Write-ahead: the payment exists before any provider hears of it.
        self.save(Self::commit_of(&payment)).await?;
        drop(guard);
        if is_card {
            return card::start(self, &method, payment).await;
        }
        Ok(payment)
    }

    async fn eligible(&self, method: &Method, request: &NewPayment) -> Result<Amount, PaymentError> {
        let Some(lines) = &request.lines else { return Ok(request.amount) };
        let sum = lines.iter().try_fold(Amount(0), |sum, line| sum.checked_add(line.amount));
        if sum != Some(request.amount) {
            return Err(PaymentError::LinesDoNotSum { lines: sum.unwrap_or(Amount(u64::MAX)), amount: request.amount });
        }
        let cart: RVec<CartLine> = lines
            .iter()
            .map(|line| CartLine {
                sku: RString::from(line.sku.as_str()),
                name: RString::from(line.name.as_str()),
                amount: line.amount.0,
                labels: line.labels.iter().map(|label| RString::from(label.as_str())).collect(),
            })
            .collect();
        let eligible = method.call("eligible_amount", move |plugin| plugin.eligible_amount(cart.as_rslice())).await?;
        Ok(Amount(eligible))
    }

    /// Checks a `split_of` parent: it exists, took part of the purchase, and has enough
    /// left for the new payment.
    fn split_parent(&self, parent_id: &PaymentId, request: &NewPayment) -> Result<Payment, PaymentError> {
        let parent = self.store.payment(parent_id)?.ok_or_else(|| PaymentError::SplitParentNotFound(parent_id.to_string()))?;
        let refuse = |reason: String| PaymentError::SplitNotPossible { parent: parent_id.clone(), reason };
        if parent.status != PaymentStatus::Succeeded {
            return Err(refuse(format!("it is {}, not succeeded", parent.status.as_str())));
        }
        if parent.currency != request.currency {
            return Err(refuse("it is in another currency".into()));
        }
        if request.amount > parent.remaining_amount() {
            return Err(refuse(format!("only {} of the purchase remains", parent.remaining_amount())));
        }
        Ok(parent)
    }

    /// Waits until the payment's version exceeds `version` or `wait` passes.
    pub async fn wait(&self, id: &str, version: u64, wait: Duration) -> Result<Payment, PaymentError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.store.subscribe();
        loop {
            changes.borrow_and_update();
            let payment = self.get(id)?;
            if payment.version > version {
                return Ok(payment);
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                return Ok(payment);
            }
        }
    }

    /// Lists payments newest first.
    pub fn list(&self, query: &ListQuery) -> Result<(Vec<Payment>, bool), PaymentError> {
        let mut found = Vec::new();
        let mut has_more = false;
        for payment in self.store.payments_newest_first(query.starting_after.as_ref()) {
            let payment = payment?;
            if query.from.is_some_and(|from| payment.created_at < from) {
                break; // newest first: everything after is older still
            }
            let matches = query.register.as_ref().is_none_or(|register| &payment.register == register)
                && query.reference.as_ref().is_none_or(|reference| payment.reference.as_ref() == Some(reference))
                && query.status.is_none_or(|status| payment.status == status)
                && query.to.is_none_or(|to| payment.created_at <= to);
            if !matches {
                continue;
            }
            if found.len() == query.limit {
                has_more = true;
                break;
            }
            found.push(payment);
        }
        Ok((found, has_more))
    }

    /// Re-reads a payment under the write lock and checks it may take a scan or entry.
    fn scannable(&self, id: &PaymentId, action: &'static str) -> Result<Payment, PaymentError> {
        let payment = self.store.payment(id)?.ok_or_else(|| PaymentError::NotFound(id.to_string()))?;
        if !payment.status.accepts_scan() {
            return Err(PaymentError::InvalidState { status: payment.status, action });
        }
        if payment.expires_at <= now_ms() {
            return Err(PaymentError::InvalidState { status: PaymentStatus::Expired, action });
        }
        Ok(payment)
    }

    /// Applies a scanned code: offline inspection, write-ahead, redemption at the
    /// provider. A refused code leaves the payment `failed` (answered, not an error);
    /// an outcome the provider could not confirm leaves it `processing` until recovery
    /// resolves it.
    pub async fn scan(&self, id: &str, code: &str) -> Result<Payment, PaymentError> {
        let current = self.get(id)?;
        let method = self.method(&current.method)?;
        Self::require(&method, Capabilities::SCAN, "scanned codes")?;
        let payment = {
            let _guard = self.write_lock.lock().await;
            self.scannable(&current.id, "scanned")?
        };
        let context = Self::context(&payment, &method);
        let owned_code = code.to_string();
        let inspected = method.call("inspect_code", move |plugin| plugin.inspect_code(&context, owned_code.as_str().into())).await;
        let inspected = match inspected {
            Ok(inspected) => inspected,
            Err(error) => return self.fail_attempt(&payment.id, call_failure(&error), None).await,
        };
        let payment = match self.begin_attempt(&payment.id, code, &inspected).await? {
            Ok(payment) => payment,
            Err(refused) => return Ok(refused),
        };
        let context = Self::context(&payment, &method);
        let owned_code = code.to_string();
        let redeemed = method.call("redeem", move |plugin| plugin.redeem(&context, owned_code.as_str().into(), &inspected)).await;
        self.finish_attempt(&payment.id, redeemed).await
    }

    /// Write-ahead: records the attempt and reserves the receipt, or fails the payment
    /// when another payment holds the receipt.
    async fn begin_attempt(&self, id: &PaymentId, code: &str, inspected: &InspectedCode) -> Result<Result<Payment, Payment>, PaymentError> {
        let transaction_id = inspected.transaction_id.to_string();
        let guard = self.write_lock.lock().await;
        let mut payment = self.scannable(id, "scanned")?;
        if let Some(holder) = self.store.redeemed_by(&transaction_id)?.filter(|holder| holder != id) {
            drop(guard);
            let failure =
                Failure { code: "receipt_already_used".into(), message: format!("this receipt already paid {holder}"), retryable: false };
            return self.fail_attempt(id, failure, None).await.map(Err);
        }
        Self::advance(&mut payment, PaymentStatus::Processing, "scanned")?;
        payment.failure = None;
        payment.attempt = Some(Attempt {
            code: code.to_string(),
            transaction_id: transaction_id.clone(),
            amount: inspected.amount.into_option().map(Amount),
            started_at: now_ms(),
        });
        let mut commit = Self::commit_of(&payment);
        commit.reserve.push((transaction_id, payment.id.clone()));
        self.save(commit).await?;
        Ok(Ok(payment))
    }

    /// Records the end of an attempt: success, failure, or (unknown outcome) nothing.
    async fn finish_attempt(&self, id: &PaymentId, outcome: Result<Settlement, CallError>) -> Result<Payment, PaymentError> {
        match outcome {
            Ok(settlement) => self.succeed(id, settlement).await,
            Err(error) if outcome_unknown(&error) => {
                tracing::warn!(payment = %id, error = %error, "provider outcome unknown; recovery will look it up");
                recovery::schedule_lookup(self, id.clone());
                self.get(id.as_str())
            }
            Err(error) => {
                let release = self.get(id.as_str())?.attempt.map(|attempt| attempt.transaction_id);
                self.fail_attempt(id, call_failure(&error), release).await
            }
        }
    }

    /// Marks the payment failed with `failure`, releasing a receipt reservation.
    async fn fail_attempt(&self, id: &PaymentId, failure: Failure, release: Option<String>) -> Result<Payment, PaymentError> {
        let _guard = self.write_lock.lock().await;
        let mut payment = self.store.payment(id)?.ok_or_else(|| PaymentError::NotFound(id.to_string()))?;
        Self::advance(&mut payment, PaymentStatus::Failed, "failed")?;
        payment.failure = Some(failure);
        payment.attempt = None;
        let mut commit = Self::commit_of(&payment);
        commit.release.extend(release);
        self.save(commit).await?;
        Ok(payment)
    }

    /// Marks the payment succeeded with what the provider took; a split child adds its
    /// capture to its parent's.
    async fn succeed(&self, id: &PaymentId, settlement: Settlement) -> Result<Payment, PaymentError> {
        let _guard = self.write_lock.lock().await;
        let mut payment = self.store.payment(id)?.ok_or_else(|| PaymentError::NotFound(id.to_string()))?;
        if payment.status == PaymentStatus::Succeeded {
            return Ok(payment); // recovery and the original call raced: the first one won
        }
        Self::advance(&mut payment, PaymentStatus::Succeeded, "completed")?;
        let transaction_id = settlement.transaction_id.into_option().map(|id| id.to_string());
        payment.captured_amount = Amount(settlement.captured_amount);
        payment.transaction_id = transaction_id.clone();
        payment.verified = Some(settlement.verified);
        payment.benefit = settlement.benefit.into_option().map(|benefit| benefit.to_string());
        payment.plugin_data = Some(settlement.plugin_data.to_string());
        payment.captured_at = Some(now_ms());
        payment.failure = None;
        payment.attempt = None;
        payment.next_action = None;
        let mut commit = Self::commit_of(&payment);
        if let Some(transaction_id) = transaction_id {
            commit.reserve.push((transaction_id, payment.id.clone()));
        }
        if let Some(parent_id) = &payment.split_of {
            if let Some(mut parent) = self.store.payment(parent_id)? {
                parent.split_captured_amount = parent.split_captured_amount.checked_add(payment.captured_amount).unwrap_or(parent.amount);
                parent.version += 1;
                parent.updated_at = now_ms();
                commit.events.push(("payment.updated".into(), view::payment(&parent)));
                commit.payments.push(parent);
            }
        }
        self.save(commit).await.map_err(|error| match error {
            PaymentError::Store(crate::store::StoreError::ReceiptTaken { .. }) => PaymentError::Provider {
                code: "receipt_already_used".into(),
                message: "this receipt already paid another payment".into(),
                field: None,
            },
            other => other,
        })?;
        Ok(payment)
    }

    /// A payment the cashier entered by hand (unverified). A refused entry leaves the
    /// payment as it was and answers the reason (a typo is not a failed payment).
    pub async fn manual(&self, id: &str, amount: Amount, transaction_id: Option<String>) -> Result<Payment, PaymentError> {
        let current = self.get(id)?;
        let method = self.method(&current.method)?;
        Self::require(&method, Capabilities::MANUAL_ENTRY, "manual entry")?;
        if let Some(holder) = transaction_id.as_deref().map(|tx| self.store.redeemed_by(tx)).transpose()?.flatten() {
            return Err(PaymentError::Provider {
                code: "receipt_already_used".into(),
                message: format!("this transaction already paid {holder}"),
                field: Some("transaction_id".into()),
            });
        }
        let payment = {
            let _guard = self.write_lock.lock().await;
            self.scannable(&current.id, "entered by hand")?
        };
        let context = Self::context(&payment, &method);
        let entry = ManualEntry { amount: amount.0, transaction_id: transaction_id.map(RString::from).into() };
        match method.call("accept_manual", move |plugin| plugin.accept_manual(&context, &entry)).await {
            Ok(settlement) => self.succeed(&payment.id, settlement).await,
            Err(CallError::Failed(error)) => Err(PaymentError::Provider {
                code: error.code.to_string(),
                message: error.message.to_string(),
                field: error.field.into_option().map(|field| field.to_string()),
            }),
            Err(other) => Err(other.into()),
        }
    }

    /// Cancels a payment that has taken nothing (a card payment is canceled at the
    /// provider first). When it belongs to a split purchase, the purchase is abandoned:
    /// the legs that succeeded are refunded (compensation) and returned with it.
    pub async fn cancel(&self, id: &str) -> Result<Canceled, PaymentError> {
        let mut current = self.get(id)?;
        let is_card = self.method(&current.method)?.capabilities.contains(Capabilities::CARD);
        if is_card && matches!(current.status, PaymentStatus::AwaitingCard | PaymentStatus::Processing) {
            current = self.cancel_card_at_provider(&current).await?;
        }
        let payment = {
            let _guard = self.write_lock.lock().await;
            let mut payment = self.store.payment(&current.id)?.ok_or_else(|| PaymentError::NotFound(id.to_string()))?;
            if payment.status != PaymentStatus::Canceled {
                Self::advance(&mut payment, PaymentStatus::Canceled, "canceled")?;
                payment.next_action = None;
                self.save(Self::commit_of(&payment)).await?;
            }
            payment
        };
        let compensation = match &payment.split_of {
            Some(_) => self.refund_purchase(&payment, Some("purchase_canceled".into()), &payment.client).await?,
            None => Vec::new(),
        };
        Ok(Canceled { payment, compensation })
    }

    /// The first payment of the purchase `payment` belongs to.
    fn purchase_root(&self, payment: &Payment) -> Result<Payment, PaymentError> {
        let mut root = payment.clone();
        while let Some(parent) = root.split_of.clone() {
            root = self.store.payment(&parent)?.ok_or_else(|| PaymentError::NotFound(parent.to_string()))?;
        }
        Ok(root)
    }

    /// Every payment of the purchase `payment` belongs to, first one first.
    fn purchase_legs(&self, payment: &Payment) -> Result<Vec<Payment>, PaymentError> {
        let root = self.purchase_root(payment)?;
        let mut ids = vec![root.id.clone()];
        let mut legs = vec![root.clone()];
        let mut newer: Vec<Payment> = Vec::new();
        for candidate in self.store.payments_newest_first(None) {
            let candidate = candidate?;
            if candidate.created_at < root.created_at {
                break; // later legs are newer than the first
            }
            newer.push(candidate);
        }
        // Oldest first, so a leg's parent is seen before the leg.
        for candidate in newer.into_iter().rev() {
            if candidate.split_of.as_ref().is_some_and(|parent| ids.contains(parent)) {
                ids.push(candidate.id.clone());
                legs.push(candidate);
            }
        }
        Ok(legs)
    }

    /// Refunds what is refundable of every succeeded leg of a purchase.
    pub async fn refund_purchase(&self, payment: &Payment, reason: Option<String>, client: &str) -> Result<Vec<Refund>, PaymentError> {
        let mut refunds = Vec::new();
        for leg in self.purchase_legs(payment)? {
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
                refunds.push(self.refund(request).await?);
            }
        }
        Ok(refunds)
    }

    /// Applies a scan from a register's scanner to that register's newest payment
    /// awaiting a scan; `None` when no payment awaits one.
    pub async fn scan_waiting(&self, register: &str, code: &str) -> Result<Option<Payment>, PaymentError> {
        let now = now_ms();
        let candidates: Vec<PaymentId> = {
            let expiring = self.expiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            expiring.iter().rev().filter(|(_, expires_at)| **expires_at > now).map(|(id, _)| id.clone()).collect()
        };
        for id in candidates {
            let Some(payment) = self.store.payment(&id)? else { continue };
            if payment.register == register && payment.status.accepts_scan() {
                return self.scan(id.as_str(), code).await.map(Some);
            }
        }
        Ok(None)
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
            let _guard = self.write_lock.lock().await;
            let Some(mut payment) = self.store.payment(&id)? else { continue };
            if payment.expires_at > now || !payment.status.accepts_scan() {
                self.expiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
                continue;
            }
            Self::advance(&mut payment, PaymentStatus::Expired, "expired")?;
            self.save(Self::commit_of(&payment)).await?;
            expired += 1;
        }
        Ok(expired)
    }

    /// Loads unfinished payments after a start: expiry index, and recovery of attempts
    /// left `processing` and refunds left `pending`.
    pub fn resume(&self) -> Result<(), PaymentError> {
        let unfinished = self.store.unfinished_payments()?;
        let mut expiring = self.expiring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for payment in &unfinished {
            let is_card = self.methods().get_any(&payment.method).is_some_and(|method| method.capabilities.contains(Capabilities::CARD));
            match payment.status {
                PaymentStatus::Processing | PaymentStatus::AwaitingCard if is_card => card::watch(self, payment.id.clone()),
                PaymentStatus::Processing => recovery::schedule_lookup(self, payment.id.clone()),
                _ => {
                    expiring.insert(payment.id.clone(), payment.expires_at);
                }
            }
        }
        drop(expiring);
        for refund in self.store.pending_refunds()? {
            refunds::schedule_resend(self, refund.id);
        }
        Ok(())
    }
}
