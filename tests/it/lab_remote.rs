//! The lab's libvirtd as a remote hypervisor over `qemu+ssh` (an sshd in the lab's host
//! namespace, vbridge in the LAN namespace): net-define, attach (persistent, hotplug), undo,
//! verify and apply. And the Ansible module driving `vbridge apply` inside the lab.

use crate::common;
use crate::lab::sshd::Sshd;
use crate::lab::{self, GuestDhcp, GuestSpec, Lab, Nic};
use std::path::Path;
use std::process::Output;
use std::time::Duration;
use vbridge::domxml;

fn remote(lab: &Lab, uri: &str, state: &Path, args: &[&str]) -> (Output, serde_json::Value) {
    let bin = common::vbridge_bin();
    let env = format!("VBRIDGE_STATE_DIR={}", state.display());
    let mut v = vec![env.as_str(), bin.to_str().unwrap(), "-c", uri, "-o", "json"];
    v.extend_from_slice(args);
    let out = lab.lan.exec("env", &v);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "vbridge {args:?} over ssh: not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

#[test]
fn lab_remote_over_qemu_ssh() {
    if !common::require_root("lab_remote_over_qemu_ssh") {
        return;
    }
    let lab = Lab::start("remote");
    let sshd = Sshd::start(&lab);
    let uri = sshd.uri();
    let state = tempfile::tempdir().unwrap();

    // net-define: made over ssh; a remote host gets no host-side bridge warnings.
    let (out, r) = remote(&lab, &uri, state.path(), &["net-define"]);
    assert!(out.status.success(), "{r}");
    assert_eq!(r["changed"], true, "{r}");
    let (_, again) = remote(&lab, &uri, state.path(), &["net-define"]);
    assert_eq!(again["changed"], false, "{again}");
    assert!(lab
        .virsh_ok(&["net-dumpxml", "br0-network"])
        .contains("<bridge name='br0'/>"));

    // attach (persistent) and undo of a shut-off VM.
    let user = "    <interface type='user'>\n      <mac address='52:54:00:78:00:01'/>\n      <model type='e1000'/>\n    </interface>\n";
    let off = lab.define_guest(GuestSpec {
        running: false,
        ..GuestSpec::new("off", vec![Nic::Xml(user.into())])
    });
    let original = lab.inactive_xml(&off);
    let (out, r) = remote(&lab, &uri, state.path(), &["attach", &off]);
    assert!(out.status.success(), "{r}");
    assert_eq!(r["domains"][0]["changed"], true, "{r}");
    let nics = domxml::nics(&lab.inactive_xml(&off)).unwrap();
    assert!(nics[0].is_on_bridge("br0"), "{nics:?}");
    let (out, u) = remote(&lab, &uri, state.path(), &["undo", &off]);
    assert!(out.status.success(), "{u}");
    assert_eq!(lab.inactive_xml(&off), original);

    // hotplug into a running VM, then verify through libvirt's address sources.
    let hp = lab.define_guest(GuestSpec::new("hp", vec![]));
    let (out, r) = remote(&lab, &uri, state.path(), &["attach", &hp, "--hotplug"]);
    assert!(out.status.success(), "{r}");
    assert_eq!(r["domains"][0]["changed"], true, "{r}");
    let ip = lab.wait_console(&hp, "LEASE ip=", Duration::from_secs(60));
    assert!(ip.is_some(), "no lease after hotplug: {}", lab.console(&hp));
    let (out, v) = remote(
        &lab,
        &uri,
        state.path(),
        &["verify", &hp, "--timeout", "20"],
    );
    eprintln!("verify over qemu+ssh: {v}");
    assert!(out.status.success(), "{v}");
    assert_eq!(v["ok"], true, "{v}");

    // apply over ssh: the attach again from a file; the second apply changes nothing.
    let file = state.path().join("remote.yml");
    std::fs::write(
        &file,
        format!(
            "hosts:\n  - uri: \"{uri}\"\n    networks:\n      - {{name: br0-network, bridge: br0}}\n    vms:\n      {off}:\n        nics:\n          - {{mac: \"52:54:00:78:00:01\", bridge: br0, mode: persistent}}\n"
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (out, p) = remote(&lab, &uri, state.path(), &["plan", f]);
    assert!(out.status.success(), "{p}");
    assert_eq!(p["changes"], 1, "{p}");
    assert!(
        p["hosts"][0]["notes"]
            .to_string()
            .contains("remote hypervisor"),
        "{p}"
    );
    let (out, a) = remote(&lab, &uri, state.path(), &["apply", f]);
    assert!(out.status.success(), "{a}");
    assert_eq!(a["changes"], 1, "{a}");
    let (_, a2) = remote(&lab, &uri, state.path(), &["apply", f]);
    assert_eq!(a2["changes"], 0, "{a2}");
    assert!(domxml::nics(&lab.inactive_xml(&off)).unwrap()[0].is_on_bridge("br0"));

    drop(sshd);
    lab::finish(lab, "remote");
}

/// `attach --live` over qemu+ssh (issue 11): a running guest on a NAT network moved onto
/// br0 through the remote URI; the never-strand check runs from the client, with libvirt's
/// address sources and the client's own view of the LAN (no host-side TAP checks).
#[test]
fn lab_remote_live_over_qemu_ssh() {
    if !common::require_root("lab_remote_live_over_qemu_ssh") {
        return;
    }
    let lab = Lab::start("remote-live");
    let sshd = Sshd::start(&lab);
    let uri = sshd.uri();
    let state = tempfile::tempdir().unwrap();
    let net = lab.define_nat_network("nat");
    let dom = lab.define_guest(GuestSpec {
        dhcp: GuestDhcp::LinkUp,
        ..GuestSpec::new("rl", vec![Nic::network(&net)])
    });
    let nat_ip = lab.wait_console(&dom, "LEASE ip=", Duration::from_secs(90));
    assert!(nat_ip.is_some(), "no NAT lease: {}", lab.console(&dom));
    let (out, r) = remote(&lab, &uri, state.path(), &["attach", &dom, "--live"]);
    eprintln!("attach --live over qemu+ssh: {r}");
    assert!(out.status.success(), "{r}");
    let d = &r["domains"][0];
    assert_eq!(d["live"]["moved"][0]["to"], "bridge br0", "{r}");
    assert!(d["live"]["verified"][0]["ip"].is_string(), "{r}");
    let live = domxml::nics(&lab.virsh_ok(&["dumpxml", &dom])).unwrap();
    assert!(
        live[0].is_on_bridge("br0")
            || live[0].source.get("bridge").map(String::as_str) == Some("br0"),
        "{live:?}"
    );
    assert!(domxml::nics(&lab.inactive_xml(&dom)).unwrap()[0].is_on_bridge("br0"));
    drop(sshd);
    lab::finish(lab, "remote-live");
}

/// `ansible-playbook -c local` in the lab's host namespace, running the module against the
/// lab's libvirtd: check mode changes nothing, apply changes, the second run does not, and a
/// VM that does not exist fails the task with vbridge's reason.
#[test]
fn lab_ansible_module() {
    if !common::require_root("lab_ansible_module") {
        return;
    }
    let lab = Lab::start("ansible");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let user = "    <interface type='user'>\n      <mac address='52:54:00:79:00:01'/>\n      <model type='e1000'/>\n    </interface>\n";
    let dom = lab.define_guest(GuestSpec {
        running: false,
        ..GuestSpec::new("ans", vec![Nic::Xml(user.into())])
    });
    let good = w.join("good.yml");
    std::fs::write(
        &good,
        format!("hosts:\n  - vms:\n      {dom}:\n        nics:\n          - {{mac: \"52:54:00:79:00:01\", bridge: br0, mode: persistent}}\n"),
    )
    .unwrap();
    let bad = w.join("bad.yml");
    std::fs::write(
        &bad,
        "hosts:\n  - vms:\n      no-such-vm-here:\n        nics:\n          - {bridge: br0, mode: persistent}\n",
    )
    .unwrap();
    let playbook = w.join("play.yml");
    std::fs::write(
        &playbook,
        format!(
            "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - vbridge:\n        plan: \"{{{{ plan }}}}\"\n        connect: \"{}\"\n        binary: \"{}\"\n",
            lab.uri(),
            common::vbridge_bin().display()
        ),
    )
    .unwrap();
    let library = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ansible/library");
    let play = |plan: &Path, extra: &[&str]| -> (bool, String) {
        let env = [
            format!("ANSIBLE_LIBRARY={}", library.display()),
            format!("HOME={}", w.display()),
            format!("ANSIBLE_LOCAL_TEMP={}/tmp", w.display()),
            format!("VBRIDGE_STATE_DIR={}/state", w.display()),
            "ANSIBLE_NOCOLOR=1".into(),
            "ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3".into(),
        ];
        let plan_var = format!("plan={}", plan.display());
        let mut v: Vec<&str> = env.iter().map(String::as_str).collect();
        v.extend([
            "ansible-playbook",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            &plan_var,
            playbook.to_str().unwrap(),
        ]);
        v.extend_from_slice(extra);
        let out = lab.host.exec("env", &v);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let before = lab.inactive_xml(&dom);
    let (ok, out) = play(&good, &["--check", "--diff"]);
    assert!(ok && out.contains("changed=1"), "{out}");
    assert!(
        out.contains("52:54:00:79:00:01"),
        "diff mode shows the plan: {out}"
    );
    assert_eq!(lab.inactive_xml(&dom), before, "check mode changed the VM");
    let (ok, out) = play(&good, &[]);
    assert!(ok && out.contains("changed=1"), "{out}");
    assert!(domxml::nics(&lab.inactive_xml(&dom)).unwrap()[0].is_on_bridge("br0"));
    let (ok, out) = play(&good, &[]);
    assert!(ok && out.contains("changed=0"), "{out}");
    let (ok, out) = play(&bad, &[]);
    assert!(!ok && out.contains("failed=1"), "{out}");
    assert!(out.contains("no domain named"), "{out}");
    lab::finish(lab, "ansible");
}
