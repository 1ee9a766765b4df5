//! Read what a desired host's diff needs from libvirt: the named networks, and each named
//! VM's persistent and live XML. One `listAllDomains` instead of a lookup per VM, and the
//! XML reads fanned out so their round trips overlap on a slow link.

use super::diff::{ObservedHost, ObservedVm};
use super::{Host, Target};
use crate::error::{Error, Result};
use crate::fanout::parallel;
use crate::libvirt::{Conn, Dom};
use crate::topology;
use std::collections::{BTreeMap, BTreeSet};

/// What the host holds of everything the desired host names.
pub fn observe(conn: &Conn, want: &Host) -> Result<ObservedHost> {
    let mut networks = BTreeMap::new();
    for n in &want.networks {
        let obs = match conn.network(&n.name)? {
            Some(net) => Some(topology::read_network(&net, n.name.clone())?.1),
            None => None,
        };
        networks.insert(n.name.clone(), obs);
    }
    let mut listed: BTreeMap<String, (Dom, bool)> = BTreeMap::new();
    if !want.vms.is_empty() {
        for (dom, running) in conn.domains_with_state()? {
            listed.insert(dom.name().to_string(), (dom, running));
        }
    }
    let names: Vec<&String> = want.vms.keys().collect();
    let vms = parallel(names, |name| {
        let vm = match listed.get(name.as_str()) {
            Some((dom, running)) => read_vm(dom, *running),
            // Not a name: maybe a UUID.
            None => conn.domain(name).and_then(|d| {
                let running = d.is_running_at_lookup();
                read_vm(&d, running)
            }),
        };
        (name.clone(), vm)
    })
    .into_iter()
    .collect();

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

fn read_vm(dom: &Dom, running: bool) -> std::result::Result<ObservedVm, Error> {
    let config = dom.persistent_xml()?;
    let live = if running { Some(dom.live_xml()?) } else { None };
    ObservedVm::from_xml(&config, live.as_deref())
}
