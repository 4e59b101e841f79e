fn main() -> std::process::ExitCode {
    posbridge::cli::main()
}
