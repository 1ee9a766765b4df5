//! The checks: pure functions from an [`Observation`] to [`Finding`]s, one per broken or
//! risky link, each with a stable id, a subject and the fix.
//!
//! Severity is chosen by one rule: an error is something that stops a VM's traffic now
//! (exit 1); a warning is a setup that works today but breaks under a usual event (a host
//! reboot, a new port, DHCP renewal); info is a cost or a limit worth knowing.
//! `bridge-no-uplink` is a warning in general: a bridge with only taps is also how an
//! isolated VM segment is built on purpose, and doctor must not fail such a host. It is an
//! error when both hold: a running VM has a NIC on the bridge now, and the bridge is the one
//! VMs are meant to reach the LAN through (a bridge-mode libvirt network names it, or it is
//! vbridge's default bridge, [`DEFAULT_BRIDGE`]). Then a VM is cut off from the LAN today.
//!
//! `domain` checks libvirt's side (networks, NICs, taps), `bridge` each bridge a VM needs,
//! `firewall` whether bridged frames survive iptables/nftables; this module runs them.

mod bridge;
mod domain;
mod firewall;
mod macvtap;
mod mtu;
mod network_manager;

use super::{Action, Finding, Observation, Severity};
use std::collections::BTreeMap;

/// The bridge vbridge puts VMs on when none is named (`--bridge` default of attach,
/// net-define, host-bridge).
pub const DEFAULT_BRIDGE: &str = "br0";

/// Who needs a bridge.
#[derive(Debug, Default)]
struct Need {
    /// "network NAME", "VM NAME", in order.
    users: Vec<String>,
    /// A bridge-mode libvirt network names it.
    by_network: bool,
    /// A running VM has a NIC on it.
    running_vm: bool,
    /// The libvirt network (NAT, routed, isolated) that creates and runs this bridge: then it
    /// is not a LAN bridge, and its settings live in that network's definition.
    owner: Option<crate::topology::NetworkObs>,
}

impl Need {
    /// The bridge VMs are expected to reach the LAN through.
    fn is_lan_bridge(&self, bridge: &str) -> bool {
        self.by_network || bridge == DEFAULT_BRIDGE
    }
}

fn finding(
    id: &'static str,
    severity: Severity,
    subject: &str,
    message: String,
    fix: String,
    action: Option<Action>,
) -> Finding {
    Finding {
        id,
        severity,
        subject: subject.to_string(),
        message,
        fix,
        action,
    }
}

/// Run every check.
pub fn check(obs: &Observation) -> Vec<Finding> {
    let mut out = Vec::new();
    // Bridge name -> who needs it, in a stable order.
    let mut needs: BTreeMap<String, Need> = BTreeMap::new();
    domain::network_checks(&mut out, obs, &mut needs);
    domain::domain_checks(&mut out, obs, &mut needs);
    domain::network_driver_check(&mut out, obs);
    for (b, need) in needs.iter_mut() {
        need.owner = crate::topology::bridge_owner(&obs.networks, b).cloned();
    }
    macvtap::macvtap_checks(&mut out, obs);
    match &obs.host {
        Some(host) => {
            for (b, need) in &needs {
                bridge::bridge_checks(&mut out, host, b, need);
            }
            mtu::mtu_checks(&mut out, obs, host, &needs);
            firewall::firewall_checks(&mut out, host, &needs);
            network_manager::network_manager_checks(&mut out, host);
            firewall::firewall6_checks(&mut out, host, &needs);
        }
        None => {
            let why = obs
                .host_skipped
                .clone()
                .unwrap_or_else(|| "host-side checks were skipped".into());
            out.push(finding(
                "host-checks-skipped",
                Severity::Info,
                &obs.uri,
                why,
                "run `vbridge doctor` on the host that runs the VMs".into(),
                None,
            ));
        }
    }
    tidy(out)
}

/// Worst first, then by id and subject; a finding two checks made alike (same id, subject
/// and message) is said once.
fn tidy(mut out: Vec<Finding>) -> Vec<Finding> {
    out.sort_by(|a, b| (a.severity, a.id, &a.subject).cmp(&(b.severity, b.id, &b.subject)));
    out.dedup_by(|a, b| a.id == b.id && a.subject == b.subject && a.message == b.message);
    out
}

#[cfg(test)]
pub(super) mod fixture {
    //! The recorded host state the checks' tests put one fault into
    //! (tests/data/doctor/healthy.json: a host with br0 on enp3s0, a running VM on a
    //! bridge-mode network, a shut-off one on br0), and ways to look at the findings.

    use crate::doctor::{Finding, HostState, Iface, Observation, Severity};

    pub fn healthy() -> Observation {
        serde_json::from_str(include_str!("../../../tests/data/doctor/healthy.json")).unwrap()
    }

    pub fn host(o: &mut Observation) -> &mut HostState {
        o.host.as_mut().unwrap()
    }

    pub fn iface<'a>(o: &'a mut Observation, name: &str) -> &'a mut Iface {
        host(o).interfaces.get_mut(name).unwrap()
    }

    pub fn errors(f: &[Finding]) -> Vec<(&str, &str)> {
        f.iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| (f.id, f.subject.as_str()))
            .collect()
    }

    pub fn find<'a>(f: &'a [Finding], id: &str) -> &'a Finding {
        f.iter()
            .find(|x| x.id == id)
            .unwrap_or_else(|| panic!("no {id} in {f:#?}"))
    }

    /// The one error is `id` about `subject`: that finding.
    pub fn only_error<'a>(f: &'a [Finding], id: &str, subject: &str) -> &'a Finding {
        assert_eq!(errors(f), [(id, subject)]);
        find(f, id)
    }
}

#[cfg(test)]
mod tidy_tests {
    use super::*;

    fn f(id: &'static str, severity: Severity, subject: &str, message: &str) -> Finding {
        finding(id, severity, subject, message.into(), "fix".into(), None)
    }

    #[test]
    fn findings_are_ordered_and_said_once() {
        let out = tidy(vec![
            f("b", Severity::Info, "br0", "m"),
            f("a", Severity::Error, "br0", "m"),
            f("b", Severity::Info, "br0", "m"),
            // Alike in all but one of id, subject, message: all kept.
            f("b", Severity::Info, "br1", "m"),
            f("c", Severity::Info, "br0", "m"),
            f("b", Severity::Info, "br0", "other"),
        ]);
        let seen: Vec<_> = out
            .iter()
            .map(|f| (f.id, f.subject.as_str(), f.message.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", "br0", "m"),
                ("b", "br0", "m"),
                ("b", "br0", "other"),
                ("b", "br1", "m"),
                ("c", "br0", "m"),
            ]
        );
    }
}

#[cfg(test)]
mod tests {
    //! Each check against a recorded host state with one fault put in.

    use super::fixture::*;
    use super::*;
    use crate::doctor::{paths, Iface};
    use crate::host::firewall::Firewall;

    #[test]
    fn remote_host_skips_host_checks() {
        let mut o = healthy();
        o.host = None;
        o.host_skipped = Some("remote".into());
        o.uri = "qemu+ssh://kvm1/system".into();
        iface_free_errors(&o);
        let f = check(&o);
        let s = find(&f, "host-checks-skipped");
        assert_eq!(s.subject, "qemu+ssh://kvm1/system");
        // libvirt-side checks still run.
        o.networks[0].active = false;
        assert_eq!(errors(&check(&o)), [("network-inactive", "br0-network")]);
        assert_eq!(paths(&o, &check(&o))[1].hops[2].mark, "unknown");
    }

    fn iface_free_errors(o: &Observation) {
        assert!(errors(&check(o)).is_empty());
    }

    #[test]
    fn plan_dedups_and_orders() {
        let mut o = healthy();
        iface(&mut o, "vnet0").master = None;
        iface(&mut o, "br0").stp_state = Some(1);
        iface(&mut o, "br0").forward_delay = Some(1500);
        host(&mut o).firewall = Some(Firewall {
            forward_policy: Some("DROP".into()),
            ..Firewall::default()
        });
        o.domains[1].nics[0].bridge = Some("br1".into());
        host(&mut o).interfaces.insert(
            "br1".into(),
            Iface {
                is_bridge: true,
                up: true,
                ..Iface::default()
            },
        );
        let f = check(&o);
        let plan = crate::doctor::plan(&f);
        let acts: Vec<_> = plan
            .iter()
            .map(|p| (p.change.as_str(), p.ids.clone()))
            .collect();
        assert_eq!(
            acts,
            [
                (
                    "ip link set br0 type bridge stp_state 0 forward_delay 0",
                    vec!["stp-forward-delay"]
                ),
                (
                    "sysctl -w net.bridge.bridge-nf-call-iptables=0",
                    vec!["forward-drop"]
                ),
                ("ip link set vnet0 master br0 up", vec!["tap-detached"]),
            ]
        );
    }
}
