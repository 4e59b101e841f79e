//! posbridge: a local payment bridge between cash registers and payment-method plugins.
//!
//! The binary (`main.rs`) is a thin CLI over these modules; see ARCHITECTURE.md for the
//! map and the invariants.

pub mod api;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod file_trust;
pub mod logging;
pub mod metrics;
pub mod payments;
pub mod plugins;
pub mod qr_images;
pub mod reload;
pub mod runtime;
pub mod sandbox;
pub mod scanners;
pub mod snapshot;
pub mod store;
pub mod tokens;
