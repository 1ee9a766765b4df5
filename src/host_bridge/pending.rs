//! Commit-confirm: a change applied with a confirm window is written to a state file with
//! its undo steps; a detached reverter (vbridge itself, re-executed in its own session so
//! it outlives the SSH connection) undoes it when the window ends, unless `--confirm`
//! removed the file first. The reverter claims the file with an atomic rename, so a confirm
//! and a revert can never both win.
//!
//! The live way writes the same file (`complete: false`) before its first step, and arms
//! the reverter then, so a vbridge killed part-way leaves a record that restores the state
//! from before: the reverter when its window ends, `--confirm` (which will not keep a change
//! that did not finish) or `--remove` at once.

use crate::error::{Error, Result};
use crate::host::backends::{self, FileApplier, FileStep};
use crate::host::bridge::{self, Net, Step};
use crate::host::{now_ms, run_program};
use crate::plan::Applier;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

pub const PENDING_FILE: &str = "pending-host-bridge.json";
pub const LAST_REVERT_FILE: &str = "last-revert-host-bridge.json";

/// A change waiting for `vbridge host-bridge --confirm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub mode: String,
    pub bridge: String,
    pub nic: String,
    /// Steps that restore the previous links, addresses and routes, in order.
    pub undo: Vec<Step>,
    /// File steps that put the network stack's files back (the file plan's undo), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileStep>,
    /// The programs that make the running stack read its files again, run after `files`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload: Vec<Vec<String>>,
    /// When the reverter acts, in milliseconds since the Unix epoch (for people and for
    /// spotting a stale file; the reverter itself sleeps on a monotonic clock).
    pub revert_at_ms: u64,
    /// The reverter's pid, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverter_pid: Option<u32>,
    /// The systemd unit running the reverter, when systemd-run started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverter_unit: Option<String>,
    /// The live state before the change, so the revert can be checked to restore it exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<bridge::State>,
    /// False from before the first step until the change is made and checked: a record
    /// still false after its vbridge is gone is a change that stopped part-way.
    #[serde(default = "finished")]
    pub complete: bool,
    /// The vbridge making the change, while `complete` is false: the reverter does not act
    /// on a change still being made (its window counts from before the first step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maker_pid: Option<u32>,
}

/// Records written before `complete` existed were written after the change.
fn finished() -> bool {
    true
}

/// A fresh id naming one change.
pub fn new_id() -> String {
    format!("{}-{}", now_ms(), std::process::id())
}

/// The pending change, if any.
pub fn read(dir: &Path) -> Result<Option<Pending>> {
    let p = dir.join(PENDING_FILE);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            Error::host(format!(
                "{} is not a valid pending-change file: {e}",
                p.display()
            ))
            .with_hint("inspect it; remove it only once the network looks the way you want")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", p.display()), e)),
    }
}

/// Whether a process is still running (a zombie has finished).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => false,
        Ok(s) => !s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
    }
}

/// Refuse when a change is waiting for confirmation, and say so plainly when that file is
/// stale: its reverter is gone, so it will never revert by itself.
pub fn refuse_if_pending(dir: &Path) -> Result<()> {
    let Some(other) = read(dir)? else {
        return Ok(());
    };
    let file = dir.join(PENDING_FILE);
    let armed = other.reverter_pid.is_some_and(process_alive) || other.reverter_unit.is_some();
    if !other.complete && !armed {
        return Err(Error::conflict(format!(
            "a host-bridge change ({} on {}) stopped part-way (the vbridge making it was killed) and is recorded in {}",
            other.nic,
            other.bridge,
            file.display()
        ))
        .with_hint("run `vbridge host-bridge --remove` to restore the network as it was before, then retry"));
    }
    if let Some(pid) = other.reverter_pid.filter(|p| !process_alive(*p)) {
        return Err(Error::conflict(format!(
            "a stale host-bridge change ({} on {}) is recorded in {}: its reverter (pid {pid}) is no longer running, so it will never revert by itself",
            other.nic,
            other.bridge,
            file.display()
        ))
        .with_hint(
            "check `ip addr` and `ip route`; if the network is the way you want it, run `vbridge host-bridge --confirm` to clear the record, then retry",
        ));
    }
    Err(Error::conflict(format!(
        "another host-bridge change ({} on {}) is waiting for confirmation",
        other.nic, other.bridge
    ))
    .with_hint("run `vbridge host-bridge --confirm` to keep it, or wait for it to revert"))
}

/// Record a pending change; refuses when another one is waiting.
pub fn write(dir: &Path, pending: &Pending) -> Result<()> {
    refuse_if_pending(dir)?;
    write_file(&dir.join(PENDING_FILE), pending)
}

/// Replace the pending change with an updated copy of itself (same id), e.g. to record the
/// reverter's pid. Does nothing when the file is gone or names another change.
pub fn rewrite(dir: &Path, pending: &Pending) -> Result<()> {
    match read(dir)? {
        Some(p) if p.id == pending.id => write_file(&dir.join(PENDING_FILE), pending),
        _ => Ok(()),
    }
}

fn write_file(path: &Path, value: &impl Serialize) -> Result<()> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| Error::host(e.to_string()))?;
    crate::host::write_0600(path, &path.with_extension("tmp"), &body)
}

/// Keep the pending change: remove the file so the reverter finds nothing.
pub fn confirm(dir: &Path) -> Result<Pending> {
    let pending = read(dir)?.ok_or_else(|| {
        Error::not_found("no host-bridge change is waiting for confirmation").with_hint(
            "it was confirmed already, or its window ran out and it was reverted (see last-revert-host-bridge.json in the state directory)",
        )
    })?;
    match std::fs::remove_file(dir.join(PENDING_FILE)) {
        Ok(()) => Ok(pending),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::conflict(
            "the change was being reverted as you confirmed it",
        )
        .with_hint("check the network and run the host-bridge command again")),
        Err(e) => Err(Error::io("cannot remove the pending-change file", e)),
    }
}

/// How the reverter was started.
#[derive(Debug, Clone, Default)]
pub struct Started {
    pub pid: Option<u32>,
    pub unit: Option<String>,
}

/// Whether systemd runs this host (its runtime directory exists) and `systemd-run` is on
/// PATH.
fn systemd_available() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("systemd-run").is_file()))
}

/// Start the detached reverter: `program host-bridge --revert-pending ID --revert-in-ms MS`.
/// Under systemd it runs as a transient unit (`vbridge-revert-ID`), so logind's
/// KillUserProcesses cannot take it down with the SSH session; elsewhere it runs in a new
/// session (setsid) with stdio on /dev/null. The window is passed as a duration, computed
/// once here, so the reverter sleeps on a monotonic clock and a wall-clock step (NTP) does
/// not move it.
pub fn spawn_reverter(program: &Path, dir: &Path, id: &str, window: Duration) -> Result<Started> {
    let ms = window.as_millis().to_string();
    let args = ["host-bridge", "--revert-pending", id, "--revert-in-ms", &ms];
    if systemd_available() {
        return spawn_systemd(program, dir, id, &args);
    }
    spawn_setsid(program, dir, &args)
}

/// `systemd-run`'s arguments for the reverter: a transient service named after the change,
/// collected when done, with the state directory in its environment.
fn systemd_run_args(
    program: &Path,
    dir: &Path,
    unit: &str,
    args: &[&str],
) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec![
        format!("--unit={unit}").into(),
        "--collect".into(),
        "--quiet".into(),
        format!("--setenv=VBRIDGE_STATE_DIR={}", dir.display()).into(),
        "--".into(),
        program.into(),
    ];
    v.extend(args.iter().map(|a| a.into()));
    v
}

fn spawn_systemd(program: &Path, dir: &Path, id: &str, args: &[&str]) -> Result<Started> {
    let unit = format!("vbridge-revert-{id}");
    run_program("systemd-run", &systemd_run_args(program, dir, &unit, args))
        .map_err(|e| e.context("systemd-run could not start the reverter"))?;
    // Best effort: the unit is running either way; the pid only helps spot a stale file.
    let pid = run_program(
        "systemctl",
        &["show", "--property=MainPID", "--value", &unit],
    )
    .ok()
    .and_then(|o| o.trim().parse::<u32>().ok())
    .filter(|p| *p != 0);
    Ok(Started {
        pid,
        unit: Some(unit),
    })
}

fn spawn_setsid(program: &Path, dir: &Path, args: &[&str]) -> Result<Started> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("VBRIDGE_STATE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(),
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        Error::io(
            format!("cannot start the reverter {}", program.display()),
            e,
        )
    })?;
    // Not waited for on purpose: it must outlive this process.
    Ok(Started {
        pid: Some(child.id()),
        unit: None,
    })
}

/// How many times the NIC and the bridge are put back from an observation: the stack may
/// undo part of it as it reacts (networkd configures a NIC anew when its bridge goes).
const RESTORE_ROUNDS: usize = 3;

/// The NIC and the bridge once the stack that `reload` told has finished with them: no
/// change for [`bridge::QUIET`], and networkd (when told) not at work on them.
pub(crate) fn observe_settled(
    net: &mut dyn Net,
    nic: &str,
    bridge: &str,
    reload: &[Vec<String>],
) -> Result<bridge::State> {
    let devs = [nic, bridge];
    let networkd = backends::tells_networkd(reload);
    let mut busy = |s: &bridge::State| {
        let there: Vec<&str> = devs.into_iter().filter(|d| s.link(d).is_some()).collect();
        networkd && backends::networkd::busy_with(&there)
    };
    bridge::settle(net, &devs, &mut busy, bridge::QUIET, bridge::SETTLE_MAX)
}

/// Undo a change, whatever its mode: the files put back, the stack reloaded, the live undo
/// steps run; then the NIC and bridge are compared with (and, after a stack's reload, put
/// back to) what was observed before. Returns what is not as before; empty means restored.
pub fn undo_change(p: &Pending, net: &mut dyn Net) -> Vec<String> {
    let mut problems: Vec<String> = Vec::new();
    // Each file on its own: one the user changed meanwhile is refused, the others go back.
    for s in &p.files {
        if let Err(e) = FileApplier.apply_step(s) {
            problems.push(e.message);
        }
    }
    // A reload the stack refuses for a moment (`networkctl reconfigure` while networkd has
    // not yet enumerated the link: "Link 2 not known") is judged like a failed restore step:
    // by the end result, when there is a state from before to compare with.
    let mut failed_reloads: Vec<String> = Vec::new();
    for c in &p.reload {
        if let Some((program, args)) = c.split_first() {
            if let Err(e) = run_program(program, args) {
                failed_reloads.push(e.message);
            }
        }
    }
    problems.extend(bridge::revert(net, &p.undo).into_iter().map(|e| e.message));
    let Some(before) = &p.before else {
        problems.extend(failed_reloads);
        return problems;
    };
    // A reloaded stack acts after its reload returned: observe, restore and compare only
    // once it has finished, or a half-done state is taken for its result.
    let observe = |net: &mut dyn Net| {
        if p.reload.is_empty() {
            net.observe()
        } else {
            observe_settled(net, &p.nic, &p.bridge, &p.reload)
        }
    };
    // A stack applied the change: it has no undo list, so the NIC and the bridge are put
    // back from the observation (the reload above may have done part of it already), again
    // while the stack's reaction to those steps undoes some of it. A step that failed
    // counts only if the end result is not as before.
    let restore = p.undo.is_empty() && !(p.files.is_empty() && p.reload.is_empty());
    let mut failed_steps: Vec<String> = Vec::new();
    let mut now = observe(net);
    for _ in 0..RESTORE_ROUNDS {
        let steps = match (&now, restore) {
            (Ok(s), true) => bridge::plan_restore(before, s, &p.nic, &p.bridge),
            _ => break,
        };
        if steps.is_empty() {
            break;
        }
        failed_steps = bridge::revert(net, &steps)
            .into_iter()
            .map(|e| e.message)
            .collect();
        now = observe(net);
    }
    match now {
        Ok(now) => {
            let left = bridge::differences_on(before, &now, &[&p.nic, &p.bridge]);
            if !left.is_empty() {
                problems.extend(failed_reloads);
                problems.extend(failed_steps);
            }
            problems.extend(left);
        }
        Err(e) => {
            problems.extend(failed_reloads);
            problems.push(format!("cannot observe the result: {}", e.message));
        }
    }
    problems
}

/// What the reverter did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevertRecord {
    pub id: String,
    pub bridge: String,
    pub nic: String,
    pub reverted: bool,
    pub at_ms: u64,
    #[serde(default)]
    pub problems: Vec<String>,
}

/// The reverter's body: wait `window` (measured on the monotonic clock from now; None takes
/// what is left of the recorded wall-clock deadline, once), then undo the change if the
/// pending file still names `id`. Returns None when it was confirmed (nothing to do).
pub fn run_reverter(
    dir: &Path,
    id: &str,
    window: Option<Duration>,
    net: &mut dyn Net,
) -> Result<Option<RevertRecord>> {
    let start = std::time::Instant::now();
    let window = match window {
        Some(w) => w,
        None => match read(dir)? {
            Some(p) => Duration::from_millis(p.revert_at_ms.saturating_sub(now_ms())),
            None => return Ok(None),
        },
    };
    loop {
        let Some(p) = read(dir)? else { return Ok(None) };
        if p.id != id {
            return Ok(None);
        }
        let left = window.checked_sub(start.elapsed()).filter(|l| !l.is_zero());
        let making = !p.complete && p.maker_pid.is_some_and(process_alive);
        match left {
            None if !making => break,
            None => std::thread::sleep(Duration::from_millis(50)),
            Some(left) => std::thread::sleep(left.min(Duration::from_millis(200))),
        }
    }
    claim_and_revert(dir, id, net)
}

/// Undo the pending change now, whatever its window (`host-bridge --remove`).
pub fn remove(dir: &Path, net: &mut dyn Net) -> Result<RevertRecord> {
    let p = read(dir)?.ok_or_else(|| {
        Error::not_found("no host-bridge change is pending").with_hint(
            "it was confirmed or reverted already (see last-revert-host-bridge.json in the state directory)",
        )
    })?;
    claim_and_revert(dir, &p.id, net)?.ok_or_else(|| {
        Error::conflict("the change was confirmed or reverted as you removed it")
            .with_hint("check `ip addr` and `ip route`")
    })
}

/// Claim change `id` (an atomic rename: a confirm or another revert racing us finds no file),
/// undo it and check the result against the state from before.
pub fn claim_and_revert(dir: &Path, id: &str, net: &mut dyn Net) -> Result<Option<RevertRecord>> {
    // Claim the change; a confirm racing us finds no file.
    let claimed = dir.join(format!("reverting-{id}.json"));
    if std::fs::rename(dir.join(PENDING_FILE), &claimed).is_err() {
        return Ok(None);
    }
    let text =
        std::fs::read(&claimed).map_err(|e| Error::io("cannot read the claimed change", e))?;
    let p: Pending = serde_json::from_slice(&text).map_err(|e| Error::host(e.to_string()))?;
    if p.id != id {
        // Not ours after all: put it back.
        let _ = std::fs::rename(&claimed, dir.join(PENDING_FILE));
        return Ok(None);
    }
    let problems = undo_change(&p, net);
    let rec = RevertRecord {
        id: p.id.clone(),
        bridge: p.bridge.clone(),
        nic: p.nic.clone(),
        reverted: problems.is_empty(),
        at_ms: now_ms(),
        problems,
    };
    let _ = write_file(&dir.join(LAST_REVERT_FILE), &rec);
    let _ = std::fs::remove_file(&claimed);
    Ok(Some(rec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: &str, at: u64) -> Pending {
        Pending {
            id: id.into(),
            mode: "live".into(),
            bridge: "br0".into(),
            nic: "eth1".into(),
            undo: vec![Step::DeleteLink { name: "br0".into() }],
            files: vec![],
            reload: vec![],
            revert_at_ms: at,
            reverter_pid: None,
            reverter_unit: None,
            before: None,
            complete: true,
            maker_pid: None,
        }
    }

    struct Count(usize);
    impl Net for Count {
        fn observe(&mut self) -> Result<bridge::State> {
            Ok(Default::default())
        }
        fn apply_step(
            &mut self,
            _: &Step,
        ) -> std::result::Result<(), crate::host::netlink::NlError> {
            self.0 += 1;
            Ok(())
        }
    }

    #[test]
    fn confirm_beats_the_reverter_and_reverts_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &pending("a", 0)).unwrap();
        assert!(
            write(dir.path(), &pending("b", 0)).is_err(),
            "second pending accepted"
        );
        // Another id: the reverter leaves it alone.
        let mut net = Count(0);
        assert!(run_reverter(dir.path(), "b", None, &mut net)
            .unwrap()
            .is_none());
        assert_eq!(net.0, 0);
        // Its own id and the window is over: it reverts and records it.
        let rec = run_reverter(dir.path(), "a", Some(Duration::ZERO), &mut net)
            .unwrap()
            .unwrap();
        assert!(rec.reverted);
        assert_eq!(net.0, 1);
        assert!(read(dir.path()).unwrap().is_none());
        assert!(dir.path().join(LAST_REVERT_FILE).exists());

        // Confirmed first: nothing to revert.
        write(dir.path(), &pending("c", now_ms() + 100)).unwrap();
        confirm(dir.path()).unwrap();
        assert!(run_reverter(dir.path(), "c", None, &mut net)
            .unwrap()
            .is_none());
        assert_eq!(net.0, 1);
        assert!(confirm(dir.path()).is_err());

        // A record whose reverter is gone is called stale, and --confirm clears it.
        let mut p = pending("d", now_ms() + 60_000);
        p.reverter_pid = Some(u32::MAX - 1);
        write(dir.path(), &p).unwrap();
        let e = refuse_if_pending(dir.path()).unwrap_err();
        assert!(e.message.contains("stale"), "{}", e.message);
        assert!(e.hint.as_deref().unwrap_or("").contains("--confirm"));
        confirm(dir.path()).unwrap();
        refuse_if_pending(dir.path()).unwrap();
    }

    /// A change that stopped part-way: its reverter waits while its maker still runs, and
    /// acts once the maker is gone; without a reverter, a new change is refused with the way
    /// out, and `remove` restores at once.
    #[test]
    fn a_change_that_stopped_part_way() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pending("e", 0);
        p.complete = false;
        p.maker_pid = Some(std::process::id());
        write(dir.path(), &p).unwrap();
        let e = refuse_if_pending(dir.path()).unwrap_err();
        assert!(e.message.contains("stopped part-way"), "{}", e.message);
        assert!(e.hint.as_deref().unwrap_or("").contains("--remove"));
        // Its window is over, its maker (this process) lives: the reverter waits.
        let waiter = {
            let d = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut net = Count(0);
                let r = run_reverter(&d, "e", Some(Duration::ZERO), &mut net).unwrap();
                (r, net.0)
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "reverted a change still being made");
        // The maker finishes it (complete): the reverter, its window over, reverts it.
        p.complete = true;
        rewrite(dir.path(), &p).unwrap();
        let (rec, n) = waiter.join().unwrap();
        assert!(rec.unwrap().reverted);
        assert_eq!(n, 1);

        // A maker that is gone: `remove` restores now.
        p.id = "f".into();
        p.complete = false;
        p.maker_pid = Some(u32::MAX - 1);
        write(dir.path(), &p).unwrap();
        let mut net = Count(0);
        let rec = remove(dir.path(), &mut net).unwrap();
        assert!(rec.reverted && net.0 == 1);
        assert!(read(dir.path()).unwrap().is_none());
        assert!(
            remove(dir.path(), &mut net).is_err(),
            "nothing left to remove"
        );
    }

    /// A stack that reacts to the restore, as networkd reconfiguring a NIC that left its
    /// bridge can: once the bridge is gone it drops the NIC's default route, once.
    struct Reacting {
        sim: crate::host::bridge::fixtures::Sim,
        reacted: bool,
    }

    impl Net for Reacting {
        fn observe(&mut self) -> Result<bridge::State> {
            self.sim.observe()
        }
        fn apply_step(
            &mut self,
            s: &Step,
        ) -> std::result::Result<(), crate::host::netlink::NlError> {
            self.sim.apply_step(s)?;
            if matches!(s, Step::DeleteBridge { .. }) && !self.reacted {
                self.reacted = true;
                let routes = &mut self.sim.state.routes;
                routes.retain(|r| !(r.dev == "eth1" && r.is_default()));
            }
            Ok(())
        }
    }

    #[test]
    fn what_a_reloaded_stack_undoes_of_the_restore_is_restored_again() {
        use crate::host::bridge::fixtures::{host, req, Sim};
        let mut sim = Sim::new(host());
        let before = sim.state.clone();
        // The stack made br0 from its files: no undo list, a reload and the state before.
        for s in &bridge::plan_live(&before, &req()).unwrap().steps.steps {
            sim.apply_step(s).unwrap();
        }
        let mut p = pending("s", 0);
        p.undo = vec![];
        p.reload = vec![vec!["true".into()]];
        p.before = Some(before.clone());
        let mut net = Reacting {
            sim,
            reacted: false,
        };
        let problems = undo_change(&p, &mut net);
        assert!(net.reacted);
        assert_eq!(problems, Vec::<String>::new());
        let now = net.sim.state;
        assert!(now.link("br0").is_none());
        assert!(now.routes_of("eth1").any(|r| r.is_default()));
        assert_eq!(
            bridge::differences_on(&before, &now, &["eth1", "br0"]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn systemd_run_arguments() {
        let v = systemd_run_args(
            Path::new("/usr/bin/vbridge"),
            Path::new("/var/lib/vbridge"),
            "vbridge-revert-1-2",
            &[
                "host-bridge",
                "--revert-pending",
                "1-2",
                "--revert-in-ms",
                "60000",
            ],
        );
        let v: Vec<&str> = v.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            v,
            [
                "--unit=vbridge-revert-1-2",
                "--collect",
                "--quiet",
                "--setenv=VBRIDGE_STATE_DIR=/var/lib/vbridge",
                "--",
                "/usr/bin/vbridge",
                "host-bridge",
                "--revert-pending",
                "1-2",
                "--revert-in-ms",
                "60000"
            ]
        );
    }

    #[test]
    fn the_reverter_waits_on_the_monotonic_clock() {
        let dir = tempfile::tempdir().unwrap();
        // The recorded wall-clock deadline is long past; the window given is what counts.
        write(dir.path(), &pending("e", 0)).unwrap();
        let t = std::time::Instant::now();
        let mut net = Count(0);
        let rec = run_reverter(dir.path(), "e", Some(Duration::from_millis(300)), &mut net)
            .unwrap()
            .unwrap();
        assert!(rec.reverted);
        assert!(t.elapsed() >= Duration::from_millis(300));
    }
}
