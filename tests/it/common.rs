//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Golden files: `golden::check`, `golden::assert_golden`, one bless switch.
#[path = "../support/golden.rs"]
pub mod golden;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The built `vbridge` binary.
pub fn vbridge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vbridge"))
}

/// Root-only tests call this first. Without root they skip with a notice for a person
/// running `cargo test`, but in CI (`CI` set) a missing privilege is a failure, not a skip.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root, and CI must run it (CI is set)");
    }
    eprintln!("SKIPPED {test}: needs root (run the README's test command as root)");
    false
}

/// A name unique to this process and call, short enough for interface names
/// (prefix of at most 6 bytes + 9 = 15).
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id() % 100_000;
    format!("{prefix}{pid:05}{n:03}")
}

/// Run a program with an argument vector; panic with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = run_status(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a program with an argument vector and return its output, whatever its status.
pub fn run_status(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// A network namespace created for one test and deleted when dropped, in every outcome.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Create a namespace with a unique name starting with `prefix`, loopback up.
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        run("ip", &v)
    }

    /// Run a program inside the namespace and return its output, whatever its status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut v = vec!["netns", "exec", self.name.as_str(), program];
        v.extend_from_slice(args);
        run_status("ip", &v)
    }

    /// Run the vbridge binary inside the namespace.
    pub fn vbridge(&self, args: &[&str]) -> Output {
        let bin = vbridge_bin();
        self.exec(bin.to_str().unwrap(), args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A temporary `VBRIDGE_STATE_DIR` for one test.
pub struct StateTmp {
    pub dir: tempfile::TempDir,
    pub state: vbridge::backup::StateDir,
}

impl StateTmp {
    pub fn new() -> StateTmp {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = vbridge::backup::StateDir::new(dir.path());
        StateTmp { dir, state }
    }
}

/// Lines holding only whitespace: a removed element must not leave one behind.
fn blank_lines(text: &str) -> usize {
    text.lines().filter(|l| l.trim().is_empty()).count()
}

/// The text with the given spans cut out.
fn without(text: &str, spans: &[std::ops::Range<usize>]) -> String {
    let mut out = String::new();
    let mut cursor = 0;
    for s in spans {
        out.push_str(&text[cursor..s.start]);
        cursor = s.end;
    }
    out.push_str(&text[cursor..]);
    out
}

/// A rewrite of `input` left the text outside its changed interfaces byte-identical.
#[track_caller]
pub fn assert_same_outside_changes(what: &str, input: &str, r: &vbridge::domxml::Rewritten) {
    let changed: Vec<_> = r.changes.iter().filter(|c| c.changed).collect();
    let old: Vec<_> = changed.iter().map(|c| c.before.span.clone()).collect();
    let new: Vec<_> = changed.iter().map(|c| c.after.span.clone()).collect();
    assert_eq!(
        without(input, &old),
        without(&r.xml, &new),
        "{what}: text outside the changed interfaces differs"
    );
}

/// The interface `c` changed did not gain a blank line in the rewrite `r` of `input`.
#[track_caller]
pub fn assert_no_blank_line_gained(
    what: &str,
    input: &str,
    r: &vbridge::domxml::Rewritten,
    c: &vbridge::domxml::NicChange,
) {
    assert!(
        blank_lines(&r.xml[c.after.span.clone()]) <= blank_lines(&input[c.before.span.clone()]),
        "{what}: interface {} gained a blank line",
        c.index
    );
}

/// `name` of `<name ...>`.
fn tag_name(tag: &str) -> String {
    tag[1..]
        .split(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The child elements of one element's text, each as (name, its whole text).
fn children(element: &str) -> Vec<(String, String)> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(element);
    let (mut depth, mut out, mut open) = (0usize, Vec::new(), None);
    loop {
        let start = r.buffer_position() as usize;
        let ev = r.read_event().expect("a rewritten interface reads back");
        let end = r.buffer_position() as usize;
        match ev {
            Event::Start(_) => {
                depth += 1;
                if depth == 2 {
                    open = Some((tag_name(&element[start..end]), start));
                }
            }
            Event::Empty(_) if depth == 1 => out.push((
                tag_name(&element[start..end]),
                element[start..end].to_string(),
            )),
            Event::End(_) => {
                if depth == 2 {
                    let (name, s) = open.take().unwrap();
                    out.push((name, element[s..end].to_string()));
                }
                depth -= 1;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

/// Whether a child of a NIC of type `kind` must come through a rewrite to a bridge NIC
/// unchanged: the rule written out again, apart from the code, so a change to either shows.
/// Some(false): it must go. None: it is replaced or may go (source, model, target, bandwidth).
fn must_stay(kind: &str, to: &str, name: &str, text: &str) -> Option<bool> {
    let typed =
        |t: &str| text.contains(&format!("type='{t}'")) || text.contains(&format!("type=\"{t}\""));
    match name {
        // Rewritten by the NIC options (--mtu, --queues): their own goldens show how.
        "source" | "target" | "bandwidth" | "mtu" | "driver" => None,
        "model"
            if ["virtio-transitional", "virtio-non-transitional"]
                .iter()
                .any(|t| typed(t)) =>
        {
            Some(true)
        }
        "model" => None,
        "script" | "downscript" => Some(false),
        "ip" | "route" | "backend" => Some(!matches!(kind, "user" | "ethernet")),
        "portForward" => Some(kind != "user"),
        // A network fills in or checks a virtualport: every one stays on a network NIC.
        "virtualport" => Some(to == "network" || typed("openvswitch") || typed("midonet")),
        _ => Some(true),
    }
}

/// Per changed NIC of a rewrite: every child that should stay is there byte for byte, every
/// child that should go is gone, and no `floor` is left in a bandwidth.
#[track_caller]
pub fn assert_children_kept(what: &str, input: &str, r: &vbridge::domxml::Rewritten) {
    for c in r.changes.iter().filter(|c| c.changed) {
        let before = children(&input[c.before.span.clone()]);
        let after = children(&r.xml[c.after.span.clone()]);
        for (name, text) in &before {
            let kept = after.iter().any(|(_, t)| t == text);
            match must_stay(&c.before.kind, &c.after.kind, name, text) {
                Some(true) => assert!(kept, "{what}: interface {} lost its child {text}", c.index),
                Some(false) => {
                    assert!(!kept, "{what}: interface {} kept <{name}>: {text}", c.index)
                }
                None => {}
            }
        }
        let count =
            |list: &[(String, String)], name: &str| list.iter().filter(|(n, _)| n == name).count();
        // One source; a model added only where there was none (several stay several).
        assert_eq!(
            count(&after, "source"),
            1,
            "{what}: interface {}: <source>",
            c.index
        );
        assert_eq!(
            count(&after, "model"),
            count(&before, "model").max(1),
            "{what}: interface {}: <model>",
            c.index
        );
        for (_, text) in after.iter().filter(|(n, _)| n == "bandwidth") {
            for (name, inner) in children(text) {
                let tag = &inner[..inner.find('>').unwrap_or(inner.len())];
                let floor = tag
                    .split(|c: char| c.is_ascii_whitespace())
                    .any(|w| w.starts_with("floor=") || w == "floor");
                // Only a NIC on a libvirt network may reserve bandwidth (a floor).
                assert!(
                    name != "inbound" || !floor || c.after.kind == "network",
                    "{what}: interface {} kept a bandwidth floor: {inner}",
                    c.index
                );
            }
        }
    }
}
