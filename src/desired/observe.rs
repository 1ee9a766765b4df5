//! Read what a desired host's diff needs from libvirt: the named networks, and each named
//! VM's persistent and live XML. The VMs are found together (a listing, not a lookup per
//! VM), and the XML reads fanned out so their round trips overlap on a slow link.

use super::diff::{ObservedHost, ObservedVm};
use super::{Host, Target};
use crate::error::{Error, Result};
use crate::fanout::parallel;
use crate::libvirt::{Conn, Dom};
use crate::topology::{self, NetworkObs};
use std::collections::{BTreeMap, BTreeSet};

/// What the host holds of everything the desired host names. The networks and the kind of
/// connection are read while the VMs are: on a slow link their round trips overlap.
pub fn observe(conn: &Conn, want: &Host) -> Result<ObservedHost> {
    let (networks, vms) = std::thread::scope(|s| {
        let networks = s.spawn(|| {
            let networks = observe_networks(conn, want);
            // Asked once and kept by the connection: asked here, it costs no wall time later.
            conn.shares_host();
            networks
        });
        let vms = observe_vms(conn, want);
        (
            networks.join().expect("reading networks does not panic"),
            vms,
        )
    });
    let networks = networks?;
    let local = conn.shares_host();
    let mut notes = Vec::new();
    if local {
        let bridges: BTreeSet<&str> = want
            .networks
            .iter()
            .map(|n| n.bridge.as_str())
            .chain(want.vms.values().flat_map(|vm| {
                vm.nics.iter().filter_map(|n| match &n.target {
                    Target::Bridge(b) => Some(b.as_str()),
                    Target::Network(_) => None,
                })
            }))
            .collect();
        for b in bridges {
            notes.extend(topology::bridge_warnings(b));
        }
    } else if conn.is_local() {
        // The test driver: its bridges exist only in its own memory.
    } else {
        notes.push(format!(
            "{} is a remote hypervisor: host-side steps (the host bridge, doctor's host checks) are not checked or made from here; run vbridge on that host (contrib/ansible/library/vbridge.py does)",
            conn.uri()
        ));
    }
    Ok(ObservedHost {
        networks,
        vms,
        local,
        notes,
    })
}

fn observe_networks(conn: &Conn, want: &Host) -> Result<BTreeMap<String, Option<NetworkObs>>> {
    let mut networks = BTreeMap::new();
    for n in &want.networks {
        let obs = match conn.network(&n.name)? {
            Some(net) => Some(topology::read_network(&net, n.name.clone())?.1),
            None => None,
        };
        networks.insert(n.name.clone(), obs);
    }
    Ok(networks)
}

/// Each named VM, found together, its XML read with many calls in flight.
fn observe_vms(conn: &Conn, want: &Host) -> BTreeMap<String, Result<ObservedVm>> {
    let names: Vec<String> = want.vms.keys().cloned().collect();
    let found = names
        .iter()
        .cloned()
        .zip(conn.find_domains(&names))
        .collect();
    parallel(conn.calls_in_flight(), found, |(name, found)| {
        let vm = found.and_then(|f| {
            let mut vm = read_vm(&f.dom, f.dom.is_running_at_lookup())?;
            vm.persistent = match f.persistent {
                Some(p) => p,
                None => f.dom.is_persistent()?,
            };
            Ok(vm)
        });
        (name, vm)
    })
    .into_iter()
    .collect()
}

fn read_vm(dom: &Dom, running: bool) -> std::result::Result<ObservedVm, Error> {
    let config = dom.persistent_xml()?;
    let live = if running { Some(dom.live_xml()?) } else { None };
    ObservedVm::from_xml(&config, live.as_deref())
}
