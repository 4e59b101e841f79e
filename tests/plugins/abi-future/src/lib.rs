//! Test-only plugin built against a plugin ABI of another major version: the root module
//! a hypothetical posbridge-plugin-api 2.0 would export (same name, version 2.0.0, one
//! more field). The host must refuse it, naming both versions, without running it.

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::RString;
use abi_stable::{declare_root_module_statics, export_root_module, StableAbi};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModV2Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginModV2 {
    pub manifest_json: extern "C" fn() -> RString,
    pub abi_generation: extern "C" fn() -> u32,
    #[sabi(last_prefix_field)]
    pub describe: extern "C" fn() -> RString,
}

impl RootModule for PluginModV2Ref {
    declare_root_module_statics! {PluginModV2Ref}
    const BASE_NAME: &'static str = "posbridge_plugin";
    const NAME: &'static str = "posbridge_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("2.0.0");
}

extern "C" fn manifest_json() -> RString {
    RString::from(r#"{"id":"abi-future"}"#)
}

extern "C" fn abi_generation() -> u32 {
    2
}

extern "C" fn describe() -> RString {
    RString::from("a plugin for posbridge plugin ABI 2")
}

#[export_root_module]
pub fn root_module() -> PluginModV2Ref {
    PluginModV2 { manifest_json, abi_generation, describe }.leak_into_prefix()
}
