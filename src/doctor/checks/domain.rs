//! libvirt's side of the path: bridge-mode networks started and autostarted, each VM's NICs
//! (missing networks, emulated models, NAT only, hotplug) and their taps on the right bridge.

use super::{finding, Need};
use crate::doctor::{Action, Finding, HostState, Observation, Severity};
use crate::shell::{join, quote};
use crate::topology::{bridge_owner, nic_host_bridge};
use std::collections::BTreeMap;

const VIRTIO_COST: &str = "an emulated NIC costs a host CPU per packet burst and tops out around 1 Gbit/s; virtio is several times faster and lighter (the guest needs virtio-net, built into Linux; Windows needs the virtio-win drivers)";

/// Bridge-mode libvirt networks: active and autostarted; the bridges they name are needed.
pub(super) fn network_checks(
    out: &mut Vec<Finding>,
    obs: &Observation,
    needs: &mut BTreeMap<String, Need>,
) {
    for n in &obs.networks {
        if n.forward_mode.as_deref() != Some("bridge") {
            continue;
        }
        let br = n.bridge.as_deref().unwrap_or("?");
        if !n.active {
            out.push(finding(
                "network-inactive",
                Severity::Error,
                &n.name,
                format!("network {} (bridge mode on {br}) is not active: VMs that use it cannot start and nothing can be hot-plugged into it", n.name),
                format!("`{}`; --fix starts it", join(["virsh", "net-start", &n.name])),
                Some(Action::StartNetwork { network: n.name.clone() }),
            ));
        }
        if n.persistent && !n.autostart {
            out.push(finding(
                "network-no-autostart",
                Severity::Error,
                &n.name,
                format!("network {} is not started at boot: after a host reboot, VMs on it fail to start until someone runs net-start", n.name),
                format!("`{}`; --fix sets it", join(["virsh", "net-autostart", &n.name])),
                Some(Action::AutostartNetwork { network: n.name.clone() }),
            ));
        }
        if let Some(b) = &n.bridge {
            let need = needs.entry(b.clone()).or_default();
            need.users.push(format!("network {}", n.name));
            need.by_network = true;
        }
    }
}

/// Each VM's NICs; the bridges they are on are needed.
pub(super) fn domain_checks(
    out: &mut Vec<Finding>,
    obs: &Observation,
    needs: &mut BTreeMap<String, Need>,
) {
    let network = |name: &str| obs.networks.iter().find(|n| n.name == name);
    for d in &obs.domains {
        let mut bridged = false;
        for nic in &d.nics {
            let mac = nic.mac.as_deref().unwrap_or("(no MAC)");
            let net = nic.network.as_deref().and_then(network);
            // Only a bridge that joins the LAN: a NAT network's virbr0 has no uplink by design.
            let bridge = nic_host_bridge(&nic.kind, nic.bridge.as_deref(), net)
                .filter(|h| h.lan)
                .map(|h| h.bridge);
            // Without the network driver no network is known: network-driver-unavailable says it.
            let listed = obs.network_driver_unavailable.is_none();
            if let (Some(name), None, "network", true) =
                (nic.network.as_deref(), net, &nic.kind[..], listed)
            {
                out.push(finding(
                    "network-missing",
                    Severity::Error,
                    name,
                    format!("VM {}'s NIC {mac} uses network {name}, which is not defined: the VM cannot start", d.name),
                    // No action: an undefined network cannot be started, only defined.
                    format!("define it on the host bridge: `{}`, or move the NIC: `{}`; --fix cannot do this (there is no network to start)", join(["vbridge", "net-define", "--name", name, "--bridge"]) + " " + &nic.bridge.as_deref().filter(|b| bridge_owner(&obs.networks, b).is_none()).map(quote).unwrap_or_else(|| "BR".into()), join(["vbridge", "attach", &d.name, "--mac", mac])),
                    None,
                ));
            }
            if bridge.is_some() || nic.kind == "direct" {
                bridged = true;
            }
            if let Some(b) = &bridge {
                let need = needs.entry(b.clone()).or_default();
                need.users.push(format!("VM {}", d.name));
                need.running_vm |= d.running;
                if let (true, Some(tap), Some(host)) = (d.running, &nic.tap, &obs.host) {
                    tap_check(out, host, &d.name, mac, tap, b);
                }
            }
            if matches!(nic.kind.as_str(), "bridge" | "network" | "user" | "direct")
                && !nic
                    .model
                    .as_deref()
                    .is_some_and(crate::domxml::is_virtio_model)
            {
                let model = nic
                    .model
                    .as_deref()
                    .unwrap_or("the hypervisor's default (rtl8139 or e1000)");
                out.push(finding(
                    "model-not-virtio",
                    Severity::Info,
                    &d.name,
                    format!("VM {}'s NIC {mac} is {model}: {VIRTIO_COST}", d.name),
                    format!(
                        "`{}` rewrites it as virtio (after a power-off)",
                        join(["vbridge", "attach", &d.name, "--mac", mac])
                    ),
                    None,
                ));
            }
        }
        if !bridged && !d.nics.is_empty() {
            out.push(finding(
                "vm-nat-only",
                Severity::Info,
                &d.name,
                format!("VM {} has no NIC on a bridge: it reaches the LAN only through NAT, and the LAN cannot reach it", d.name),
                format!("`{}` puts a NIC on the bridge", join(["vbridge", "attach", &d.name])),
                None,
            ));
        }
        if let Some(e) = d.facts.hotplug_blocker() {
            out.push(finding(
                "hotplug-unavailable",
                Severity::Info,
                &d.name,
                e.message,
                e.hint.unwrap_or_default(),
                None,
            ));
        }
    }
}

/// libvirt without its network driver: networks were not read. NICs of type='network' cannot
/// start or be hot-plugged then (an error when a VM has one); bridge NICs work without it.
pub(super) fn network_driver_check(out: &mut Vec<Finding>, obs: &Observation) {
    let Some(why) = &obs.network_driver_unavailable else {
        return;
    };
    let users: Vec<&str> = obs
        .domains
        .iter()
        .filter(|d| d.nics.iter().any(|n| n.kind == "network"))
        .map(|d| d.name.as_str())
        .collect();
    let (severity, effect) = if users.is_empty() {
        (
            Severity::Warning,
            "no VM here has a NIC of type='network', so nothing is cut off now, but no libvirt network can be checked, defined or started".to_string(),
        )
    } else {
        (
            Severity::Error,
            format!(
                "VMs with a NIC of type='network' ({}) cannot start, and no libvirt network could be checked; domain and host checks ran",
                users.join(", ")
            ),
        )
    };
    out.push(finding(
        "network-driver-unavailable",
        severity,
        &obs.uri,
        format!("{why}: {effect}"),
        crate::libvirt::NETWORK_DRIVER_HINT.to_string(),
        None,
    ));
}

fn tap_check(
    out: &mut Vec<Finding>,
    host: &HostState,
    dom: &str,
    mac: &str,
    tap: &str,
    bridge: &str,
) {
    let Some(t) = host.interfaces.get(tap) else {
        return; // a tap libvirt names but the host lacks: the VM is not really running here
    };
    if !host.interfaces.get(bridge).is_some_and(|b| b.is_bridge) {
        return; // bridge-missing / not-a-bridge says it
    }
    if t.master.as_deref() != Some(bridge) {
        let now = match &t.master {
            Some(m) => format!("it is a port of {m}"),
            None => "it is on no bridge".to_string(),
        };
        out.push(finding(
            "tap-detached",
            Severity::Error,
            tap,
            format!("VM {dom}'s NIC {mac} uses tap {tap}, which its XML puts on {bridge}, but {now}: the VM is cut off (this happens when the bridge is recreated under running VMs; libvirt does not notice)"),
            format!("`{}`; --fix re-attaches it", join(["ip", "link", "set", tap, "master", bridge, "up"])),
            Some(Action::AttachTap { tap: tap.to_string(), bridge: bridge.to_string() }),
        ));
    }
}
#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use super::*;
    use crate::doctor::{check, NicObs};

    #[test]
    fn network_inactive_and_no_autostart() {
        let mut o = healthy();
        o.networks[0].active = false;
        o.networks[0].autostart = false;
        let f = check(&o);
        assert_eq!(
            errors(&f),
            [
                ("network-inactive", "br0-network"),
                ("network-no-autostart", "br0-network")
            ]
        );
        // NAT networks are libvirt's own business.
        o.networks[1].active = false;
        o.networks[1].autostart = false;
        assert_eq!(errors(&check(&o)).len(), 2);
        // Fixes: start, then autostart, each once.
        let plan = crate::doctor::plan(&check(&o));
        let acts: Vec<_> = plan.iter().map(|p| p.change.as_str()).collect();
        assert_eq!(
            acts,
            [
                "virsh net-start br0-network",
                "virsh net-autostart br0-network"
            ]
        );
    }

    /// Which VMs and NICs the info findings name (mutants of these conditions passed).
    #[test]
    fn nat_only_and_model_findings_name_the_right_nics() {
        let ids = |o: &crate::doctor::Observation, name: &str| -> Vec<&'static str> {
            check(o)
                .iter()
                .filter(|f| f.subject == name)
                .map(|f| f.id)
                .collect()
        };
        let mut o = healthy();
        let name = o.domains[0].name.clone();
        let nic = |kind: &str, model: Option<&str>| NicObs {
            mac: Some("52:54:00:00:00:99".into()),
            kind: kind.into(),
            model: model.map(Into::into),
            ..NicObs::default()
        };
        // A direct (macvtap) NIC is on the LAN: not "NAT only".
        o.domains[0].nics = vec![nic("direct", Some("virtio"))];
        assert!(
            !ids(&o, &name).contains(&"vm-nat-only"),
            "{:?}",
            ids(&o, &name)
        );
        // A user NIC alone is.
        o.domains[0].nics = vec![nic("user", Some("virtio"))];
        assert!(ids(&o, &name).contains(&"vm-nat-only"));
        // A VM without NICs is neither NAT-only nor anything else.
        o.domains[0].nics.clear();
        assert!(!ids(&o, &name).contains(&"vm-nat-only"));
        // Model advice only for NICs whose model matters, and not for the virtio variants.
        o.domains[0].nics = vec![nic("hostdev", None)];
        assert!(!ids(&o, &name).contains(&"model-not-virtio"));
        o.domains[0].nics = vec![nic("user", Some("virtio-transitional"))];
        assert!(!ids(&o, &name).contains(&"model-not-virtio"));
        o.domains[0].nics = vec![nic("user", Some("e1000"))];
        assert!(ids(&o, &name).contains(&"model-not-virtio"));
    }

    #[test]
    fn network_missing() {
        let mut o = healthy();
        o.domains[0].nics[0].network = Some("gone".into());
        o.domains[0].nics[0].bridge = None;
        let f = check(&o);
        let m = only_error(&f, "network-missing", "gone");
        assert!(m.action.is_none());
        assert!(
            m.fix
                .contains("`vbridge net-define --name gone --bridge BR`"),
            "{}",
            m.fix
        );
        assert!(!m.fix.contains("starts") && !m.message.contains("start it"));
        // Nothing in a --fix plan claims to start it.
        assert!(crate::doctor::plan(&f).is_empty());
    }

    #[test]
    fn hotplug_unavailable_for_i440fx_without_acpi_and_full_q35() {
        let mut o = healthy();
        o.domains[0].facts.acpi = false;
        o.domains[1].facts.free_pcie_root_ports = 0;
        let f = check(&o);
        let subjects: Vec<_> = f
            .iter()
            .filter(|f| f.id == "hotplug-unavailable")
            .map(|f| (f.severity, f.subject.as_str()))
            .collect();
        assert_eq!(subjects, [(Severity::Info, "db"), (Severity::Info, "web")]);
    }

    #[test]
    fn model_not_virtio_and_nat_only() {
        let mut o = healthy();
        o.domains[1].nics = vec![NicObs {
            mac: Some("52:54:00:00:00:03".into()),
            kind: "network".into(),
            network: Some("default".into()),
            model: Some("e1000".into()),
            ..NicObs::default()
        }];
        let f = check(&o);
        let m = find(&f, "model-not-virtio");
        assert_eq!((m.severity, m.subject.as_str()), (Severity::Info, "db"));
        assert!(m.message.contains("e1000") && m.message.contains("Gbit/s"));
        assert_eq!(find(&f, "vm-nat-only").subject, "db");
    }

    #[test]
    fn tap_off_the_bridge_is_detached() {
        let mut o = healthy();
        iface(&mut o, "vnet0").master = None;
        let f = check(&o);
        assert_eq!(
            only_error(&f, "tap-detached", "vnet0").action,
            Some(Action::AttachTap {
                tap: "vnet0".into(),
                bridge: "br0".into()
            })
        );
        iface(&mut o, "vnet0").master = Some("virbr0".into());
        let f = check(&o);
        assert!(find(&f, "tap-detached").message.contains("port of virbr0"));
    }
}
