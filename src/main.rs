//! The `vbridge` binary: parse arguments, call the library, render the report. The library
//! (`src/lib.rs`) knows nothing of this layer: argument parsing, rendering and exit codes
//! live here only.

mod cli;

/// The golden-file check the unit tests share with the integration tests.
#[cfg(test)]
#[path = "../tests/support/golden.rs"]
mod golden;

fn main() -> std::process::ExitCode {
    cli::main()
}
