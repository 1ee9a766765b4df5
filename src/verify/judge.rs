//! The pure part of `vbridge verify`: which NICs count, what was seen of each, and the
//! verdict ([`judge`]). No I/O here.

use crate::domxml::Nic;
use crate::topology::{nic_host_bridge, NetworkObs};
use serde::Serialize;
use std::net::Ipv4Addr;

/// Where an address was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// libvirt's own dnsmasq (libvirt-managed NAT/routed networks only).
    Lease,
    /// The QEMU guest agent.
    Agent,
    /// libvirt's reading of the host's ARP table.
    Arp,
    /// The host's neighbour table, read by vbridge, for the NIC's MAC.
    Neighbour,
    /// vbridge's ICMP sweep of the bridge's subnet, then the neighbour table.
    Probe,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Lease => "lease",
            Source::Agent => "agent",
            Source::Arp => "arp",
            Source::Neighbour => "neighbour",
            Source::Probe => "probe",
        }
    }
}

/// A NIC of the running VM that sits on a bridge, from the live XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgedNic {
    pub mac: String,
    pub bridge: String,
    /// The bridge joins the LAN; false for a libvirt NAT/routed/isolated network's bridge.
    pub lan: bool,
    /// The TAP (`<target dev>`), when libvirt shows one.
    pub tap: Option<String>,
}

/// The NICs of a live domain document that sit on a host bridge, by
/// [`nic_host_bridge`]: `type='bridge'`, and `type='network'` whose network has a bridge
/// (libvirt 9 writes it into the live `<source network='..' portid='..' bridge='..'/>`).
/// `network` gives the libvirt network of that name. Pure.
pub fn bridged_nics(nics: &[Nic], network: impl Fn(&str) -> Option<NetworkObs>) -> Vec<BridgedNic> {
    nics.iter()
        .filter_map(|n| {
            let net = match (n.kind.as_str(), n.source.get("network")) {
                ("network", Some(name)) => network(name),
                _ => None,
            };
            let host = nic_host_bridge(
                &n.kind,
                n.source.get("bridge").map(String::as_str),
                net.as_ref(),
            )?;
            Some(BridgedNic {
                mac: n.mac.clone()?,
                bridge: host.bridge,
                lan: host.lan,
                tap: n.target_dev.clone().filter(|t| !t.is_empty()),
            })
        })
        .collect()
}

/// One address seen for a NIC, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    pub ip: Ipv4Addr,
    pub source: Source,
}

/// What was observed of one NIC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The bridge the TAP is a port of right now (sysfs), None when on none or missing.
    pub tap_master: Option<String>,
    /// The TAP exists on this host.
    pub tap_exists: bool,
    /// Addresses seen, each with the first source that showed it.
    pub sightings: Vec<Sighting>,
    /// Addresses that answered ICMP echo.
    pub answered: Vec<Ipv4Addr>,
    /// Sources tried and what they could not do ("no IPv4 address on br0: no sweep").
    pub notes: Vec<String>,
}

impl Observed {
    /// Record an address unless it was seen before (the first source keeps it).
    pub fn saw(&mut self, ip: Ipv4Addr, source: Source) -> bool {
        if self.sightings.iter().any(|s| s.ip == ip) {
            return false;
        }
        self.sightings.push(Sighting { ip, source });
        true
    }

    pub(super) fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

/// The verdict on one NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceReport {
    pub mac: String,
    pub bridge: String,
    /// The bridge joins the LAN; false for a libvirt NAT/routed/isolated network (virbr0),
    /// whose addresses the LAN cannot reach.
    pub lan: bool,
    pub tap: Option<String>,
    /// IPv4 addresses seen, answering ones first.
    pub ips: Vec<String>,
    /// Where the address that answered (else the first one seen) was found.
    pub source: Option<Source>,
    pub reachable: bool,
    /// Why the NIC failed, in plain words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The TAP is not where libvirt says it is: the one fault that needs no waiting. Pure.
pub fn tap_fault(nic: &BridgedNic, obs: &Observed) -> Option<String> {
    let Some(tap) = &nic.tap else {
        return Some(format!(
            "libvirt shows no TAP device for this NIC (expected one on {})",
            nic.bridge
        ));
    };
    if !obs.tap_exists {
        return Some(format!(
            "TAP {tap} does not exist on this host (is vbridge running where libvirtd runs?)"
        ));
    }
    match &obs.tap_master {
        Some(m) if *m == nic.bridge => None,
        Some(m) => Some(format!(
            "TAP {tap} is not on {}: it is a port of {m}, though libvirt says {}",
            nic.bridge, nic.bridge
        )),
        None => Some(format!(
            "TAP {tap} is not on {}: it is a port of no bridge, though libvirt says {} \
             (fix: ip link set {tap} master {})",
            nic.bridge, nic.bridge, nic.bridge
        )),
    }
}

/// Turn what was observed of a NIC into its verdict. Pure.
pub fn judge(nic: &BridgedNic, obs: &Observed) -> InterfaceReport {
    let mut ips: Vec<&Sighting> = obs
        .sightings
        .iter()
        .filter(|s| obs.answered.contains(&s.ip))
        .collect();
    ips.extend(
        obs.sightings
            .iter()
            .filter(|s| !obs.answered.contains(&s.ip)),
    );
    let fault = tap_fault(nic, obs);
    let reachable = fault.is_none() && ips.first().is_some_and(|s| obs.answered.contains(&s.ip));
    let reason = if let Some(f) = fault {
        Some(f)
    } else if reachable {
        None
    } else if let Some(first) = ips.first() {
        let list: Vec<String> = ips.iter().map(|s| s.ip.to_string()).collect();
        let mut r = format!(
            "address seen but no answer: {} (from {}) does not answer ping from this host",
            list.join(", "),
            first.source.as_str()
        );
        for n in &obs.notes {
            r.push_str("; ");
            r.push_str(n);
        }
        Some(r)
    } else {
        let mut r = "no address seen (asked libvirt's address sources, the \
                     neighbour table"
            .to_string();
        r.push_str(if obs.notes.is_empty() {
            " and an ICMP sweep of the bridge's subnet)"
        } else {
            ")"
        });
        for n in &obs.notes {
            r.push_str("; ");
            r.push_str(n);
        }
        Some(r)
    };
    InterfaceReport {
        mac: nic.mac.clone(),
        bridge: nic.bridge.clone(),
        lan: nic.lan,
        tap: nic.tap.clone(),
        ips: ips.iter().map(|s| s.ip.to_string()).collect(),
        source: ips.first().map(|s| s.source),
        reachable,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domxml;

    const LIVE: &str = "<domain type='qemu' id='3'>\n  <name>web</name>\n  <devices>\n    \
        <interface type='bridge'>\n      <mac address='52:54:00:00:00:01'/>\n      \
        <source bridge='br0'/>\n      <target dev='vnet0'/>\n      <model type='virtio'/>\n    \
        </interface>\n    <interface type='network'>\n      <mac address='52:54:00:00:00:02'/>\n      \
        <source network='br0-network' portid='9c3b' bridge='br0'/>\n      <target dev='vnet1'/>\n    \
        </interface>\n    <interface type='network'>\n      <mac address='52:54:00:00:00:03'/>\n      \
        <source network='default'/>\n    </interface>\n    <interface type='user'>\n      \
        <mac address='52:54:00:00:00:04'/>\n    </interface>\n    <interface type='direct'>\n      \
        <mac address='52:54:00:00:00:05'/>\n      <source dev='eth0' mode='bridge'/>\n      \
        <target dev='macvtap0'/>\n    </interface>\n  </devices>\n</domain>\n";

    fn nic() -> BridgedNic {
        BridgedNic {
            mac: "52:54:00:00:00:01".into(),
            bridge: "br0".into(),
            lan: true,
            tap: Some("vnet0".into()),
        }
    }

    fn on_bridge() -> Observed {
        Observed {
            tap_master: Some("br0".into()),
            tap_exists: true,
            ..Observed::default()
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn net(name: &str, mode: Option<&str>, bridge: &str) -> NetworkObs {
        NetworkObs {
            name: name.into(),
            forward_mode: mode.map(Into::into),
            bridge: Some(bridge.into()),
            ..NetworkObs::default()
        }
    }

    #[test]
    fn bridge_and_network_nics_count_and_say_whether_they_are_on_the_lan() {
        let nets = [
            net("br0-network", Some("bridge"), "br0"),
            net("default", Some("nat"), "virbr0"),
        ];
        let lookup = |n: &str| nets.iter().find(|x| x.name == n).cloned();
        let b = bridged_nics(&domxml::nics(LIVE).unwrap(), lookup);
        assert_eq!(
            b,
            vec![
                nic(),
                BridgedNic {
                    mac: "52:54:00:00:00:02".into(),
                    bridge: "br0".into(),
                    lan: true,
                    tap: Some("vnet1".into()),
                },
                // On a NAT network: checked, on virbr0 (the network's bridge), not the LAN.
                BridgedNic {
                    mac: "52:54:00:00:00:03".into(),
                    bridge: "virbr0".into(),
                    lan: false,
                    tap: None,
                },
            ]
        );
        // An undefined network puts its NIC on no bridge, whatever the live XML says.
        let b = bridged_nics(&domxml::nics(LIVE).unwrap(), |_| None);
        assert_eq!(b, vec![nic()]);
    }

    #[test]
    fn answering_address_passes_with_its_source() {
        let mut o = on_bridge();
        o.saw(ip("10.77.3.150"), Source::Neighbour);
        o.saw(ip("10.77.3.101"), Source::Probe);
        assert!(
            !o.saw(ip("10.77.3.101"), Source::Lease),
            "first source keeps it"
        );
        o.answered.push(ip("10.77.3.101"));
        let r = judge(&nic(), &o);
        assert!(r.reachable);
        assert_eq!(r.reason, None);
        assert_eq!(r.ips, vec!["10.77.3.101", "10.77.3.150"]);
        assert_eq!(r.source, Some(Source::Probe));
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["source"], "probe");
        assert_eq!(j["tap"], "vnet0");
        assert_eq!(j["lan"], true);
        assert!(j.get("reason").is_none());
    }

    #[test]
    fn seen_but_silent() {
        let mut o = on_bridge();
        o.saw(ip("10.77.3.101"), Source::Neighbour);
        let r = judge(&nic(), &o);
        assert!(!r.reachable);
        let why = r.reason.unwrap();
        assert!(why.starts_with("address seen but no answer"), "{why}");
        assert!(why.contains("10.77.3.101 (from neighbour)"), "{why}");
    }

    #[test]
    fn nothing_seen_says_what_was_tried() {
        let r = judge(&nic(), &on_bridge());
        assert!(!r.reachable);
        let why = r.reason.unwrap();
        assert!(why.starts_with("no address seen"), "{why}");
        assert!(why.contains("sweep"), "{why}");
        let mut o = on_bridge();
        o.notes
            .push("10.0.0.2/16 is wider than /22: not sweeping it".into());
        let why = judge(&nic(), &o).reason.unwrap();
        assert!(why.contains("wider than /22"), "{why}");
    }

    #[test]
    fn tap_off_the_bridge_fails_even_with_an_answer() {
        let mut o = Observed {
            tap_exists: true,
            ..Observed::default()
        };
        o.saw(ip("10.77.3.101"), Source::Neighbour);
        o.answered.push(ip("10.77.3.101"));
        let r = judge(&nic(), &o);
        assert!(!r.reachable);
        let why = r.reason.unwrap();
        assert!(why.contains("TAP vnet0 is not on br0"), "{why}");
        assert!(why.contains("no bridge"), "{why}");
        o.tap_master = Some("br1".into());
        let why = judge(&nic(), &o).reason.unwrap();
        assert!(why.contains("a port of br1"), "{why}");
        let gone = judge(&nic(), &Observed::default()).reason.unwrap();
        assert!(gone.contains("does not exist"), "{gone}");
        let mut no_tap = nic();
        no_tap.tap = None;
        assert!(judge(&no_tap, &on_bridge())
            .reason
            .unwrap()
            .contains("no TAP"));
    }
}
