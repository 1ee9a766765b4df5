//! `mtu-mismatch`: along a running VM's NIC -> tap -> bridge -> uplink, a hop whose MTU is
//! smaller than the guest NIC's (`<mtu size>`). A bridge forwards a frame only if it fits
//! the port it leaves by, and never fragments it, so a frame larger than any port on the
//! way is dropped without a word: small packets pass, large ones (a jumbo-frame transfer,
//! TCP segments sized by the guest's MTU) vanish.

use super::{finding, Need};
use crate::doctor::{Action, Finding, HostState, Observation, Severity};
use crate::topology::nic_host_bridge;
use std::collections::BTreeMap;

/// The MTU hops of each running VM NIC on a LAN bridge.
pub(super) fn mtu_checks(
    out: &mut Vec<Finding>,
    obs: &Observation,
    host: &HostState,
    needs: &BTreeMap<String, Need>,
) {
    let network = |name: &str| obs.networks.iter().find(|n| n.name == name);
    for d in obs.domains.iter().filter(|d| d.running) {
        for nic in &d.nics {
            let net = nic.network.as_deref().and_then(network);
            let Some(b) = nic_host_bridge(&nic.kind, nic.bridge.as_deref(), net) else {
                continue;
            };
            if !b.lan || !needs.contains_key(&b.bridge) {
                continue;
            }
            let (Some(tap), Some(br)) = (&nic.tap, host.interfaces.get(&b.bridge)) else {
                continue;
            };
            let mac = nic.mac.as_deref().unwrap_or("(no MAC)");
            let mtu_of = |dev: &str| host.interfaces.get(dev).and_then(|i| i.mtu);
            let Some(want) = nic.mtu else {
                // No <mtu>: the guest uses 1500 and libvirt sized the tap from the bridge.
                if let (Some(t), Some(bm)) = (mtu_of(tap), br.mtu) {
                    if t < bm {
                        out.push(finding(
                            "mtu-mismatch",
                            Severity::Info,
                            tap,
                            format!("VM {}'s tap {tap} has MTU {t} under bridge {} with {bm}: the VM cannot use the bridge's larger frames", d.name, b.bridge),
                            format!("give the NIC the bridge's MTU: `vbridge attach {} --mac {mac} --mtu {bm}` (after a power-off)", d.name),
                            None,
                        ));
                    }
                }
                continue;
            };
            let uplinks = host.uplinks(&b.bridge);
            let small_uplink = uplinks.iter().any(|u| mtu_of(u).is_some_and(|m| m < want));
            let mut hops: Vec<(&str, &str)> = vec![("tap", tap.as_str()), ("bridge", &b.bridge)];
            hops.extend(uplinks.iter().map(|u| ("uplink", *u)));
            for (kind, dev) in hops {
                let Some(have) = mtu_of(dev) else { continue };
                if have >= want {
                    continue;
                }
                let lead = format!(
                    "VM {}'s NIC {mac} has MTU {want}, but {kind} {dev} on its way to the LAN has {have}",
                    d.name
                );
                let set = Action::SetMtu {
                    dev: dev.to_string(),
                    mtu: want,
                    was: have,
                };
                let (severity, message, fix, action) = match kind {
                    "tap" => (
                        Severity::Error,
                        format!("{lead}: frames over {have} bytes to the VM are dropped (bridges do not fragment)"),
                        format!("`ip link set {dev} mtu {want}`; --fix sets it (libvirt sets it again at the next start)"),
                        Some(set),
                    ),
                    // The bridge device's own MTU limits the host's traffic on it, and the
                    // MTU libvirt gives a new tap without <mtu>; frames between ports pass.
                    "bridge" if small_uplink => (
                        Severity::Warning,
                        format!("{lead}: the host's own traffic to the VM over {dev} is limited to {have}, and taps added without <mtu> get {have}"),
                        format!("raise the uplink first, then `ip link set {dev} mtu {want}`; --fix does not while an uplink is smaller"),
                        None,
                    ),
                    "bridge" => (
                        Severity::Warning,
                        format!("{lead}: the host's own traffic to the VM over {dev} is limited to {have}, and taps added without <mtu> get {have}"),
                        format!("`ip link set {dev} mtu {want}` (every uplink allows it); --fix sets it; persist it with `vbridge host-bridge --mtu {want}` or netplan `mtu: {want}`"),
                        Some(set),
                    ),
                    _ => (
                        Severity::Error,
                        format!("{lead}: frames over {have} bytes between the VM and the LAN are dropped (bridges do not fragment)"),
                        format!("raise {dev}'s MTU to {want} (`ip link set {dev} mtu {want}`, and the switch port's) if the LAN carries jumbo frames, or lower the VM's: `vbridge attach {} --mac {mac} --mtu {have}`; --fix never changes an uplink", d.name),
                        None,
                    ),
                };
                out.push(finding("mtu-mismatch", severity, dev, message, fix, action));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use crate::doctor::{check, Action, Severity};

    /// healthy.json with jumbo frames: web's NIC asks 9000, every hop has it.
    fn jumbo() -> crate::doctor::Observation {
        let mut o = healthy();
        o.domains[0].nics[0].mtu = Some(9000);
        for dev in ["vnet0", "br0", "enp3s0"] {
            iface(&mut o, dev).mtu = Some(9000);
        }
        o
    }

    #[test]
    fn a_whole_jumbo_chain_is_fine() {
        let f = check(&jumbo());
        assert!(!f.iter().any(|f| f.id == "mtu-mismatch"), "{f:#?}");
    }

    #[test]
    fn a_small_uplink_is_named_and_never_fixed() {
        let mut o = jumbo();
        iface(&mut o, "enp3s0").mtu = Some(1500);
        let f = check(&o);
        let m = only_error(&f, "mtu-mismatch", "enp3s0");
        assert!(
            m.message.contains("has MTU 9000, but uplink enp3s0"),
            "{}",
            m.message
        );
        assert!(m.action.is_none());
        // The bridge above it is not touched by --fix either.
        iface(&mut o, "br0").mtu = Some(1500);
        let f = check(&o);
        let b = f
            .iter()
            .find(|x| x.subject == "br0" && x.id == "mtu-mismatch")
            .unwrap();
        assert_eq!(b.severity, Severity::Warning);
        assert!(b.action.is_none());
    }

    #[test]
    fn a_small_tap_or_bridge_is_fixed_to_the_nic_mtu() {
        let mut o = jumbo();
        iface(&mut o, "vnet0").mtu = Some(1500);
        iface(&mut o, "br0").mtu = Some(1500);
        let f = check(&o);
        let t = only_error(&f, "mtu-mismatch", "vnet0");
        assert_eq!(
            t.action,
            Some(Action::SetMtu {
                dev: "vnet0".into(),
                mtu: 9000,
                was: 1500
            })
        );
        let b = f
            .iter()
            .find(|x| x.subject == "br0" && x.id == "mtu-mismatch")
            .unwrap();
        assert_eq!(b.severity, Severity::Warning);
        assert!(matches!(b.action, Some(Action::SetMtu { mtu: 9000, .. })));
        let plan = crate::doctor::plan(&f);
        let changes: Vec<&str> = plan.iter().map(|p| p.change.as_str()).collect();
        assert!(
            changes.contains(&"ip link set vnet0 mtu 9000"),
            "{changes:?}"
        );
        use crate::plan::Step;
        assert_eq!(
            t.action.as_ref().unwrap().inverse(),
            Some(Action::SetMtu {
                dev: "vnet0".into(),
                mtu: 1500,
                was: 9000
            })
        );
    }

    #[test]
    fn without_an_mtu_a_tap_smaller_than_its_bridge_is_info() {
        let mut o = healthy();
        iface(&mut o, "br0").mtu = Some(9000);
        iface(&mut o, "vnet0").mtu = Some(1500);
        let f = check(&o);
        let m = f.iter().find(|x| x.id == "mtu-mismatch").unwrap();
        assert_eq!((m.severity, m.subject.as_str()), (Severity::Info, "vnet0"));
        assert!(m.fix.contains("--mtu 9000"), "{}", m.fix);
    }
}
