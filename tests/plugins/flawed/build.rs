//! This library wraps the real Smartum plugin's rlib, which exports its own plugin root
//! symbol; the linker keeps the first definition, this library's own (its objects come
//! before the rlibs on the link line). The test that loads it checks the manifest id.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-Wl,--allow-multiple-definition");
}
