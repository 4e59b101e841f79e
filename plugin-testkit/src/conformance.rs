//! The conformance check: drives a payment method against its provider (a fake, or the
//! provider's sandbox) through a fault-injecting [`FakeHost`], and fails it, one line
//! per rule, where it would lose or double money in a shop. `posbridge plugin test` runs
//! it on a plugin loaded by the real loader; a plugin's own tests can run it in-process.
//!
//! The rules (each result names one):
//!
//! | rule | fails when |
//! |---|---|
//! | `capabilities` | a capability the manifest promises answers `unsupported`, or codes are scanned without `status_lookup` |
//! | `redeem_repeat` | a redeem repeated with the same attempt id is refused or takes a second transaction |
//! | `lost_answer` | a redeem whose answer was lost is reported as anything but success or `outcome_unknown` although the provider took it |
//! | `lookup_taken` | a lookup answers anything but `TAKEN` for an attempt the provider took |
//! | `lookup_fencing` | a lookup answers `NOT_TAKEN` while the attempt could still land, and it then lands |
//! | `lookup_concludes` | a lookup never answers `NOT_TAKEN` for an attempt that never reached the provider, after its deadline (the payment would stay `processing`) |
//! | `refund_repeat` | a refund repeated with the same refund id refunds again |
//! | `refund_resend` | a refund whose answer was lost is reported as a final failure, or its resend with the same id is refused |
//! | `deadline` | a call returns after its `deadline_unix_ms`, or gives a request a timeout that ends after it |
//! | `secrets` | a secret from the method's settings appears in an error, a log line, or an unredacted URL |

use std::fmt;

use posbridge_plugin_api::{
    Capabilities, CardProgress, InspectedCode, LookupState, MethodError, MethodSetup, PaymentContext, PaymentMethodBox, ProviderStatus,
    RResult, Settlement,
};
use serde_json::{json, Value};

use crate::build;
use crate::host::{FakeHost, Fault, Transport};

/// Slack allowed past a deadline for the call to return (scheduling, not work).
const RETURN_SLACK_MS: i64 = 1_000;
/// Slack allowed for a request's timeout past the call's deadline: the plugin computes
/// it from a "now" read a moment before the host records the request, and a loaded
/// machine may pause it in between. A plugin with a fixed long timeout is far past it.
const TIMEOUT_SLACK_MS: i64 = 1_000;
/// The deadline of a redeem whose line goes down: long enough for one retry.
const OUTAGE_BUDGET_MS: i64 = 2_000;

/// Where fresh scannable codes come from: a function that pays `amount` cents at the
/// provider's fake "app" and returns the code to scan.
pub type CodeSource = Box<dyn Fn(u64) -> Result<String, String>>;

/// Creates the method under test on the host it is given.
pub type Create = Box<dyn Fn(MethodSetup) -> Result<PaymentMethodBox, Vec<MethodError>>>;

/// The payment method to check, and how to reach its provider.
pub struct Subject {
    /// The method id (`[methods.<id>]`).
    pub method_id: String,
    /// The plugin kind it is created as.
    pub kind: String,
    /// What the plugin's manifest promises for this kind.
    pub capabilities: Capabilities,
    /// The method's settings as the host passes them (secrets resolved): also where the
    /// check finds the secrets that must never show.
    pub config_json: String,
    /// Creates the method on the check's host.
    pub create: Create,
    /// Where requests go when no fault stops them.
    pub transport: Transport,
    /// Fresh codes to scan; without it the rules that need a paid code are skipped.
    pub codes: Option<CodeSource>,
    /// The amount each test payment is for, in cents.
    pub amount: u64,
}

/// How one rule ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The method follows the rule (what was checked).
    Passed(String),
    /// The method breaks the rule (why, in one line).
    Failed(String),
    /// The rule could not be checked (why).
    Skipped(String),
}

/// One rule's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleResult {
    /// The rule's name (see the module's table).
    pub rule: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// Every rule's result for one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The method checked.
    pub method_id: String,
    /// In the order the rules ran.
    pub results: Vec<RuleResult>,
}

impl Report {
    /// `true` when no rule failed (skipped rules are reported, not failed).
    pub fn passed(&self) -> bool {
        !self.results.iter().any(|result| matches!(result.outcome, Outcome::Failed(_)))
    }

    /// The failed rules.
    pub fn failures(&self) -> Vec<&RuleResult> {
        self.results.iter().filter(|result| matches!(result.outcome, Outcome::Failed(_))).collect()
    }

    /// The outcome of `rule`, if it ran.
    pub fn outcome(&self, rule: &str) -> Option<&Outcome> {
        self.results.iter().find(|result| result.rule == rule).map(|result| &result.outcome)
    }

    /// The report as JSON (for `--out`).
    pub fn to_json(&self) -> Value {
        let rules: Vec<Value> = self
            .results
            .iter()
            .map(|result| {
                let (outcome, detail) = match &result.outcome {
                    Outcome::Passed(detail) => ("passed", detail),
                    Outcome::Failed(detail) => ("failed", detail),
                    Outcome::Skipped(detail) => ("skipped", detail),
                };
                json!({"rule": result.rule, "outcome": outcome, "detail": detail})
            })
            .collect();
        json!({"method": self.method_id, "passed": self.passed(), "rules": rules})
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for result in &self.results {
            let (tag, detail) = match &result.outcome {
                Outcome::Passed(detail) => ("pass", detail),
                Outcome::Failed(detail) => ("FAIL", detail),
                Outcome::Skipped(detail) => ("skip", detail),
            };
            writeln!(f, "  {tag}  {:<17} {detail}", result.rule)?;
        }
        let count = |wanted: fn(&Outcome) -> bool| self.results.iter().filter(|result| wanted(&result.outcome)).count();
        write!(
            f,
            "method {:?}: {} failed, {} passed, {} skipped",
            self.method_id,
            count(|outcome| matches!(outcome, Outcome::Failed(_))),
            count(|outcome| matches!(outcome, Outcome::Passed(_))),
            count(|outcome| matches!(outcome, Outcome::Skipped(_)))
        )
    }
}

/// Runs every rule against `subject`. Uses a few fresh codes from `subject.codes` and
/// refunds what it can of what they paid.
pub fn run(subject: &Subject) -> Report {
    let host = FakeHost::with_transport(subject.transport.clone());
    let mut report = Report { method_id: subject.method_id.clone(), results: Vec::new() };
    let setup = build::setup(&subject.method_id, &subject.kind, &subject.config_json, &host);
    let method = match (subject.create)(setup) {
        Ok(method) => method,
        Err(problems) => {
            let why = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            report.results.push(RuleResult { rule: "create", outcome: Outcome::Failed(format!("the method could not be created: {why}")) });
            return report;
        }
    };
    let mut check = Check { subject, host, method, seen: Vec::new(), deadline_breaches: Vec::new() };
    let mut push = |rule: &'static str, outcome: Outcome| report.results.push(RuleResult { rule, outcome });
    push("capabilities", check.capabilities());
    let paid = check.scan_rules(&mut push);
    check.refund_rules(paid, &mut push);
    push("deadline", check.deadline());
    push("secrets", check.secrets());
    report
}

/// A payment the check settled, for the refund rules.
struct Paid {
    payment: PaymentContext,
    settlement: Settlement,
}

struct Check<'a> {
    subject: &'a Subject,
    host: FakeHost,
    method: PaymentMethodBox,
    /// Every error message and text answer the method produced, for the secrets rule.
    seen: Vec<String>,
    deadline_breaches: Vec<String>,
}

fn code_of<T>(result: &Result<T, MethodError>) -> &str {
    result.as_ref().err().map_or("ok", |error| error.code.as_str())
}

fn state_name(state: LookupState) -> &'static str {
    match state {
        LookupState::NOT_TAKEN => "NOT_TAKEN",
        LookupState::IN_PROGRESS => "IN_PROGRESS",
        LookupState::TAKEN => "TAKEN",
        LookupState::REFUSED => "REFUSED",
        _ => "an unknown state",
    }
}

impl Check<'_> {
    fn has(&self, capability: Capabilities) -> bool {
        self.subject.capabilities.contains(capability)
    }

    /// One call of the method with deadline `deadline`: records what it said and whether
    /// it kept to the deadline.
    fn call<T>(
        &mut self,
        operation: &str,
        deadline: i64,
        f: impl FnOnce(&PaymentMethodBox) -> RResult<T, MethodError>,
    ) -> Result<T, MethodError> {
        let first_request = self.host.requests().len();
        let result = f(&self.method).into_result();
        let now = self.host.clock().now_unix_ms();
        if now > deadline + RETURN_SLACK_MS {
            self.deadline_breaches.push(format!("{operation} returned {} ms after its deadline", now - deadline));
        }
        for request in &self.host.requests()[first_request..] {
            let ends = request.at_unix_ms + request.timeout_ms as i64;
            if ends > deadline + TIMEOUT_SLACK_MS {
                self.deadline_breaches.push(format!(
                    "{operation} gave {} {} a {} ms timeout, ending {} ms after the call's deadline",
                    request.method,
                    request.path(),
                    request.timeout_ms,
                    ends - deadline
                ));
            }
        }
        if let Err(error) = &result {
            self.seen.push(format!("{operation}: {error}"));
        }
        result
    }

    fn payment(&self) -> PaymentContext {
        build::payment(&self.host, self.subject.amount)
    }

    fn inspect(&mut self, payment: &PaymentContext, code: &str) -> Result<InspectedCode, MethodError> {
        let deadline = payment.deadline_unix_ms;
        self.call("inspect_code", deadline, |method| method.inspect_code(payment, code.into()))
    }

    fn redeem(&mut self, payment: &PaymentContext, code: &str, inspected: &InspectedCode) -> Result<Settlement, MethodError> {
        let payment = build::again(&self.host, payment);
        self.call("redeem", payment.deadline_unix_ms, |method| method.redeem(&payment, code.into(), inspected))
    }

    fn lookup(
        &mut self,
        payment: &PaymentContext,
        inspected: &InspectedCode,
        attempt_deadline: i64,
    ) -> Result<ProviderStatus, MethodError> {
        let request = build::lookup(&self.host, payment, inspected, attempt_deadline);
        self.call("lookup", request.payment.deadline_unix_ms, |method| method.lookup(&request))
    }

    /// A deadline that has passed: the attempt can no longer land.
    fn past(&self) -> i64 {
        self.host.clock().now_unix_ms() - 60_000
    }

    /// A deadline still ahead: the attempt may still land.
    fn ahead(&self) -> i64 {
        self.host.clock().now_unix_ms() + build::CALL_BUDGET_MS
    }

    fn capabilities(&mut self) -> Outcome {
        let mut tried = Vec::new();
        let mut unsupported = Vec::new();
        let payment = self.payment();
        let deadline = payment.deadline_unix_ms;
        let mut probe = |name: &'static str, answer: &str| {
            tried.push(name);
            if answer == posbridge_plugin_api::codes::UNSUPPORTED {
                unsupported.push(name);
            }
        };
        if self.has(Capabilities::SCAN) {
            let answer = self.inspect(&payment, "posbridge-conformance-not-a-code").map(|_| ());
            probe("scan", code_of(&answer));
        }
        if self.has(Capabilities::MANUAL_ENTRY) {
            let entry = posbridge_plugin_api::ManualEntry { amount: 1, ..Default::default() };
            let answer = self.call("accept_manual", deadline, |method| method.accept_manual(&payment, &entry)).map(|_| ());
            probe("manual_entry", code_of(&answer));
        }
        if self.has(Capabilities::CARD) {
            let started = self.call("start_card", deadline, |method| method.start_card(&payment));
            probe("card", code_of(&started));
            if self.has(Capabilities::CANCEL) {
                let data = started.as_ref().map(|progress: &CardProgress| progress.plugin_data.to_string()).unwrap_or_default();
                let payment = build::again(&self.host, &payment);
                let canceled =
                    self.call("cancel_card", payment.deadline_unix_ms, |method| method.cancel_card(&payment, data.as_str().into()));
                probe("cancel", code_of(&canceled));
            }
        }
        for (capability, name) in [(Capabilities::REFUND, "refund"), (Capabilities::REFUND_WITHOUT_CACHE, "refund_without_cache")] {
            if self.has(capability) {
                let settlement = Settlement { captured_amount: 1, ..Default::default() };
                let mut request = build::refund(&self.host, &payment, &settlement, 1);
                request.transaction_id = posbridge_plugin_api::ROption::RSome("tx_conformance0000000".into());
                if capability == Capabilities::REFUND_WITHOUT_CACHE {
                    request.plugin_data = posbridge_plugin_api::ROption::RNone;
                }
                let answer = self.call("refund", request.deadline_unix_ms, |method| method.refund(&request)).map(|_| ());
                probe(name, code_of(&answer));
            }
        }
        if self.has(Capabilities::STATUS_LOOKUP) {
            let inspected = InspectedCode { receipt_key: "posbridge-conformance-unknown".into(), ..Default::default() };
            let answer = self.lookup(&payment, &inspected, self.past()).map(|_| ());
            probe("status_lookup", code_of(&answer));
        }
        if self.has(Capabilities::SCAN) && !self.has(Capabilities::STATUS_LOOKUP) {
            return Outcome::Failed(
                "the method scans codes but does not declare status_lookup: after a lost answer or a crash the host could never \
                 learn whether the code paid, and the payment would stay processing"
                    .into(),
            );
        }
        if unsupported.is_empty() {
            Outcome::Passed(format!("every promised capability answers ({})", tried.join(", ")))
        } else {
            Outcome::Failed(format!(
                "the manifest promises {} but the method answers `unsupported`: declare only what is implemented",
                unsupported.join(", ")
            ))
        }
    }

    fn fresh_code(&self) -> Result<String, String> {
        match &self.subject.codes {
            Some(codes) => codes(self.subject.amount).map_err(|why| format!("no code to scan: {why}")),
            None => Err("needs fresh codes to scan (posbridge plugin test --codes URL)".into()),
        }
    }

    /// A code inspected for a fresh payment's first attempt.
    fn inspected_code(&mut self) -> Result<(PaymentContext, String, InspectedCode), String> {
        let code = self.fresh_code()?;
        let payment = self.payment();
        let inspected = self.inspect(&payment, &code).map_err(|error| format!("a fresh code did not inspect: {error}"))?;
        Ok((payment, code, inspected))
    }

    /// The scanned-code rules; answers a payment they settled, for the refund rules.
    fn scan_rules(&mut self, push: &mut impl FnMut(&'static str, Outcome)) -> Option<Paid> {
        const RULES: [&str; 5] = ["redeem_repeat", "lookup_taken", "lost_answer", "lookup_fencing", "lookup_concludes"];
        let skip_all = |push: &mut dyn FnMut(&'static str, Outcome), why: &str| {
            for rule in RULES {
                push(rule, Outcome::Skipped(why.to_string()));
            }
        };
        if !self.has(Capabilities::SCAN) {
            skip_all(push, "the method does not scan codes");
            return None;
        }
        let (payment, code, inspected) = match self.inspected_code() {
            Ok(found) => found,
            Err(why) => {
                skip_all(push, &why);
                return None;
            }
        };
        let requests_before = self.host.requests().len();
        let first = match self.redeem(&payment, &code, &inspected) {
            Ok(settlement) => settlement,
            Err(error) => {
                skip_all(push, &format!("a fresh code did not redeem: {error}"));
                return None;
            }
        };
        let redeem_requests = self.host.requests().len() - requests_before;
        push("redeem_repeat", self.redeem_repeat(&payment, &code, &inspected, &first));
        push("lookup_taken", self.lookup_taken(&payment, &inspected, &first));
        push("lost_answer", self.lost_answer(redeem_requests));
        let (fencing, concludes) = self.fencing();
        push("lookup_fencing", fencing);
        push("lookup_concludes", concludes);
        Some(Paid { payment, settlement: first })
    }

    fn redeem_repeat(&mut self, payment: &PaymentContext, code: &str, inspected: &InspectedCode, first: &Settlement) -> Outcome {
        match self.redeem(payment, code, inspected) {
            Ok(second) if same_settlement(&second, first) => {
                Outcome::Passed("a redeem repeated with the same attempt id answers the first one's settlement".into())
            }
            Ok(second) => Outcome::Failed(format!(
                "a redeem repeated with the same attempt id took {} cents as transaction {:?} after {} cents as {:?}: it charges twice",
                second.captured_amount, second.transaction_id, first.captured_amount, first.transaction_id
            )),
            Err(error) => Outcome::Failed(format!(
                "a redeem repeated with the same attempt id (as the host does after a lost answer) was refused ({error}): the cashier \
                 would be told it failed while the money was taken"
            )),
        }
    }

    fn lookup_taken(&mut self, payment: &PaymentContext, inspected: &InspectedCode, first: &Settlement) -> Outcome {
        match self.lookup(payment, inspected, self.past()) {
            Ok(status) if status.state == LookupState::TAKEN => match status.settlement.into_option() {
                Some(found) if found.transaction_id == first.transaction_id => {
                    Outcome::Passed("a lookup of a redeemed attempt (write-ahead record only, as after a crash) answers TAKEN".into())
                }
                found => Outcome::Failed(format!(
                    "a lookup answered TAKEN with {:?} for an attempt settled as {:?}",
                    found.map(|found| found.transaction_id),
                    first.transaction_id
                )),
            },
            Ok(status) => Outcome::Failed(format!(
                "a lookup answered {} for an attempt the provider took (with only the write-ahead record, as after a crash): the \
                 cashier would be told nothing was taken",
                state_name(status.state)
            )),
            Err(error) => Outcome::Failed(format!("a lookup of a redeemed attempt failed ({error}); it must find what the provider took")),
        }
    }

    /// Loses the answer of each request a redeem makes, in turn, with a fresh code each:
    /// once with the line back at once, once with the line down for the rest of the call.
    fn lost_answer(&mut self, redeem_requests: usize) -> Outcome {
        let mut checked = Vec::new();
        let cases = (0..redeem_requests.max(1)).flat_map(|index| [(index, Fault::DropAnswer), (index, Fault::DropAnswerThenOutage)]);
        for (index, fault) in cases {
            let (payment, code, inspected) = match self.inspected_code() {
                Ok(found) => found,
                Err(why) => return Outcome::Skipped(why),
            };
            let before = self.host.requests().len();
            self.host.fail_request(index, fault.clone());
            // A short deadline: under an outage a plugin retries until it runs out.
            let payment = PaymentContext { deadline_unix_ms: self.host.clock().now_unix_ms() + OUTAGE_BUDGET_MS, ..payment };
            let answer = self.call("redeem", payment.deadline_unix_ms, |method| method.redeem(&payment, code.as_str().into(), &inspected));
            self.host.clear_faults();
            let Some(lost) = self
                .host
                .requests()
                .get(before + index)
                .filter(|request| request.fault.as_ref() == Some(&fault))
                .map(|request| format!("{} {}", request.method, request.path()))
            else {
                continue; // this redeem made fewer requests: nothing was lost
            };
            let taken = match self.lookup(&payment, &inspected, self.past()) {
                Ok(status) => status.state == LookupState::TAKEN,
                Err(error) if answer.as_ref().is_err_and(|answer| !answer.is_outcome_unknown()) => {
                    return Outcome::Failed(format!(
                        "redeem answered {} after the answer to {lost} was lost, and the lookup that should tell whether the \
                         provider took the payment failed ({error})",
                        answer.as_ref().err().map(|answer| answer.code.to_string()).unwrap_or_default()
                    ))
                }
                Err(_) => false,
            };
            let said = match &answer {
                Ok(_) => "success".to_string(),
                Err(error) => error.code.to_string(),
            };
            if let Err(error) = &answer {
                if taken && !error.is_outcome_unknown() {
                    return Outcome::Failed(format!(
                        "redeem answered {} after the answer to {lost} was lost ({fault:?}), but the provider took the payment: a \
                         lost answer after the request may have been sent must be `outcome_unknown`",
                        error.code
                    ));
                }
            }
            let fate = if taken { "taken" } else { "nothing taken" };
            let line = if fault == Fault::DropAnswer { "then back" } else { "then down" };
            checked.push(format!("{lost} lost, line {line} → {said} ({fate})"));
        }
        if checked.is_empty() {
            return Outcome::Skipped("no request of a redeem could be made to lose its answer".into());
        }
        Outcome::Passed(format!(
            "with an answer lost, redeem answered success or outcome_unknown, or nothing was taken: {}",
            checked.join("; ")
        ))
    }

    /// A lookup before the attempt's deadline must not say NOT_TAKEN if the attempt can
    /// still land; after it, with nothing sent, it must (else recovery never ends).
    fn fencing(&mut self) -> (Outcome, Outcome) {
        let (payment, code, inspected) = match self.inspected_code() {
            Ok(found) => found,
            Err(why) => return (Outcome::Skipped(why.clone()), Outcome::Skipped(why)),
        };
        // Redeem right after the early lookup: whether that attempt could still land is
        // what the early answer had to respect.
        let early = self.lookup(&payment, &inspected, self.ahead());
        let landed = self.redeem(&payment, &code, &inspected).is_ok();
        let concludes = match self.inspected_code() {
            Ok((payment, _, inspected)) => self.lookup_concludes(&payment, &inspected),
            Err(why) => Outcome::Skipped(why),
        };
        let said_not_taken = matches!(&early, Ok(status) if status.state == LookupState::NOT_TAKEN);
        let fencing = if said_not_taken && landed {
            Outcome::Failed(
                "a lookup answered NOT_TAKEN before the attempt's deadline (it could still land), and the attempt then took the \
                 money: answer IN_PROGRESS until attempt_deadline_unix_ms has passed, or fence the attempt at the provider"
                    .into(),
            )
        } else if said_not_taken {
            Outcome::Passed("a lookup answered NOT_TAKEN early, and the attempt was fenced (it could not land afterwards)".into())
        } else {
            Outcome::Passed(format!(
                "before the attempt's deadline a lookup answered {}, not NOT_TAKEN",
                early.as_ref().map_or_else(|error| error.code.to_string(), |status| state_name(status.state).to_string())
            ))
        };
        (fencing, concludes)
    }

    /// Past its deadline, an attempt that never reached the provider must be NOT_TAKEN,
    /// or a crash before redeem leaves the payment processing for ever.
    fn lookup_concludes(&mut self, payment: &PaymentContext, inspected: &InspectedCode) -> Outcome {
        let late = self.lookup(payment, inspected, self.past());
        match &late {
            Ok(status) if matches!(status.state, LookupState::NOT_TAKEN | LookupState::REFUSED) => {
                Outcome::Passed("past its deadline, an attempt that never reached the provider is NOT_TAKEN".into())
            }
            Ok(status) => Outcome::Failed(format!(
                "past its deadline, a lookup of an attempt that never reached the provider answered {}: a crash before redeem would \
                 leave the payment processing forever",
                state_name(status.state)
            )),
            Err(error) => Outcome::Failed(format!("a lookup of an attempt that never reached the provider failed ({error})")),
        }
    }

    fn refund_rules(&mut self, paid: Option<Paid>, push: &mut impl FnMut(&'static str, Outcome)) {
        let why = if !self.has(Capabilities::REFUND) {
            Some("the method does not refund".to_string())
        } else if paid.is_none() {
            Some("needs a payment the check could settle (a scanned code; card payments need a customer)".to_string())
        } else {
            None
        };
        let (Some(paid), None) = (paid, why.clone()) else {
            let why = why.unwrap_or_default();
            push("refund_repeat", Outcome::Skipped(why.clone()));
            push("refund_resend", Outcome::Skipped(why));
            return;
        };
        let part = (paid.settlement.captured_amount / 4).max(1);
        push("refund_repeat", self.refund_repeat(&paid, part));
        let rest = paid.settlement.captured_amount.saturating_sub(part);
        push("refund_resend", self.refund_resend(&paid, rest));
    }

    fn refund(&mut self, request: &posbridge_plugin_api::RefundRequest) -> Result<posbridge_plugin_api::RefundOutcome, MethodError> {
        let request = posbridge_plugin_api::RefundRequest { deadline_unix_ms: self.ahead(), ..request.clone() };
        self.call("refund", request.deadline_unix_ms, |method| method.refund(&request))
    }

    fn refund_repeat(&mut self, paid: &Paid, amount: u64) -> Outcome {
        let request = build::refund(&self.host, &paid.payment, &paid.settlement, amount);
        let first = match self.refund(&request) {
            Ok(outcome) => outcome,
            Err(error) => return Outcome::Failed(format!("a refund of part of a settled payment failed ({error})")),
        };
        match self.refund(&request) {
            Ok(second) if first.provider_refund_id.is_none() && second.provider_refund_id.is_none() => {
                Outcome::Skipped("the plugin names no provider refund id, so a repeated refund cannot be told from a second one".into())
            }
            Ok(second) if second.provider_refund_id == first.provider_refund_id => {
                Outcome::Passed("a refund repeated with the same refund id answers the same provider refund".into())
            }
            Ok(second) => Outcome::Failed(format!(
                "a refund repeated with the same refund id made a second refund ({:?} after {:?}): it refunds twice",
                second.provider_refund_id, first.provider_refund_id
            )),
            Err(error) => Outcome::Failed(format!(
                "a refund repeated with the same refund id (as the host does after a lost answer) was refused ({error}); it must \
                 answer the first refund"
            )),
        }
    }

    fn refund_resend(&mut self, paid: &Paid, amount: u64) -> Outcome {
        let request = build::refund(&self.host, &paid.payment, &paid.settlement, amount);
        self.host.fail_request(0, Fault::DropAnswer);
        let lost = self.refund(&request);
        self.host.clear_faults();
        if let Err(error) = &lost {
            if !error.retryable && !error.is_outcome_unknown() {
                return Outcome::Failed(format!(
                    "a refund whose answer was lost was reported as a final failure ({error}): the host would give up on money \
                     that may be on its way back; answer it as retryable or outcome_unknown"
                ));
            }
        }
        match self.refund(&request) {
            Ok(_) => Outcome::Passed("a refund whose answer was lost is resent with the same refund id and answers once".into()),
            Err(error) => Outcome::Failed(format!(
                "a refund resent with the same refund id after its answer was lost was refused ({error}): resending is not safe"
            )),
        }
    }

    fn deadline(&mut self) -> Outcome {
        // One more call under a slow provider, to see the plugin give up in time.
        let payment = PaymentContext { deadline_unix_ms: self.host.clock().now_unix_ms() + 1_000, ..self.payment() };
        self.host.fail_all("", "", Fault::Slow { delay_ms: 5_000 });
        let answer = self.call("check_connection", payment.deadline_unix_ms, |method| method.check_connection(payment.deadline_unix_ms));
        self.host.clear_faults();
        if let Ok(text) = answer {
            self.seen.push(format!("check_connection: {text}"));
        }
        match self.deadline_breaches.first() {
            None => Outcome::Passed("every call returned and every request ended within the call's deadline".into()),
            Some(first) => Outcome::Failed(format!(
                "{first} ({} breach(es) in all): the host has stopped waiting by then, and believes nothing lands after it",
                self.deadline_breaches.len()
            )),
        }
    }

    fn secrets(&mut self) -> Outcome {
        let secrets = secrets_in(&self.subject.config_json);
        if secrets.is_empty() {
            return Outcome::Skipped("the settings hold no secret (no key named like secret, password, token or private key)".into());
        }
        let logs = self.host.logs().into_iter().map(|line| format!("log: {}", line.message));
        let urls = self.host.requests().into_iter().map(|request| {
            let masked = request
                .redact
                .iter()
                .filter(|secret| !secret.is_empty())
                .fold(request.url.clone(), |url, secret| url.replace(secret, "***"));
            format!("URL of {}: {masked}", request.method)
        });
        let places: Vec<String> = self.seen.iter().cloned().chain(logs).chain(urls).collect();
        for (key, secret) in &secrets {
            if let Some(place) = places.iter().find(|place| place.contains(secret.as_str())) {
                let place = place.replace(secret.as_str(), "<the secret>");
                return Outcome::Failed(format!("the value of `{key}` appears in {place}"));
            }
        }
        let keys: Vec<&str> = secrets.iter().map(|(key, _)| key.as_str()).collect();
        Outcome::Passed(format!("no message, log line or URL shows {} ({} places read)", keys.join(", "), places.len()))
    }
}

/// The same settlement: the same provider transaction and amount, or, where the plugin
/// names no transaction, the same data.
fn same_settlement(second: &Settlement, first: &Settlement) -> bool {
    let same_transaction = match (&first.transaction_id, &second.transaction_id) {
        (posbridge_plugin_api::ROption::RSome(a), posbridge_plugin_api::ROption::RSome(b)) => a == b,
        (posbridge_plugin_api::ROption::RNone, posbridge_plugin_api::ROption::RNone) => first.plugin_data == second.plugin_data,
        _ => false,
    };
    same_transaction && second.captured_amount == first.captured_amount
}

/// The settings' secret values, by key: strings of 8 characters or more under a key named
/// like a secret.
fn secrets_in(config_json: &str) -> Vec<(String, String)> {
    fn walk(path: &str, value: &Value, found: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    let path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    let lower = key.to_ascii_lowercase();
                    let secret_like = ["secret", "password", "passwd", "token", "private", "credential", "api_key", "apikey"]
                        .iter()
                        .any(|word| lower.contains(word));
                    match value {
                        Value::String(text) if secret_like && text.len() >= 8 => found.push((path, text.clone())),
                        _ => walk(&path, value, found),
                    }
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    walk(&format!("{path}[{index}]"), item, found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    if let Ok(value) = serde_json::from_str::<Value>(config_json) {
        walk("", &value, &mut found);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_found_by_key_name_at_any_depth() {
        let found =
            secrets_in(r#"{"client_secret":"s3cr3t-value","api_url":"http://x","nested":{"api_key":"sk_test_123456"},"pin":"1234"}"#);
        assert_eq!(
            found,
            vec![("client_secret".to_string(), "s3cr3t-value".to_string()), ("nested.api_key".to_string(), "sk_test_123456".to_string())]
        );
    }
}
