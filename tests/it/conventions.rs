//! The binary behaves like the tools around it (issue 12): in text mode the report goes to
//! stdout and every error to stderr, per-VM and per-host failures of a call included; in JSON
//! mode one document goes to stdout and nothing to stderr; colour only on a terminal or when
//! asked, never with NO_COLOR; a progress line only on a terminal's stderr, never in JSON
//! mode. A pseudo-terminal comes from `script` (util-linux, essential on Debian).

use crate::common::{vbridge_bin, StateTmp};
use std::path::Path;
use std::process::Command;
use vbridge::shell;

fn homelab_uri() -> String {
    format!("test://{}/examples/homelab.xml", env!("CARGO_MANIFEST_DIR"))
}

/// A libvirtd that is not there, without the test driver's own noise on stderr.
fn nowhere_uri(dir: &Path) -> String {
    format!("qemu:///system?socket={}/none.sock", dir.display())
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

/// The binary with stdout and stderr on pipes; NO_COLOR as the test says, not as the
/// runner's environment has it.
fn run(state: &StateTmp, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(vbridge_bin());
    cmd.args(args)
        .env("VBRIDGE_STATE_DIR", state.dir.path())
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The binary on a pseudo-terminal (stdin, stdout and stderr), `redirect` appended to its
/// command line (e.g. `2>FILE`); returns its exit code and everything the terminal received,
/// line ends as the terminal made them (`\r\n`).
fn on_terminal(
    state: &StateTmp,
    args: &[&str],
    env: &[(&str, &str)],
    redirect: &str,
) -> (i32, String) {
    let bin = vbridge_bin();
    let mut line = shell::quote(bin.to_str().unwrap());
    for a in args {
        line.push(' ');
        line.push_str(&shell::quote(a));
    }
    line.push_str(redirect);
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env("VBRIDGE_STATE_DIR", state.dir.path())
        .env("TERM", "xterm")
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("script (util-linux) runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A desired-state file: the homelab's web and a VM that does not exist, and a host that
/// cannot be reached.
fn fleet_file(dir: &Path) -> String {
    let f = dir.join("fleet.yml");
    std::fs::write(
        &f,
        format!(
            "hosts:\n  - uri: {}\n    vms:\n      web:\n        nics:\n          - {{mac: \"52:54:00:3a:10:01\", bridge: br0, mode: persistent}}\n      nosuchvm:\n        nics:\n          - {{bridge: br0, mode: persistent}}\n  - uri: \"{}\"\n    vms:\n      db: {{}}\n",
            homelab_uri(),
            nowhere_uri(dir)
        ),
    )
    .unwrap();
    f.to_str().unwrap().to_string()
}

/// One command line and where its words must (and must not) appear in text mode.
struct Case {
    args: Vec<String>,
    code: i32,
    /// Each on stdout.
    out: &'static [&'static str],
    /// Each on stderr.
    err: &'static [&'static str],
    /// None of these on stdout (the errors).
    not_out: &'static [&'static str],
    /// None of these on stderr (the report).
    not_err: &'static [&'static str],
}

#[test]
fn errors_on_stderr_reports_on_stdout_and_json_alone_on_stdout() {
    let state = StateTmp::new();
    let uri = homelab_uri();
    let fleet = fleet_file(state.dir.path());
    let nowhere = nowhere_uri(state.dir.path());
    let on = |args: &[&str]| -> Vec<String> {
        ["-c", uri.as_str()]
            .iter()
            .chain(args)
            .map(|a| a.to_string())
            .collect()
    };
    let raw = |args: &[&str]| -> Vec<String> { args.iter().map(|a| a.to_string()).collect() };
    const NO_DOM: &str = "nosuchvm: error: no domain named \"nosuchvm\"";
    let cases = vec![
        // The issue's own words: nothing of it on stdout, exit 1.
        Case {
            args: on(&["attach", "nosuchvm"]),
            code: 1,
            out: &[],
            err: &[NO_DOM, "\n  hint: list them with `virsh list --all`"],
            not_out: &["nosuchvm"],
            not_err: &[],
        },
        // Some VMs succeed, one fails: the successes on stdout, the failure on stderr.
        Case {
            args: on(&["attach", "web", "nosuchvm", "db"]),
            code: 1,
            out: &["web: changed\n", "db: changed\n", "  backup: "],
            err: &[NO_DOM],
            not_out: &["nosuchvm", "error"],
            not_err: &["web", "db:"],
        },
        Case {
            args: on(&["attach", "-n", "web", "nosuchvm"]),
            code: 1,
            out: &["web: would change\n", "+++ b/web.xml\n"],
            err: &[NO_DOM],
            not_out: &["nosuchvm"],
            not_err: &["web"],
        },
        Case {
            args: on(&["attach", "--hotplug", "nosuchvm"]),
            code: 1,
            out: &[],
            err: &[NO_DOM],
            not_out: &["nosuchvm"],
            not_err: &[],
        },
        Case {
            args: on(&["detach", "nosuchvm", "--mac", "52:54:00:00:00:01"]),
            code: 1,
            out: &[],
            err: &[NO_DOM],
            not_out: &["nosuchvm"],
            not_err: &[],
        },
        Case {
            args: on(&["undo", "nosuchvm"]),
            code: 1,
            out: &[],
            err: &["nosuchvm: error: no backup of nosuchvm"],
            not_out: &["nosuchvm"],
            not_err: &[],
        },
        Case {
            args: on(&["net-define", "--bridge", "br:0"]),
            code: 1,
            out: &[],
            err: &["vbridge: error: ", "not a valid interface name"],
            not_out: &["br:0"],
            not_err: &[],
        },
        Case {
            args: on(&["verify", "nosuchvm", "--timeout", "0"]),
            code: 1,
            out: &[],
            err: &["vbridge: error: no domain named \"nosuchvm\""],
            not_out: &["nosuchvm"],
            not_err: &[],
        },
        // Findings are the report: stdout, even the ones that say what is wrong.
        Case {
            args: on(&["doctor"]),
            code: 0,
            out: &["Findings:\n", "  info vm-nat-only [web]"],
            err: &[],
            not_out: &[],
            not_err: &["Findings", "vm-nat-only"],
        },
        // A doctor that cannot run is an error.
        Case {
            args: raw(&["-c", &nowhere, "doctor"]),
            code: 1,
            out: &[],
            err: &["vbridge: error: cannot connect to "],
            not_out: &["connect"],
            not_err: &[],
        },
        Case {
            args: raw(&["host-bridge", "eth1"]),
            code: 1,
            out: &[],
            err: &["vbridge: error: say how to apply the bridge"],
            not_out: &["apply"],
            not_err: &[],
        },
        Case {
            args: raw(&["tap", "add", "a b", "--bridge", "br0"]),
            code: 1,
            out: &[],
            err: &["vbridge: error: \"a b\" is not a valid interface name"],
            not_out: &["a b"],
            not_err: &[],
        },
        // plan and apply: a VM and a host that fail, each under its heading on stderr; what
        // worked and the summary on stdout.
        Case {
            args: raw(&["plan", &fleet]),
            code: 1,
            out: &[
                "  vm web:\n    nic 52:54:00:3a:10:01: change on bridge br0",
                "plan: ",
            ],
            err: &[
                "  vm nosuchvm:\n    FAILED: no domain named \"nosuchvm\"",
                "  FAILED: cannot connect to qemu:///system?socket=",
            ],
            not_out: &["FAILED", "nosuchvm"],
            not_err: &["vm web", "plan:"],
        },
        Case {
            args: raw(&["apply", &fleet]),
            code: 1,
            out: &[
                "    nic 52:54:00:3a:10:01: changed on bridge br0",
                "apply: 1 change(s) made on 2 host(s); some failed\n",
            ],
            err: &[
                "  vm nosuchvm:\n    FAILED: no domain named",
                "  FAILED: cannot connect to ",
            ],
            not_out: &["FAILED", "nosuchvm"],
            not_err: &["vm web", "apply:"],
        },
        Case {
            args: raw(&["completions", "bash"]),
            code: 0,
            out: &["vbridge"],
            err: &[],
            not_out: &[],
            not_err: &[],
        },
        Case {
            args: raw(&["man", "--dir", "/proc/vbridge-nope"]),
            code: 1,
            out: &[],
            err: &["vbridge: error: cannot write man pages in /proc/vbridge-nope"],
            not_out: &["man"],
            not_err: &[],
        },
    ];
    for c in &cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let r = run(&state, &args, &[]);
        let said = format!(
            "{args:?} exit {}\nstdout:\n{}\nstderr:\n{}",
            r.code, r.out, r.err
        );
        assert_eq!(r.code, c.code, "{said}");
        if c.out.is_empty() {
            assert_eq!(r.out, "", "{said}");
        }
        if c.err.is_empty() {
            assert_eq!(r.err, "", "{said}");
        }
        for w in c.out {
            assert!(r.out.contains(w), "{w:?} not on stdout: {said}");
        }
        for w in c.err {
            assert!(r.err.contains(w), "{w:?} not on stderr: {said}");
        }
        for w in c.not_out {
            assert!(!r.out.contains(w), "{w:?} on stdout: {said}");
        }
        for w in c.not_err {
            assert!(!r.err.contains(w), "{w:?} on stderr: {said}");
        }
        // The same call in JSON mode: one document on stdout, the errors inside it, the
        // same exit code, nothing on stderr.
        let mut json = vec!["-o", "json"];
        json.extend(&args);
        let j = run(&state, &json, &[]);
        let said = format!(
            "{json:?} exit {}\nstdout:\n{}\nstderr:\n{}",
            j.code, j.out, j.err
        );
        assert_eq!(j.code, c.code, "{said}");
        assert_eq!(j.err, "", "{said}");
        assert_eq!(j.out.lines().count(), 1, "{said}");
        let v: serde_json::Value =
            serde_json::from_str(&j.out).unwrap_or_else(|e| panic!("{e}: {said}"));
        if c.code != 0 {
            assert!(j.out.contains("\"error\""), "{v}");
        }
    }
}

const ESC: char = '\x1b';

#[test]
fn colour_only_when_asked_or_on_a_terminal_and_never_with_no_color() {
    let state = StateTmp::new();
    let uri = homelab_uri();
    let diff = ["-c", uri.as_str(), "attach", "-n", "web"];

    // --color always: the diff's lines and the error label, even through a pipe; and a
    // flag given for this run outranks NO_COLOR.
    for env in [&[][..], &[("NO_COLOR", "1")][..]] {
        let r = run(&state, &[&["--color", "always"][..], &diff].concat(), env);
        assert!(
            r.out
                .contains("\x1b[32m+    <interface type='bridge'>\x1b[0m\n"),
            "{env:?} {:?}",
            r.out
        );
        assert!(
            r.out
                .contains("\x1b[31m-    <interface type='network'>\x1b[0m\n"),
            "{:?}",
            r.out
        );
        assert!(
            r.out.contains("\x1b[1m--- a/web.xml\x1b[0m\n"),
            "{:?}",
            r.out
        );
    }
    let r = run(&state, &["--color", "always", "-c", &uri, "doctor"], &[]);
    assert!(
        r.out.contains("  \x1b[36minfo\x1b[0m vm-nat-only [web]"),
        "{:?}",
        r.out
    );
    assert!(
        r.out.contains(
            "NIC e1000 \x1b[32mok\x1b[0m -> network default (NAT, not bridged) \x1b[33mwarn\x1b[0m"
        ),
        "{:?}",
        r.out
    );
    let r = run(
        &state,
        &["--color", "always", "-c", &uri, "attach", "nosuchvm"],
        &[],
    );
    assert!(
        r.err
            .starts_with("nosuchvm: \x1b[1m\x1b[31merror\x1b[0m: no domain named"),
        "{:?}",
        r.err
    );
    // JSON is never coloured.
    let r = run(
        &state,
        &["--color", "always", "-o", "json", "-c", &uri, "doctor"],
        &[],
    );
    assert!(!r.out.contains(ESC), "{:?}", r.out);

    // --color never, and auto on a pipe: none, and the text is the colourless text.
    let plain = run(&state, &diff, &[]);
    assert!(!plain.out.contains(ESC) && plain.out.contains("+    <interface type='bridge'>\n"));
    let never = run(&state, &[&["--color", "never"][..], &diff].concat(), &[]);
    assert_eq!(never.out, plain.out);
    let doctor_plain = run(&state, &["-c", &uri, "doctor"], &[]);
    assert!(!doctor_plain.out.contains(ESC), "{:?}", doctor_plain.out);

    // On a terminal, auto colours; NO_COLOR (any non-empty value) and --color never do not;
    // an empty NO_COLOR is as if unset. doctor draws no progress line, so any escape here
    // would be colour.
    let doctor = ["-c", uri.as_str(), "doctor"];
    let (code, tty) = on_terminal(&state, &doctor, &[], "");
    assert_eq!(code, 0, "{tty:?}");
    assert!(
        tty.contains("\x1b[36minfo\x1b[0m vm-nat-only [web]"),
        "{tty:?}"
    );
    for (env, args) in [
        (&[("NO_COLOR", "1")][..], &doctor[..]),
        (&[("NO_COLOR", "yes please")][..], &doctor[..]),
        (
            &[][..],
            &["--color", "never", "-c", uri.as_str(), "doctor"][..],
        ),
    ] {
        let (code, tty) = on_terminal(&state, args, env, "");
        assert_eq!(code, 0, "{tty:?}");
        assert!(
            tty.contains("info vm-nat-only [web]") && !tty.contains(ESC),
            "{env:?} {args:?}: {tty:?}"
        );
    }
    let (_, tty) = on_terminal(&state, &doctor, &[("NO_COLOR", "")], "");
    assert!(tty.contains("\x1b[36minfo\x1b[0m"), "{tty:?}");
    // clap's own usage errors follow --color too.
    let usage = ["attach", "web", "--index", "0"];
    let (code, tty) = on_terminal(&state, &usage, &[], "");
    assert_eq!(code, 2, "{tty:?}");
    assert!(tty.contains(ESC), "{tty:?}");
    let (code, tty) = on_terminal(
        &state,
        &[&usage[..], &["--color", "never"]].concat(),
        &[],
        "",
    );
    assert_eq!(code, 2, "{tty:?}");
    assert!(
        tty.contains("invalid value") && !tty.contains(ESC),
        "{tty:?}"
    );
    // The diff on a terminal: coloured; its error on the same terminal's stderr too.
    let (code, tty) = on_terminal(
        &state,
        &["-c", &uri, "attach", "-n", "web", "nosuchvm"],
        &[],
        "",
    );
    assert_eq!(code, 1, "{tty:?}");
    assert!(
        tty.contains("\x1b[32m+      <source bridge='br0'/>\x1b[0m"),
        "{tty:?}"
    );
    assert!(
        tty.contains("nosuchvm: \x1b[1m\x1b[31merror\x1b[0m: "),
        "{tty:?}"
    );
}

#[test]
fn progress_line_only_on_a_terminal_and_never_in_json_mode() {
    let state = StateTmp::new();
    let uri = homelab_uri();
    let fleet = fleet_file(state.dir.path());
    let bulk = [
        "-c",
        uri.as_str(),
        "attach",
        "-n",
        "--all",
        "web",
        "db",
        "nas",
        "media",
    ];
    let hot = [
        "-c",
        uri.as_str(),
        "attach",
        "-n",
        "--hotplug",
        "web",
        "db",
        "nas",
        "media",
    ];
    // verify on the test driver waits the whole timeout: web's address never answers.
    let wait = ["-c", uri.as_str(), "verify", "web", "--timeout", "1.5"];

    // Pipes: stderr holds nothing but errors, so no progress line.
    let r = run(&state, &bulk, &[]);
    assert_eq!((r.code, r.err.as_str()), (0, ""), "{}", r.out);
    let r = run(&state, &hot, &[]);
    assert_eq!((r.code, r.err.as_str()), (0, ""), "{}", r.out);
    let r = run(&state, &wait, &[]);
    assert_eq!(r.code, 1, "{}", r.out);
    assert_eq!(r.err, "", "verify's wait drew on a pipe");
    assert!(r.out.starts_with("web: FAILED\n"), "{}", r.out);

    // A terminal: the line is drawn on stderr while the work runs, then erased before the
    // report.
    let (code, tty) = on_terminal(&state, &wait, &[], "");
    assert_eq!(code, 1, "{tty:?}");
    assert!(
        tty.contains("web: waiting for a LAN address that answers (2 s left)"),
        "{tty:?}"
    );
    let last = tty.rfind("waiting for a LAN address").unwrap();
    let rest = &tty[last..];
    let erased = rest.find("\r\x1b[2K").expect("the line is erased");
    let report = rest.find("web: FAILED\r\n").expect("the report follows");
    assert!(erased < report, "{rest:?}");
    let (code, tty) = on_terminal(&state, &bulk, &[], "");
    assert_eq!(code, 0, "{tty:?}");
    assert!(
        tty.contains("reading domains [") && tty.contains("/4"),
        "{tty:?}"
    );
    assert!(tty.contains("web: would change\r\n"), "{tty:?}");
    let (code, tty) = on_terminal(&state, &hot, &[], "");
    assert_eq!(code, 0, "{tty:?}");
    assert!(
        tty.contains("hot-plugging NICs [") && tty.contains("/4"),
        "{tty:?}"
    );
    let (_, tty) = on_terminal(&state, &[&["-o", "json"][..], &hot].concat(), &[], "");
    assert!(
        !tty.contains("hot-plugging") && !tty.contains(ESC),
        "{tty:?}"
    );
    let (_, tty) = on_terminal(&state, &["apply", &fleet], &[], "");
    assert!(tty.contains("applying [") && tty.contains("/3"), "{tty:?}");

    // Never in JSON mode, never with -q, never on a dumb terminal, never when stderr is not
    // the terminal (stdout is).
    let (code, tty) = on_terminal(&state, &[&["-o", "json"][..], &wait].concat(), &[], "");
    assert_eq!(code, 1, "{tty:?}");
    assert!(!tty.contains("waiting") && !tty.contains(ESC), "{tty:?}");
    let v: serde_json::Value =
        serde_json::from_str(tty.trim_end()).unwrap_or_else(|e| panic!("{e}: {tty:?}"));
    assert_eq!(v["domain"], "web");
    let (_, tty) = on_terminal(&state, &[&["-q"][..], &wait].concat(), &[], "");
    assert!(!tty.contains("waiting"), "{tty:?}");
    let (_, tty) = on_terminal(&state, &wait, &[("TERM", "dumb")], "");
    assert!(
        !tty.contains("waiting") && tty.contains("web: FAILED"),
        "{tty:?}"
    );
    let errfile = state.dir.path().join("stderr");
    let redirect = format!(" 2>{}", shell::quote(errfile.to_str().unwrap()));
    let (code, tty) = on_terminal(&state, &bulk, &[], &redirect);
    assert_eq!(code, 0, "{tty:?}");
    assert!(
        tty.contains("web: would change") && !tty.contains("reading domains"),
        "{tty:?}"
    );
    assert_eq!(std::fs::read_to_string(&errfile).unwrap(), "");
}
