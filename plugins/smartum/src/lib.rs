//! Smartum benefit payments for posbridge: receipts scanned or entered by hand,
//! redeemed once at Smartum, refunded the same day.
//!
//! Module map: `settings` (the `[methods.<id>]` keys), `eligibility` (which cart lines
//! Smartum may pay), `receipt` (the three code forms), `jws` (ES512 verification),
//! `wire` (every assumed detail of Smartum's HTTP API).

mod eligibility;
mod jws;
mod receipt;
mod settings;
mod wire;

use posbridge_plugin_api::{
    export_plugin, Capabilities, CartLine, InspectedCode, LookupRequest, Manifest, ManualEntry, MethodError, MethodInfo, MethodSetup,
    PaymentContext, PaymentMethod, Plugin, ProviderStatus, ROption, RString, RVec, RefundOutcome, RefundRequest, RefundState, Settlement,
};

/// The extension under which `inspect_code` describes what it understood.
const EXPLANATION: &str = posbridge_plugin_api::InspectedCode::EXPLANATION;

/// How long after an attempt's deadline Smartum may still commit a check it received
/// just before (its own processing time); until then "not checked" is not final.
const COMMIT_MARGIN_MS: i64 = 2_000;
use serde_json::json;

pub use jws::{JwsError, KeySet, SignatureCheck};
use posbridge_plugin_helpers::time::{parse_rfc3339_ms, same_helsinki_day};
pub use receipt::{parse as parse_receipt, Receipt, ReceiptClaims, ReceiptError};
pub use settings::{is_smartum_id, RefundWindow, SmartumSettings, KNOWN_BENEFITS};
use wire::{CheckOutcome, SmartumApi, Transaction, TransactionStatus};

/// The plugin as the host loads it.
pub struct SmartumPlugin;

/// One configured Smartum method (one venue and benefit).
pub struct SmartumMethod {
    settings: SmartumSettings,
    /// Smartum's public keys by `kid`: configured PEMs and JWKS, and the JWKS at
    /// `jwks_url` as last fetched.
    keys: std::sync::RwLock<KeySet>,
    api: SmartumApi,
}

/// What a Smartum method can do.
pub const CAPABILITIES: Capabilities = Capabilities(
    Capabilities::SCAN.0
        | Capabilities::MANUAL_ENTRY.0
        | Capabilities::REFUND.0
        | Capabilities::REFUND_WITHOUT_CACHE.0
        | Capabilities::STATUS_LOOKUP.0
        | Capabilities::CANCEL.0,
);

impl Plugin for SmartumPlugin {
    type Method = SmartumMethod;

    fn manifest() -> Manifest {
        Manifest {
            id: RString::from("smartum"),
            version: RString::from(env!("CARGO_PKG_VERSION")),
            methods: RVec::from(vec![MethodInfo {
                kind: RString::from("smartum"),
                capabilities: CAPABILITIES,
                description: RString::from("Smartum benefit payments: SmartumPay receipts scanned or entered by hand"),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn create(setup: MethodSetup) -> Result<SmartumMethod, Vec<MethodError>> {
        let (settings, warnings) = SmartumSettings::parse(setup.config_json.as_str());
        for warning in &warnings {
            setup.host.log(posbridge_plugin_api::LogLevel::WARN, warning.as_str().into());
        }
        let settings = settings?;
        let pems: Vec<(String, String)> = settings.jwt_keys.iter().map(|key| (key.kid.clone(), key.pem.clone())).collect();
        let mut keys = KeySet::from_pems(&pems).map_err(|bad_kids| {
            bad_kids
                .iter()
                .map(|kid| {
                    let index = settings.jwt_keys.iter().position(|key| &key.kid == kid).unwrap_or(0);
                    MethodError::new("invalid_config", format!("the key {kid:?} is not a P-521 (ES512) public key in PEM form"))
                        .with_field(format!("jwt_keys[{index}].pem"))
                })
                .collect::<Vec<_>>()
        })?;
        if let Some(document) = &settings.jwks {
            keys.add_jwks(document).map_err(|bad| {
                bad.into_iter()
                    .map(|why| MethodError::new("invalid_config", format!("Smartum's JWKS: {why}")).with_field("jwks"))
                    .collect::<Vec<_>>()
            })?;
        }
        let api = SmartumApi::new(setup.host, settings.clone());
        let method = SmartumMethod { settings, keys: std::sync::RwLock::new(keys), api };
        if let Err(why) = method.refresh_keys(method.api.now_ms() + 5_000) {
            // Not fatal: the configured keys still work, and doctor fetches again.
            method.api.log_warning(&format!(
                "{why}; receipts signed with other keys are refused until `posbridge doctor` or a restart fetches them"
            ));
        }
        Ok(method)
    }
}

/// Whether Smartum's `check_reference` names this payment: any of its attempts (a check
/// of an earlier attempt that landed late paid this payment all the same), or the bare
/// payment id that checks carried before attempts had ids.
fn checked_by_payment(reference: Option<&str>, payment: &PaymentContext) -> bool {
    let payment_id = payment.payment_id.as_str();
    reference.is_some_and(|reference| {
        reference == payment_id
            || reference.strip_prefix(payment_id).and_then(|rest| rest.strip_prefix('-')).is_some_and(|n| n.parse::<u32>().is_ok())
    })
}

/// The settlement, noting in its stored data that the receipt's offline claims were not
/// understood (the payment was confirmed online only).
fn noted(settlement: Settlement, inspected: &InspectedCode) -> Settlement {
    let not_understood = serde_json::from_str::<serde_json::Value>(inspected.plugin_data.as_str())
        .ok()
        .filter(|data| data["offline_claims"] == "not_understood");
    let Some(note) = not_understood else { return settlement };
    let mut data = serde_json::from_str::<serde_json::Value>(settlement.plugin_data.as_str()).unwrap_or_else(|_| json!({}));
    data["offline_claims"] = json!("not_understood");
    data["offline_claims_why"] = note["why"].clone();
    Settlement { plugin_data: RString::from(data.to_string()), ..settlement }
}

fn failure(code: &str, message: impl Into<String>) -> MethodError {
    MethodError::new(code, message)
}

impl SmartumMethod {
    /// Parses a code and checks what can be checked offline (the signature only when
    /// `check` says so: `read_code` defers it to `inspect_code`).
    fn inspect(&self, payment: &PaymentContext, code: &str, check: SignatureCheck) -> Result<InspectedCode, MethodError> {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let verified = check == SignatureCheck::Verify;
        match receipt::parse(code, &keys, check) {
            Ok(Receipt::Signed(claims)) => {
                self.check_claims(&claims.venue, &claims.benefit, &claims.currency, payment)?;
                Self::check_amount(claims.amount, payment)?;
                let mut inspected = InspectedCode {
                    receipt_key: RString::from(claims.transaction_id.as_str()),
                    transaction_id: ROption::RSome(claims.transaction_id.into()),
                    amount: ROption::RSome(claims.amount),
                    signature_verified: verified,
                    ..Default::default()
                };
                if let Some(issued_at) = claims.issued_at_ms {
                    inspected.set_issued_at_unix_ms(issued_at);
                }
                Ok(Self::noting_deferral(inspected, check))
            }
            Ok(Receipt::SignedUnreadable { transaction_id, why }) => {
                // Signed by Smartum, but not in the shape assumed: Smartum decides online
                // (amount, venue, benefit), and the payment records it.
                if verified {
                    self.api
                        .log_warning(&format!("a signed receipt's claims were not understood ({why}); confirming {transaction_id} online"));
                }
                let inspected = InspectedCode {
                    receipt_key: RString::from(transaction_id.as_str()),
                    transaction_id: ROption::RSome(transaction_id.into()),
                    signature_verified: verified,
                    plugin_data: RString::from(json!({"offline_claims": "not_understood", "why": why}).to_string()),
                    ..Default::default()
                };
                Ok(Self::noting_deferral(inspected, check))
            }
            Ok(Receipt::TransactionId(id)) => Ok(InspectedCode {
                receipt_key: RString::from(id.as_str()),
                transaction_id: ROption::RSome(id.into()),
                ..Default::default()
            }),
            Err(ReceiptError::Invalid(why)) => Err(failure("invalid_code", why)),
            Err(ReceiptError::Signature(JwsError::Malformed(why))) => {
                Err(failure("invalid_code", format!("the receipt is damaged: {why}")))
            }
            Err(ReceiptError::Signature(JwsError::WrongAlgorithm(alg))) => {
                Err(failure("bad_signature", format!("the receipt is signed with {alg:?}; Smartum signs with ES512")))
            }
            Err(ReceiptError::Signature(JwsError::UnknownKey(kid))) => {
                Err(failure("bad_signature", format!("receipt signed with key {kid:?}; configured keys: {}", keys.kids().join(", "))))
            }
            Err(ReceiptError::Signature(JwsError::BadSignature)) => {
                Err(failure("bad_signature", "the receipt's signature is not Smartum's"))
            }
        }
    }

    /// A signed receipt read without its signature check says so, for the host to
    /// inspect it in full beside the write-ahead.
    fn noting_deferral(mut inspected: InspectedCode, check: SignatureCheck) -> InspectedCode {
        if check == SignatureCheck::Defer {
            inspected.set_signature_deferred();
        }
        inspected
    }

    /// What `inspect_code` understood of `code`, for `posbridge inspect`: the form, the
    /// JWS header and claims (what the customer's phone shows anyway), the signature, the
    /// checks, and what Smartum would be asked. Never a secret.
    fn explain(&self, code: &str, result: &Result<InspectedCode, MethodError>) -> serde_json::Value {
        let code = code.trim();
        let jws = code.matches('.').count() == 2 && !code.contains("://");
        let form = if jws {
            "signed receipt (JWS)"
        } else if code.starts_with("https://") || code.starts_with("http://") {
            "receipt URL"
        } else if code.starts_with("tx_") {
            "transaction id"
        } else {
            "not a SmartumPay receipt"
        };
        let mut explanation = json!({"form": form});
        if let Some((header, claims)) = jws.then(|| KeySet::peek(code)).flatten() {
            explanation["header"] = json!({"alg": header["alg"], "kid": header["kid"]});
            explanation["claims"] = claims;
        }
        match result {
            Ok(inspected) => {
                let tx = inspected.receipt_key.as_str();
                if jws {
                    explanation["signature"] = json!("verified (ES512, a configured key)");
                }
                let (checks, mut online) = match inspected.amount.into_option() {
                    Some(_) => ("venue, benefit, currency and amount checked offline", Vec::new()),
                    None => ("none offline: Smartum decides amount, venue and benefit", vec![format!("GET /v1/transactions/{tx}")]),
                };
                online.push(format!("POST /v1/transactions/{tx}/check"));
                explanation["transaction_id"] = json!(tx);
                explanation["checks"] = json!(checks);
                explanation["online"] = json!(online);
                explanation["result"] = json!("accepted: scanning it at a payment redeems it");
            }
            Err(error) => {
                if jws && error.code == "bad_signature" {
                    explanation["signature"] = json!(error.message.as_str());
                }
                explanation["result"] = json!(format!("refused: {}: {}", error.code, error.message));
            }
        }
        explanation
    }

    /// Fetches the JWKS at `jwks_url`, if configured, and adds its keys. Answers how many.
    fn refresh_keys(&self, deadline_ms: i64) -> Result<usize, String> {
        let Some(url) = &self.settings.jwks_url else { return Ok(0) };
        let document = self
            .api
            .fetch_public(url, deadline_ms)
            .map_err(|error| format!("cannot fetch Smartum's keys from {url}: {}", error.message))?;
        let mut keys = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.add_jwks(&document).map_err(|bad| format!("Smartum's keys at {url}: {}", bad.join("; ")))
    }

    /// The venue, benefit and currency a receipt must carry to pay here.
    fn check_claims(&self, venue: &str, benefit: &str, currency: &str, payment: &PaymentContext) -> Result<(), MethodError> {
        if venue != self.settings.venue_id {
            return Err(failure("wrong_venue", format!("the receipt was paid to another venue ({venue}), not this one")));
        }
        if benefit != self.settings.benefit {
            return Err(failure(
                "wrong_benefit",
                format!("the receipt is a {benefit} benefit; this venue takes {}", self.settings.benefit),
            ));
        }
        if currency != payment.currency.as_str() {
            return Err(failure("invalid_code", format!("the receipt is in {currency}, the purchase in {}", payment.currency)));
        }
        Ok(())
    }

    /// A receipt covers at most the eligible amount and at most what is still due.
    fn check_amount(amount: u64, payment: &PaymentContext) -> Result<(), MethodError> {
        if amount > payment.amount_due {
            return Err(failure(
                "amount_exceeds_due",
                format!("the receipt is for {amount} cents, but only {} are due", payment.amount_due),
            ));
        }
        if amount > payment.eligible_amount {
            return Err(failure(
                "amount_exceeds_due",
                format!("the receipt is for {amount} cents, but only {} of the purchase may be paid with Smartum", payment.eligible_amount),
            ));
        }
        Ok(())
    }

    fn settlement(&self, transaction: &Transaction, verified: bool) -> Settlement {
        let data = json!({"transaction_id": transaction.id, "amount": transaction.amount, "verified": verified, "created_at": transaction.created_at});
        Settlement {
            transaction_id: ROption::RSome(RString::from(transaction.id.as_str())),
            captured_amount: transaction.amount,
            verified,
            benefit: ROption::RSome(RString::from(transaction.benefit.as_str())),
            plugin_data: RString::from(data.to_string()),
            ..Default::default()
        }
    }

    /// After a lost answer or a 409: was the transaction checked by this payment?
    fn checked_by_us(&self, transaction_id: &str, payment: &PaymentContext) -> Result<Settlement, MethodError> {
        let transaction = self
            .api
            .transaction(transaction_id, payment.deadline_unix_ms)?
            .ok_or_else(|| failure("invalid_code", "Smartum does not know this receipt's transaction"))?;
        if checked_by_payment(transaction.check_reference.as_deref(), payment) {
            Ok(self.settlement(&transaction, true))
        } else {
            Err(failure("receipt_already_used", "this receipt was already used (checked at Smartum)"))
        }
    }

    /// A string field of the settlement data stored with the payment.
    fn cached_field(request: &RefundRequest, name: &str) -> Option<String> {
        request
            .plugin_data
            .as_ref()
            .into_option()
            .and_then(|data| serde_json::from_str::<serde_json::Value>(data.as_str()).ok())
            .and_then(|data| data.get(name).and_then(|value| value.as_str()).map(str::to_string))
    }

    /// Marks the transaction checked with our payment id, resolving a lost answer or a
    /// 409 by reading who checked it.
    fn check_and_settle(&self, id: &str, payment: &PaymentContext) -> Result<Settlement, MethodError> {
        match self.api.check(id, payment.attempt_id.as_str(), payment.deadline_unix_ms) {
            Ok(CheckOutcome::Checked(checked)) => Ok(self.settlement(&checked, true)),
            Ok(CheckOutcome::AlreadyChecked) => self.checked_by_us(id, payment),
            Err(error) if error.code.as_str() == "outcome_unknown" => {
                // The check may have happened with the answer lost: ask before failing,
                // and if Smartum cannot tell, say the outcome is unknown (the host then
                // keeps the payment `processing` and resolves it by lookup).
                let unknown = || {
                    MethodError::outcome_unknown(format!("Smartum did not confirm the check ({}); posbridge will ask again", error.message))
                };
                match self.api.transaction(id, payment.deadline_unix_ms) {
                    // Not checked yet: the lost request may still land, so this is not
                    // "nothing was taken" either; the host looks again after the deadline.
                    Ok(Some(transaction)) if transaction.status == TransactionStatus::Paid => Err(unknown()),
                    Ok(Some(_)) => self.checked_by_us(id, payment),
                    Ok(None) => Err(failure("invalid_code", "Smartum does not know this receipt's transaction")),
                    Err(lookup_failed) if lookup_failed.retryable => Err(unknown()),
                    Err(other) => Err(other),
                }
            }
            Err(error) => Err(error),
        }
    }

    fn transaction_of(request: &RefundRequest) -> Option<String> {
        Self::cached_field(request, "transaction_id").or_else(|| request.transaction_id.as_ref().into_option().map(|id| id.to_string()))
    }
}

impl PaymentMethod for SmartumMethod {
    fn eligible_amount(&self, lines: &[CartLine]) -> Result<u64, MethodError> {
        eligibility::eligible_amount(lines, &self.settings.eligible_label)
    }

    fn inspect_code(&self, payment: &PaymentContext, code: &str) -> Result<InspectedCode, MethodError> {
        if payment.defers_signature() {
            // Read for the write-ahead; inspected in full (and explained) beside it.
            return self.inspect(payment, code, SignatureCheck::Defer);
        }
        let mut result = self.inspect(payment, code, SignatureCheck::Verify);
        let explanation = self.explain(code, &result).to_string();
        match &mut result {
            Ok(inspected) => inspected.extensions.set(EXPLANATION, explanation),
            Err(error) => error.extensions.set(EXPLANATION, explanation),
        }
        result
    }

    fn redeem(&self, payment: &PaymentContext, _code: &str, inspected: &InspectedCode) -> Result<Settlement, MethodError> {
        let id = inspected.receipt_key.as_str();
        if inspected.amount.is_none() {
            // A bare id, a URL, or a signed receipt whose claims were not understood says
            // nothing checkable offline: read the transaction before checking it.
            let transaction = self
                .api
                .transaction(id, payment.deadline_unix_ms)?
                .ok_or_else(|| failure("invalid_code", "Smartum does not know this receipt"))?;
            self.check_claims(&transaction.venue, &transaction.benefit, &transaction.currency, payment)?;
            match transaction.status {
                TransactionStatus::Paid => {}
                TransactionStatus::Checked => return self.checked_by_us(id, payment),
                TransactionStatus::Refunded | TransactionStatus::PartiallyRefunded => {
                    return Err(failure("receipt_already_used", "this receipt was refunded and cannot pay again"));
                }
            }
            Self::check_amount(transaction.amount, payment)?;
        }
        // A signed receipt's venue, benefit, currency and amount were verified offline
        // (`inspect_code`); the check is its online confirmation.
        self.check_and_settle(id, payment).map(|settlement| noted(settlement, inspected))
    }

    fn accept_manual(&self, payment: &PaymentContext, entry: &ManualEntry) -> Result<Settlement, MethodError> {
        if entry.amount == 0 {
            return Err(failure("invalid_request", "the amount must be more than zero").with_field("amount"));
        }
        Self::check_amount(entry.amount, payment).map_err(|error| error.with_field("amount"))?;
        let transaction_id = entry.transaction_id.as_ref().into_option().map(|id| id.trim().to_string());
        if let Some(id) = &transaction_id {
            if !is_smartum_id(id, "tx_") {
                return Err(
                    failure("invalid_code", "a Smartum transaction id is tx_ followed by letters or digits").with_field("transaction_id")
                );
            }
        }
        let data = json!({"transaction_id": transaction_id, "amount": entry.amount, "verified": false});
        Ok(Settlement {
            transaction_id: transaction_id.map(RString::from).into(),
            captured_amount: entry.amount,
            verified: false,
            benefit: ROption::RSome(RString::from(self.settings.benefit.as_str())),
            plugin_data: RString::from(data.to_string()),
            ..Default::default()
        })
    }

    fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, MethodError> {
        let Some(transaction_id) = Self::transaction_of(request) else {
            return Err(failure("transaction_id_required", "this payment was entered by hand: give the receipt's transaction id (tx_…)")
                .with_field("transaction_id"));
        };
        if !is_smartum_id(&transaction_id, "tx_") {
            return Err(
                failure("invalid_code", "a Smartum transaction id is tx_ followed by letters or digits").with_field("transaction_id")
            );
        }
        // The window runs from the day the customer paid Smartum (the transaction's
        // creation), which the settlement data carries; else ask Smartum. It is judged at
        // the time the refund was asked for: a resend after midnight of a refund whose
        // answer was lost must not be refused, as the first send may have been made.
        let asked_at = request.requested_at_unix_ms().unwrap_or_else(|| self.api.now_ms());
        let paid_at = Self::cached_field(request, "created_at").and_then(|text| parse_rfc3339_ms(&text));
        let captured_at = match paid_at {
            Some(at) => Some(at),
            None => self
                .api
                .transaction(&transaction_id, request.deadline_unix_ms)?
                .ok_or_else(|| failure("invalid_code", "Smartum does not know this transaction").with_field("transaction_id"))?
                .created_at
                .as_deref()
                .and_then(parse_rfc3339_ms),
        };
        let local_window = self.settings.refund_window == RefundWindow::SameDayHelsinki;
        if local_window && captured_at.is_some_and(|at| !same_helsinki_day(at, asked_at)) {
            return Err(failure("refund_window_closed", "Smartum refunds are possible on the day of the payment only (Europe/Helsinki)"));
        }
        let record = self.api.refund(&transaction_id, request.amount, request.refund_id.as_str(), request.deadline_unix_ms)?;
        let state = if record.status == "succeeded" { RefundState::SUCCEEDED } else { RefundState::PENDING };
        Ok(RefundOutcome { state, provider_refund_id: ROption::RSome(RString::from(record.id)), ..Default::default() })
    }

    fn check_connection(&self, deadline_unix_ms: i64) -> Result<RString, MethodError> {
        let credentials = self.api.check_credentials(deadline_unix_ms)?;
        let fetched = match &self.settings.jwks_url {
            Some(url) => {
                let count = self.refresh_keys(deadline_unix_ms).map_err(|why| failure("provider_unavailable", why))?;
                format!("; {count} key(s) from {url}")
            }
            None => String::new(),
        };
        let kids = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).kids().join(", ");
        Ok(RString::from(format!("{credentials}{fetched}; receipts verify with keys {kids}")))
    }

    fn lookup(&self, request: &LookupRequest) -> Result<ProviderStatus, MethodError> {
        // A check can still land until the attempt's deadline (and Smartum's processing
        // time) has passed: before that, "not checked" is not yet "not taken".
        let settled = self.api.now_ms() > request.attempt_deadline_unix_ms + COMMIT_MARGIN_MS;
        let not_checked = || if settled { ProviderStatus::not_taken() } else { ProviderStatus::in_progress(None) };
        let Some(inspected) = request.inspected.as_ref().into_option() else { return Ok(not_checked()) };
        let Some(transaction) = self.api.transaction(inspected.receipt_key.as_str(), request.payment.deadline_unix_ms)? else {
            return Ok(not_checked());
        };
        let ours = checked_by_payment(transaction.check_reference.as_deref(), &request.payment);
        Ok(match transaction.status {
            TransactionStatus::Paid => not_checked(),
            _ if ours => ProviderStatus::taken(self.settlement(&transaction, true)),
            _ => ProviderStatus::refused(failure("receipt_already_used", "this receipt was already used (checked at Smartum)")),
        })
    }
}

export_plugin!(SmartumPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    /// A method on a test host whose Smartum answers tokens and refunds, at `now`.
    fn method_at(now: i64) -> (SmartumMethod, posbridge_plugin_testkit::FakeHost) {
        use posbridge_plugin_api::{Header, HttpResponse};
        let host = posbridge_plugin_testkit::FakeHost::new(|request| {
            let body = if request.url.ends_with("/oauth/token") {
                r#"{"access_token": "at_test", "token_type": "Bearer", "expires_in": 300}"#
            } else {
                r#"{"data": {"id": "rf_1", "status": "succeeded"}}"#
            };
            let headers = RVec::from(vec![Header::new("content-type", "application/json")]);
            Ok(HttpResponse { status: 200, headers, body: RVec::from(body.as_bytes().to_vec()), ..Default::default() })
        })
        .with_clock(posbridge_plugin_testkit::Clock::manual(now));
        let pem = include_str!("../../../config/sandbox/smartum-es512.pem").replace('\n', "\\n");
        let settings = format!(
            r#"{{"api_url": "http://127.0.0.1:9", "client_id": "c", "client_secret": "secret-0123456789", "venue_id": "ven_pDmadXvNHA6XWoew", "benefit": "exercise", "jwt_keys": [{{"kid": "k1", "pem": "{pem}"}}]}}"#
        );
        let method = SmartumPlugin::create(posbridge_plugin_testkit::build::setup("smartum", "smartum", &settings, &host))
            .unwrap_or_else(|problems| panic!("{problems:?}"));
        (method, host)
    }

    #[test]
    fn the_same_day_window_is_judged_when_the_refund_was_asked_for_not_at_a_resend() {
        // Paid 23:50 Helsinki time on 2026-11-25 (21:50 UTC); now is the next day.
        let paid_at = parse_rfc3339_ms("2026-11-25T21:50:00Z").unwrap();
        let next_day = parse_rfc3339_ms("2026-11-25T22:30:00Z").unwrap();
        let (method, host) = method_at(next_day);
        let settlement = Settlement {
            transaction_id: ROption::RSome("tx_R60D21hL60bj5N1v".into()),
            captured_amount: 1000,
            plugin_data: json!({"transaction_id": "tx_R60D21hL60bj5N1v", "created_at": "2026-11-25T21:50:00Z"}).to_string().into(),
            ..Default::default()
        };
        let payment = posbridge_plugin_testkit::build::payment(&host, 1000);
        let mut resent = posbridge_plugin_testkit::build::refund(&host, &payment, &settlement, 400);
        resent.set_requested_at_unix_ms(paid_at + 5 * 60_000);
        assert_eq!(method.refund(&resent).map(|outcome| outcome.state), Ok(RefundState::SUCCEEDED), "asked on the day: sent");

        let mut late = posbridge_plugin_testkit::build::refund(&host, &payment, &settlement, 400);
        late.set_requested_at_unix_ms(next_day);
        let refused = method.refund(&late).unwrap_err();
        assert_eq!(refused.code.as_str(), "refund_window_closed");
        let refund_posts = host.requests().iter().filter(|request| request.path().ends_with("/refunds")).count();
        assert_eq!(refund_posts, 1, "the late refund was refused without asking Smartum");
    }

    #[test]
    fn asked_only_to_read_a_signed_receipt_it_defers_the_signature_and_the_full_inspection_checks_it() {
        let (method, _host) = method_at(parse_rfc3339_ms("2026-11-25T12:00:00Z").unwrap());
        // Signed under the configured kid with a key that is not the configured one.
        let (forger, _) = jws::tests::key_pair();
        let claims =
            json!({"jti": "tx_R60D21hL60bj5N1v", "venue": "ven_pDmadXvNHA6XWoew", "benefit": "exercise", "amount": 700, "currency": "EUR"});
        let forged = jws::tests::sign(&forger, r#"{"alg":"ES512","kid":"k1"}"#, &claims.to_string());
        let payment = PaymentContext { currency: "EUR".into(), amount_due: 2000, eligible_amount: 2000, ..Default::default() };
        let mut reading = payment.clone();
        reading.set_defer_signature();

        let read = method.inspect_code(&reading, &forged).expect("read without the signature check");
        assert!(read.signature_deferred() && !read.signature_verified, "{read:?}");
        assert_eq!((read.receipt_key.as_str(), read.amount), ("tx_R60D21hL60bj5N1v", ROption::RSome(700)));
        let checked = method.inspect_code(&payment, &forged).expect_err("the full inspection checks the signature");
        assert_eq!(checked.code.as_str(), "bad_signature");
        // A bare transaction id has no signature to defer: its reading is final.
        let bare = method.inspect_code(&reading, "tx_R60D21hL60bj5N1v").unwrap();
        assert!(!bare.signature_deferred(), "{bare:?}");
    }

    #[test]
    fn a_check_by_any_attempt_of_the_payment_or_by_its_bare_id_is_ours() {
        let payment = PaymentContext { payment_id: "pay_01ABC".into(), attempt_id: "pay_01ABC-2".into(), ..Default::default() };
        for ours in ["pay_01ABC-2", "pay_01ABC-1", "pay_01ABC"] {
            assert!(checked_by_payment(Some(ours), &payment), "{ours}");
        }
        for theirs in ["pay_01ABD-1", "pay_01ABC1", "pay_01ABC-x", "pay_01ABC-1-2", ""] {
            assert!(!checked_by_payment(Some(theirs), &payment), "{theirs}");
        }
        assert!(!checked_by_payment(None, &payment));
    }
}
