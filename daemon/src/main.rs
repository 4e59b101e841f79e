fn main() -> std::process::ExitCode {
    // Test builds only: failure points named in FAILPOINTS (see daemon/Cargo.toml).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    posbridge::cli::main()
}
