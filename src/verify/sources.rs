//! Where `verify` looks for a NIC's addresses: libvirt's address sources (lease, agent, ARP),
//! the host's neighbour table, sysfs for the TAP, and the ICMP sweep of a bridge's subnet.

use super::judge::{BridgedNic, Observed, Source};
use crate::error::Result;
use crate::host::{neigh, netlink::Netlink, probe, sysfs};
use crate::libvirt::{AddressSource, Dom};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The widest subnet the active probe sweeps (a /22 is 1022 addresses).
pub const MAX_SWEEP_PREFIX: u8 = 22;
/// How long one sweep waits for echo replies (and the neighbour table to fill).
const SWEEP_WAIT: Duration = Duration::from_millis(400);
/// A sweep of the same bridge is repeated at most this often while waiting.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The addresses an active sweep sends to for the host address `own`/`prefix` on the bridge:
/// every host address of the subnet but the host's own. Refuses subnets wider than
/// [`MAX_SWEEP_PREFIX`], with the reason. Pure.
pub fn sweep_targets(own: Ipv4Addr, prefix: u8) -> std::result::Result<Vec<Ipv4Addr>, String> {
    if !(MAX_SWEEP_PREFIX..=32).contains(&prefix) {
        return Err(format!(
            "{own}/{prefix} is wider than /{MAX_SWEEP_PREFIX}: not sweeping it"
        ));
    }
    if prefix >= 31 {
        // Point-to-point: the other end is the only neighbour.
        let base = u32::from(own) & (u32::MAX << (32 - prefix));
        let size = 1u32 << (32 - prefix);
        return Ok((base..base + size)
            .map(Ipv4Addr::from)
            .filter(|a| *a != own)
            .collect());
    }
    let mask = u32::MAX << (32 - prefix);
    let net = u32::from(own) & mask;
    let bcast = net | !mask;
    Ok((net + 1..bcast)
        .map(Ipv4Addr::from)
        .filter(|a| *a != own)
        .collect())
}

/// When a sweep may stop waiting for echo replies: once every MAC still wanted on the bridge
/// has answered from some address. Counts NICs, not addresses, so one NIC answering on two
/// addresses does not end the sweep before another NIC answered. Pure: the neighbour table
/// is read by the caller, and only for an address not in the table yet (a sweep may get up
/// to 1021 replies).
#[derive(Debug, Clone, Default)]
pub struct SweepStop {
    wanted: BTreeSet<String>,
    known: BTreeMap<Ipv4Addr, String>,
}

impl SweepStop {
    /// Wait for these MACs; `table` is the neighbour table as last read.
    pub fn new(wanted: impl IntoIterator<Item = String>, table: &[neigh::Neighbour]) -> Self {
        let mut s = SweepStop {
            wanted: wanted.into_iter().collect(),
            known: BTreeMap::new(),
        };
        s.learn(table);
        s
    }

    fn learn(&mut self, table: &[neigh::Neighbour]) {
        self.known
            .extend(table.iter().map(|n| (n.ip, n.mac.clone())));
    }

    /// An echo reply came from `ip`. `reread` reads the neighbour table again; it is called
    /// only when `ip` is not known yet. True once no MAC is wanted any more.
    pub fn reply(&mut self, ip: Ipv4Addr, reread: impl FnOnce() -> Vec<neigh::Neighbour>) -> bool {
        if !self.known.contains_key(&ip) {
            self.learn(&reread());
        }
        if let Some(mac) = self.known.get(&ip) {
            self.wanted.remove(mac);
        }
        self.wanted.is_empty()
    }
}

/// When to ask each of libvirt's address sources while waiting. Pure (the clock is passed in).
///
/// - lease: once, and only when a NIC is on a libvirt network that is not the LAN (NAT,
///   routed): libvirt's dnsmasq serves nothing else, so asking again on a bridge is waste.
/// - agent: once; again only while it answers, since a channel with no agent behind it can
///   block each call for seconds.
/// - ARP: libvirt reads the host's ARP table, as the sweep fills it: no more often than a
///   sweep ([`SWEEP_EVERY`]).
#[derive(Debug, Clone, Default)]
pub struct LibvirtAsks {
    lease_asked: bool,
    /// None before the first call, then whether the agent answered it.
    agent_answers: Option<bool>,
    arp_at: Option<Instant>,
}

impl LibvirtAsks {
    /// The sources to ask now, in order of trust. `nat`: some NIC is on a libvirt network
    /// that is not the LAN.
    pub fn due(&mut self, now: Instant, nat: bool) -> Vec<Source> {
        let mut out = Vec::new();
        if !self.lease_asked && nat {
            out.push(Source::Lease);
        }
        self.lease_asked = true;
        if self.agent_answers != Some(false) {
            out.push(Source::Agent);
        }
        if self
            .arp_at
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
        {
            self.arp_at = Some(now);
            out.push(Source::Arp);
        }
        out
    }

    /// Record whether a source answered (an empty list is an answer; an error is not). An
    /// agent that fails once, first call or later, is not asked again.
    pub fn answered(&mut self, source: Source, ok: bool) {
        if source == Source::Agent && self.agent_answers != Some(false) {
            self.agent_answers = Some(ok);
        }
    }
}

/// Update `o` from sysfs (the TAP), libvirt's sightings and the neighbour table (credited
/// to `neigh_source`).
pub(super) fn look(
    nic: &BridgedNic,
    o: &mut Observed,
    libvirt: &[(Option<String>, Ipv4Addr, Source)],
    neighbours: &[neigh::Neighbour],
    neigh_source: Source,
    host_side: bool,
) {
    if let Some(tap) = &nic.tap {
        if host_side {
            o.tap_exists = sysfs::exists(tap);
            o.tap_master = sysfs::master(tap);
        } else {
            // A remote hypervisor's TAPs cannot be seen from here: take libvirt's word.
            o.tap_exists = true;
            o.tap_master = Some(nic.bridge.clone());
        }
    }
    for (mac, ip, src) in libvirt {
        if mac.as_deref() == Some(nic.mac.as_str()) {
            o.saw(*ip, *src);
        }
    }
    for n in neighbours {
        if n.mac == nic.mac {
            o.saw(n.ip, neigh_source);
        }
    }
}

/// Addresses libvirt knows, from each of its sources that is due (see [`LibvirtAsks`]) and
/// answers (IPv4 only).
pub(super) fn libvirt_sightings(
    dom: &Dom,
    asks: &mut LibvirtAsks,
    nat: bool,
) -> Vec<(Option<String>, Ipv4Addr, Source)> {
    let mut out = Vec::new();
    for source in asks.due(Instant::now(), nat) {
        let src = match source {
            Source::Lease => AddressSource::Lease,
            Source::Agent => AddressSource::Agent,
            Source::Arp => AddressSource::Arp,
            Source::Neighbour | Source::Probe => continue,
        };
        // No agent, or a bridge libvirt does not manage, is the normal case: no addresses.
        let list = dom.addresses(src);
        asks.answered(source, list.is_ok());
        let Ok(list) = list else {
            continue;
        };
        for a in list {
            if let Ok(ip) = a.ip.parse::<Ipv4Addr>() {
                out.push((a.mac, ip, source));
            }
        }
    }
    out
}

/// Sweep the IPv4 subnets of the host's addresses on `bridge`; the echo answers, or why
/// no sweep was possible.
pub(super) fn sweep(
    bridge: &str,
    deadline: Instant,
    enough: &mut dyn FnMut(Ipv4Addr) -> bool,
) -> std::result::Result<Vec<Ipv4Addr>, String> {
    let addrs =
        bridge_ipv4(bridge).map_err(|e| format!("cannot read {bridge}'s addresses: {e}"))?;
    if addrs.is_empty() {
        return Err(format!(
            "{bridge} has no IPv4 address on this host, so its subnet cannot be swept"
        ));
    }
    let mut targets = Vec::new();
    let mut refused = Vec::new();
    for (ip, prefix) in addrs {
        match sweep_targets(ip, prefix) {
            Ok(t) => targets.extend(t),
            Err(why) => refused.push(why),
        }
    }
    targets.sort_unstable();
    targets.dedup();
    if targets.is_empty() && refused.is_empty() {
        return Err(format!("{bridge}'s subnet has no other address to sweep"));
    }
    if targets.is_empty() {
        return Err(refused.join("; "));
    }
    let wait = SWEEP_WAIT.min(deadline.saturating_duration_since(Instant::now()));
    probe::icmp_sweep(&targets, wait, enough)
        .map_err(|e| format!("ICMP sweep of {bridge} failed: {e}"))
}

/// The host's IPv4 addresses on `bridge`, from netlink.
fn bridge_ipv4(bridge: &str) -> Result<Vec<(Ipv4Addr, u8)>> {
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    let names = |i: u32| links.iter().find(|l| l.index == i).map(|l| l.name.clone());
    Ok(nl
        .addrs(&names)?
        .into_iter()
        .filter(|a| a.dev == bridge)
        .filter_map(|a| match a.ip {
            IpAddr::V4(v4) => Some((v4, a.prefix)),
            IpAddr::V6(_) => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn neighbour(ip_: &str, mac: &str) -> neigh::Neighbour {
        neigh::Neighbour {
            ip: ip(ip_),
            mac: mac.into(),
            dev: "br0".into(),
        }
    }

    #[test]
    fn sweep_stops_when_every_nic_answered_not_every_address() {
        const A: &str = "52:54:00:00:00:0a";
        const B: &str = "52:54:00:00:00:0b";
        // A is known on two addresses before the sweep; B is not in the table yet.
        let table = [
            neighbour("10.77.3.10", A),
            neighbour("10.77.3.11", A),
            neighbour("10.77.3.1", "52:54:00:00:00:99"),
        ];
        let mut stop = SweepStop::new([A.to_string(), B.to_string()], &table);
        let mut reads = 0;
        let mut reply = |stop: &mut SweepStop, at: &str, now: Vec<neigh::Neighbour>| {
            stop.reply(ip(at), || {
                reads += 1;
                now
            })
        };
        // Known addresses: no table read, and A twice is still one NIC of two.
        assert!(!reply(&mut stop, "10.77.3.10", vec![]));
        assert!(!reply(&mut stop, "10.77.3.11", vec![]));
        assert!(!reply(&mut stop, "10.77.3.1", vec![]));
        // An unknown address that is someone else's: read once, keep waiting.
        assert!(!reply(
            &mut stop,
            "10.77.3.50",
            vec![neighbour("10.77.3.50", "02:00:00:00:00:01")]
        ));
        // B answers from an address the table did not have: read, and now every NIC is in.
        assert!(reply(
            &mut stop,
            "10.77.3.101",
            vec![neighbour("10.77.3.101", B)]
        ));
        assert_eq!(
            reads, 2,
            "the table is read only for addresses not known yet"
        );
    }

    #[test]
    fn libvirt_sources_are_asked_only_when_they_can_help() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // A NAT NIC: lease once; an agent that does not answer is not asked again.
        let mut a = LibvirtAsks::default();
        assert_eq!(
            a.due(t0, true),
            vec![Source::Lease, Source::Agent, Source::Arp]
        );
        a.answered(Source::Agent, false);
        assert_eq!(a.due(ms(200), true), vec![]);
        assert_eq!(a.due(ms(1000), true), vec![Source::Arp]);
        assert_eq!(a.due(ms(1200), true), vec![]);
        // Bridged NICs only: never the lease; an agent that answered is asked every round.
        let mut a = LibvirtAsks::default();
        assert_eq!(a.due(t0, false), vec![Source::Agent, Source::Arp]);
        a.answered(Source::Agent, true);
        a.answered(Source::Arp, false);
        assert_eq!(a.due(ms(200), false), vec![Source::Agent]);
        a.answered(Source::Agent, true);
        assert_eq!(a.due(ms(400), false), vec![Source::Agent]);
        a.answered(Source::Agent, false);
        assert_eq!(
            a.due(ms(600), false),
            vec![],
            "an agent that stopped answering"
        );
        a.answered(Source::Agent, true);
        assert_eq!(a.due(ms(1000), false), vec![Source::Arp]);
    }

    #[test]
    fn sweep_bounds() {
        let t = sweep_targets(ip("10.77.3.2"), 24).unwrap();
        assert_eq!(t.len(), 253);
        assert_eq!(t[0], ip("10.77.3.1"));
        assert_eq!(*t.last().unwrap(), ip("10.77.3.254"));
        assert!(!t.contains(&ip("10.77.3.2")));
        assert_eq!(sweep_targets(ip("10.0.1.9"), 22).unwrap().len(), 1021);
        let wide = sweep_targets(ip("10.0.0.2"), 21).unwrap_err();
        assert!(wide.contains("wider than /22"), "{wide}");
        assert!(sweep_targets(ip("10.0.0.2"), 8).is_err());
        assert_eq!(
            sweep_targets(ip("10.0.0.2"), 31).unwrap(),
            vec![ip("10.0.0.3")]
        );
        assert!(sweep_targets(ip("10.0.0.2"), 32).unwrap().is_empty());
    }
}
