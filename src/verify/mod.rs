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
//!
//! `judge` holds the pure verdict, `sources` the places an address is looked for; this
//! module is the polling loop that drives them until every NIC answers or time runs out.

mod judge;
mod sources;

pub use judge::{
    bridged_nics, judge, tap_fault, BridgedNic, InterfaceReport, Observed, Sighting, Source,
};
pub use sources::{sweep_targets, LibvirtAsks, SweepStop, MAX_SWEEP_PREFIX};

use crate::domxml;
use crate::error::{Error, Result};
use crate::host::{neigh, probe};
use crate::libvirt::Conn;
use crate::shell::quote;
use crate::topology::network_by_name;
use crate::validate;
use serde::Serialize;
use sources::{libvirt_sightings, look, sweep, SWEEP_EVERY};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Pause between rounds of the cheap sources.
const ROUND: Duration = Duration::from_millis(200);
/// The longest one confirming ping of a candidate address may take.
const PING: Duration = Duration::from_millis(800);

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
    /// Told of each round of waiting (the CLI's progress line; `--verify-within`'s caller).
    pub progress: crate::progress::Sink,
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
            Error::conflict(format!("domain {name} is not running: nothing to verify")).with_hint(
                format!("start it (`virsh start {}`), then verify", quote(&name)),
            ),
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
                    .with_hint(format!(
                        "list its NICs with `virsh domiflist {}`",
                        quote(&name)
                    )),
            );
        }
    }
    if bridged.is_empty() {
        return Err(Error::not_found(format!(
            "domain {name} has no NIC on a bridge ({} NIC(s), none on a host bridge)",
            nics.len()
        ))
        .with_hint(format!(
            "put one on the bridge with `vbridge attach {q}` (power-cycle after), or \
             `vbridge attach {q} --hotplug` while it runs",
            q = quote(&name)
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
        opts.progress
            .waiting(&name, deadline.saturating_duration_since(Instant::now()));
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
/// The LAN address that answers on one NIC within `within`, or why there is none: the check
/// `attach --live` runs after a move (the caller hands it in, so `attach` need not import
/// this command) and `apply` runs for a live NIC.
pub fn lan_answer(
    conn: &Conn,
    dom: &str,
    mac: &validate::Mac,
    within: Duration,
    progress: &crate::progress::Sink,
) -> std::result::Result<String, String> {
    let opts = VerifyOptions {
        timeout: within,
        mac: Some(mac.to_string()),
        progress: progress.clone(),
    };
    let r = verify(conn, dom, &opts).map_err(|e| e.message)?;
    let nic = r.interfaces.iter().find(|i| i.mac == mac.as_str());
    match nic {
        Some(i) if i.reachable && i.lan => Ok(i.ips.first().cloned().unwrap_or_default()),
        Some(i) if i.reachable => Err(format!(
            "{} answers, but {} is not the LAN",
            i.ips.first().map_or("an address", String::as_str),
            i.bridge
        )),
        Some(i) => Err(i
            .reason
            .clone()
            .unwrap_or_else(|| "no address answered".into())),
        None => Err("verify did not find the NIC on a bridge".into()),
    }
}
