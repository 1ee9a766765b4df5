//! Running a host program (netplan, iptables, nft, systemd-run, ...) with an argument
//! vector, no shell, and turning its failure into one kind of error: the program named, the
//! first line of what it said on stderr, and "not installed" / "needs root" told apart.

use crate::error::{Error, ErrorKind, Result, NEED_ROOT_HINT};
use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Run `program args...` and return its stdout; a non-zero exit is an error.
pub fn run_program<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let out = program_output(program, args)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(failed(program, args, &out))
}

/// Run `program args...` and return what it did, whatever its exit status; only a program
/// that cannot be started is an error. For callers that read stderr on success too.
pub fn program_output<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .output()
        .map_err(|e| not_started(program, e))
}

/// [`run_program`] with `input` written to the program's stdin (e.g. a keyfile for
/// `nmcli --offline`, which reads it from there).
pub fn run_program_with_input<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    input: &str,
) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| not_started(program, e))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A program that exits without reading all of it closes the pipe: its exit status
        // and stderr say why, so a broken pipe here is no error of its own.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("cannot run {program}"), e))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(failed(program, args, &out))
}

fn not_started(program: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::not_found(format!("{program} is not installed (not found on PATH)"))
        }
        _ => Error::io(format!("cannot run {program}"), e),
    }
}

/// The error for a program that ran and failed: `PROGRAM ARGS failed: FIRST STDERR LINE`,
/// of kind Permission (with the root hint) when it says it lacks the rights.
fn failed<S: AsRef<OsStr>>(program: &str, args: &[S], out: &Output) -> Error {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("exit status {}", out.status.code().unwrap_or(-1)));
    let mut cmdline = program.to_string();
    for a in args {
        cmdline.push(' ');
        cmdline.push_str(&a.as_ref().to_string_lossy());
    }
    let message = format!("{cmdline} failed: {line}");
    let lower = stderr.to_ascii_lowercase();
    if [
        "permission denied",
        "operation not permitted",
        "must be root",
    ]
    .iter()
    .any(|p| lower.contains(p))
    {
        Error::new(ErrorKind::Permission, message).with_hint(NEED_ROOT_HINT)
    } else {
        Error::host(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_failure_and_absence() {
        assert_eq!(run_program("echo", &["hi"]).unwrap(), "hi\n");
        let e = run_program("sh", &["-c", "echo first >&2; echo second >&2; exit 3"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Host);
        assert!(
            e.message.starts_with("sh -c ") && e.message.ends_with("failed: first"),
            "{}",
            e.message
        );
        let e = run_program(
            "sh",
            &["-c", "echo 'iptables: Permission denied' >&2; exit 4"],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permission);
        assert_eq!(e.hint.as_deref(), Some(NEED_ROOT_HINT));
        let e = run_program("sh", &["-c", "exit 5"]).unwrap_err();
        assert!(
            e.message.ends_with("failed: exit status 5"),
            "{}",
            e.message
        );
        assert_eq!(
            run_program_with_input("cat", &["-"], "in\n").unwrap(),
            "in\n"
        );
        let e = run_program_with_input("sh", &["-c", "read x; echo \"bad $x\" >&2; exit 1"], "y\n")
            .unwrap_err();
        assert!(e.message.ends_with("failed: bad y"), "{}", e.message);
        let e = run_program::<&str>("vbridge-no-such-program", &[]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("not installed"), "{}", e.message);
    }
}
