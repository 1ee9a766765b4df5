//! The lab harness end to end: a guest on br0 gets a DHCP lease from the LAN and answers
//! ping; a NIC hot-plugged into a running guest does too; nothing is left afterwards.

use std::time::{Duration, Instant};

use crate::common;
use crate::lab::{self, GuestSpec, Lab, Nic};

const BOOT: Duration = Duration::from_secs(90);

fn in_pool(lab: &Lab, ip: &str) -> bool {
    let prefix = format!("10.77.{}.", lab.subnet);
    ip.strip_prefix(&prefix)
        .and_then(|h| h.parse::<u8>().ok())
        .is_some_and(|h| (100..=150).contains(&h))
}

fn tap_of(lab: &Lab, dom: &str) -> String {
    // domiflist: "vnet0  bridge  br0  virtio  52:54:00:..."
    let out = lab.virsh_ok(&["-q", "domiflist", dom]);
    out.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("{dom} has no interface: {out}"))
        .to_string()
}

#[test]
fn lab_smoke_guest_on_bridge_gets_lease_and_answers_ping() {
    if !common::require_root("lab_smoke") {
        return;
    }
    let t = Instant::now();
    let lab = Lab::start("smoke");
    eprintln!("lab start {:?}: {:?}", t.elapsed(), lab.timings);

    let t = Instant::now();
    let dom = lab.define_guest(GuestSpec::new("g1", vec![Nic::bridge(lab.bridge)]));
    let ip = lab
        .wait_console(&dom, "LEASE ip=", BOOT)
        .unwrap_or_else(|| {
            panic!(
                "no lease within {BOOT:?}; console:\n{}\nleases:\n{}",
                lab.console(&dom),
                lab.leases()
            )
        });
    let boot = t.elapsed();
    assert!(in_pool(&lab, &ip), "lease {ip} is outside the DHCP pool");
    assert!(lab.leases().contains(&ip), "dnsmasq has no lease for {ip}");
    assert!(
        lab.wait_ping(&ip, Duration::from_secs(10)),
        "{ip} does not answer ping from the LAN"
    );
    let tap = tap_of(&lab, &dom);
    let ports = lab.bridge_ports();
    assert!(
        ports.contains(&tap),
        "{tap} is not a port of br0: {ports:?}"
    );
    assert!(ports.iter().any(|p| p == "uplink0"), "{ports:?}");
    eprintln!("boot to lease {boot:?} ({ip}, {tap})");
    lab::finish(lab, "smoke");
}

#[test]
fn lab_smoke_hotplugged_nic_gets_lease() {
    if !common::require_root("lab_smoke") {
        return;
    }
    let t = Instant::now();
    let lab = Lab::start("hotplug");
    eprintln!("lab start {:?}: {:?}", t.elapsed(), lab.timings);

    let dom = lab.define_guest(GuestSpec::new("g0", vec![]));
    assert!(
        lab.wait_console(&dom, "LAB-BOOTED", BOOT).is_some(),
        "guest did not boot; console:\n{}",
        lab.console(&dom)
    );
    let from = lab.console(&dom).len();
    let t = Instant::now();
    lab.virsh_ok(&[
        "attach-interface",
        "--domain",
        &dom,
        "--type",
        "bridge",
        "--source",
        lab.bridge,
        "--model",
        "virtio",
        "--config",
        "--live",
    ]);
    let attach = t.elapsed();
    let (ip, _) = lab
        .wait_console_from(&dom, "LEASE ip=", from, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no lease after hotplug; console:\n{}", lab.console(&dom)));
    let lease = t.elapsed();
    assert!(in_pool(&lab, &ip), "lease {ip} is outside the DHCP pool");
    assert!(
        lab.wait_ping(&ip, Duration::from_secs(10)),
        "{ip} does not answer ping"
    );
    let tap = tap_of(&lab, &dom);
    assert!(lab.bridge_ports().contains(&tap), "{tap} not on br0");
    let inactive = lab.virsh_ok(&["dumpxml", "--inactive", &dom]);
    assert!(
        inactive.contains("<interface type='bridge'>"),
        "--config was not kept"
    );
    eprintln!("hotplug: attach {attach:?}, attach to lease {lease:?} ({ip})");
    lab::finish(lab, "hotplug");
}
