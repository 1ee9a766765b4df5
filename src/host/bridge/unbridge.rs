//! Taking a NIC off its bridge, pure: the steps that move the bridge's addresses and routes
//! back to the NIC and delete the bridge (`host-bridge --remove`), and the steps that put the
//! NIC and the bridge back as an earlier observation saw them (undoing a network stack's
//! reload, which has no undo list of its own).

use super::plan::{add_order, same_route};
use super::{movable_addr, movable_route, Plan, State, Step, ADDR_FLAGS_SETTABLE};
use crate::error::{Error, Result};
use crate::host::{Addr, Route};

/// The NIC whose addresses come back: the one named, or the bridge's only port that is
/// neither a TAP nor a bridge. None when the bridge has no port and no address to move.
fn choose_nic(
    state: &State,
    nic: Option<&str>,
    bridge: &str,
    index: u32,
) -> Result<Option<String>> {
    let ports: Vec<&str> = state
        .links
        .iter()
        .filter(|l| l.master == Some(index))
        .map(|l| l.name.as_str())
        .collect();
    if let Some(n) = nic {
        let l = state.link(n).ok_or_else(|| {
            Error::not_found(format!("{n} does not exist on this host"))
                .with_hint("name the NIC that was the bridge's port; `ip -br link` lists them")
        })?;
        if let Some(m) = l.master.filter(|m| *m != index) {
            return Err(Error::conflict(format!(
                "{n} is a port of {}, not of {bridge}",
                state.name_of(m).unwrap_or("another device")
            ))
            .with_hint("name the bridge it is a port of with --bridge"));
        }
        return Ok(Some(n.to_string()));
    }
    let uplinks: Vec<&str> = ports
        .iter()
        .copied()
        .filter(|p| {
            state
                .link(p)
                .is_some_and(|l| !matches!(l.kind.as_deref(), Some("tun") | Some("bridge")))
        })
        .collect();
    match uplinks.as_slice() {
        [one] => Ok(Some(one.to_string())),
        [] if !state.addrs_of(bridge).any(movable_addr) => Ok(None),
        [] => Err(Error::invalid(format!(
            "{bridge} has addresses but no NIC among its ports to give them back to"
        ))
        .with_hint("name the NIC: vbridge host-bridge NIC --remove --bridge BRIDGE")),
        many => Err(Error::invalid(format!(
            "{bridge} has more than one NIC among its ports ({})",
            many.join(", ")
        ))
        .with_hint("name the one that gets the bridge's addresses back")),
    }
}

/// Delete the movable routes and addresses of `dev` (gateway routes first, secondaries
/// before their primary), as `plan_live` does on the way in.
fn strip(state: &State, dev: &str, steps: &mut Vec<Step>) -> (Vec<Addr>, Vec<Route>) {
    let addrs = add_order(state.addrs_of(dev).filter(|a| movable_addr(a)));
    let mut routes: Vec<Route> = state
        .routes_of(dev)
        .filter(|r| movable_route(r))
        .cloned()
        .collect();
    routes.sort_by_key(|r| (r.gateway.is_none(), r.dst_len == 0));
    for r in &routes {
        steps.push(Step::DelRoute { route: r.clone() });
    }
    for a in addrs.iter().rev() {
        steps.push(Step::DelAddr { addr: a.clone() });
    }
    (addrs, routes)
}

/// `addr` carried over to `to` (a label `from:x` becomes `to:x`).
fn moved_addr(a: &Addr, from: &str, to: &str) -> Addr {
    let mut b = a.clone();
    b.dev = to.to_string();
    b.label = a
        .label
        .as_deref()
        .and_then(|l| l.strip_prefix(from))
        .map(|rest| format!("{to}{rest}"))
        .filter(|l| l.len() < libc::IFNAMSIZ);
    b.flags &= ADDR_FLAGS_SETTABLE;
    b
}

/// The steps that take `nic` off `bridge`, give it the bridge's addresses and routes, and
/// delete the bridge: the inverse of `plan_live` for a bridge found as it is now (made by
/// `--live`, or by a network stack from vbridge's files). Empty when there is no bridge.
/// Refused when other devices (a VM's TAP, another NIC) are still ports of the bridge.
pub fn plan_unbridge(state: &State, nic: Option<&str>, bridge: &str) -> Result<Plan> {
    crate::validate::interface_name(bridge)?;
    if let Some(n) = nic {
        super::check_names(n, bridge)?;
    }
    let Some(br) = state.link(bridge) else {
        return Ok(Plan::default());
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(
            Error::conflict(format!("{bridge} exists and is not a bridge"))
                .with_hint("name the bridge vbridge made with --bridge"),
        );
    }
    let nic = choose_nic(state, nic, bridge, br.index)?;
    let others: Vec<&str> = state
        .links
        .iter()
        .filter(|l| l.master == Some(br.index) && Some(l.name.as_str()) != nic.as_deref())
        .map(|l| l.name.as_str())
        .collect();
    if !others.is_empty() {
        return Err(Error::conflict(format!(
            "{bridge} still has other ports ({}): deleting it would cut them off",
            others.join(", ")
        ))
        .with_hint(
            "shut those VMs down or move their NICs to another bridge first, then remove it",
        ));
    }
    let mut steps = Vec::new();
    let (addrs, mut routes) = strip(state, bridge, &mut steps);
    let mut final_addrs = Vec::new();
    let mut final_routes = Vec::new();
    if let Some(n) = &nic {
        if state.link(n).and_then(|l| l.master) == Some(br.index) {
            steps.push(Step::SetMaster {
                dev: n.clone(),
                master: None,
                previous: Some(bridge.to_string()),
            });
            // A stack that switched IPv6 off on its bridge port (ifupdown2 does) would
            // leave the NIC without its link-local address: switch it back on.
            if state.ipv6_disabled.contains(n) {
                steps.push(Step::SetIpv6 {
                    dev: n.clone(),
                    enabled: true,
                });
            }
        }
        let on_nic = |a: &Addr| state.addrs_of(n).any(|x| x.ip == a.ip);
        for a in addrs.iter().filter(|a| !on_nic(a)) {
            let b = moved_addr(a, bridge, n);
            final_addrs.push(b.clone());
            steps.push(Step::AddAddr { addr: b });
        }
        routes.reverse();
        for r in &mut routes {
            r.dev = n.clone();
            if !state.routes_of(n).any(|x| same_route(x, r)) {
                steps.push(Step::AddRoute { route: r.clone() });
            }
            final_routes.push(r.clone());
        }
    }
    if br.up {
        steps.push(Step::SetUp {
            dev: bridge.to_string(),
            up: false,
        });
    }
    steps.push(Step::DeleteBridge {
        name: bridge.to_string(),
        mac: br.mac.clone(),
    });
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

/// The steps that put `nic` and `bridge` back as `before` saw them, from how they are `now`:
/// a bridge that did not exist is stripped and deleted, the NIC's master, up state, MTU,
/// addresses (in their order) and routes are restored. Used after a network stack applied
/// vbridge's files and the change must be undone (no probe answer, or the confirm window
/// ran out); the stack's own reload runs first and may have done part of it already.
pub fn plan_restore(before: &State, now: &State, nic: &str, bridge: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let new_bridge = before.link(bridge).is_none() && now.link(bridge).is_some();
    if new_bridge {
        strip(now, bridge, &mut steps);
    }
    if let (Some(b), Some(n)) = (before.link(nic), now.link(nic)) {
        let bm = b.master.and_then(|m| before.name_of(m)).map(str::to_string);
        let nm = n.master.and_then(|m| now.name_of(m)).map(str::to_string);
        if bm != nm {
            steps.push(Step::SetMaster {
                dev: nic.to_string(),
                master: bm,
                previous: nm,
            });
        }
        if b.up != n.up {
            steps.push(Step::SetUp {
                dev: nic.to_string(),
                up: b.up,
            });
        }
        let off = |s: &State| s.ipv6_disabled.iter().any(|d| d == nic);
        if off(before) != off(now) {
            steps.push(Step::SetIpv6 {
                dev: nic.to_string(),
                enabled: !off(before),
            });
        }
        // `--mtu` went into the stack's files; a stack does not put back an MTU that no
        // file of its own names (networkd leaves it).
        if b.mtu != n.mtu {
            steps.push(Step::SetMtu {
                dev: nic.to_string(),
                mtu: b.mtu,
                previous: n.mtu,
            });
        }
    }
    let mut devs = vec![nic];
    if !new_bridge && before.link(bridge).is_some() && now.link(bridge).is_some() {
        devs.push(bridge);
    }
    for dev in devs {
        restore_dev(before, now, dev, &mut steps);
    }
    if new_bridge {
        steps.push(Step::DeleteBridge {
            name: bridge.to_string(),
            mac: now.link(bridge).and_then(|l| l.mac.clone()),
        });
    }
    steps
}

/// The addresses and routes of `dev` back as in `before`: when the addresses differ, all
/// of them go and come back in order (the kernel's primary/secondary roles follow the
/// order); routes that are missing are added and extra ones deleted.
fn restore_dev(before: &State, now: &State, dev: &str, steps: &mut Vec<Step>) {
    let key = |a: &&Addr| (a.ip, a.prefix);
    let b: Vec<&Addr> = before.addrs_of(dev).filter(|a| movable_addr(a)).collect();
    let n: Vec<&Addr> = now.addrs_of(dev).filter(|a| movable_addr(a)).collect();
    let addrs_differ = b.iter().map(key).ne(n.iter().map(key));
    let br: Vec<&Route> = before.routes_of(dev).filter(|r| movable_route(r)).collect();
    let nr: Vec<&Route> = now.routes_of(dev).filter(|r| movable_route(r)).collect();
    // Deleting addresses takes their routes along: then every route comes back.
    let extra: Vec<&Route> = if addrs_differ {
        nr.clone()
    } else {
        nr.iter()
            .copied()
            .filter(|r| !br.iter().any(|x| same_route(x, r)))
            .collect()
    };
    let mut extra: Vec<Route> = extra.into_iter().cloned().collect();
    extra.sort_by_key(|r| (r.gateway.is_none(), r.dst_len == 0));
    for r in extra {
        steps.push(Step::DelRoute { route: r });
    }
    if addrs_differ {
        for a in add_order(n.into_iter()).iter().rev() {
            steps.push(Step::DelAddr { addr: a.clone() });
        }
        for a in add_order(b.into_iter()) {
            let mut a = a.clone();
            a.flags &= ADDR_FLAGS_SETTABLE;
            steps.push(Step::AddAddr { addr: a });
        }
    }
    let mut missing: Vec<Route> = br
        .iter()
        .copied()
        .filter(|r| addrs_differ || !nr.iter().any(|x| same_route(x, r)))
        .cloned()
        .collect();
    missing.sort_by_key(|r| (r.gateway.is_some(), r.dst_len == 0));
    for r in missing {
        steps.push(Step::AddRoute { route: r });
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{differences, plan_live, Net};
    use super::*;

    /// `host()` put on br0 by `plan_live`, in the simulated kernel.
    fn bridged(from: State) -> Sim {
        let mut sim = Sim::new(from);
        let plan = plan_live(&sim.state, &req()).unwrap();
        for s in &plan.steps.steps {
            sim.apply_step(s).unwrap();
        }
        sim
    }

    #[test]
    fn unbridge_returns_the_host_exactly() {
        for start in [host(), multi()] {
            let start = Sim::new(start).state;
            let mut sim = bridged(start.clone());
            assert!(sim.state.link("br0").is_some());
            let plan = plan_unbridge(&sim.state, None, "br0").unwrap();
            let d = plan.steps.describe();
            assert_eq!(d.last().unwrap(), "delete bridge br0", "{d:?}");
            for s in &plan.steps.steps {
                sim.apply_step(s).unwrap();
            }
            let all = plan_live(&start, &req()).unwrap().steps.steps;
            assert_eq!(differences(&start, &sim.state, &all), Vec::<String>::new());
            // Nothing left to do; and the inverse of the removal builds the bridge again.
            assert!(plan_unbridge(&sim.state, None, "br0")
                .unwrap()
                .steps
                .is_empty());
            assert_eq!(plan.probe, Some("10.88.1.1".parse().unwrap()));
        }
        let mut sim = bridged(host());
        let rebuilt = sim.state.clone();
        let plan = plan_unbridge(&sim.state, Some("eth1"), "br0").unwrap();
        for s in plan.steps.steps.iter().chain(&plan.steps.undo()) {
            sim.apply_step(s).unwrap();
        }
        assert_eq!(
            differences(&rebuilt, &sim.state, &plan.steps.steps),
            Vec::<String>::new()
        );
    }

    #[test]
    fn ipv6_a_stack_switched_off_on_the_port_comes_back() {
        let start = Sim::new(host()).state;
        let mut sim = bridged(start.clone());
        sim.state.ipv6_disabled.push("eth1".into());
        let plan = plan_unbridge(&sim.state, None, "br0").unwrap();
        assert!(
            plan.steps
                .describe()
                .contains(&"enable IPv6 on eth1".to_string()),
            "{:?}",
            plan.steps.describe()
        );
        for s in &plan.steps.steps {
            sim.apply_step(s).unwrap();
        }
        assert_eq!(differences_on_nic(&start, &sim.state), Vec::<String>::new());
        // And a restore puts back what was observed, either way.
        sim.state.ipv6_disabled.push("eth1".into());
        let steps = plan_restore(&start, &sim.state, "eth1", "br0");
        assert_eq!(steps.len(), 1, "{steps:?}");
    }

    fn differences_on_nic(before: &State, now: &State) -> Vec<String> {
        super::super::differences_on(before, now, &["eth1", "br0"])
    }

    #[test]
    fn unbridge_refuses_other_ports_and_foreign_masters() {
        let mut sim = bridged(host());
        sim.state.links.push(link(7, "vnet0", Some("tun"), Some(3)));
        let e = plan_unbridge(&sim.state, None, "br0").unwrap_err();
        assert!(e.message.contains("other ports (vnet0)"), "{}", e.message);
        let mut s = host();
        s.links.push(link(4, "br9", Some("bridge"), None));
        s.links[1].master = Some(4);
        s.links.push(link(5, "br0", Some("bridge"), None));
        let e = plan_unbridge(&s, Some("eth1"), "br0").unwrap_err();
        assert!(e.message.contains("port of br9"), "{}", e.message);
        let mut s = host();
        s.links.push(link(5, "br0", Some("veth"), None));
        assert!(plan_unbridge(&s, None, "br0").is_err());
        assert!(plan_unbridge(&host(), None, "br0")
            .unwrap()
            .steps
            .is_empty());
    }

    #[test]
    fn restore_puts_back_what_a_stack_changed() {
        // A stack made br0 with another address (a lease) and the NIC as its port.
        let before = Sim::new(multi()).state;
        let mut sim = bridged(before.clone());
        let leased = addr("br0", "10.88.1.77", 24);
        for a in sim.state.addrs.clone().iter().filter(|a| a.dev == "br0") {
            sim.apply_step(&Step::DelAddr { addr: a.clone() }).unwrap();
        }
        sim.apply_step(&Step::AddAddr { addr: leased }).unwrap();
        let steps = plan_restore(&before, &sim.state, "eth1", "br0");
        for s in &steps {
            sim.apply_step(s).unwrap();
        }
        let all = plan_live(&before, &req()).unwrap().steps.steps;
        assert_eq!(differences(&before, &sim.state, &all), Vec::<String>::new());
        assert!(plan_restore(&before, &sim.state, "eth1", "br0").is_empty());
    }

    #[test]
    fn restore_puts_back_the_nics_mtu() {
        // A stack gave the NIC the MTU of vbridge's files (`--mtu 9000`).
        let before = Sim::new(host()).state;
        let mut sim = bridged(before.clone());
        sim.apply_step(&Step::SetMtu {
            dev: "eth1".into(),
            mtu: 9000,
            previous: 1500,
        })
        .unwrap();
        let steps = plan_restore(&before, &sim.state, "eth1", "br0");
        let said: Vec<String> = steps.iter().map(crate::plan::Step::describe).collect();
        assert!(said.contains(&"set eth1 mtu 1500".to_string()), "{said:?}");
        for s in &steps {
            sim.apply_step(s).unwrap();
        }
        assert_eq!(sim.state.link("eth1").unwrap().mtu, 1500);
        assert!(plan_restore(&before, &sim.state, "eth1", "br0").is_empty());
    }
}
