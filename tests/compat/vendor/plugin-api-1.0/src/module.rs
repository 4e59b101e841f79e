//! The library's root module, the manifest, and the macro that exports a plugin.

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RString, RVec};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};

use crate::guard::guard;
use crate::host::HostBox;
use crate::method::{PaymentMethod, PaymentMethodBox};
use crate::types::{Extensions, MethodError};

/// The plugin ABI major version this crate speaks: its own major version.
pub const ABI_VERSION: u32 = 1;

/// Name of the root module, checked by the host when it loads a library.
pub const ROOT_MODULE_NAME: &str = "posbridge_plugin";

/// What a payment method can do, as a bit set. Unknown bits (from a newer plugin) are
/// ignored by an older host.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// Validates and redeems scanned codes (`inspect_code`, `redeem`).
    pub const SCAN: Capabilities = Capabilities(1);
    /// Accepts a cashier's manual entry (`accept_manual`).
    pub const MANUAL_ENTRY: Capabilities = Capabilities(1 << 1);
    /// Takes card payments on a reader or payment page (`start_card`, `poll_card`).
    pub const CARD: Capabilities = Capabilities(1 << 2);
    /// Refunds a payment it took, from the stored `plugin_data`.
    pub const REFUND: Capabilities = Capabilities(1 << 3);
    /// Refunds by provider transaction id alone, without stored data.
    pub const REFUND_WITHOUT_CACHE: Capabilities = Capabilities(1 << 4);
    /// Answers `lookup`, so a crash mid-payment is resolved from the provider's records.
    pub const STATUS_LOOKUP: Capabilities = Capabilities(1 << 5);
    /// Abandons a started payment (`cancel_card`).
    pub const CANCEL: Capabilities = Capabilities(1 << 6);

    /// Every capability with its stable name, for listings and the API.
    pub const NAMED: [(Capabilities, &'static str); 7] = [
        (Capabilities::SCAN, "scan"),
        (Capabilities::MANUAL_ENTRY, "manual_entry"),
        (Capabilities::CARD, "card"),
        (Capabilities::REFUND, "refund"),
        (Capabilities::REFUND_WITHOUT_CACHE, "refund_without_cache"),
        (Capabilities::STATUS_LOOKUP, "status_lookup"),
        (Capabilities::CANCEL, "cancel"),
    ];

    /// `true` when every bit of `other` is set here.
    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets.
    pub const fn with(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    /// The names of the known capabilities in this set.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMED.iter().filter(|(cap, _)| self.contains(*cap)).map(|(_, name)| *name).collect()
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Capabilities) -> Capabilities {
        self.with(rhs)
    }
}

/// One kind of payment method a plugin provides.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct MethodInfo {
    /// The kind's name; a `[methods.<id>]` section picks it with `kind = "…"` when the
    /// plugin provides more than one.
    pub kind: RString,
    /// What it can do.
    pub capabilities: Capabilities,
    /// One line for technicians (`posbridge plugins`).
    pub description: RString,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

/// Who a plugin is and what it provides.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The id a config names in `plugin = "…"`: lowercase, digits and `-`.
    pub id: RString,
    /// The plugin's own semantic version.
    pub version: RString,
    /// The payment methods it provides (at least one).
    pub methods: RVec<MethodInfo>,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

/// Everything a plugin needs to create one configured payment method.
#[repr(C)]
#[derive(StableAbi)]
pub struct MethodSetup {
    /// The method id as the POS names it (the `<id>` of `[methods.<id>]`).
    pub method_id: RString,
    /// Which of the plugin's [`MethodInfo::kind`]s to create.
    pub kind: RString,
    /// The method's config section as a JSON object, without `plugin` and `kind`.
    /// Secrets are resolved: a key `x_file = "path"` arrives as `x` holding the file's
    /// contents (trailing newline trimmed), and a value `"env:NAME"` as the variable's
    /// value. Durations stay strings (`"10s"`).
    pub config_json: RString,
    /// The host's capabilities; keep it for the method's lifetime.
    pub host: HostBox,
    /// Values added after v1.0.
    pub extensions: Extensions,
}

/// A plugin: its manifest, and a constructor for its payment methods.
pub trait Plugin {
    /// The payment method type this plugin creates.
    type Method: PaymentMethod;

    /// Who the plugin is and what it provides. Called once at load.
    fn manifest() -> Manifest;

    /// Creates the payment method for one `[methods.<id>]` section. Return every
    /// problem with the config at once, each naming its key in `field`, so the
    /// technician sees them all with their line numbers.
    fn create(setup: MethodSetup) -> Result<Self::Method, Vec<MethodError>>;
}

/// The root module of a posbridge plugin library, ABI v1. Frozen: a later interface is
/// a new type (`PluginModV2`), tried first by newer hosts.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModV1Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginModV1 {
    /// Who the plugin is.
    pub manifest: extern "C" fn() -> RResult<Manifest, MethodError>,
    /// Creates a configured payment method.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(MethodSetup) -> RResult<PaymentMethodBox, RVec<MethodError>>,
}

impl RootModule for PluginModV1Ref {
    declare_root_module_statics! {PluginModV1Ref}
    const BASE_NAME: &'static str = ROOT_MODULE_NAME;
    const NAME: &'static str = ROOT_MODULE_NAME;
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The manifest entry point, guarded. Used by [`export_plugin!`].
pub extern "C" fn manifest_guarded<P: Plugin>() -> RResult<Manifest, MethodError> {
    guard(|| Ok(P::manifest())).into()
}

/// The constructor entry point, guarded. Used by [`export_plugin!`].
pub extern "C" fn create_guarded<P: Plugin>(setup: MethodSetup) -> RResult<PaymentMethodBox, RVec<MethodError>> {
    match guard(|| Ok(P::create(setup))) {
        Ok(Ok(method)) => RResult::ROk(PaymentMethodBox::of(method)),
        Ok(Err(problems)) => RResult::RErr(problems.into_iter().collect()),
        Err(panicked) => RResult::RErr(RVec::from(vec![panicked])),
    }
}

/// Builds the root module for plugin `P`. Used by [`export_plugin!`].
#[doc(hidden)]
pub fn root_module<P: Plugin>() -> PluginModV1Ref {
    PluginModV1 { manifest: manifest_guarded::<P>, create: create_guarded::<P> }.leak_into_prefix()
}

/// The symbol abi_stable looks up in a library (`abi_stable::library::ROOT_MODULE_LOADER_NAME`),
/// spelled out because `#[export_name]` takes only a literal. A unit test keeps it true.
#[doc(hidden)]
#[macro_export]
macro_rules! __root_module_symbol {
    () => {
        "_1as_0lib_1header_0root_bmodule_bloader"
    };
}

/// Exports a [`Plugin`] implementation as a posbridge plugin library.
///
/// Put it once in the `lib.rs` of a crate with `crate-type = ["cdylib"]`:
///
/// ```text
/// posbridge_plugin_api::export_plugin!(MyPlugin);
/// ```
///
/// It exports the ABI v1 root module, with every entry point guarded against panics.
/// Your crate needs no dependency on `abi_stable` of its own.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __POSBRIDGE_PLUGIN_ROOT: $crate::abi_stable::library::LibHeader = {
            extern "C" fn __posbridge_root_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader($crate::__private::root_module::<$plugin>)
            }
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::PluginModV1Ref>(
                    __posbridge_root_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_symbol_is_the_one_abi_stable_looks_up() {
        assert_eq!(crate::__root_module_symbol!(), abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }

    #[test]
    fn capability_names_follow_bits() {
        let caps = Capabilities::SCAN | Capabilities::REFUND;
        assert_eq!(caps.names(), vec!["scan", "refund"]);
        assert!(!caps.contains(Capabilities::CARD));
    }
}
