//! The doctor's one look at libvirt and the host. Cheap by construction: one list call for
//! the domains and their states (two at once for several named ones), one XML read per
//! domain, a handful of calls per network (the domains' and the networks' calls fanned out
//! so their round trips overlap), sysfs reads, one netlink address dump, and `iptables -S`
//! only when bridged frames reach iptables at all.

use super::{DomainObs, HostState, Iface, NetworkManagerObs, NicObs, Observation};
use crate::domxml;
use crate::error::Result;
use crate::fanout::parallel;
use crate::host::backends::nm;
use crate::host::{firewall, netlink::Netlink, sysctl, sysfs};
use crate::libvirt::{is_network_driver_unavailable, Conn, Dom};
use std::collections::BTreeMap;

/// Observe libvirt (all domains, or those named) and, when libvirt runs here, the host.
pub fn observe(conn: &Conn, names: &[String]) -> Result<Observation> {
    // The host side (sysfs, netlink, an iptables exec) runs on its own thread while the
    // libvirt round trips run here: on a host with many VMs it then costs no wall time.
    let host_applies = conn.shares_host();
    std::thread::scope(|s| {
        let host = host_applies.then(|| s.spawn(observe_host));
        let obs = observe_libvirt(conn, names, host_applies);
        let host = host.map(|h| h.join().expect("host observation does not panic"));
        obs.map(|mut o| {
            o.host = host;
            o
        })
    })
}

fn observe_libvirt(conn: &Conn, names: &[String], host_applies: bool) -> Result<Observation> {
    let doms: Vec<(Dom, bool)> = if names.is_empty() {
        conn.domains_with_state()?
    } else {
        conn.find_domains(names)
            .into_iter()
            .map(|f| {
                let f = f?;
                let running = f.dom.is_running_at_lookup();
                Ok((f.dom, running))
            })
            .collect::<Result<_>>()?
    };
    // The live XML of a running VM names its taps; shut off, it is the definition.
    let mut domains = parallel(conn.calls_in_flight(), doms, |(d, running)| {
        domain_obs(d.name(), running, &d.live_xml()?)
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    domains.sort_by(|a, b| a.name.cmp(&b.name));

    // Domain and host checks do not need the network driver: without it, say so and go on.
    let (listed, network_driver_unavailable) = match conn.networks() {
        Ok(list) => (list, None),
        Err(e) if is_network_driver_unavailable(&e) => (Vec::new(), Some(e.message)),
        Err(e) => return Err(e),
    };
    let mut wanted = Vec::new();
    for n in listed {
        let name = n.name()?;
        let used = domains
            .iter()
            .flat_map(|d| &d.nics)
            .any(|nic| nic.network.as_deref() == Some(name.as_str()));
        if names.is_empty() || used {
            wanted.push((n, name));
        }
    }
    // A handful of calls per network: the networks' round trips overlap too.
    let mut networks = parallel(conn.calls_in_flight(), wanted, |(n, name)| {
        crate::topology::read_network(&n, name).map(|(_, obs)| obs)
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    networks.sort_by(|a, b| a.name.cmp(&b.name));

    let uri = conn.uri();
    let host_skipped = if host_applies {
        None
    } else if conn.is_local() {
        Some(format!(
            "{uri} is libvirt's test driver: its networks and taps are not this host's"
        ))
    } else {
        Some(format!(
            "{uri} is a remote host: host-side checks (bridges, taps, sysctl, firewall) were skipped; run `vbridge doctor` on that host"
        ))
    };
    Ok(Observation {
        uri,
        networks,
        domains,
        host: None,
        host_skipped,
        network_driver_unavailable,
    })
}

/// A domain from its XML (pure).
pub fn domain_obs(name: &str, running: bool, xml: &str) -> Result<DomainObs> {
    let (nics, facts) = domxml::nics_and_facts(xml)?;
    let nics = nics
        .into_iter()
        .map(|n| NicObs {
            mac: n.mac,
            network: (n.kind == "network")
                .then(|| n.source.get("network").cloned())
                .flatten(),
            bridge: n.source.get("bridge").cloned(),
            tap: if running { n.target_dev } else { None },
            model: n.model,
            mtu: n.mtu,
            dev: (n.kind == "direct")
                .then(|| n.source.get("dev").cloned())
                .flatten(),
            mode: (n.kind == "direct")
                .then(|| n.source.get("mode").cloned())
                .flatten(),
            kind: n.kind,
        })
        .collect();
    Ok(DomainObs {
        name: name.to_string(),
        running,
        nics,
        facts,
    })
}

/// The host side of this network namespace. Never fails: what cannot be read is absent.
pub fn observe_host() -> HostState {
    let mut interfaces = BTreeMap::new();
    for name in sysfs::interfaces() {
        if name == "lo" || name == "bonding_masters" {
            continue;
        }
        let is_bridge = sysfs::is_bridge(&name);
        let iface = Iface {
            is_bridge,
            up: sysfs::is_up(&name),
            operstate: sysfs::operstate(&name),
            master: sysfs::master(&name),
            tun: sysfs::is_tun(&name),
            wireless: sysfs::is_wireless(&name),
            mac: sysfs::mac(&name),
            mac_pinned: sysfs::addr_assign_type(&name) == Some(3),
            stp_state: is_bridge.then(|| sysfs::stp_state(&name)).flatten(),
            forward_delay: is_bridge.then(|| sysfs::forward_delay(&name)).flatten(),
            ipv4: Vec::new(),
            mtu: sysfs::mtu(&name),
        };
        interfaces.insert(name, iface);
    }
    if let Ok(mut nl) = Netlink::open() {
        if let Ok(links) = nl.links() {
            let names = |i: u32| links.iter().find(|l| l.index == i).map(|l| l.name.clone());
            for a in nl.addrs(&names).unwrap_or_default() {
                // Global scope IPv4 only: link-local and IPv6 autoconf do not matter here.
                if a.ip.is_ipv4() && a.scope == 0 {
                    if let Some(i) = interfaces.get_mut(&a.dev) {
                        i.ipv4.push(a.cidr());
                    }
                }
            }
        }
    }
    let bridge_nf_call_iptables =
        sysctl::read(sysctl::BRIDGE_NF_CALL_IPTABLES).and_then(|v| v.parse().ok());
    let bridge_nf_call_ip6tables =
        sysctl::read(sysctl::BRIDGE_NF_CALL_IP6TABLES).and_then(|v| v.parse().ok());
    // Bridged frames meet iptables only when a sysctl is 1: skip the exec otherwise. The
    // nftables ruleset (ip, ip6 and inet) comes with the IPv4 table.
    let v4 = bridge_nf_call_iptables == Some(1);
    let v6 = bridge_nf_call_ip6tables == Some(1);
    let firewall = (v4 || v6).then(firewall::observe);
    let firewall6 = v6.then(firewall::observe6);
    HostState {
        interfaces,
        bridge_nf_call_iptables,
        firewall,
        network_manager: observe_network_manager(),
        bridge_nf_call_ip6tables,
        firewall6,
    }
}

/// NetworkManager's view of TAPs, when it runs (`VBRIDGE_NM_CONF_DIR` replaces
/// /etc/NetworkManager, for tests).
fn observe_network_manager() -> Option<NetworkManagerObs> {
    if !nm::nm_running(std::path::Path::new("/")) {
        return None;
    }
    let dir = std::env::var_os("VBRIDGE_NM_CONF_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(nm::CONF_DIR));
    Some(NetworkManagerObs {
        conf_dir: dir.display().to_string(),
        taps_unmanaged: nm::nm_leaves_taps_unmanaged(&dir),
    })
}
