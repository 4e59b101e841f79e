//! # posbridge plugin API, ABI v1
//!
//! This crate is everything a payment-method plugin for
//! [posbridge](https://example.invalid/posbridge) is written against. A plugin is a
//! `cdylib` that depends on this crate only, implements [`Plugin`] and
//! [`PaymentMethod`], and exports itself with [`export_plugin!`]. The daemon loads the
//! library at start-up, checks that it was built for a compatible ABI, and creates one
//! [`PaymentMethod`] per `[methods.<id>]` section of the configuration that names the
//! plugin.
//!
//! ## The rules a plugin lives by
//!
//! - **Synchronous calls with a deadline.** Every method is called on one of the host's
//!   blocking threads. A request carries `deadline_unix_ms`; work past it is wasted,
//!   because the host has already answered the cash register.
//! - **No own network I/O.** Outbound HTTP goes through [`Host::http`], so every call is
//!   timed, logged (with secrets redacted) and testable in one place. The clock is
//!   [`Host::now_unix_ms`], logging is [`Host::log`].
//! - **Panics never cross the boundary.** [`export_plugin!`] wraps every entry point in
//!   [`guard`], so a panic becomes a [`MethodError`] with code `plugin_panicked`; the
//!   daemon keeps serving.
//! - **Only `abi_stable` types cross the boundary.** Memory is freed by the side that
//!   allocated it; `RString`, `RVec` and friends take care of that.
//! - **Outcomes are idempotent.** A host may repeat a call after a crash or a lost
//!   answer. Use the ids it hands you (`attempt_id` for a payment attempt, `refund_id`
//!   for a refund) as idempotency keys towards your provider, and answer
//!   [`PaymentMethod::lookup`] from the provider's records, never from memory.
//! - **A request that may have been sent is never a plain failure.** Once a request
//!   that could take money may have reached the provider, a lost answer is
//!   [`codes::OUTCOME_UNKNOWN`] (the host looks the attempt up), never
//!   `provider_unavailable` (which tells the cashier nothing was taken).
//!
//! `docs/plugin-failures.md` in the posbridge repository has, per operation, every code,
//! what the host does with it and what the cash register sees; `posbridge plugin test`
//! checks a plugin against those rules.
//!
//! ## Versioning: ABI v1 is frozen
//!
//! The ABI version is this crate's major version ([`ABI_VERSION`]), and nothing else
//! is in this crate (helpers live in `posbridge-plugin-helpers`, the test host in
//! `posbridge-plugin-testkit`). v1 is frozen as of 1.0.0: its types keep their fields
//! and layout for every 1.x. Within v1, growth happens only where it was left room
//! for: [`Extensions`] on every value type (an operation grows through named values
//! on its context and answer, as `inspect_code` did in 1.1 with
//! [`PaymentContext::defers_signature`]), named constants on the open enumerations
//! ([`CardState`], [`RefundState`], [`LookupState`], [`LogLevel`]) and capability bits.
//! Not new trait methods: abi_stable refuses a plugin whose vtable is shorter than the
//! host's, so a method appended in 1.x would shut out every plugin built before it (the
//! repository's test, which loads a plugin built against a pinned copy of 1.0, says
//! so). So a plugin built against 1.0 loads into every 1.x host. A new major version is
//! a new root module type; the host refuses a plugin built for another major version
//! with a message naming both.

#![allow(non_local_definitions)] // emitted by `#[sabi_trait]` on current Rust

mod guard;
mod host;
mod method;
mod module;
mod types;

pub use abi_stable;
pub use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec};

pub use guard::{guard, panic_message};
pub use host::{Header, Host, HostBox, HostError, Host_TO, HttpRequest, HttpResponse, LogLevel};
pub use method::{ErasedPaymentMethod, ErasedPaymentMethod_TO, Guarded, PaymentMethod, PaymentMethodBox};
pub use module::{Capabilities, Manifest, MethodInfo, MethodSetup, Plugin, PluginModV1, PluginModV1Ref, ABI_VERSION, ROOT_MODULE_NAME};
pub use types::*;

#[doc(hidden)]
pub mod __private {
    pub use crate::module::{create_guarded, manifest_guarded, root_module};
}
