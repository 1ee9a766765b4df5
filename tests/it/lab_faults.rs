//! Faults against a real libvirtd in the lab: libvirtd killed in the middle of a bulk attach,
//! two vbridge processes on the same VMs at once, and libvirtd down or the state directory
//! read-only or full at the start. What must hold: nothing is defined without its backup,
//! every VM is wholly old or wholly new, each change is reported once, and a change whose
//! reply was lost says `unknown` and keeps its backup.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common;
use crate::lab::{self, GuestSpec, Lab};
use serde_json::Value;
use vbridge::domxml;
use vbridge::libvirt::Conn;

/// A shut-off VM on a NAT network NIC, as an installer leaves it.
fn domain_xml(name: &str, i: usize) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <interface type='network'>
      <mac address='52:54:00:fa:{:02x}:{:02x}'/>
      <source network='default'/>
      <model type='e1000'/>
    </interface>
  </devices>
</domain>
",
        i / 256,
        i % 256
    )
}

/// Define `n` VMs; returns (name, the persistent definition as libvirt formats it).
fn define_vms(lab: &Lab, label: &str, n: usize) -> Vec<(String, String)> {
    vbridge::libvirt::init();
    let conn = Conn::open(Some(lab.uri())).unwrap();
    (0..n)
        .map(|i| {
            let name = format!("{}-{label}{i}", lab.id);
            conn.define_domain(&domain_xml(&name, i)).unwrap();
            let xml = conn.domain(&name).unwrap().persistent_xml().unwrap();
            (name, xml)
        })
        .collect()
}

/// Put every VM back to its first definition.
fn reset(lab: &Lab, vms: &[(String, String)]) {
    let conn = Conn::open(Some(lab.uri())).unwrap();
    for (_, xml) in vms {
        conn.define_domain(xml).unwrap();
    }
}

/// Each VM's persistent definition now.
fn definitions(lab: &Lab, vms: &[(String, String)]) -> BTreeMap<String, String> {
    let conn = Conn::open(Some(lab.uri())).unwrap();
    vms.iter()
        .map(|(n, _)| (n.clone(), conn.domain(n).unwrap().persistent_xml().unwrap()))
        .collect()
}

/// Wholly new (its one NIC a virtio NIC on br0) or wholly old (the original, byte for byte).
fn is_new(name: &str, now: &str, original: &str) -> bool {
    let nics = domxml::nics(now).unwrap();
    assert_eq!(nics.len(), 1, "{name}: {now}");
    if nics[0].is_on_bridge("br0") {
        true
    } else {
        assert_eq!(now, original, "{name} is neither old nor new");
        false
    }
}

/// The backups kept for one VM, read.
fn backups(state: &Path, name: &str) -> Vec<String> {
    let dir = vbridge::backup::StateDir::new(state).backup_dir(name);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// `vbridge -c URI -o json ARGS` with `VBRIDGE_STATE_DIR=state`, started, not waited for.
fn spawn_vbridge(lab: &Lab, state: &Path, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &lab.host.name])
        .arg(common::vbridge_bin())
        .args(["-c", lab.uri(), "-o", "json"])
        .args(args)
        .env("VBRIDGE_STATE_DIR", state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Wait (bounded) for a file in `dir` to be renamed into place or closed after writing, the
/// way libvirt saves a definition; true when one was.
fn wait_for_a_saved_definition(fd: i32, within: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid descriptor the caller owns.
    let n = unsafe { libc::poll(&mut pfd, 1, within.as_millis() as i32) };
    n == 1
}

/// An inotify watch on libvirt's saved definitions (etc/qemu in the lab), closed when dropped.
struct Watch(i32);

impl Watch {
    fn new(dir: &Path) -> Watch {
        // SAFETY: plain system calls; the path is a NUL-terminated copy.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK);
            assert!(fd >= 0, "inotify_init1");
            let p = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
            let wd =
                libc::inotify_add_watch(fd, p.as_ptr(), libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE);
            assert!(wd >= 0, "inotify_add_watch {}", dir.display());
            Watch(fd)
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this watch owns.
        unsafe { libc::close(self.0) };
    }
}

/// libvirtd SIGKILLed just after the first new definition of a 200-VM attach reached disk.
/// Every VM is wholly old or wholly new; every new one has its backup; a change whose reply
/// was lost is `unknown`, keeps its backup, and `undo` restores it; a call never sent is
/// `failed` with nothing changed; a rerun finishes the rest. Repeated until the lost reply
/// happens (the kill lands while a define is in flight).
#[test]
fn lab_libvirtd_killed_mid_attach_keeps_every_backup() {
    if !common::require_root("lab_libvirtd_killed_mid_attach_keeps_every_backup") {
        return;
    }
    let mut lab = Lab::start("kill");
    let vms = define_vms(&lab, "k", 200);
    let names: Vec<&str> = vms.iter().map(|(n, _)| n.as_str()).collect();
    let saved = lab.dir().join("etc/qemu");
    let mut lost_reply = None;
    let mut tally = Vec::new();
    const ATTEMPTS: usize = 10;
    for attempt in 1..=ATTEMPTS {
        let state = tempfile::tempdir().unwrap();
        let watch = Watch::new(&saved);
        let mut args = vec!["attach"];
        args.extend(&names);
        let pid = lab.libvirtd_pid();
        let child = spawn_vbridge(&lab, state.path(), &args);
        assert!(
            wait_for_a_saved_definition(watch.0, Duration::from_secs(60)),
            "no definition was saved"
        );
        lab.kill_libvirtd_pid(pid);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "attempt {attempt}");
        let report = json(&out);
        lab.restart_libvirtd();

        let now = definitions(&lab, &vms);
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        let mut unknown = Vec::new();
        let mut new = 0;
        for (d, (name, original)) in report["domains"].as_array().unwrap().iter().zip(&vms) {
            assert_eq!(d["domain"], name.as_str());
            let outcome = d["outcome"].as_str().unwrap();
            *count.entry(outcome).or_default() += 1;
            let fresh = is_new(name, &now[name], original);
            new += usize::from(fresh);
            let kept = backups(state.path(), name);
            match outcome {
                "changed" => {
                    assert!(fresh, "{name}: reported changed, still old");
                    assert_eq!(kept, std::slice::from_ref(original), "{name}: its backup");
                }
                "unknown" => {
                    assert_eq!(
                        kept,
                        std::slice::from_ref(original),
                        "{name}: unknown keeps its backup"
                    );
                    assert_eq!(d["error"]["kind"], "connection-lost", "{d}");
                    assert!(d["backup"].as_str().is_some(), "{d}");
                    unknown.push((name.clone(), fresh));
                }
                "failed" => {
                    assert!(!fresh, "{name}: defined, yet reported failed: {d}");
                    assert!(kept.is_empty(), "{name}: a backup of a state not replaced");
                    let msg = d["error"]["message"].as_str().unwrap();
                    assert!(!msg.contains('\n'), "{msg}");
                }
                other => panic!("{name}: outcome {other}: {d}"),
            }
        }
        // Nothing new without its backup: every new VM is changed or unknown.
        let accounted = count.get("changed").copied().unwrap_or(0)
            + unknown.iter().filter(|(_, fresh)| *fresh).count();
        assert_eq!(new, accounted, "attempt {attempt}: {count:?}");
        tally.push(format!("attempt {attempt}: {new} new, {count:?}"));
        // The case that matters most: the define reached libvirtd and its reply was lost.
        // Retried until it happens; the last attempt settles for any unknown.
        let hit = unknown
            .iter()
            .find(|(_, fresh)| *fresh)
            .or(unknown.first().filter(|_| attempt == ATTEMPTS));
        if let Some((name, fresh)) = hit {
            // undo restores the definition from before, whichever way the lost define went.
            let (out, r) = lab.vbridge_json(state.path(), &["undo", name]);
            assert!(out.status.success(), "{r}");
            let original = &vms.iter().find(|(n, _)| n == name).unwrap().1;
            assert_eq!(&definitions(&lab, &vms)[name], original, "undo of {name}");
            lost_reply = Some((attempt, name.clone(), *fresh));
            // A rerun finishes the rest: every VM on the bridge.
            let (out, r) = lab.vbridge_json(state.path(), &args);
            assert!(out.status.success(), "{r}");
            let now = definitions(&lab, &vms);
            for (name, original) in &vms {
                assert!(is_new(name, &now[name], original), "{name} after the rerun");
            }
            break;
        }
        reset(&lab, &vms);
    }
    eprintln!("libvirtd killed mid-attach: {}", tally.join("; "));
    let (attempt, name, fresh) =
        lost_reply.unwrap_or_else(|| panic!("no define had its reply lost in {ATTEMPTS} kills"));
    eprintln!(
        "lost reply at attempt {attempt}: {name} reported unknown, its define {} libvirtd",
        if fresh {
            "had reached"
        } else {
            "had not reached"
        }
    );
    lab::finish(lab, "faults");
}

/// Two `vbridge attach` on the same 50 VMs at once, sharing the state directory: the per-VM
/// lock makes the second find each change made and say `unchanged`, so the two reports count
/// 50 changes between them, with 50 backups and one NIC per VM.
#[test]
fn lab_two_attaches_on_the_same_vms_report_each_change_once() {
    if !common::require_root("lab_two_attaches_on_the_same_vms_report_each_change_once") {
        return;
    }
    let lab = Lab::start("race");
    let vms = define_vms(&lab, "r", 50);
    let state = tempfile::tempdir().unwrap();
    let mut args = vec!["attach"];
    args.extend(vms.iter().map(|(n, _)| n.as_str()));
    let a = spawn_vbridge(&lab, state.path(), &args);
    let b = spawn_vbridge(&lab, state.path(), &args);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut changed = 0;
    for out in [&a, &b] {
        let r = json(out);
        assert!(out.status.success(), "{r}");
        for d in r["domains"].as_array().unwrap() {
            assert!(d["error"].is_null(), "{d}");
            changed += usize::from(d["outcome"] == "changed");
        }
    }
    assert_eq!(changed, 50, "the two reports claim {changed} changes");
    let now = definitions(&lab, &vms);
    for (name, original) in &vms {
        assert!(is_new(name, &now[name], original), "{name}");
        assert_eq!(
            backups(state.path(), name),
            std::slice::from_ref(original),
            "{name}"
        );
    }
    lab::finish(lab, "faults");
}

/// Two `attach --hotplug` on the same running VM at once: one NIC, live and in the config.
#[test]
fn lab_two_hotplugs_on_one_vm_add_one_nic() {
    if !common::require_root("lab_two_hotplugs_on_one_vm_add_one_nic") {
        return;
    }
    let lab = Lab::start("hotrace");
    let dom = lab.define_guest(GuestSpec::new("h", vec![]));
    let state = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let a = spawn_vbridge(&lab, state.path(), &["attach", &dom, "--hotplug"]);
        let b = spawn_vbridge(&lab, state.path(), &["attach", &dom, "--hotplug"]);
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let outcomes: Vec<String> = [&a, &b]
            .iter()
            .map(|o| {
                let r = json(o);
                assert!(o.status.success(), "{r}");
                r["domains"][0]["outcome"].as_str().unwrap().to_string()
            })
            .collect();
        let live = lab.virsh_ok(&["dumpxml", &dom]);
        let config = lab.virsh_ok(&["dumpxml", "--inactive", &dom]);
        assert_eq!(
            domxml::nics(&live).unwrap().len(),
            1,
            "round {round}: {live}"
        );
        assert_eq!(domxml::nics(&config).unwrap().len(), 1, "round {round}");
        let want = if round == 0 { 1 } else { 0 };
        assert_eq!(
            outcomes.iter().filter(|o| *o == "changed").count(),
            want,
            "round {round}: {outcomes:?}"
        );
    }
    lab::finish(lab, "faults");
}

/// A tmpfs mounted for one test (read-only, or small to fill), unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, options: &str) -> Tmpfs {
        common::run(
            "mount",
            &["-t", "tmpfs", "-o", options, "tmpfs", dir.to_str().unwrap()],
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = common::run_status("umount", &["-l", self.0.to_str().unwrap()]);
    }
}

/// libvirtd down at the start, the state directory read-only, the state directory's
/// filesystem full: nothing is defined without its backup, and each VM that is not changed
/// says why in one line.
#[test]
fn lab_faults_at_the_start_define_nothing_without_a_backup() {
    if !common::require_root("lab_faults_at_the_start_define_nothing_without_a_backup") {
        return;
    }
    let mut lab = Lab::start("start");
    let vms = define_vms(&lab, "s", 6);
    let mut args = vec!["attach"];
    args.extend(vms.iter().map(|(n, _)| n.as_str()));
    let unchanged = |lab: &Lab| {
        let now = definitions(lab, &vms);
        vms.iter().all(|(n, x)| &now[n] == x)
    };

    // libvirtd down: one error, nothing written.
    let state = tempfile::tempdir().unwrap();
    lab.kill_libvirtd();
    let (out, r) = lab.vbridge_json(state.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert_eq!(r["error"]["kind"], "connection", "{r}");
    assert!(!r["error"]["message"].as_str().unwrap().contains('\n'));
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
    lab.restart_libvirtd();
    assert!(unchanged(&lab));

    // A read-only state directory: every VM fails with the reason, none is defined.
    let ro = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(ro.path(), "ro,size=64k");
    let (out, r) = lab.vbridge_json(ro.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{r}");
    for d in r["domains"].as_array().unwrap() {
        assert_eq!(d["outcome"], "failed", "{d}");
        let msg = d["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("Read-only file system") && !msg.contains('\n'),
            "{msg}"
        );
    }
    assert!(unchanged(&lab));
    drop(mount);

    // A full one (16 pages, 14 taken): the VMs whose backup fits change, the others fail
    // with the reason, and no truncated backup is left behind.
    let full = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(full.path(), "size=64k");
    std::fs::write(full.path().join("filler"), vec![0u8; 14 * 4096]).unwrap();
    let (out, r) = lab.vbridge_json(full.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{r}");
    let now = definitions(&lab, &vms);
    let mut changed = 0;
    for (d, (name, original)) in r["domains"].as_array().unwrap().iter().zip(&vms) {
        let kept = backups(full.path(), name);
        if is_new(name, &now[name], original) {
            assert_eq!(d["outcome"], "changed", "{d}");
            assert_eq!(
                kept,
                std::slice::from_ref(original),
                "{name}: its backup, whole"
            );
            changed += 1;
        } else {
            assert_eq!(d["outcome"], "failed", "{d}");
            assert!(kept.is_empty(), "{name}: {kept:?}");
            let msg = d["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains("No space left") && !msg.contains('\n'),
                "{msg}"
            );
        }
    }
    assert!(
        changed > 0 && changed < vms.len(),
        "{changed} of {} changed",
        vms.len()
    );
    drop(mount);
    lab::finish(lab, "faults");
}
