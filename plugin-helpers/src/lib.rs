//! # Helpers for posbridge plugins
//!
//! Plain Rust that most payment-method plugins need and that is *not* part of the plugin
//! ABI: reading a method's settings with every problem reported at once ([`Settings`]),
//! retrying provider calls within the call's deadline ([`retry`]), and RFC 3339 times and
//! Europe/Helsinki calendar days ([`time`]).
//!
//! It lives apart from `posbridge-plugin-api` so that its version can move on its own:
//! a breaking change here is a new major version of this crate, while the plugin-api
//! major version means the ABI alone. A plugin built against any version of these
//! helpers loads into any host that speaks its ABI.

pub mod retry;
mod settings;
pub mod time;

pub use settings::Settings;
