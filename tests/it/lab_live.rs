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

/// The persistent definition as libvirt prints it (what a backup holds).
fn inactive(lab: &Lab, dom: &str) -> String {
    lab.virsh_ok(&["dumpxml", "--inactive", "--security-info", dom])
}

fn live_nic(lab: &Lab, dom: &str) -> domxml::Nic {
    let nics = domxml::nics(&lab.virsh_ok(&["dumpxml", dom])).unwrap();
    assert_eq!(nics.len(), 1, "{nics:?}");
    nics.into_iter().next().unwrap()
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
    let mac = live_nic(&lab, &dom).mac.unwrap();

    // 1. Without the flap: the NIC is on br0, the guest never asks again.
    let (out, r) = lab.vbridge_json(
        state.path(),
        &["attach", &dom, "--live", "--flap-ms", "0", "--no-verify"],
    );
    assert!(out.status.success(), "{r}");
    let d = &r["domains"][0];
    assert_eq!(d["live"]["moved"][0]["to"], "bridge br0", "{r}");
    assert_eq!(d["live"]["flap_ms"], 0, "{r}");
    let n = live_nic(&lab, &dom);
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
    assert_eq!(live_nic(&lab, &dom).kind, "network");

    // 2. A bridge that leads nowhere: verify fails, everything goes back, with a flap.
    lab.host.ip(&["link", "add", "brdead", "type", "bridge"]);
    lab.host.ip(&["link", "set", "brdead", "up"]);
    let before = inactive(&lab, &dom);
    seen = lab.console(&dom).len();
    let t = Instant::now();
    let (out, r) = lab.vbridge_json(
        state.path(),
        &[
            "attach",
            &dom,
            "--live",
            "--bridge",
            "brdead",
            "--verify-within",
            "4",
        ],
    );
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{r}");
    let d = &r["domains"][0];
    assert_eq!(d["live"]["reverted"], true, "{r}");
    let msg = d["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("no LAN address answered") && msg.contains("moved back"),
        "{r}"
    );
    assert_eq!(
        inactive(&lab, &dom),
        before,
        "the definition is not what it was"
    );
    let n = live_nic(&lab, &dom);
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
    let n = live_nic(&lab, &dom);
    assert_eq!(n.source.get("bridge").map(String::as_str), Some("br0"));
    assert_eq!(n.mac.as_deref(), Some(mac.as_str()));
    assert_eq!(
        alias_and_address(&live_element(&lab, &dom)),
        (alias, address),
        "same alias and PCI address"
    );
    assert!(domxml::nics(&inactive(&lab, &dom)).unwrap()[0].is_on_bridge("br0"));

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
