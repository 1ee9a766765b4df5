//! Planning the host bridge, pure: refuse what cannot be bridged, then compute the steps
//! that move a NIC's addresses and routes onto the bridge from what was observed.

use super::{
    movable_addr, movable_route, LiveRequest, Plan, State, Step, ADDR_FLAGS_SETTABLE, RTN_UNICAST,
    RTPROT_STATIC, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN,
};
use crate::error::{Error, Result};
use crate::host::{Addr, Route};
use std::net::IpAddr;

/// Both names are valid interface names, and not the same one.
pub fn check_names(nic: &str, bridge: &str) -> Result<()> {
    crate::validate::interface_name(bridge)?;
    crate::validate::interface_name(nic)?;
    if nic == bridge {
        return Err(
            Error::invalid(format!("the NIC and the bridge are both named {nic}"))
                .with_hint("give the bridge another name with --bridge, e.g. br0"),
        );
    }
    Ok(())
}

/// Refuse what cannot be bridged, before anything is planned.
pub fn check_request(state: &State, req: &LiveRequest) -> Result<()> {
    check_names(&req.nic, &req.bridge)?;
    let nic = state.link(&req.nic).ok_or_else(|| {
        Error::not_found(format!("{} does not exist on this host", req.nic))
            .with_hint("name an existing NIC; `ip -br link` lists them")
    })?;
    if nic.arptype != crate::host::ARPHRD_ETHER {
        let what = match nic.arptype {
            772 => "the loopback device".to_string(),
            t => format!("not an Ethernet link (link type {t})"),
        };
        return Err(Error::unsupported(format!(
            "{} is {what}: a bridge takes Ethernet ports only",
            req.nic
        ))
        .with_hint(
            "name the wired Ethernet NIC that carries the host's address; `ip -br link` lists them",
        ));
    }
    if nic.mac.as_deref().is_none_or(crate::validate::is_zero_mac) {
        return Err(Error::unsupported(format!(
            "{} has no Ethernet address (MAC), so it cannot be a bridge port",
            req.nic
        ))
        .with_hint(
            "name the wired Ethernet NIC that carries the host's address; `ip -br link` lists them",
        ));
    }
    if state.wireless.iter().any(|w| w == &req.nic) {
        return Err(Error::unsupported(format!(
            "{} is a wireless NIC: a Wi-Fi station cannot be a bridge port",
            req.nic
        ))
        .with_hint("bridge a wired NIC, or give the VMs a routed or NAT network instead"));
    }
    if nic.kind.as_deref() == Some("bridge") {
        return Err(Error::invalid(format!("{} is itself a bridge", req.nic))
            .with_hint("name the physical NIC that should become the bridge's port"));
    }
    let bridge = state.link(&req.bridge);
    if let Some(b) = bridge {
        if b.kind.as_deref() != Some("bridge") {
            return Err(
                Error::conflict(format!("{} exists and is not a bridge", req.bridge))
                    .with_hint("choose another bridge name with --bridge"),
            );
        }
    }
    if let Some(m) = nic.master {
        let ours = bridge.is_some_and(|b| b.index == m);
        if !ours {
            let name = state.name_of(m).unwrap_or("another device");
            return Err(
                Error::conflict(format!("{} is already a port of {name}", req.nic)).with_hint(
                    format!(
                        "release it first (`{}`) or use --bridge {name}",
                        crate::shell::join(["ip", "link", "set", &req.nic, "nomaster"])
                    ),
                ),
            );
        }
    }
    Ok(())
}

/// Compute the steps that put `req.nic` on `req.bridge`, moving its addresses and routes.
/// An empty plan means the host already looks like that.
pub fn plan_live(state: &State, req: &LiveRequest) -> Result<Plan> {
    check_request(state, req)?;
    let nic = state.link(&req.nic).expect("checked");
    let bridge = state.link(&req.bridge);
    let mut steps = Vec::new();

    if bridge.is_none() {
        steps.push(Step::CreateBridge {
            name: req.bridge.clone(),
            mac: nic.mac.clone(),
        });
    }
    // The NIC's addresses in the order they are re-added (see `add_order`); deleting them
    // runs the other way round, so a primary IPv4 address goes after its secondaries. With
    // promote_secondaries=0 (the default) deleting a primary first would make the kernel drop
    // its secondaries; with 1 it would promote one and change the subnet route's source.
    let addrs = add_order(state.addrs_of(&req.nic).filter(|a| movable_addr(a)));
    let mut routes: Vec<Route> = state
        .routes_of(&req.nic)
        .filter(|r| movable_route(r))
        .cloned()
        .collect();
    // Routes through a gateway go first on the way out and last on the way in.
    routes.sort_by_key(|r| (r.gateway.is_none(), r.dst_len == 0));
    for r in &routes {
        steps.push(Step::DelRoute { route: r.clone() });
    }
    for a in addrs.iter().rev() {
        steps.push(Step::DelAddr { addr: a.clone() });
    }
    // The NIC first: a bridge follows its ports' MTU, and cannot carry more than they do.
    if let Some(mtu) = req.mtu.filter(|m| *m != nic.mtu) {
        steps.push(Step::SetMtu {
            dev: req.nic.clone(),
            mtu,
            previous: nic.mtu,
        });
    }
    if nic.master.is_none() {
        steps.push(Step::SetMaster {
            dev: req.nic.clone(),
            master: Some(req.bridge.clone()),
            previous: None,
        });
    }
    if !nic.up {
        steps.push(Step::SetUp {
            dev: req.nic.clone(),
            up: true,
        });
    }
    // Set on the bridge by hand, its MTU stays when a port with a smaller one (a VM's tap
    // without <mtu>) joins; a new bridge starts at Ethernet's 1500.
    let bridge_mtu = bridge.map_or(1500, |b| b.mtu);
    if let Some(mtu) = req.mtu.filter(|m| *m != bridge_mtu || bridge.is_none()) {
        steps.push(Step::SetMtu {
            dev: req.bridge.clone(),
            mtu,
            previous: bridge_mtu,
        });
    }
    if !bridge.is_some_and(|b| b.up) {
        steps.push(Step::SetUp {
            dev: req.bridge.clone(),
            up: true,
        });
    }
    let on_bridge = |ip: &IpAddr| state.addrs_of(&req.bridge).any(|a| &a.ip == ip);
    match req.address {
        // --address replaces: the bridge gets exactly that address; the NIC's own ones are
        // removed above (and come back on rollback).
        Some((ip, prefix)) => {
            if !on_bridge(&ip) {
                steps.push(Step::AddAddr {
                    addr: Addr {
                        dev: req.bridge.clone(),
                        ip,
                        prefix,
                        peer: None,
                        broadcast: match ip {
                            IpAddr::V4(v4) if prefix < 31 => {
                                let mask = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
                                Some(IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) | !mask)))
                            }
                            _ => None,
                        },
                        scope: RT_SCOPE_UNIVERSE,
                        flags: 0,
                        label: None,
                        valid_until_ms: None,
                        preferred_until_ms: None,
                    },
                });
            }
        }
        // Otherwise the NIC's addresses move as they are: same order, flags, lifetimes, and
        // labels renamed to the bridge ("eth1:1" becomes "br0:1").
        None => {
            for a in &addrs {
                if on_bridge(&a.ip) {
                    continue;
                }
                let mut b = a.clone();
                b.dev = req.bridge.clone();
                b.label = a
                    .label
                    .as_deref()
                    .and_then(|l| l.strip_prefix(req.nic.as_str()))
                    .map(|rest| format!("{}{rest}", req.bridge))
                    .filter(|l| l.len() < libc::IFNAMSIZ);
                b.flags &= ADDR_FLAGS_SETTABLE;
                steps.push(Step::AddAddr { addr: b });
            }
        }
    }
    let bridge_routes: Vec<&Route> = state.routes_of(&req.bridge).collect();
    let mut new_routes: Vec<Route> = routes.clone();
    new_routes.reverse();
    // --address with --gateway replaces the NIC's default route of that family.
    if let (Some(_), Some(gw)) = (req.address, req.gateway) {
        let fam = family_of(&gw);
        new_routes.retain(|r| !(r.is_default() && r.family == fam));
    }
    for r in &mut new_routes {
        r.dev = req.bridge.clone();
    }
    if let Some(gw) = req.gateway {
        let fam = family_of(&gw);
        let has_default = new_routes
            .iter()
            .chain(bridge_routes.iter().copied())
            .any(|r| r.is_default() && r.family == fam);
        if !has_default {
            new_routes.push(Route {
                dev: req.bridge.clone(),
                family: fam,
                dst: None,
                dst_len: 0,
                gateway: Some(gw),
                table: RT_TABLE_MAIN,
                protocol: RTPROT_STATIC,
                scope: RT_SCOPE_UNIVERSE,
                kind: RTN_UNICAST,
                metric: None,
                prefsrc: None,
                flags: 0,
            });
        }
    }
    for r in &new_routes {
        if bridge_routes.iter().any(|b| same_route(b, r)) {
            continue;
        }
        steps.push(Step::AddRoute { route: r.clone() });
    }

    // What the bridge ends up with, for the report.
    let mut final_addrs: Vec<Addr> = state
        .addrs_of(&req.bridge)
        .filter(|a| movable_addr(a))
        .cloned()
        .collect();
    let mut final_routes: Vec<Route> = bridge_routes.iter().map(|r| (*r).clone()).collect();
    for s in &steps {
        match s {
            Step::AddAddr { addr } => final_addrs.push(addr.clone()),
            Step::AddRoute { route } => final_routes.push(route.clone()),
            _ => {}
        }
    }
    final_routes.retain(movable_route);
    let probe = final_routes
        .iter()
        .find(|r| r.is_default() && r.gateway.is_some_and(|g| g.is_ipv4()))
        .or_else(|| final_routes.iter().find(|r| r.is_default()))
        .and_then(|r| r.gateway);
    Ok(Plan {
        steps: crate::plan::Plan::new(steps),
        addresses: final_addrs,
        routes: final_routes,
        probe,
    })
}

pub(super) fn family_of(ip: &IpAddr) -> u8 {
    (if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }) as u8
}

/// The order in which adding `addrs` makes the kernel list them as observed: IPv4 as listed
/// (a primary comes before its secondaries, and the kernel makes an address secondary when
/// one of its subnet is there already); IPv6 reversed (the kernel lists the newest address
/// of a scope first).
pub(super) fn add_order<'a>(addrs: impl Iterator<Item = &'a Addr>) -> Vec<Addr> {
    let (v4, v6): (Vec<Addr>, Vec<Addr>) = addrs.cloned().partition(|a| a.ip.is_ipv4());
    v4.into_iter().chain(v6.into_iter().rev()).collect()
}

pub(super) fn same_route(a: &Route, b: &Route) -> bool {
    a.family == b.family
        && a.dst == b.dst
        && a.dst_len == b.dst_len
        && a.gateway == b.gateway
        && a.metric == b.metric
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::undo_steps;
    use super::*;
    use crate::host::cidr::parse_cidr;
    use crate::plan::Step as _;

    #[test]
    fn plan_moves_addresses_and_routes() {
        let plan = plan_live(&host(), &req()).unwrap();
        let d: Vec<String> = plan.steps.steps.iter().map(Step::describe).collect();
        assert_eq!(
            d,
            [
                "create bridge br0 (mac 52:54:00:00:00:02, stp off, forward delay 0)",
                "delete route 10.99.0.0/16 via 10.88.1.254 dev eth1",
                "delete route default via 10.88.1.1 dev eth1",
                "delete address 10.88.1.2/24 on eth1",
                "set eth1 master br0",
                "set br0 up",
                "add address 10.88.1.2/24 on br0",
                "add route default via 10.88.1.1 dev br0",
                "add route 10.99.0.0/16 via 10.88.1.254 dev br0",
            ]
        );
        assert_eq!(plan.probe, Some("10.88.1.1".parse().unwrap()));
        // Kernel-made prefix routes and link-local addresses are left to the kernel.
        assert_eq!(plan.addresses.len(), 1);
        assert_eq!(plan.routes.len(), 2);
    }

    #[test]
    fn mtu_goes_on_the_nic_before_it_joins_and_on_the_bridge() {
        let want = LiveRequest {
            mtu: Some(9000),
            ..req()
        };
        let plan = plan_live(&host(), &want).unwrap();
        let d: Vec<String> = plan.steps.steps.iter().map(Step::describe).collect();
        let at = |s: &str| {
            d.iter()
                .position(|x| x == s)
                .unwrap_or_else(|| panic!("{s}: {d:?}"))
        };
        assert!(at("set eth1 mtu 9000") < at("set eth1 master br0"));
        assert!(at("set eth1 master br0") < at("set br0 mtu 9000"));
        let undo = undo_steps(&plan.steps.steps);
        assert!(undo.contains(&Step::SetMtu {
            dev: "eth1".into(),
            mtu: 1500,
            previous: 9000
        }));
        // Already there: nothing to do.
        let mut s = host();
        s.links[1].mtu = 9000;
        s.links.push(link(3, "br0", Some("bridge"), None));
        s.links[1].master = Some(3);
        s.links[2].mtu = 9000;
        s.addrs[0].dev = "br0".into();
        for r in &mut s.routes {
            r.dev = "br0".into();
        }
        assert!(plan_live(&s, &want).unwrap().steps.is_empty());
    }

    #[test]
    fn undo_is_the_reverse_of_the_inverses() {
        let plan = plan_live(&host(), &req()).unwrap();
        let undo = undo_steps(&plan.steps.steps);
        let d: Vec<String> = undo.iter().map(Step::describe).collect();
        assert_eq!(d[0], "delete route 10.99.0.0/16 via 10.88.1.254 dev br0");
        assert_eq!(d[4], "set eth1 nomaster");
        assert_eq!(d[5], "add address 10.88.1.2/24 on eth1");
        assert_eq!(d.last().unwrap(), "delete br0");
        // Undoing the undo gives the plan back, but for the bridge's creation (a deletion
        // does not remember the MAC).
        assert_eq!(undo_steps(&undo)[1..], plan.steps.steps[1..]);
    }

    #[test]
    fn applied_state_plans_nothing() {
        let mut s = host();
        s.links.push(link(3, "br0", Some("bridge"), None));
        s.links[1].master = Some(3);
        s.addrs[0].dev = "br0".into();
        for r in &mut s.routes {
            r.dev = "br0".into();
        }
        let plan = plan_live(&s, &req()).unwrap();
        assert!(plan.steps.is_empty(), "{:?}", plan.steps);
        assert_eq!(plan.probe, Some("10.88.1.1".parse().unwrap()));
    }

    #[test]
    fn static_address_and_gateway_are_added() {
        let mut s = host();
        s.addrs.clear();
        s.routes.clear();
        let mut r = req();
        r.address = Some(parse_cidr("10.88.1.5/24").unwrap());
        r.gateway = Some("10.88.1.1".parse().unwrap());
        let plan = plan_live(&s, &r).unwrap();
        let d: Vec<String> = plan.steps.steps.iter().map(Step::describe).collect();
        assert!(
            d.contains(&"add address 10.88.1.5/24 on br0".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"add route default via 10.88.1.1 dev br0".to_string()),
            "{d:?}"
        );
        let a = plan.steps.steps.iter().find_map(|s| match s {
            Step::AddAddr { addr } => Some(addr),
            _ => None,
        });
        assert_eq!(a.unwrap().broadcast, Some("10.88.1.255".parse().unwrap()));
    }

    #[test]
    fn refusals() {
        let s = host();
        let mut r = req();
        r.nic = "eth9".into();
        assert_eq!(
            plan_live(&s, &r).unwrap_err().kind,
            crate::error::ErrorKind::NotFound
        );

        let mut w = host();
        w.wireless.push("eth1".into());
        assert_eq!(
            plan_live(&w, &req()).unwrap_err().kind,
            crate::error::ErrorKind::Unsupported
        );

        let mut p = host();
        p.links.push(link(4, "br9", Some("bridge"), None));
        p.links[1].master = Some(4);
        let e = plan_live(&p, &req()).unwrap_err();
        assert!(e.message.contains("already a port of br9"), "{}", e.message);

        let mut r = req();
        r.bridge = "br/0".into();
        assert_eq!(
            plan_live(&s, &r).unwrap_err().kind,
            crate::error::ErrorKind::InvalidInput
        );

        let mut n = host();
        n.links.push(link(5, "br0", Some("veth"), None));
        assert_eq!(
            plan_live(&n, &req()).unwrap_err().kind,
            crate::error::ErrorKind::Conflict
        );
    }

    /// The addresses the steps delete, in order.
    fn deleted(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::DelAddr { addr } => Some(addr.cidr()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn secondaries_are_deleted_first_and_added_in_order() {
        let plan = plan_live(&multi(), &req()).unwrap();
        let dels = deleted(&plan.steps.steps);
        // v6 in listing order (the kernel lists the newest first, so that is reversed on
        // the way in), then v4 from the last secondary to the primary.
        assert_eq!(
            dels,
            [
                "fd88::2/64",
                "fd88::3/64",
                "10.87.1.5/24",
                "10.88.1.4/24",
                "10.88.1.3/24",
                "10.88.1.2/24"
            ]
        );
        let adds: Vec<&Addr> = plan
            .steps
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::AddAddr { addr } => Some(addr),
                _ => None,
            })
            .collect();
        let cidrs: Vec<String> = adds.iter().map(|a| a.cidr()).collect();
        assert_eq!(
            cidrs,
            [
                "10.88.1.2/24",
                "10.88.1.3/24",
                "10.88.1.4/24",
                "10.87.1.5/24",
                "fd88::3/64",
                "fd88::2/64"
            ]
        );
        assert!(adds.iter().all(|a| a.dev == "br0" && a.flags & 0x01 == 0));
        assert_eq!(adds[2].label.as_deref(), Some("br0:lab"));
        assert_eq!(adds[3].valid_until_ms, Some(3_000_000));
        assert_eq!(adds[3].preferred_until_ms, Some(2_000_000));
        // The rollback deletes the bridge's secondaries first and re-adds the NIC's in the
        // original order, primary first.
        let undo = undo_steps(&plan.steps.steps);
        let readd: Vec<String> = undo
            .iter()
            .filter_map(|s| match s {
                Step::AddAddr { addr } if addr.dev == "eth1" => Some(addr.cidr()),
                _ => None,
            })
            .collect();
        assert_eq!(
            readd,
            [
                "10.88.1.2/24",
                "10.88.1.3/24",
                "10.88.1.4/24",
                "10.87.1.5/24",
                "fd88::3/64",
                "fd88::2/64"
            ]
        );
        let undel = deleted(&undo);
        assert_eq!(
            undel[..4],
            ["fd88::2/64", "fd88::3/64", "10.87.1.5/24", "10.88.1.4/24"]
        );
    }

    #[test]
    fn address_replaces_the_nics_addresses() {
        let mut r = req();
        r.address = Some(parse_cidr("10.88.1.50/24").unwrap());
        r.gateway = Some("10.88.1.254".parse().unwrap());
        let plan = plan_live(&multi(), &r).unwrap();
        let d: Vec<String> = plan.steps.steps.iter().map(Step::describe).collect();
        assert!(
            d.contains(&"delete address 10.88.1.2/24 on eth1".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"delete route default via 10.88.1.1 dev eth1".to_string()),
            "{d:?}"
        );
        let adds: Vec<&String> = d.iter().filter(|x| x.starts_with("add address")).collect();
        assert_eq!(adds, ["add address 10.88.1.50/24 on br0"]);
        assert!(
            d.contains(&"add route default via 10.88.1.254 dev br0".to_string()),
            "{d:?}"
        );
        assert!(
            !d.contains(&"add route default via 10.88.1.1 dev br0".to_string()),
            "{d:?}"
        );
        assert_eq!(plan.probe, Some("10.88.1.254".parse().unwrap()));
    }

    #[test]
    fn loopback_and_macless_links_are_refused() {
        let mut r = req();
        r.nic = "lo".into();
        let e = plan_live(&host(), &r).unwrap_err();
        assert!(e.message.contains("loopback"), "{}", e.message);
        let mut s = host();
        s.links[1].mac = None;
        let e = plan_live(&s, &req()).unwrap_err();
        assert!(e.message.contains("no Ethernet address"), "{}", e.message);
        let mut s = host();
        s.links[1].arptype = 65534;
        let e = plan_live(&s, &req()).unwrap_err();
        assert!(e.message.contains("not an Ethernet link"), "{}", e.message);
    }
}
