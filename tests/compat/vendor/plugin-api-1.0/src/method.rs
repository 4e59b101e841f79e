//! A payment method: the trait integrators implement, and its ABI-stable twin.

use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RResult, RSlice, RStr, RString};

use crate::guard::guard;
use crate::types::{
    CardProgress, CartLine, InspectedCode, LookupRequest, ManualEntry, MethodError, PaymentContext, ProviderStatus, RefundOutcome,
    RefundRequest, Settlement,
};

/// One configured payment method (a `[methods.<id>]` section), as a plugin implements it.
///
/// Every operation has a default that answers `unsupported`; implement the ones your
/// manifest's [`Capabilities`](crate::Capabilities) promise. The host calls only those.
///
/// Flows, and which operations they use:
/// - **Scanned receipt**: [`inspect_code`](Self::inspect_code) (offline: parse, verify)
///   → the host records the transaction id durably → [`redeem`](Self::redeem) (online:
///   confirm and mark used).
/// - **Manual entry**: [`accept_manual`](Self::accept_manual).
/// - **Card**: [`start_card`](Self::start_card), then [`poll_card`](Self::poll_card)
///   until it settles; [`cancel_card`](Self::cancel_card) on cancel or deadline.
/// - **Refund**: [`refund`](Self::refund), with or without the stored `plugin_data`.
/// - **Recovery** after a crash: [`lookup`](Self::lookup).
pub trait PaymentMethod: Send + Sync + 'static {
    /// The part of the cart this method may pay (e.g. lines carrying a product label).
    /// The default: every line.
    fn eligible_amount(&self, lines: &[CartLine]) -> Result<u64, MethodError> {
        Ok(lines.iter().map(|line| line.amount).sum())
    }

    /// Parses a scanned code and checks what can be checked offline (format,
    /// signature, venue, benefit, currency). No network I/O.
    fn inspect_code(&self, payment: &PaymentContext, code: &str) -> Result<InspectedCode, MethodError> {
        let _ = (payment, code);
        Err(MethodError::unsupported("scanned codes"))
    }

    /// Confirms an inspected code with the provider and marks it used, so it pays once.
    /// Must be idempotent for the same `payment.attempt_id`: after a lost answer the host
    /// may call again, and the second call must report the first one's success (same
    /// transaction, nothing taken twice). A request that may have reached the provider
    /// without an answer is `outcome_unknown`, never `provider_unavailable`.
    fn redeem(&self, payment: &PaymentContext, code: &str, inspected: &InspectedCode) -> Result<Settlement, MethodError> {
        let _ = (payment, code, inspected);
        Err(MethodError::unsupported("scanned codes"))
    }

    /// Records a payment the cashier entered by hand (unverified).
    fn accept_manual(&self, payment: &PaymentContext, entry: &ManualEntry) -> Result<Settlement, MethodError> {
        let _ = (payment, entry);
        Err(MethodError::unsupported("manual entry"))
    }

    /// Starts a card payment for `payment.amount_due`.
    fn start_card(&self, payment: &PaymentContext) -> Result<CardProgress, MethodError> {
        let _ = payment;
        Err(MethodError::unsupported("card payments"))
    }

    /// Reports where a started card payment stands.
    fn poll_card(&self, payment: &PaymentContext, plugin_data: &str) -> Result<CardProgress, MethodError> {
        let _ = (payment, plugin_data);
        Err(MethodError::unsupported("card payments"))
    }

    /// Abandons a started card payment (cancel pressed, or deadline passed). Answers the
    /// final progress: a payment that succeeded meanwhile is reported as succeeded.
    fn cancel_card(&self, payment: &PaymentContext, plugin_data: &str) -> Result<CardProgress, MethodError> {
        let _ = (payment, plugin_data);
        Err(MethodError::unsupported("cancel"))
    }

    /// Gives money back. Must be idempotent for the same `refund_id`.
    fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, MethodError> {
        let _ = request;
        Err(MethodError::unsupported("refunds"))
    }

    /// Reads the provider's record of an attempt the host lost track of. Answer
    /// `NOT_TAKEN` only when nothing was taken and nothing of the attempt can still land
    /// (see [`LookupState::NOT_TAKEN`](crate::LookupState::NOT_TAKEN)); "not found yet"
    /// before `attempt_deadline_unix_ms` has passed is `IN_PROGRESS`.
    fn lookup(&self, request: &LookupRequest) -> Result<ProviderStatus, MethodError> {
        let _ = request;
        Err(MethodError::unsupported("status lookup"))
    }

    /// Proves the provider is reachable with the configured credentials (for `posbridge
    /// doctor`), without taking or changing anything; answers a line for the technician.
    fn check_connection(&self, deadline_unix_ms: i64) -> Result<RString, MethodError> {
        let _ = deadline_unix_ms;
        Err(MethodError::unsupported("connection checks"))
    }
}

/// The ABI-stable form of [`PaymentMethod`], as the host calls it.
///
/// Plugin authors do not implement this: [`export_plugin!`](crate::export_plugin) wraps
/// your [`PaymentMethod`] in [`Guarded`], which implements it and catches panics.
#[sabi_trait]
pub trait ErasedPaymentMethod: Send + Sync {
    /// See [`PaymentMethod::eligible_amount`].
    fn eligible_amount(&self, lines: RSlice<'_, CartLine>) -> RResult<u64, MethodError>;
    /// See [`PaymentMethod::inspect_code`].
    fn inspect_code(&self, payment: &PaymentContext, code: RStr<'_>) -> RResult<InspectedCode, MethodError>;
    /// See [`PaymentMethod::redeem`].
    fn redeem(&self, payment: &PaymentContext, code: RStr<'_>, inspected: &InspectedCode) -> RResult<Settlement, MethodError>;
    /// See [`PaymentMethod::accept_manual`].
    fn accept_manual(&self, payment: &PaymentContext, entry: &ManualEntry) -> RResult<Settlement, MethodError>;
    /// See [`PaymentMethod::start_card`].
    fn start_card(&self, payment: &PaymentContext) -> RResult<CardProgress, MethodError>;
    /// See [`PaymentMethod::poll_card`].
    fn poll_card(&self, payment: &PaymentContext, plugin_data: RStr<'_>) -> RResult<CardProgress, MethodError>;
    /// See [`PaymentMethod::cancel_card`].
    fn cancel_card(&self, payment: &PaymentContext, plugin_data: RStr<'_>) -> RResult<CardProgress, MethodError>;
    /// See [`PaymentMethod::refund`].
    fn refund(&self, request: &RefundRequest) -> RResult<RefundOutcome, MethodError>;
    /// See [`PaymentMethod::lookup`].
    fn lookup(&self, request: &LookupRequest) -> RResult<ProviderStatus, MethodError>;
    /// See [`PaymentMethod::check_connection`].
    #[sabi(last_prefix_field)]
    fn check_connection(&self, deadline_unix_ms: i64) -> RResult<RString, MethodError>;
}

/// A created payment method as the host holds it.
pub type PaymentMethodBox = ErasedPaymentMethod_TO<'static, RBox<()>>;

/// A [`PaymentMethod`] behind the ABI, every call guarded against panics.
pub struct Guarded<M>(pub M);

impl<M: PaymentMethod> ErasedPaymentMethod for Guarded<M> {
    fn eligible_amount(&self, lines: RSlice<'_, CartLine>) -> RResult<u64, MethodError> {
        guard(|| self.0.eligible_amount(lines.as_slice())).into()
    }
    fn inspect_code(&self, payment: &PaymentContext, code: RStr<'_>) -> RResult<InspectedCode, MethodError> {
        guard(|| self.0.inspect_code(payment, code.as_str())).into()
    }
    fn redeem(&self, payment: &PaymentContext, code: RStr<'_>, inspected: &InspectedCode) -> RResult<Settlement, MethodError> {
        guard(|| self.0.redeem(payment, code.as_str(), inspected)).into()
    }
    fn accept_manual(&self, payment: &PaymentContext, entry: &ManualEntry) -> RResult<Settlement, MethodError> {
        guard(|| self.0.accept_manual(payment, entry)).into()
    }
    fn start_card(&self, payment: &PaymentContext) -> RResult<CardProgress, MethodError> {
        guard(|| self.0.start_card(payment)).into()
    }
    fn poll_card(&self, payment: &PaymentContext, plugin_data: RStr<'_>) -> RResult<CardProgress, MethodError> {
        guard(|| self.0.poll_card(payment, plugin_data.as_str())).into()
    }
    fn cancel_card(&self, payment: &PaymentContext, plugin_data: RStr<'_>) -> RResult<CardProgress, MethodError> {
        guard(|| self.0.cancel_card(payment, plugin_data.as_str())).into()
    }
    fn refund(&self, request: &RefundRequest) -> RResult<RefundOutcome, MethodError> {
        guard(|| self.0.refund(request)).into()
    }
    fn lookup(&self, request: &LookupRequest) -> RResult<ProviderStatus, MethodError> {
        guard(|| self.0.lookup(request)).into()
    }
    fn check_connection(&self, deadline_unix_ms: i64) -> RResult<RString, MethodError> {
        guard(|| self.0.check_connection(deadline_unix_ms)).into()
    }
}

impl PaymentMethodBox {
    /// Boxes a [`PaymentMethod`] behind the ABI, every call guarded against panics: what
    /// [`export_plugin!`](crate::export_plugin) hands the host, for tests that drive a
    /// method in-process exactly as a host would.
    pub fn of<M: PaymentMethod>(method: M) -> PaymentMethodBox {
        ErasedPaymentMethod_TO::from_value(Guarded(method), abi_stable::sabi_trait::TD_Opaque)
    }
}
