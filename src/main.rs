//! The `vbridge` binary: parse arguments, call the library, render the report.

fn main() -> std::process::ExitCode {
    vbridge::cli_main()
}
