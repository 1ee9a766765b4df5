//! Issue 9 on a real guest: a running VM moved onto the LAN without a power-off
//! (`attach --live`), the link flap that makes a carrier-watching DHCP client ask again, the
//! automatic way back when no LAN address answers, MTU and multiqueue seen from inside the
//! guest, and macvtap on a dedicated uplink. Each test prints its numbers.

use std::time::{Duration, Instant};

use crate::common;
use crate::lab::{self, GuestDhcp, GuestSpec, Lab, Nic};
use vbridge::domxml;

const BOOT: Duration = Duration::from_secs(90);
/// Issue 9: the live move + flap -> LAN lease of the lab guest (TCG) within 3 s.
const MOVE_TO_LEASE_LIMIT: Duration = Duration::from_secs(3);

fn start(name: &str) -> Lab {
    let t = Instant::now();
    let lab = Lab::start(name);
    eprintln!("[{name}] lab set-up {:?} ({:?})", t.elapsed(), lab.timings);
    lab
}

/// The live `<interface>` element as libvirt prints it.
fn live_element(lab: &Lab, dom: &str) -> String {
    let xml = lab.virsh_ok(&["dumpxml", dom]);
    let n = domxml::nics(&xml).unwrap().remove(0);
    xml[n.span].to_string()
}

fn in_lan_pool(lab: &Lab, ip: &str) -> bool {
    ip.strip_prefix(&format!("10.77.{}.", lab.subnet))
        .and_then(|h| h.parse::<u8>().ok())
        .is_some_and(|h| (100..=150).contains(&h))
}

fn alias_and_address(n: &str) -> (String, String) {
    let pick = |tag: &str| {
        n.lines()
            .find(|l| l.trim_start().starts_with(tag))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    (pick("<alias"), pick("<address"))
}

/// A guest whose DHCP client runs only on link-up, on a libvirt NAT network:
/// 1. moved without a flap, it keeps its NAT address (no new lease);
/// 2. moved onto a bridge with no uplink and no DHCP, it is moved back by itself: the
///    persistent XML byte-equal to before, the live NIC on the NAT network, a NAT lease again;
/// 3. moved with the flap, it has its LAN lease within 3 s of the call and verify answers;
/// 4. a second run changes nothing.
#[test]
fn lab_live_move_flap_and_revert() {
    if !common::require_root("lab_live_move_flap_and_revert") {
        return;
    }
    let name = "live";
    let lab = start(name);
    let state = tempfile::tempdir().unwrap();
    let net = lab.define_nat_network("nat");
    let t = Instant::now();
    let dom = lab.define_guest(GuestSpec {
        dhcp: GuestDhcp::LinkUp,
        ..GuestSpec::new("lv", vec![Nic::network(&net)])
    });
    let (nat_ip, mut seen) = lab
        .wait_console_from(&dom, "LEASE ip=", 0, BOOT)
        .unwrap_or_else(|| panic!("no NAT lease; console:\n{}", lab.console(&dom)));
    eprintln!("[{name}] boot to NAT lease {:?} ({nat_ip})", t.elapsed());
    assert!(nat_ip.starts_with(&lab.nat_prefix()), "{nat_ip}");
    let on_nat = live_element(&lab, &dom);
    let (alias, address) = alias_and_address(&on_nat);
    let mac = lab.live_nic(&dom).mac.unwrap();

    // 1. Without the flap: the NIC is on br0, the guest never asks again.
    let (out, r) = lab.vbridge_json(
        state.path(),
        &["attach", &dom, "--live", "--flap-ms", "0", "--no-verify"],
    );
    assert!(out.status.success(), "{r}");
    let d = &r["domains"][0];
    assert_eq!(d["live"]["moved"][0]["to"], "bridge br0", "{r}");
    assert_eq!(d["live"]["flap_ms"], 0, "{r}");
    let n = lab.live_nic(&dom);
    assert_eq!(
        (n.kind.as_str(), n.source.get("bridge").map(String::as_str)),
        ("bridge", Some("br0"))
    );
    assert!(lab.bridge_ports().contains(n.target_dev.as_ref().unwrap()));
    std::thread::sleep(Duration::from_secs(5));
    let console = lab.console(&dom);
    assert!(
        !console[seen..].contains("LEASE ip="),
        "the guest leased again without a flap:\n{}",
        &console[seen..]
    );
    eprintln!("[{name}] moved without a flap: no new lease in 5 s, the guest keeps {nat_ip}");
    // Back to where it was, by hand, and the definition back by undo.
    let back = lab.dir().join("back.xml");
    std::fs::write(&back, domxml::live_restore(&on_nat).unwrap()).unwrap();
    lab.virsh_ok(&["update-device", &dom, back.to_str().unwrap(), "--live"]);
    let (out, u) = lab.vbridge_json(state.path(), &["undo", &dom]);
    assert!(out.status.success(), "{u}");
    assert_eq!(lab.live_nic(&dom).kind, "network");

    // 2. A bridge that leads nowhere: verify fails, everything goes back, with a flap.
    seen = lab.console(&dom).len();
    let (r, took) = lab.live_move_to_dead_bridge(state.path(), &dom);
    let d = &r["domains"][0];
    let msg = d["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("no LAN address answered") && msg.contains("moved back"),
        "{r}"
    );
    let n = lab.live_nic(&dom);
    assert_eq!(n.kind, "network", "{n:?}");
    assert_eq!(n.source.get("network"), Some(&net), "{n:?}");
    assert_eq!(
        alias_and_address(&live_element(&lab, &dom)),
        (alias.clone(), address.clone())
    );
    let (ip, end) = lab
        .wait_console_from(&dom, "LEASE ip=", seen, Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "no lease after the revert; console:\n{}",
                &lab.console(&dom)[seen..]
            )
        });
    assert!(ip.starts_with(&lab.nat_prefix()), "{ip}: not a NAT lease");
    seen = end;
    eprintln!(
        "[{name}] moved to a dead bridge: reverted in {took:?} (verify-within 4 s), NAT lease {ip} again: {msg}"
    );

    // A bridge that does not exist: refused before anything changes.
    let before = lab.inactive_xml(&dom);
    let (out, r) = lab.vbridge_json(
        state.path(),
        &["attach", &dom, "--live", "--bridge", "nobr9"],
    );
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert!(r.to_string().contains("nobr9 does not exist"), "{r}");
    assert_eq!(lab.inactive_xml(&dom), before);
    assert_eq!(lab.live_nic(&dom).kind, "network");

    // 3. The real move, with the flap and verification (the defaults).
    let from = lab.console(&dom).len().max(seen);
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let r = lab.vbridge_json(state.path(), &["attach", &dom, "--live"]);
            tx.send((r, t.elapsed())).unwrap();
        });
        let (lan_ip, _) = lab
            .wait_console_from(&dom, "LEASE ip=", from, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no LAN lease; console:\n{}", &lab.console(&dom)[from..]));
        let to_lease = t.elapsed();
        let ((out, r), call) = rx.recv().unwrap();
        assert!(out.status.success(), "{r}");
        assert!(
            in_lan_pool(&lab, &lan_ip),
            "{lan_ip} is not from the LAN router"
        );
        let d = &r["domains"][0];
        assert_eq!(d["changed"], true, "{r}");
        assert_eq!(d["live"]["flap_ms"], 1000, "{r}");
        assert_eq!(d["live"]["verified"][0]["ip"], lan_ip.as_str(), "{r}");
        assert_eq!(d["live"]["verified"][0]["mac"], mac.as_str(), "{r}");
        eprintln!(
            "[{name}] live move + flap -> LAN lease {to_lease:?} ({lan_ip}); the call, verify included, {call:?}"
        );
        assert!(
            to_lease < MOVE_TO_LEASE_LIMIT,
            "LAN lease {to_lease:?} after the call, over {MOVE_TO_LEASE_LIMIT:?}"
        );
        assert!(lab.wait_ping(&lan_ip, Duration::from_secs(5)));
    });
    let n = lab.live_nic(&dom);
    assert_eq!(n.source.get("bridge").map(String::as_str), Some("br0"));
    assert_eq!(n.mac.as_deref(), Some(mac.as_str()));
    assert_eq!(
        alias_and_address(&live_element(&lab, &dom)),
        (alias, address),
        "same alias and PCI address"
    );
    assert!(domxml::nics(&lab.inactive_xml(&dom)).unwrap()[0].is_on_bridge("br0"));

    // 4. Idempotent.
    let (out, r) = lab.vbridge_json(state.path(), &["attach", &dom, "--live"]);
    assert!(out.status.success(), "{r}");
    assert_eq!(r["domains"][0]["changed"], false, "{r}");
    assert_eq!(
        r["domains"][0]["live"]["moved"].as_array().map(Vec::len),
        Some(0),
        "{r}"
    );
    lab::finish(lab, &format!("[{name}]"));
}

/// The console's newest `NIC dev=... mtu=N rxq=N txq=N` line after `from`.
fn nic_line(lab: &Lab, dom: &str, from: usize) -> Option<String> {
    let c = lab.console(dom);
    c.get(from..)?
        .lines()
        .rev()
        .find(|l| l.starts_with("NIC dev="))
        .map(str::to_string)
}

/// Wait for the guest's next `PING-OK` or `PING-FAIL` (as asked) after `from`; the offset
/// past it.
fn wait_ping_marker(lab: &Lab, dom: &str, ok: bool, from: usize) -> usize {
    let marker = if ok { "PING-OK " } else { "PING-FAIL " };
    lab.wait_console_from(dom, marker, from, Duration::from_secs(30))
        .unwrap_or_else(|| {
            panic!(
                "no {marker} from the guest; console since:\n{}",
                &lab.console(dom)[from..]
            )
        })
        .1
}

/// A large ping from the LAN side: 8972 data bytes are a 9000-byte IP packet.
fn big_ping_from_lan(lab: &Lab, ip: &str) -> bool {
    lab.lan
        .exec("busybox", &["ping", "-c1", "-W2", "-s", "8972", ip])
        .status
        .success()
}

fn doctor(lab: &Lab, state: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut v = vec!["doctor"];
    v.extend_from_slice(args);
    lab.vbridge_json(state, &v).1
}

/// The `mtu-mismatch` findings of a doctor report: (subject, severity).
fn mtu_findings(r: &serde_json::Value) -> Vec<(String, String)> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "mtu-mismatch")
        .map(|f| {
            (
                f["subject"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// MTU 9000 on the whole chain (the guest NIC by `attach --mtu`, the tap by libvirt, the
/// bridge, the veth uplink, the LAN side): the guest's 9000-byte ping reaches the LAN router
/// and the LAN's reaches the guest. busybox ping has no `-M do`; none is needed: the guest's
/// eth0 has MTU 9000, so it sends the packet whole, and a bridge or veth with a smaller MTU
/// drops it instead of fragmenting it. One hop at 1500 (the uplink, then the tap) and the
/// ping fails and doctor names that hop; `doctor --fix` sets the tap back. `--queues 2` on a
/// 2-vCPU guest: the guest sees 2 rx and 2 tx queues (QEMU's userspace virtio-net; no
/// vhost-net here); 3 is refused before anything changes.
#[test]
fn lab_mtu_chain_and_queues_seen_by_the_guest() {
    if !common::require_root("lab_mtu_chain_and_queues_seen_by_the_guest") {
        return;
    }
    let name = "mtu";
    let lab = start(name);
    let state = tempfile::tempdir().unwrap();
    lab.lan.ip(&["link", "set", "lan0", "mtu", "9000"]);
    lab.host.ip(&["link", "set", "uplink0", "mtu", "9000"]);
    lab.host.ip(&["link", "set", lab.bridge, "mtu", "9000"]);
    let router = lab.addr(1);
    let dom = lab.define_guest(GuestSpec {
        running: false,
        vcpus: 2,
        ping: Some((router.clone(), 8972)),
        ..GuestSpec::new("mq", vec![Nic::bridge(lab.bridge)])
    });
    let before = lab.inactive_xml(&dom);
    for (args, says) in [
        (vec!["--queues", "3"], "more than"),
        (vec!["--queues", "0"], "at least one"),
        (vec!["--mtu", "65536"], "out of range"),
    ] {
        let mut v = vec!["attach", dom.as_str()];
        v.extend(args.iter().copied());
        let (out, r) = lab.vbridge_json(state.path(), &v);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {r}");
        assert!(r.to_string().contains(says), "{args:?}: {r}");
    }
    assert_eq!(
        lab.inactive_xml(&dom),
        before,
        "a refusal changed the definition"
    );
    let (out, r) = lab.vbridge_json(
        state.path(),
        &["attach", &dom, "--mtu", "9000", "--queues", "2"],
    );
    assert!(out.status.success(), "{r}");
    assert_eq!(
        r["domains"][0]["interfaces"][0]["after"]["mtu"], 9000,
        "{r}"
    );
    assert_eq!(
        r["domains"][0]["interfaces"][0]["after"]["queues"], 2,
        "{r}"
    );
    let conf = domxml::nics(&lab.inactive_xml(&dom)).unwrap();
    assert_eq!((conf[0].mtu, conf[0].queues), (Some(9000), Some(2)));

    let t = Instant::now();
    lab.virsh_ok(&["start", &dom]);
    let mut seen = wait_ping_marker(&lab, &dom, true, 0);
    eprintln!(
        "[{name}] boot to a 9000-byte ping to the LAN {:?}",
        t.elapsed()
    );
    let line = nic_line(&lab, &dom, 0).expect("a NIC line");
    assert!(line.contains("mtu=9000"), "{line}");
    assert!(line.contains("rxq=2 txq=2"), "{line}");
    let ip = lab.wait_console(&dom, "LEASE ip=", BOOT).unwrap();
    let tap = lab.live_nic(&dom).target_dev.unwrap();
    let sys = |dev: &str| {
        lab.host
            .exec("cat", &[&format!("/sys/class/net/{dev}/mtu")])
    };
    assert_eq!(String::from_utf8_lossy(&sys(&tap).stdout).trim(), "9000");
    assert!(
        big_ping_from_lan(&lab, &ip),
        "the LAN's 9000-byte ping did not reach {ip}"
    );
    assert_eq!(mtu_findings(&doctor(&lab, state.path(), &[&dom])), vec![]);
    eprintln!("[{name}] guest: {line}; 9000 on tap {tap}, br0, uplink0, lan0: both ways pass");

    // One hop at 1500: the uplink. Dropped, and doctor names it (no fix for an uplink).
    lab.host.ip(&["link", "set", "uplink0", "mtu", "1500"]);
    seen = wait_ping_marker(&lab, &dom, false, seen);
    assert!(!big_ping_from_lan(&lab, &ip));
    let r = doctor(&lab, state.path(), &[&dom]);
    let found = mtu_findings(&r);
    assert!(found.contains(&("uplink0".into(), "error".into())), "{r}");
    // The kernel lowers a bridge to its smallest port: br0 follows, as a warning.
    assert!(
        found
            .iter()
            .all(|(s, sev)| s == "uplink0" || sev == "warning"),
        "{r}"
    );
    let uplink_hop = &r["paths"][0]["hops"][3];
    assert_eq!(
        (&uplink_hop["name"], &uplink_hop["mark"]),
        (&"uplink0".into(), &"fail".into()),
        "{r}"
    );
    eprintln!("[{name}] uplink0 at 1500: the guest's ping fails, doctor names uplink0 ({found:?})");
    lab.host.ip(&["link", "set", "uplink0", "mtu", "9000"]);
    seen = wait_ping_marker(&lab, &dom, true, seen);

    // The tap at 1500: named, and --fix sets it to the NIC's MTU again.
    // (The guest's own large frames into a 1500 tap stall its sending in QEMU here, so the
    // proof is the LAN's large ping, which the tap drops on the way in.)
    lab.host.ip(&["link", "set", &tap, "mtu", "1500"]);
    assert!(lab.ping_from_lan(&ip), "small frames still pass");
    assert!(
        !big_ping_from_lan(&lab, &ip),
        "a 1500 tap let 9000 bytes through"
    );
    let r = doctor(&lab, state.path(), &[&dom]);
    let errors: Vec<_> = mtu_findings(&r)
        .into_iter()
        .filter(|(_, sev)| sev == "error")
        .collect();
    assert_eq!(errors, vec![(tap.clone(), "error".to_string())], "{r}");
    let r = doctor(&lab, state.path(), &[&dom, "--fix"]);
    let fixed = r["fixed"].as_array().unwrap();
    assert!(
        fixed
            .iter()
            .any(|f| f["action"] == "set-mtu" && f["done"] == true),
        "{r}"
    );
    assert_eq!(String::from_utf8_lossy(&sys(&tap).stdout).trim(), "9000");
    assert!(big_ping_from_lan(&lab, &ip));
    let t = Instant::now();
    wait_ping_marker(&lab, &dom, true, seen);
    eprintln!(
        "[{name}] the guest's own 9000-byte ping passes again {:?} after the fix",
        t.elapsed()
    );
    eprintln!("[{name}] tap at 1500: the LAN's 9000-byte ping fails, doctor names {tap}, --fix sets 9000, it passes");

    // The bridge device at 1500: frames between its ports still pass (the kernel checks the
    // port a frame leaves by); doctor warns, since the host's own traffic and new taps are
    // held to it.
    lab.host.ip(&["link", "set", lab.bridge, "mtu", "1500"]);
    assert!(
        big_ping_from_lan(&lab, &ip),
        "br0's own MTU stopped bridged frames"
    );
    let r = doctor(&lab, state.path(), &[&dom]);
    assert_eq!(
        mtu_findings(&r),
        vec![("br0".to_string(), "warning".to_string())],
        "{r}"
    );
    eprintln!("[{name}] br0 itself at 1500: bridged 9000-byte frames still pass, doctor warns");
    lab::finish(lab, &format!("[{name}]"));
}

/// macvtap on a dedicated veth uplink (a macvlan cannot sit on a bridge port, so uplink0
/// leaves br0 and is the VM's own): `attach --direct uplink0 --mode bridge`, a power-cycle,
/// a lease from the LAN router, the LAN pings the guest, doctor says the host cannot reach
/// it. A running macvtap NIC cannot be moved to a bridge live: refused, nothing changed.
#[test]
fn lab_macvtap_on_a_dedicated_uplink() {
    if !common::require_root("lab_macvtap_on_a_dedicated_uplink") {
        return;
    }
    let name = "macvtap";
    let lab = start(name);
    let state = tempfile::tempdir().unwrap();
    lab.host.ip(&["link", "set", "uplink0", "nomaster"]);
    let dom = lab.define_guest(GuestSpec {
        running: false,
        ..GuestSpec::new("mv", vec![Nic::bridge(lab.bridge)])
    });
    let (out, r) = lab.vbridge_json(state.path(), &["attach", &dom, "--direct", "eth9"]);
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert!(r.to_string().contains("eth9 does not exist"), "{r}");
    let (out, r) = lab.vbridge_json(
        state.path(),
        &["attach", &dom, "--direct", "uplink0", "--mode", "bridge"],
    );
    assert!(out.status.success(), "{r}");
    let conf = domxml::nics(&lab.inactive_xml(&dom)).unwrap();
    assert_eq!(conf[0].kind, "direct");
    assert_eq!(
        conf[0].source.get("dev").map(String::as_str),
        Some("uplink0")
    );
    assert_eq!(
        conf[0].source.get("mode").map(String::as_str),
        Some("bridge")
    );
    assert_eq!(conf[0].model.as_deref(), Some("virtio"));

    let t = Instant::now();
    lab.virsh_ok(&["start", &dom]);
    let ip = lab
        .wait_console(&dom, "LEASE ip=", BOOT)
        .unwrap_or_else(|| panic!("no lease on macvtap; console:\n{}", lab.console(&dom)));
    assert!(in_lan_pool(&lab, &ip), "{ip}");
    assert!(lab.leases().contains(&ip), "{}", lab.leases());
    assert!(
        lab.wait_ping(&ip, Duration::from_secs(10)),
        "the LAN cannot ping {ip}"
    );
    let n = lab.live_nic(&dom);
    eprintln!(
        "[{name}] boot to LAN lease on macvtap {:?} ({ip}, {:?} on uplink0); the LAN pings it",
        t.elapsed(),
        n.target_dev
    );
    let r = doctor(&lab, state.path(), &[&dom]);
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "macvtap-host-isolation" && f["subject"] == dom.as_str()),
        "{r}"
    );

    let before = lab.inactive_xml(&dom);
    let (out, r) = lab.vbridge_json(state.path(), &["attach", &dom, "--live"]);
    assert_eq!(out.status.code(), Some(1), "{r}");
    let msg = r["domains"][0]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(msg.contains("type 'direct'"), "{r}");
    assert_eq!(lab.inactive_xml(&dom), before);
    assert_eq!(lab.live_nic(&dom).kind, "direct");
    lab::finish(lab, &format!("[{name}]"));
}

/// Issue 11: `attach --live --network br0-network` moves a running guest from a libvirt NAT
/// network onto the bridge-mode network (libvirt's update-device to type='network'), the
/// flap makes it lease on the LAN, the never-strand check confirms it, and the definition
/// names the network; a second run changes nothing.
#[test]
fn lab_live_move_onto_a_bridge_mode_network() {
    if !common::require_root("lab_live_move_onto_a_bridge_mode_network") {
        return;
    }
    let name = "live-net";
    let lab = start(name);
    let state = tempfile::tempdir().unwrap();
    let (out, r) = lab.vbridge_json(state.path(), &["net-define"]);
    assert!(out.status.success(), "{r}");
    let net = lab.define_nat_network("nat");
    let dom = lab.define_guest(GuestSpec {
        dhcp: GuestDhcp::LinkUp,
        ..GuestSpec::new("ln", vec![Nic::network(&net)])
    });
    let (nat_ip, _) = lab
        .wait_console_from(&dom, "LEASE ip=", 0, BOOT)
        .unwrap_or_else(|| panic!("no NAT lease; console:\n{}", lab.console(&dom)));
    assert!(nat_ip.starts_with(&lab.nat_prefix()), "{nat_ip}");
    let t = Instant::now();
    let (out, r) = lab.vbridge_json(
        state.path(),
        &["attach", &dom, "--live", "--network", "br0-network"],
    );
    eprintln!("[{name}] live move onto br0-network {:?}: {r}", t.elapsed());
    assert!(out.status.success(), "{r}");
    let d = &r["domains"][0];
    assert_eq!(d["live"]["moved"][0]["to"], "network br0-network", "{r}");
    let ip = d["live"]["verified"][0]["ip"].as_str().unwrap_or_default();
    assert!(in_lan_pool(&lab, ip), "not a LAN lease: {r}");
    let n = lab.live_nic(&dom);
    assert_eq!(
        n.source.get("network").map(String::as_str),
        Some("br0-network"),
        "{n:?}"
    );
    assert!(lab.bridge_ports().contains(n.target_dev.as_ref().unwrap()));
    let def = domxml::nics(&lab.inactive_xml(&dom)).unwrap();
    assert_eq!(
        (
            def[0].kind.as_str(),
            def[0].source.get("network").map(String::as_str)
        ),
        ("network", Some("br0-network"))
    );
    let (out, again) = lab.vbridge_json(
        state.path(),
        &["attach", &dom, "--live", "--network", "br0-network"],
    );
    assert!(out.status.success(), "{again}");
    assert_eq!(again["domains"][0]["changed"], false, "{again}");
    lab::finish(lab, &format!("[{name}]"));
}
