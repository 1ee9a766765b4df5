//! The one golden-file check, shared by the unit tests (declared in `src/lib.rs` and
//! `src/main.rs`) and the integration tests (`tests/it/common.rs`): compare a text with its
//! file under `tests/data`, or, with `VBRIDGE_BLESS=1`, write the file instead (review the
//! diff before committing it).
#![allow(dead_code)]

use std::path::Path;

/// The one bless switch: `VBRIDGE_BLESS=1`.
pub fn bless() -> bool {
    std::env::var_os("VBRIDGE_BLESS").is_some_and(|v| v == "1")
}

/// Compare `actual` with the file at `path` (or write it when blessing). Err says how it
/// differs, as a unified diff, or that the file is missing.
pub fn check(path: &Path, actual: &str) -> Result<(), String> {
    if bless() {
        std::fs::write(path, actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return Ok(());
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => Ok(()),
        Ok(expected) => Err(format!(
            "{} differs (VBRIDGE_BLESS=1 rewrites it):\n{}",
            path.display(),
            similar::TextDiff::from_lines(expected.as_str(), actual)
                .unified_diff()
                .header("expected", "actual")
        )),
        Err(_) => Err(format!(
            "{} is missing (run with VBRIDGE_BLESS=1)",
            path.display()
        )),
    }
}

/// [`check`], panicking on a difference.
#[track_caller]
pub fn assert_golden(path: &Path, actual: &str) {
    if let Err(e) = check(path, actual) {
        panic!("{e}");
    }
}
