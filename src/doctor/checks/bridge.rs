//! Each bridge a VM or network needs: it exists, is a bridge, is up, has a working wired
//! uplink without an address of its own, does not stall new ports in STP, and keeps its MAC.

use super::{finding, Need};
use crate::doctor::{Action, Finding, HostState, Severity};
use crate::shell::{join, quote};

pub(super) fn bridge_checks(out: &mut Vec<Finding>, host: &HostState, b: &str, need: &Need) {
    let mut users = need.users.clone();
    users.dedup();
    let who = users.join(", ");
    let qb = quote(b);
    // A bridge a libvirt NAT/routed/isolated network owns: its settings live in that
    // network's XML, and no LAN NIC belongs on it.
    let owner = need.owner.as_ref();
    let net_edit = owner.map(|n| {
        format!(
            "`{}` (libvirt sets the bridge from it; then `{}` and `{}`, which detaches the taps of its running VMs until they restart)",
            join(["virsh", "net-edit", &n.name]),
            join(["virsh", "net-destroy", &n.name]),
            join(["virsh", "net-start", &n.name])
        )
    });
    if let Some(n) = owner {
        out.push(finding(
            "bridge-owned-by-network",
            Severity::Warning,
            b,
            format!("{b} is used as a LAN bridge by {who}, but {}", crate::topology::owned_bridge_warning(n, b)),
            format!("move them to a LAN bridge: `vbridge host-bridge NIC --bridge br0 --dhcp`, then `vbridge attach VM --bridge br0` (or `vbridge net-define --bridge br0`); to stay on network {} ({}), let the NICs use `<source network='{}'/>`", n.name, crate::topology::forward_mode_name(n), crate::xml::escape(&n.name)),
            None,
        ));
    }
    let Some(br) = host.interfaces.get(b) else {
        if let Some(n) = owner {
            out.push(finding(
                "bridge-missing",
                Severity::Error,
                b,
                format!("bridge {b} does not exist on this host, but {who} uses it: libvirt creates it when network {} starts", n.name),
                format!("`{}`", join(["virsh", "net-start", &n.name])),
                None,
            ));
            return;
        }
        out.push(finding(
            "bridge-missing",
            Severity::Error,
            b,
            format!("bridge {b} does not exist on this host, but {who} uses it: VMs on it fail to start (\"Cannot get interface MTU on '{b}'\"), though libvirt calls a bridge-mode network active"),
            format!("create it on the LAN NIC: `vbridge host-bridge NIC --bridge {qb} --dhcp` (or point the network/VM at an existing bridge)"),
            None,
        ));
        return;
    };
    if !br.is_bridge {
        let fix = match &br.master {
            Some(m) => format!("{b} is a port of bridge {m}: use {m} instead (`vbridge attach VM --bridge {qm}`, `vbridge net-define --bridge {qm} --force`)", qm = quote(m)),
            None => format!("make a bridge on it: `vbridge host-bridge {qb} --bridge br0 --dhcp`, then use br0"),
        };
        out.push(finding(
            "not-a-bridge",
            Severity::Error,
            b,
            format!("{b} is named as the bridge by {who}, but it is a NIC, not a bridge: libvirt cannot put a tap on it"),
            fix,
            None,
        ));
        return;
    }
    if !br.up {
        out.push(finding(
            "bridge-down",
            Severity::Error,
            b,
            format!("bridge {b} is down: nothing crosses it"),
            format!("`ip link set {qb} up`; --fix does it"),
            Some(Action::BridgeUp {
                bridge: b.to_string(),
            }),
        ));
    }
    let uplinks = host.uplinks(b);
    // A NAT/routed/isolated network's bridge has no uplink by design.
    if uplinks.is_empty() && owner.is_none() {
        let ports = host.ports(b);
        let ports = if ports.is_empty() {
            "none".to_string()
        } else {
            ports.join(", ")
        };
        // See the module doc: an error only when a running VM is cut off from the LAN now.
        let (severity, why) = if need.running_vm && need.is_lan_bridge(b) {
            let via = if need.by_network {
                "a bridge-mode libvirt network names it".to_string()
            } else {
                format!("{b} is vbridge's default bridge")
            };
            (
                Severity::Error,
                format!(
                    "running VMs on it are cut off from the LAN ({via}, so it is their way out)"
                ),
            )
        } else {
            (
                Severity::Warning,
                "its VMs reach each other and the host, not the LAN (fine for an isolated segment built on purpose)".to_string(),
            )
        };
        out.push(finding(
            "bridge-no-uplink",
            severity,
            b,
            format!("bridge {b} has no port but taps (ports: {ports}): {why}"),
            format!("enslave the LAN NIC with its address moved to the bridge: `vbridge host-bridge NIC --bridge {qb} --dhcp` (--fix never moves a NIC's address)"),
            None,
        ));
    }
    for u in &uplinks {
        if let Some(n) = owner {
            out.push(finding(
                "uplink-on-network-bridge",
                Severity::Warning,
                u,
                format!("{u} is a port of {b}, the bridge of libvirt network {} (forward mode {}): a LAN NIC there joins the LAN to a segment libvirt routes and serves DHCP on", n.name, crate::topology::forward_mode_name(n)),
                format!("take it off: `{}`; put LAN VMs on a bridge of their own (`vbridge host-bridge NIC --bridge br0 --dhcp`)", join(["ip", "link", "set", u, "nomaster"])),
                None,
            ));
            continue;
        }
        let Some(i) = host.interfaces.get(*u) else {
            continue;
        };
        if i.wireless {
            out.push(finding(
                "uplink-wireless",
                Severity::Error,
                u,
                format!("{u} is a Wi-Fi NIC and a port of {b}: an access point accepts frames only from the station's own MAC, so the VMs' frames are dropped"),
                format!("remove it with `ip link set {} nomaster`. A Wi-Fi NIC can carry neither a bridge nor a macvtap in bridge mode (the access point drops frames from other MACs), so: bridge a wired NIC instead, or put the VMs on a routed network (`virsh net-define` with <forward mode='route'/>, the LAN routing that subnet to this host) or on NAT (libvirt's default network), which works anywhere but hides the VMs behind the host's address", quote(u)),
                None,
            ));
        }
        let down = !i.up
            || matches!(
                i.operstate.as_deref(),
                Some("down" | "lowerlayerdown" | "notpresent")
            );
        if down {
            out.push(finding(
                "uplink-down",
                Severity::Error,
                u,
                format!(
                    "{b}'s uplink {u} is {}: no frame reaches the LAN",
                    if i.up {
                        "up but has no carrier (cable? switch port?)".to_string()
                    } else {
                        "administratively down".to_string()
                    }
                ),
                format!("`ip link set {} up` and check the cable", quote(u)),
                None,
            ));
        }
        if !i.ipv4.is_empty() {
            let a = i.ipv4.join(", ");
            out.push(finding(
                "uplink-has-ip",
                Severity::Error,
                u,
                format!("{u} is a port of {b} but still carries {a}: a bridge port's own address answers erratically (the bridge takes its frames), so the host loses its LAN address; it belongs on {b}"),
                format!("move it: `{}` then `{}` (or let `{}` do it with rollback); --fix never touches a NIC's addresses", join(["ip", "addr", "del", &i.ipv4[0], "dev", u]), join(["ip", "addr", "add", &i.ipv4[0], "dev", b]), join(["vbridge", "host-bridge", u, "--bridge", b])),
                None,
            ));
        }
    }
    if br.stp_state.is_some_and(|s| s != 0) {
        // With STP on, a new port spends forward_delay in listening and again in learning
        // before it forwards. With forward_delay 0 both states pass at once, so DHCP is not
        // stalled; what is left is STP itself: it blocks a port it believes closes a loop
        // (after a topology change, or when the LAN's switches send BPDUs with a better path).
        let fix = match &net_edit {
            Some(edit) => format!("--fix sets stp_state 0 and forward_delay 0 (sysfs) until libvirt restarts the network; to keep it, set `stp='off'` on the network's <bridge> with {edit}"),
            None => format!("--fix sets stp_state 0 and forward_delay 0 (sysfs); to keep it, say `parameters: {{stp: false, forward-delay: 0}}` in the netplan bridge (or `ip link set {qb} type bridge stp_state 0 forward_delay 0` in your network config)"),
        };
        let action = Some(Action::StpOff {
            bridge: b.to_string(),
        });
        match br.forward_delay {
            // No action here: nothing is stalled, and STP may be on deliberately against a
            // loop (two uplinks); turning it off is the admin's call.
            Some(0) => out.push(finding(
                "stp-forward-delay",
                Severity::Info,
                b,
                format!("STP is on for {b} with a forward delay of 0: new ports forward at once, so DHCP is not stalled; but STP can still block a port it thinks closes a loop (after a topology change, or on BPDUs from the LAN's switches), cutting the VMs behind it off"),
                match &net_edit {
                    Some(edit) => format!("turn it off with `stp='off'` on the network's <bridge>: {edit}; --fix leaves it"),
                    None => format!("with a single uplink and no loop, turn it off: `ip link set {qb} type bridge stp_state 0` (netplan `parameters: {{stp: false}}`); --fix leaves it, as STP may be there to stop a loop"),
                },
                None,
            )),
            fd => {
                // Unreadable: the kernel's default, 15 s.
                let fd = fd.unwrap_or(1500);
                let secs = |cs: u32| {
                    if cs.is_multiple_of(100) {
                        format!("{}", cs / 100)
                    } else {
                        format!("{:.2}", f64::from(cs) / 100.0)
                    }
                };
                out.push(finding(
                    "stp-forward-delay",
                    Severity::Warning,
                    b,
                    format!("STP is on for {b} with a forward delay of {} s: every new port (each VM start or hot-plug) waits {} s in listening and learning before it forwards, and the guest's DHCP may give up first", secs(fd), secs(2 * fd)),
                    fix,
                    action,
                ));
            }
        }
    }
    // An unpinned bridge MAC follows the lowest port MAC: when the uplink is not that port,
    // or a port with a lower MAC comes along, the host's DHCP identity changes.
    if !br.mac_pinned && !br.ipv4.is_empty() && owner.is_none() {
        let mut umacs: Vec<&str> = uplinks
            .iter()
            .filter_map(|u| host.interfaces.get(*u)?.mac.as_deref())
            .collect();
        umacs.sort();
        if let (Some(lowest_uplink), Some(bmac)) = (umacs.first(), br.mac.as_deref()) {
            let lower_port = host.ports(b).into_iter().find(|p| {
                host.interfaces
                    .get(*p)
                    .and_then(|i| i.mac.as_deref())
                    .is_some_and(|m| m < *lowest_uplink)
            });
            if bmac != *lowest_uplink || lower_port.is_some() {
                let why = match lower_port {
                    Some(p) => format!("port {p} has a lower MAC than the uplink"),
                    None => format!("it is {bmac}, not the uplink's {lowest_uplink}"),
                };
                out.push(finding(
                    "bridge-mac-unstable",
                    Severity::Warning,
                    b,
                    format!("bridge {b}'s MAC is not pinned and follows its ports ({why}): when ports come and go it changes, and the DHCP server hands the host a new address"),
                    format!("pin it to the uplink's MAC: `ip link set {qb} address {}`, and `macaddress: {lowest_uplink}` in the netplan bridge", quote(lowest_uplink)),
                    None,
                ));
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use super::*;
    use crate::doctor::{check, paths, Iface};

    #[test]
    fn bridge_missing_for_network_and_vm() {
        let mut o = healthy();
        host(&mut o).interfaces.retain(|n, _| n != "br0");
        iface(&mut o, "enp3s0").master = None;
        iface(&mut o, "vnet0").master = None;
        let f = check(&o);
        let m = &only_error(&f, "bridge-missing", "br0").message;
        assert!(
            m.contains("network br0-network") && m.contains("VM web"),
            "{m}"
        );
        assert!(find(&f, "bridge-missing").action.is_none());
    }

    #[test]
    fn not_a_bridge_names_the_real_bridge() {
        let mut o = healthy();
        o.domains[1].nics[0].bridge = Some("enp3s0".into());
        let f = check(&o);
        assert!(only_error(&f, "not-a-bridge", "enp3s0")
            .fix
            .contains("use br0"));
    }

    #[test]
    fn bridge_down_is_fixed_by_link_up() {
        let mut o = healthy();
        iface(&mut o, "br0").up = false;
        let f = check(&o);
        assert_eq!(
            only_error(&f, "bridge-down", "br0").action,
            Some(Action::BridgeUp {
                bridge: "br0".into()
            })
        );
    }

    #[test]
    fn bridge_without_uplink_is_an_error_under_a_running_vm_on_the_lan_bridge() {
        // web runs on br0-network (bridge mode, br0): cut off from the LAN now.
        let mut o = healthy();
        iface(&mut o, "enp3s0").master = None;
        let f = check(&o);
        let w = find(&f, "bridge-no-uplink");
        assert_eq!((w.severity, w.subject.as_str()), (Severity::Error, "br0"));
        assert!(w.message.contains("vnet0"), "{}", w.message);
        assert!(w.message.contains("network names it"), "{}", w.message);
        let p = paths(&o, &f);
        assert_eq!(p[1].hops[3].mark, "fail", "{p:#?}");

        // No network names it, but br0 is vbridge's default bridge: still an error.
        o.domains[0].nics[0].kind = "bridge".into();
        o.domains[0].nics[0].network = None;
        o.networks.retain(|n| n.name != "br0-network");
        let w = find(&check(&o), "bridge-no-uplink").clone();
        assert_eq!(w.severity, Severity::Error);
        assert!(w.message.contains("default bridge"), "{}", w.message);
    }

    #[test]
    fn bridge_without_uplink_warns_when_no_vm_runs_or_the_segment_is_isolated() {
        // Nothing running on br0: a warning.
        let mut o = healthy();
        iface(&mut o, "enp3s0").master = None;
        o.domains[0].running = false;
        o.domains[0].nics[0].tap = None;
        let w = find(&check(&o), "bridge-no-uplink").clone();
        assert_eq!((w.severity, w.subject.as_str()), (Severity::Warning, "br0"));

        // A running VM on a bridge no network names and that is not br0: an isolated
        // segment built on purpose is a warning.
        let mut o = healthy();
        o.domains[0].nics[0].kind = "bridge".into();
        o.domains[0].nics[0].network = None;
        o.domains[0].nics[0].bridge = Some("isol0".into());
        o.domains[0].nics[0].tap = Some("vnet9".into());
        let h = host(&mut o);
        h.interfaces.insert(
            "isol0".into(),
            Iface {
                is_bridge: true,
                up: true,
                ..Iface::default()
            },
        );
        h.interfaces.insert(
            "vnet9".into(),
            Iface {
                up: true,
                tun: true,
                master: Some("isol0".into()),
                ..Iface::default()
            },
        );
        let f = check(&o);
        let w = find(&f, "bridge-no-uplink");
        assert_eq!(
            (w.severity, w.subject.as_str()),
            (Severity::Warning, "isol0")
        );
        assert!(errors(&f).is_empty(), "{f:#?}");
    }

    #[test]
    fn uplink_with_address_is_an_error_and_is_never_fixed() {
        let mut o = healthy();
        iface(&mut o, "enp3s0").ipv4 = vec!["192.168.1.20/24".into()];
        let f = check(&o);
        let w = find(&f, "uplink-has-ip");
        assert_eq!(
            (w.severity, w.subject.as_str()),
            (Severity::Error, "enp3s0")
        );
        assert!(w.fix.contains("ip addr del 192.168.1.20/24 dev enp3s0"));
        assert!(w.action.is_none());
    }

    #[test]
    fn stp_on_warns_with_the_delay() {
        let mut o = healthy();
        iface(&mut o, "br0").stp_state = Some(1);
        iface(&mut o, "br0").forward_delay = Some(1500);
        let f = check(&o);
        let w = find(&f, "stp-forward-delay");
        assert_eq!(w.subject, "br0");
        assert!(
            w.message.contains("15 s") && w.message.contains("30 s"),
            "{}",
            w.message
        );
        assert_eq!(
            w.action,
            Some(Action::StpOff {
                bridge: "br0".into()
            })
        );
        assert_eq!(w.severity, Severity::Warning);
        // virbr0 has STP on too, but no VM uses it: not reported.
        assert_eq!(f.iter().filter(|f| f.id == "stp-forward-delay").count(), 1);
        // A delay that is not whole seconds is not rounded down to 0.
        iface(&mut o, "br0").forward_delay = Some(50);
        let w = find(&check(&o), "stp-forward-delay").clone();
        assert!(
            w.message.contains("0.50 s") && w.message.contains("waits 1 s"),
            "{}",
            w.message
        );
    }

    #[test]
    fn stp_on_with_zero_delay_is_info_about_blocking() {
        let mut o = healthy();
        iface(&mut o, "br0").stp_state = Some(1);
        iface(&mut o, "br0").forward_delay = Some(0);
        let f = check(&o);
        let w = find(&f, "stp-forward-delay");
        assert_eq!((w.severity, w.subject.as_str()), (Severity::Info, "br0"));
        assert!(!w.message.contains("waits 0"), "{}", w.message);
        assert!(w.message.contains("block a port"), "{}", w.message);
        // Not changed by --fix: STP may be on against a loop.
        assert!(w.action.is_none());
        // Only info: the bridge hop stays ok.
        assert_eq!(paths(&o, &f)[0].hops[2].mark, "ok");
    }

    #[test]
    fn wireless_and_down_uplinks_are_errors() {
        let mut o = healthy();
        iface(&mut o, "enp3s0").wireless = true;
        iface(&mut o, "enp3s0").operstate = Some("down".into());
        let f = check(&o);
        assert_eq!(
            errors(&f),
            [("uplink-down", "enp3s0"), ("uplink-wireless", "enp3s0")]
        );
    }

    #[test]
    fn bridge_mac_that_follows_ports_warns() {
        let mut o = healthy();
        iface(&mut o, "br0").mac = Some("52:54:00:aa:00:99".into());
        assert_eq!(find(&check(&o), "bridge-mac-unstable").subject, "br0");
        // Pinned, it stays whatever the ports do.
        iface(&mut o, "br0").mac_pinned = true;
        assert!(!check(&o).iter().any(|f| f.id == "bridge-mac-unstable"));
        // Following the uplink, but a port with a lower MAC would take over.
        let mut o = healthy();
        iface(&mut o, "vnet0").mac = Some("02:00:00:00:00:01".into());
        assert!(find(&check(&o), "bridge-mac-unstable")
            .message
            .contains("vnet0"));
    }
}
