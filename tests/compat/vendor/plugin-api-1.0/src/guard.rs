//! Turning panics into errors at the ABI boundary.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::types::MethodError;

/// Runs `f`, turning a panic into a [`MethodError`] with code `plugin_panicked`.
///
/// A panic that unwinds into `abi_stable`'s FFI guard aborts the whole daemon, so every
/// exported entry point runs through this. [`export_plugin!`](crate::export_plugin)
/// applies it for you; call it yourself only if you export extra functions by hand.
pub fn guard<T>(f: impl FnOnce() -> Result<T, MethodError>) -> Result<T, MethodError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(MethodError::new("plugin_panicked", format!("the plugin panicked: {}", panic_message(payload.as_ref())))),
    }
}

/// The text of a panic payload, for error messages.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_error_with_message() {
        let result: Result<(), MethodError> = guard(|| panic!("boom {}", 7));
        let error = result.unwrap_err();
        assert_eq!(error.code.as_str(), "plugin_panicked");
        assert!(error.message.contains("boom 7"), "{}", error.message);
    }

    #[test]
    fn ok_passes_through() {
        assert_eq!(guard(|| Ok(5)).unwrap(), 5);
    }
}
