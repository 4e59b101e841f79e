//! One immutable snapshot of everything the config decides: methods (with those a
//! reload retired), who may call, the payment settings and registers, the plugin
//! catalog. Built by the same function at start-up and at reload and swapped whole
//! (`arc-swap`); work in flight keeps the snapshot it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::api::Access;
use crate::config::Config;
use crate::payments::PaymentSettings;
use crate::plugins::{Catalog, Methods};

/// The running configuration, whole.
pub struct Snapshot {
    pub config: Config,
    pub catalog: Catalog,
    pub methods: Methods,
    pub payments: PaymentSettings,
    pub access: Access,
}

/// The current snapshot, shared by the engine, the API and the reloader.
pub type Live = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    /// The snapshot of a validated config; `previous` (at a reload) hands over the
    /// methods it drops, retired, so their payments still refund and recover.
    pub fn build(config: Config, catalog: Catalog, methods: Methods, previous: Option<&Snapshot>) -> Snapshot {
        let methods = match previous {
            Some(previous) => methods.succeeding(&previous.methods),
            None => methods,
        };
        let payments = PaymentSettings {
            scan_timeout: config.payments.scan_timeout,
            card_timeout: config.payments.card_timeout,
            registers: config.registers.iter().map(|register| register.id.clone()).collect(),
        };
        let access = Access::of(&config);
        Snapshot { config, catalog, methods, payments, access }
    }

    /// A live cell holding `self`.
    pub fn into_live(self) -> Live {
        Arc::new(ArcSwap::from_pointee(self))
    }
}
