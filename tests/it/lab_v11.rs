//! The lab against libvirt 11.3 (QEMU 10.0, Debian's bookworm-backports) run from a cached
//! chroot, beside the machine's own 9.0 the other lab tests use: net-define, attach (persistent
//! then a power cycle, hotplug, and `--live`: a running NAT'd guest moved to the LAN with its
//! automatic way back) to a LAN lease, verify, doctor and undo. The client is the one vbridge
//! binary, built against the machine's libvirt 9.0 library.
//! Each test prints how long the chroot took to be ready (a build, or the cached lookup) and
//! how long its libvirtd took to answer.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::{self, vbridge_bin};
use crate::lab::{self, chroot, GuestDhcp, GuestSpec, Lab, Libvirt, Nic};
use vbridge::domxml;

const BOOT: Duration = Duration::from_secs(90);

fn start(name: &str) -> Lab {
    let t = Instant::now();
    let lab = Lab::start_with(name, Libvirt::Backports);
    let c = chroot::chroot();
    // Straight to stderr, past libtest's capture: CI's log shows these numbers on success.
    let _ = writeln!(
        std::io::stderr(),
        "[{name}] libvirt {} chroot {} ready in {:?}; lab set-up {:?}, libvirtd answered in {:?}",
        c.version,
        c.root.display(),
        c.ready_in,
        t.elapsed(),
        lab.timings.libvirtd
    );
    // The daemon really is the chroot's: what the socket reports, not what the test asked.
    let v = lab.virsh_ok(&["version", "--daemon"]);
    assert!(
        v.contains(&format!("Running against daemon: {}", c.version)),
        "not the 11.3 daemon: {v}"
    );
    lab
}

fn wait_lease(lab: &Lab, dom: &str, from: usize, limit: Duration) -> String {
    lab.wait_console_from(dom, "LEASE ip=", from, limit)
        .map(|(ip, _)| ip)
        .unwrap_or_else(|| panic!("no LAN lease; console:\n{}", lab.console(dom)))
}

/// `vbridge verify DOM` passes and finds `ip` on the LAN bridge.
fn assert_verified(lab: &Lab, dom: &str, ip: &str) {
    let state = tempfile::tempdir().unwrap();
    let (out, v) = lab.vbridge_json(state.path(), &["verify", dom, "--timeout", "20"]);
    assert_eq!(out.status.code(), Some(0), "verify failed: {v}");
    let n = &v["interfaces"][0];
    assert_eq!(n["reachable"], true, "{v}");
    assert_eq!(n["lan"], true, "{v}");
    assert!(
        n["ips"].as_array().unwrap().iter().any(|i| i == ip),
        "verify did not find {ip}: {v}"
    );
}

/// `vbridge doctor`: healthy (exit 0, no error) and the path goes tap -> br0 -> uplink0.
fn assert_doctor_healthy(lab: &Lab, tap: &str) {
    let sysctl = tempfile::tempdir().unwrap();
    let env = format!("VBRIDGE_SYSCTL_DIR={}", sysctl.path().display());
    let bin = vbridge_bin();
    let out = lab.host.exec(
        "env",
        &[&env, bin.to_str().unwrap(), "-c", lab.uri(), "doctor"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "doctor on 11.3:\n{text}");
    assert!(
        text.contains(&format!("tap {tap} ok -> br0 ok -> uplink0 ok")),
        "{text}"
    );
}

#[test]
fn lab_v11_net_define_attach_power_cycle_verify_doctor_undo() {
    if !common::require_root("lab_v11_net_define_attach_power_cycle_verify_doctor_undo") {
        return;
    }
    let lab = start("v11cycle");
    let state = tempfile::tempdir().unwrap();

    let (out, net) = lab.vbridge_json(state.path(), &["net-define"]);
    assert!(out.status.success(), "{net}");
    assert_eq!(net["changed"], true, "{net}");
    assert_eq!(net["active"], true, "{net}");
    let (_, again) = lab.vbridge_json(state.path(), &["net-define"]);
    assert_eq!(again["changed"], false, "{again}");

    // A running VM on a user-mode NIC (the e1000 an installer picks): attach rewrites its
    // definition, the power cycle applies it.
    let nic = "    <interface type='user'>\n      <mac address='52:54:00:77:11:01'/>\n      \
               <model type='e1000'/>\n    </interface>\n";
    let dom = lab.define_guest(GuestSpec::new("pc", vec![Nic::Xml(nic.into())]));
    let original = lab.inactive_xml(&dom);
    let (out, r) = lab.vbridge_json(state.path(), &["attach", &dom]);
    assert!(out.status.success(), "{r}");
    assert_eq!(r["domains"][0]["changed"], true, "{r}");
    let conf = domxml::nics(&lab.inactive_xml(&dom)).unwrap();
    assert_eq!(conf.len(), 1, "{r}");
    assert!(conf[0].is_on_bridge("br0"), "{r}");
    assert_eq!(conf[0].mac.as_deref(), Some("52:54:00:77:11:01"));
    lab.virsh_ok(&["destroy", &dom]);
    let from = lab.console(&dom).len();
    let t = Instant::now();
    lab.virsh_ok(&["start", &dom]);
    let ip = wait_lease(&lab, &dom, from, BOOT);
    eprintln!(
        "[v11cycle] power cycle to LAN lease {:?} ({ip})",
        t.elapsed()
    );
    assert!(
        lab.wait_ping(&ip, Duration::from_secs(10)),
        "{ip} does not answer"
    );

    assert_verified(&lab, &dom, &ip);
    let live = lab.virsh_ok(&["dumpxml", &dom]);
    let tap = domxml::nics(&live).unwrap()[0]
        .target_dev
        .clone()
        .expect("a tap in the live XML");
    assert_doctor_healthy(&lab, &tap);

    // Undo: the exact definition from before the attach.
    let (out, u) = lab.vbridge_json(state.path(), &["undo", &dom]);
    assert!(out.status.success(), "{u}");
    assert_eq!(lab.inactive_xml(&dom), original);
    lab::finish(lab, "v11cycle");
}

#[test]
fn lab_v11_hotplug_lease_verify_and_detach() {
    if !common::require_root("lab_v11_hotplug_lease_verify_and_detach") {
        return;
    }
    let lab = start("v11hot");
    let state = tempfile::tempdir().unwrap();
    let dom = lab.define_guest(GuestSpec::new("hp", vec![]));
    let t = Instant::now();
    let (out, r) = lab.vbridge_json(state.path(), &["attach", &dom, "--hotplug"]);
    let call = t.elapsed();
    assert!(out.status.success(), "{r}");
    let mac = r["domains"][0]["interfaces"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let live = domxml::nics(&lab.virsh_ok(&["dumpxml", &dom])).unwrap();
    assert_eq!(live.len(), 1);
    assert!(live[0].is_on_bridge("br0"));
    assert_eq!(domxml::nics(&lab.inactive_xml(&dom)).unwrap().len(), 1);
    let tap = live[0].target_dev.clone().expect("a tap in the live XML");
    assert!(lab.bridge_ports().contains(&tap), "{tap} not on br0");
    let ip = wait_lease(&lab, &dom, 0, Duration::from_secs(30));
    eprintln!(
        "[v11hot] hotplug call {call:?}, lease {:?} after the call ({ip})",
        t.elapsed()
    );
    assert_verified(&lab, &dom, &ip);

    let (out, d) = lab.vbridge_json(state.path(), &["detach", &dom, "--mac", &mac]);
    assert!(out.status.success(), "{d}");
    assert_eq!(domxml::nics(&lab.inactive_xml(&dom)).unwrap().len(), 0);
    lab::finish(lab, "v11hot");
}

/// The running NIC as libvirt 11.3 prints it.
/// `attach --live` on 11.3, with a guest whose DHCP client runs only on link-up on a libvirt
/// NAT network: moved to a bridge that leads nowhere it comes back by itself (the definition
/// byte-equal, the NIC on the NAT network with its link up: a NAT lease again); moved to br0
/// with the flap it leases from the LAN router, and verify finds it there.
#[test]
fn lab_v11_live_move_revert_flap_lease_verify() {
    if !common::require_root("lab_v11_live_move_revert_flap_lease_verify") {
        return;
    }
    let name = "v11live";
    let lab = start(name);
    let state = tempfile::tempdir().unwrap();
    let net = lab.define_nat_network("nat");
    let t = Instant::now();
    let dom = lab.define_guest(GuestSpec {
        dhcp: GuestDhcp::LinkUp,
        ..GuestSpec::new("lv", vec![Nic::network(&net)])
    });
    let (nat_ip, seen) = lab
        .wait_console_from(&dom, "LEASE ip=", 0, BOOT)
        .unwrap_or_else(|| panic!("no NAT lease; console:\n{}", lab.console(&dom)));
    assert!(nat_ip.starts_with(&lab.nat_prefix()), "{nat_ip}");
    eprintln!("[{name}] boot to NAT lease {:?} ({nat_ip})", t.elapsed());
    let mac = lab.live_nic(&dom).mac.unwrap();

    // A bridge with no uplink and no DHCP: verify fails, everything goes back, link up.
    let (_, took) = lab.live_move_to_dead_bridge(state.path(), &dom);
    let n = lab.live_nic(&dom);
    assert_eq!(n.kind, "network", "{n:?}");
    assert_eq!(n.source.get("network"), Some(&net), "{n:?}");
    let live = lab.virsh_ok(&["dumpxml", &dom]);
    let element = &live[n.span.clone()];
    assert_eq!(
        domxml::link_of(element).as_deref().unwrap_or("up"),
        "up",
        "the way back left the link down: {element}"
    );
    let (ip, seen) = lab
        .wait_console_from(&dom, "LEASE ip=", seen, Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "no lease after the revert; console:\n{}",
                &lab.console(&dom)[seen..]
            )
        });
    assert!(ip.starts_with(&lab.nat_prefix()), "{ip}: not a NAT lease");
    eprintln!("[{name}] moved to a dead bridge: reverted in {took:?}, NAT lease {ip} again");

    // The real move, with the flap and verification (the defaults).
    let t = Instant::now();
    let (out, r) = lab.vbridge_json(state.path(), &["attach", &dom, "--live"]);
    let call = t.elapsed();
    assert!(out.status.success(), "{r}");
    let (lan_ip, _) = lab
        .wait_console_from(&dom, "LEASE ip=", seen, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no LAN lease; console:\n{}", &lab.console(&dom)[seen..]));
    let d = &r["domains"][0];
    assert_eq!(d["changed"], true, "{r}");
    assert_eq!(d["live"]["moved"][0]["to"], "bridge br0", "{r}");
    assert_eq!(d["live"]["verified"][0]["ip"], lan_ip.as_str(), "{r}");
    assert_eq!(d["live"]["verified"][0]["mac"], mac.as_str(), "{r}");
    assert!(lab.leases().contains(&lan_ip), "{}", lab.leases());
    let n = lab.live_nic(&dom);
    assert_eq!(n.source.get("bridge").map(String::as_str), Some("br0"));
    assert!(lab.bridge_ports().contains(n.target_dev.as_ref().unwrap()));
    assert!(domxml::nics(&lab.inactive_xml(&dom)).unwrap()[0].is_on_bridge("br0"));
    eprintln!(
        "[{name}] live move + flap -> LAN lease {lan_ip}, verified; the call, verify included, {call:?}"
    );
    assert_verified(&lab, &dom, &lan_ip);
    let (_, again) = lab.vbridge_json(state.path(), &["attach", &dom, "--live"]);
    assert_eq!(again["domains"][0]["changed"], false, "{again}");
    lab::finish(lab, name);
}
