//! # Testing posbridge plugins
//!
//! Everything a plugin's own tests need to drive it the way posbridge does, without
//! posbridge:
//!
//! - [`FakeHost`]: the host a plugin is created with. Its HTTP goes to a transport you
//!   choose (a function standing in for the provider, or a real HTTP client towards a
//!   fake server), through scripted [`Fault`]s: connection refused, timeout, the answer
//!   dropped after the provider acted, 5xx, 429 with `Retry-After`, slow answers. It
//!   records every request and log line, and its [`Clock`] can be driven by hand.
//! - [`build`]: contexts, refund and lookup requests, and setups, with the defaults a
//!   host would use.
//! - [`conformance`]: the rules `posbridge plugin test` checks (no double charge, no
//!   lost money on a lost answer, fenced lookups, idempotent refunds, deadlines, no
//!   secret in a message), runnable in-process from a plugin's tests.
//!
//! ```no_run
//! use posbridge_plugin_testkit::{build, FakeHost, Fault};
//! # fn answer(_: &posbridge_plugin_api::HttpRequest) -> posbridge_plugin_api::HttpResponse { unimplemented!() }
//! let host = FakeHost::new(|request| Ok(answer(request)));
//! host.fail_next("POST", "/redeem", Fault::DropAnswer);
//! let setup = build::setup("voucher", "voucher", r#"{"api_url": "http://fake"}"#, &host);
//! // let method = MyPlugin::create(setup)?; … assert on host.requests(), host.logs()
//! # let _ = setup;
//! ```

pub mod build;
pub mod conformance;
mod host;

pub use host::{Clock, FakeHost, Fault, LogLine, RecordedRequest, Transport};
