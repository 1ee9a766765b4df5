//! `vbridge verify`: find the IPv4 addresses of a running VM's bridged NICs and check that
//! they answer.
//!
//! On a bridge the guest usually leases from the LAN's router, so libvirt knows nothing
//! (`virsh domifaddr` is empty) and there may be no guest agent. Every source that exists is
//! asked, and the report says which one found the address that answered: libvirt's lease,
//! agent and ARP sources, the host's neighbour table for the NIC's MAC, and an active ICMP
//! sweep of the bridge's own subnet that makes the kernel resolve every neighbour on it.
//!
//! Which NICs count is the shared rule ([`crate::topology::nic_host_bridge`]): every NIC on a host
//! bridge, the bridge of a libvirt NAT network (virbr0) included, each reported with `lan`
//! so a NAT address is not mistaken for a LAN one.
//!
//! The pure part ([`bridged_nics`], [`sweep_targets`], [`judge`]) turns observations into a
//! verdict per NIC; [`verify`] observes, probes and waits.

use crate::domxml::{self, Nic};
use crate::error::{Error, Result};
use crate::host::{neigh, netlink::Netlink, probe, sysfs};
use crate::libvirt::{AddressSource, Conn, Dom};
use crate::topology::{network_by_name, nic_host_bridge, NetworkObs};
use crate::validate;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The widest subnet the active probe sweeps (a /22 is 1022 addresses).
pub const MAX_SWEEP_PREFIX: u8 = 22;
/// How long one sweep waits for echo replies (and the neighbour table to fill).
const SWEEP_WAIT: Duration = Duration::from_millis(400);
/// A sweep of the same bridge is repeated at most this often while waiting.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Pause between rounds of the cheap sources.
const ROUND: Duration = Duration::from_millis(200);
/// The longest one confirming ping of a candidate address may take.
const PING: Duration = Duration::from_millis(800);

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

    fn note(&mut self, note: String) {
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

/// What `vbridge verify` reports. JSON: `domain`, `interfaces`, `ok`, `elapsed`.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub domain: String,
    pub interfaces: Vec<InterfaceReport>,
    /// Seconds from start to verdict.
    pub elapsed: f64,
}

impl VerifyReport {
    /// Every bridged NIC has an address that answers. Derived, never stored, so it cannot
    /// disagree with the interfaces.
    pub fn ok(&self) -> bool {
        self.interfaces.iter().all(|i| i.reachable)
    }
}

impl Serialize for VerifyReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("VerifyReport", 4)?;
        st.serialize_field("domain", &self.domain)?;
        st.serialize_field("interfaces", &self.interfaces)?;
        st.serialize_field("ok", &self.ok())?;
        st.serialize_field("elapsed", &self.elapsed)?;
        st.end()
    }
}

/// Options of [`verify`].
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// How long to wait for an address that answers.
    pub timeout: Duration,
    /// Only the NIC with this MAC.
    pub mac: Option<String>,
}

/// Find and check the addresses of the running domain's bridged NICs, waiting up to
/// `opts.timeout`. Errors when the domain is not running or has no bridged NIC; a NIC that
/// fails is a verdict in the report, not an error.
pub fn verify(conn: &Conn, domain: &str, opts: &VerifyOptions) -> Result<VerifyReport> {
    let t0 = Instant::now();
    let deadline = t0 + opts.timeout;
    let dom = conn.domain(domain)?;
    let name = dom.name().to_string();
    if !dom.is_active()? {
        return Err(
            Error::conflict(format!("domain {name} is not running: nothing to verify"))
                .with_hint(format!("start it (`virsh start {name}`), then verify")),
        );
    }
    let nics = domxml::nics(&dom.live_xml()?)?;
    let mut networks = BTreeMap::new();
    for name in nics
        .iter()
        .filter(|n| n.kind == "network")
        .filter_map(|n| n.source.get("network"))
    {
        if !networks.contains_key(name) {
            networks.insert(name.clone(), network_by_name(conn, name)?);
        }
    }
    let mut bridged = bridged_nics(&nics, |n| networks.get(n).cloned().flatten());
    if let Some(m) = &opts.mac {
        let m = validate::mac(m)?;
        bridged.retain(|n| n.mac == m);
        if bridged.is_empty() {
            return Err(
                Error::not_found(format!("domain {name} has no bridged NIC with MAC {m}"))
                    .with_hint(format!("list its NICs with `virsh domiflist {name}`")),
            );
        }
    }
    if bridged.is_empty() {
        return Err(Error::not_found(format!(
            "domain {name} has no NIC on a bridge ({} NIC(s), none on a host bridge)",
            nics.len()
        ))
        .with_hint(format!(
            "put one on the bridge with `vbridge attach {name}` (power-cycle after), or \
             `vbridge attach {name} --hotplug` while it runs"
        )));
    }

    let mut obs: Vec<Observed> = vec![Observed::default(); bridged.len()];
    let mut done = vec![false; bridged.len()];
    let mut pinged: BTreeMap<Ipv4Addr, Instant> = BTreeMap::new();
    let mut swept: BTreeMap<String, Instant> = BTreeMap::new();
    let mut asks = LibvirtAsks::default();
    let nat = bridged.iter().any(|n| !n.lan);
    let host_side = conn.shares_host();
    loop {
        let neighbours = neigh::ipv4().unwrap_or_default();
        let libvirt = libvirt_sightings(&dom, &mut asks, nat);
        for (i, nic) in bridged.iter().enumerate() {
            if done[i] {
                continue;
            }
            let o = &mut obs[i];
            look(nic, o, &libvirt, &neighbours, Source::Neighbour, host_side);
            if tap_fault(nic, o).is_some() {
                done[i] = true;
                continue;
            }
            done[i] = confirm(o, &mut pinged, deadline);
        }
        if done.iter().all(|d| *d) || Instant::now() >= deadline {
            break;
        }
        // Sweep each bridge that still has a NIC without an answering address.
        let mut bridges: Vec<&str> = bridged
            .iter()
            .zip(&done)
            .filter(|(_, d)| !**d)
            .map(|(n, _)| n.bridge.as_str())
            .collect();
        bridges.sort_unstable();
        bridges.dedup();
        for br in bridges {
            if swept.get(br).is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
                continue;
            }
            swept.insert(br.to_string(), Instant::now());
            // Stop waiting for echo replies once every NIC still open here has answered.
            let mut stop = SweepStop::new(
                bridged
                    .iter()
                    .zip(&done)
                    .filter(|(n, d)| !**d && n.bridge == br)
                    .map(|(n, _)| n.mac.clone()),
                &neighbours,
            );
            let mut enough = |ip: Ipv4Addr| stop.reply(ip, || neigh::ipv4().unwrap_or_default());
            let result = sweep(br, deadline, &mut enough);
            let neighbours = neigh::ipv4().unwrap_or_default();
            for (i, nic) in bridged.iter().enumerate() {
                if done[i] || nic.bridge != br {
                    continue;
                }
                let o = &mut obs[i];
                match &result {
                    Ok(answered) => {
                        look(nic, o, &[], &neighbours, Source::Probe, host_side);
                        for s in o.sightings.clone() {
                            if answered.contains(&s.ip) && !o.answered.contains(&s.ip) {
                                o.answered.push(s.ip);
                            }
                        }
                        done[i] = !o.answered.is_empty() || confirm(o, &mut pinged, deadline);
                    }
                    Err(note) => o.note(note.clone()),
                }
            }
        }
        if done.iter().all(|d| *d) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(ROUND.min(deadline - now));
    }
    let interfaces: Vec<InterfaceReport> =
        bridged.iter().zip(&obs).map(|(n, o)| judge(n, o)).collect();
    Ok(VerifyReport {
        domain: name,
        interfaces,
        elapsed: t0.elapsed().as_secs_f64(),
    })
}

/// Update `o` from sysfs (the TAP), libvirt's sightings and the neighbour table (credited
/// to `neigh_source`).
fn look(
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

/// Ping the addresses seen that have not answered yet (each at most once a second).
/// True once one answers.
fn confirm(o: &mut Observed, pinged: &mut BTreeMap<Ipv4Addr, Instant>, deadline: Instant) -> bool {
    if !o.answered.is_empty() {
        return true;
    }
    for s in o.sightings.clone() {
        if pinged.get(&s.ip).is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        pinged.insert(s.ip, Instant::now());
        match probe::icmp_echo(IpAddr::V4(s.ip), None, PING.min(left)) {
            Ok(true) => {
                o.answered.push(s.ip);
                return true;
            }
            Ok(false) => {}
            // No ICMP socket (not root): say so rather than blame the guest.
            Err(e) => o.note(format!("cannot ping {}: {}", s.ip, e.message)),
        }
    }
    false
}

/// Addresses libvirt knows, from each of its sources that is due (see [`LibvirtAsks`]) and
/// answers (IPv4 only).
fn libvirt_sightings(
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
fn sweep(
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
