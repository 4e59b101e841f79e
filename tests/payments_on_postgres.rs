//! The payment flows of `payments.rs`, run against the PostgreSQL store: the testkit
//! sees this target's name (`…_on_postgres`) and gives every installation a database of
//! its own on a throwaway server. One suite, two backends.

#[path = "payments.rs"]
mod suite;
