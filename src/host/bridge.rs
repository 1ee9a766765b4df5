//! The live host bridge: observe the NIC, plan the move of its addresses and routes onto a
//! new bridge (pure), apply it step by step, probe, and undo it exactly when the probe
//! fails or a confirm window runs out.

use super::netlink::{Netlink, NlError};
use super::{sysfs, Addr, Link, Route};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::{Duration, Instant};

const RTPROT_KERNEL: u8 = 2;
const RTPROT_RA: u8 = 9;
const RTPROT_STATIC: u8 = 4;
const RTN_UNICAST: u8 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_TABLE_MAIN: u32 = 254;

/// What was observed: the namespace's links, addresses and main-table routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
    /// Names of wireless links (from sysfs).
    #[serde(default)]
    pub wireless: Vec<String>,
}

impl State {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
    fn name_of(&self, index: u32) -> Option<&str> {
        self.links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.as_str())
    }
    pub fn addrs_of<'a>(&'a self, dev: &'a str) -> impl Iterator<Item = &'a Addr> + 'a {
        self.addrs.iter().filter(move |a| a.dev == dev)
    }
    pub fn routes_of<'a>(&'a self, dev: &'a str) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes.iter().filter(move |r| r.dev == dev)
    }
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRequest {
    pub nic: String,
    pub bridge: String,
    /// An address to put on the bridge besides those moved from the NIC.
    pub address: Option<(IpAddr, u8)>,
    /// A default route to add when none is moved.
    pub gateway: Option<IpAddr>,
}

/// One system change. Links are named, not indexed: a bridge's index is known only once it
/// exists, and a pending undo list must survive in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Step {
    CreateBridge {
        name: String,
        mac: Option<String>,
    },
    DeleteLink {
        name: String,
    },
    SetMaster {
        dev: String,
        master: Option<String>,
        previous: Option<String>,
    },
    SetUp {
        dev: String,
        up: bool,
    },
    AddAddr {
        addr: Addr,
    },
    DelAddr {
        addr: Addr,
    },
    AddRoute {
        route: Route,
    },
    DelRoute {
        route: Route,
    },
}

impl Step {
    /// The step that undoes this one.
    pub fn inverse(&self) -> Step {
        match self {
            Step::CreateBridge { name, .. } => Step::DeleteLink { name: name.clone() },
            // Deleting is never planned forward; its inverse is itself (a no-op once gone).
            Step::DeleteLink { name } => Step::DeleteLink { name: name.clone() },
            Step::SetMaster {
                dev,
                master,
                previous,
            } => Step::SetMaster {
                dev: dev.clone(),
                master: previous.clone(),
                previous: master.clone(),
            },
            Step::SetUp { dev, up } => Step::SetUp {
                dev: dev.clone(),
                up: !up,
            },
            Step::AddAddr { addr } => Step::DelAddr { addr: addr.clone() },
            Step::DelAddr { addr } => Step::AddAddr { addr: addr.clone() },
            Step::AddRoute { route } => Step::DelRoute {
                route: route.clone(),
            },
            Step::DelRoute { route } => Step::AddRoute {
                route: route.clone(),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Step::CreateBridge { name, mac } => match mac {
                Some(m) => format!("create bridge {name} (mac {m}, stp off, forward delay 0)"),
                None => format!("create bridge {name} (stp off, forward delay 0)"),
            },
            Step::DeleteLink { name } => format!("delete {name}"),
            Step::SetMaster {
                dev,
                master: Some(m),
                ..
            } => format!("set {dev} master {m}"),
            Step::SetMaster {
                dev, master: None, ..
            } => format!("set {dev} nomaster"),
            Step::SetUp { dev, up } => format!("set {dev} {}", if *up { "up" } else { "down" }),
            Step::AddAddr { addr } => format!("add address {} on {}", addr.cidr(), addr.dev),
            Step::DelAddr { addr } => format!("delete address {} on {}", addr.cidr(), addr.dev),
            Step::AddRoute { route } => format!("add route {}", route.describe()),
            Step::DelRoute { route } => format!("delete route {}", route.describe()),
        }
    }
}

/// The steps that undo `steps`, in reverse order.
pub fn undo_steps(steps: &[Step]) -> Vec<Step> {
    steps.iter().rev().map(Step::inverse).collect()
}

/// A computed change: the steps and what the bridge ends up with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub addresses: Vec<Addr>,
    pub routes: Vec<Route>,
    /// The address to probe after applying (the default gateway), if any.
    pub probe: Option<IpAddr>,
}

/// Addresses worth moving: not link-local (the kernel makes those per device).
fn movable_addr(a: &Addr) -> bool {
    a.scope != RT_SCOPE_LINK
}

/// Routes worth moving: the ones the kernel does not derive from addresses or RAs.
fn movable_route(r: &Route) -> bool {
    r.table == RT_TABLE_MAIN
        && r.protocol != RTPROT_KERNEL
        && r.protocol != RTPROT_RA
        && r.kind == RTN_UNICAST
}

/// Flags the kernel accepts back on RTM_NEWADDR; the rest (secondary, tentative,
/// permanent, ...) it derives itself.
const ADDR_FLAGS_SETTABLE: u32 = 0x02 | 0x10 | 0x100 | 0x200 | 0x400;

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
    if nic.arptype != super::ARPHRD_ETHER {
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
        steps,
        addresses: final_addrs,
        routes: final_routes,
        probe,
    })
}

fn family_of(ip: &IpAddr) -> u8 {
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
fn add_order<'a>(addrs: impl Iterator<Item = &'a Addr>) -> Vec<Addr> {
    let (v4, v6): (Vec<Addr>, Vec<Addr>) = addrs.cloned().partition(|a| a.ip.is_ipv4());
    v4.into_iter().chain(v6.into_iter().rev()).collect()
}

fn same_route(a: &Route, b: &Route) -> bool {
    a.family == b.family
        && a.dst == b.dst
        && a.dst_len == b.dst_len
        && a.gateway == b.gateway
        && a.metric == b.metric
}

/// The system calls the bridge logic needs; netlink in production, a recorder in tests.
pub trait Net {
    fn observe(&mut self) -> Result<State>;
    fn apply_step(&mut self, step: &Step) -> std::result::Result<(), NlError>;
}

/// The real thing: rtnetlink in the current network namespace.
pub struct NetlinkNet {
    nl: Netlink,
}

impl NetlinkNet {
    pub fn open() -> Result<NetlinkNet> {
        Ok(NetlinkNet {
            nl: Netlink::open()?,
        })
    }
}

impl Net for NetlinkNet {
    fn observe(&mut self) -> Result<State> {
        observe_with(&mut self.nl)
    }

    fn apply_step(&mut self, step: &Step) -> std::result::Result<(), NlError> {
        match step {
            Step::CreateBridge { name, mac } => self.nl.create_bridge(name, mac.as_deref()),
            Step::DeleteLink { name } => {
                let i = self.nl.index_of(name)?;
                self.nl.delete_link(i, name)
            }
            Step::SetMaster { dev, master, .. } => {
                let i = self.nl.index_of(dev)?;
                let m = match master {
                    Some(m) => self.nl.index_of(m)?,
                    None => 0,
                };
                self.nl.set_master(i, m, dev)
            }
            Step::SetUp { dev, up } => {
                let i = self.nl.index_of(dev)?;
                self.nl.set_up(i, *up, dev)
            }
            Step::AddAddr { addr } | Step::DelAddr { addr } => {
                let i = self.nl.index_of(&addr.dev)?;
                let mut a = addr.clone();
                a.flags &= ADDR_FLAGS_SETTABLE;
                self.nl.address(matches!(step, Step::AddAddr { .. }), i, &a)
            }
            Step::AddRoute { route } | Step::DelRoute { route } => {
                let i = self.nl.index_of(&route.dev)?;
                self.nl
                    .route(matches!(step, Step::AddRoute { .. }), i, route)
            }
        }
    }
}

/// Read links, addresses and routes through an open netlink socket.
pub fn observe_with(nl: &mut Netlink) -> Result<State> {
    let (links, addrs) = nl.addrs_named()?;
    let routes = nl.routes(&super::netlink::names(&links))?;
    let wireless = links
        .iter()
        .filter(|l| sysfs::is_wireless(&l.name))
        .map(|l| l.name.clone())
        .collect();
    Ok(State {
        links,
        addrs,
        routes,
        wireless,
    })
}

/// Observe the current network namespace.
pub fn observe() -> Result<State> {
    observe_with(&mut Netlink::open()?)
}

/// Run `steps` in order. On the first failure, undo what was applied and return the error;
/// its hint says whether the host is back to exactly what it was (compared, not assumed).
pub fn apply(net: &mut dyn Net, steps: &[Step]) -> Result<()> {
    let before = net.observe()?;
    apply_from(net, &before, steps)
}

/// [`apply`] with the state observed before the first step.
pub fn apply_from(net: &mut dyn Net, before: &State, steps: &[Step]) -> Result<()> {
    for (i, s) in steps.iter().enumerate() {
        if let Err(e) = apply_checked(net, s) {
            // Compared over every step's devices: the failed step may have done part of it.
            let problems = undo_applied(net, before, steps, i);
            let mut err = e.error.context(format!("step {:?}", s.describe()));
            err = err.with_hint(if problems.is_empty() {
                "nothing was changed: the steps already made were undone, and the links, addresses and routes compare equal to before".to_string()
            } else {
                format!(
                    "undoing the steps already made did not restore everything ({}); check `ip addr` and `ip route`",
                    problems.join("; ")
                )
            });
            return Err(err);
        }
    }
    Ok(())
}

/// One step, where a "not there" answer to a delete is success only if it really is gone
/// (re-observed): the kernel also says EADDRNOTAVAIL when a cascade removed it for us, and
/// we want to know when that happened to an address we still meant to move.
fn apply_checked(net: &mut dyn Net, s: &Step) -> std::result::Result<(), NlError> {
    match net.apply_step(s) {
        Err(e) if e.errno == libc::EADDRNOTAVAIL => match s {
            Step::DelAddr { addr } => match net.observe() {
                Ok(now) if !now.addrs_of(&addr.dev).any(|a| same_addr(a, addr)) => Ok(()),
                _ => Err(e),
            },
            _ => Err(e),
        },
        Err(e) if e.errno == libc::EEXIST => match s {
            Step::AddAddr { addr } => match net.observe() {
                Ok(now) if now.addrs_of(&addr.dev).any(|a| same_addr(a, addr)) => Ok(()),
                _ => Err(e),
            },
            _ => Err(e),
        },
        r => r,
    }
}

fn same_addr(a: &Addr, b: &Addr) -> bool {
    a.ip == b.ip && a.prefix == b.prefix
}

/// Run undo steps, tolerating what is already undone (gone, or already there). Returns the
/// errors that remain; empty means every step went through.
pub fn revert(net: &mut dyn Net, undo: &[Step]) -> Vec<Error> {
    let tolerated = [libc::EEXIST, libc::ESRCH, libc::ENODEV, libc::ENOENT];
    let mut problems = Vec::new();
    for s in undo {
        if let Err(e) = apply_checked(net, s) {
            let addr_step = matches!(s, Step::AddAddr { .. } | Step::DelAddr { .. });
            let checked = [libc::EEXIST, libc::EADDRNOTAVAIL].contains(&e.errno);
            // An address that is "already there" or "not there" was checked above.
            if (addr_step && checked) || !tolerated.contains(&e.errno) {
                problems.push(e.error);
            }
        }
    }
    problems
}

/// Address flags that are state rather than configuration (tentative, optimistic, DAD
/// failed, deprecated): left out when comparing.
const ADDR_FLAGS_TRANSIENT: u32 = 0x04 | 0x08 | 0x20 | 0x40;
/// Lifetimes count down in whole seconds; an exact restore is within this much.
const LIFETIME_SLACK_MS: u64 = 5_000;

/// Compare what the devices touched by `steps` look like now with `before`: links (exists,
/// master, up), addresses in order with flags and lifetimes, and routes. Returns the
/// differences in words; empty means restored exactly.
pub fn differences(before: &State, now: &State, steps: &[Step]) -> Vec<String> {
    let mut devs: Vec<&str> = Vec::new();
    for s in steps {
        let d = match s {
            Step::CreateBridge { name, .. } | Step::DeleteLink { name } => name,
            Step::SetMaster { dev, .. } | Step::SetUp { dev, .. } => dev,
            Step::AddAddr { addr } | Step::DelAddr { addr } => &addr.dev,
            Step::AddRoute { route } | Step::DelRoute { route } => &route.dev,
        };
        if !devs.contains(&d.as_str()) {
            devs.push(d);
        }
    }
    let mut out = Vec::new();
    for dev in devs {
        let (b, n) = (before.link(dev), now.link(dev));
        match (b, n) {
            (None, None) => continue,
            (None, Some(_)) => {
                out.push(format!("{dev} exists and did not before"));
                continue;
            }
            (Some(_), None) => {
                out.push(format!("{dev} is gone"));
                continue;
            }
            (Some(b), Some(n)) => {
                let bm = b.master.and_then(|m| before.name_of(m));
                let nm = n.master.and_then(|m| now.name_of(m));
                if bm != nm {
                    out.push(format!("{dev} has master {nm:?}, before {bm:?}"));
                }
                if b.up != n.up {
                    out.push(format!("{dev} is {}", if n.up { "up" } else { "down" }));
                }
            }
        }
        let key = |a: &Addr| {
            (
                a.ip,
                a.prefix,
                a.peer,
                a.broadcast,
                a.scope,
                a.flags & !ADDR_FLAGS_TRANSIENT,
                a.label.clone(),
            )
        };
        let ba: Vec<&Addr> = before.addrs_of(dev).filter(|a| movable_addr(a)).collect();
        let na: Vec<&Addr> = now.addrs_of(dev).filter(|a| movable_addr(a)).collect();
        let bk: Vec<_> = ba.iter().map(|a| key(a)).collect();
        let nk: Vec<_> = na.iter().map(|a| key(a)).collect();
        if bk != nk {
            let list = |v: &[&Addr]| v.iter().map(|a| a.cidr()).collect::<Vec<_>>().join(", ");
            out.push(format!(
                "{dev} has addresses [{}] (flags or labels may differ), before [{}]",
                list(&na),
                list(&ba)
            ));
        } else {
            let close = |x: Option<u64>, y: Option<u64>| match (x, y) {
                (None, None) => true,
                (Some(x), Some(y)) => x.abs_diff(y) <= LIFETIME_SLACK_MS,
                _ => false,
            };
            for (x, y) in ba.iter().zip(&na) {
                if !close(x.valid_until_ms, y.valid_until_ms)
                    || !close(x.preferred_until_ms, y.preferred_until_ms)
                {
                    out.push(format!(
                        "{} on {dev} has another lifetime than before",
                        x.cidr()
                    ));
                }
            }
        }
        let rkey = |r: &Route| {
            (
                r.family, r.dst, r.dst_len, r.gateway, r.metric, r.prefsrc, r.protocol, r.scope,
                r.kind,
            )
        };
        let mut br: Vec<_> = before.routes_of(dev).map(rkey).collect();
        let mut nr: Vec<_> = now.routes_of(dev).map(rkey).collect();
        br.sort();
        nr.sort();
        if br != nr {
            let missing: Vec<String> = before
                .routes_of(dev)
                .filter(|r| !nr.contains(&rkey(r)))
                .map(Route::describe)
                .collect();
            let extra: Vec<String> = now
                .routes_of(dev)
                .filter(|r| !br.contains(&rkey(r)))
                .map(Route::describe)
                .collect();
            out.push(format!(
                "routes of {dev} differ (missing [{}], extra [{}])",
                missing.join(", "),
                extra.join(", ")
            ));
        }
    }
    out
}

/// Observe now and compare with `before` (see [`differences`]).
pub(crate) fn restore_differences(
    net: &mut dyn Net,
    before: &State,
    steps: &[Step],
) -> Vec<String> {
    match net.observe() {
        Ok(now) => differences(before, &now, steps),
        Err(e) => vec![format!("cannot observe the result: {}", e.message)],
    }
}

/// Undo all of `steps` and check the result against `before`; returns what is not as before.
pub fn rollback(net: &mut dyn Net, before: &State, steps: &[Step]) -> Vec<String> {
    undo_applied(net, before, steps, steps.len())
}

/// [`rollback`] when only the first `applied` of `steps` went through: undo those, then
/// compare every device `steps` touches with `before`.
fn undo_applied(net: &mut dyn Net, before: &State, steps: &[Step], applied: usize) -> Vec<String> {
    let mut problems: Vec<String> = revert(net, &undo_steps(&steps[..applied]))
        .into_iter()
        .map(|e| e.message)
        .collect();
    problems.extend(restore_differences(net, before, steps));
    problems
}

/// How a live change ended.
#[derive(Debug, Clone, Serialize)]
pub struct LiveOutcome {
    pub plan: Plan,
    /// What was observed before the first step, to check an undo against.
    #[serde(skip)]
    pub before: State,
    pub changed: bool,
    pub probe: Option<ProbeResult>,
    pub rolled_back: bool,
    /// Time from the first step to the end of the probe.
    pub apply_ms: u64,
    /// Time the rollback took, when there was one.
    pub rollback_ms: Option<u64>,
}

impl LiveOutcome {
    /// Nothing applied: the host is as observed in `before`.
    pub fn unchanged(plan: Plan, before: State) -> LiveOutcome {
        LiveOutcome {
            plan,
            before,
            changed: false,
            probe: None,
            rolled_back: false,
            apply_ms: 0,
            rollback_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub target: IpAddr,
    pub answered: bool,
    /// Time until the first answer (or until giving up).
    pub ms: u64,
}

/// A reachability check: Ok(true) when `target` answered within `timeout`.
pub type ProbeFn<'a> = &'a mut dyn FnMut(IpAddr, Duration) -> Result<bool>;

/// Plan, apply and probe. If the probe target does not answer within `rollback_after`,
/// undo everything and report `rolled_back`. `probe_override` replaces the default gateway.
pub fn live(
    net: &mut dyn Net,
    req: &LiveRequest,
    probe_override: Option<IpAddr>,
    rollback_after: Duration,
    probe: ProbeFn<'_>,
) -> Result<LiveOutcome> {
    let state = net.observe()?;
    let plan = plan_live(&state, req)?;
    let start = Instant::now();
    if plan.steps.is_empty() {
        return Ok(LiveOutcome::unchanged(plan, state));
    }
    apply_from(net, &state, &plan.steps)?;
    let target = probe_override.or(plan.probe);
    let mut result = None;
    if let Some(t) = target {
        let p0 = Instant::now();
        let answered = match probe(t, rollback_after) {
            Ok(a) => a,
            Err(e) => {
                let problems = rollback(net, &state, &plan.steps);
                return Err(e.context("probe failed").with_hint(if problems.is_empty() {
                    "the change was rolled back; the NIC has exactly its previous addresses and routes".to_string()
                } else {
                    format!(
                        "rolling back did not restore everything ({}): check `ip addr` and `ip route`",
                        problems.join("; ")
                    )
                }));
            }
        };
        result = Some(ProbeResult {
            target: t,
            answered,
            ms: p0.elapsed().as_millis() as u64,
        });
    }
    let apply_ms = start.elapsed().as_millis() as u64;
    if result.as_ref().is_some_and(|r| !r.answered) {
        let r0 = Instant::now();
        let problems = rollback(net, &state, &plan.steps);
        if !problems.is_empty() {
            return Err(Error::host(format!(
                "the probe got no answer and rolling back did not restore everything: {}",
                problems.join("; ")
            ))
            .with_hint("restore the NIC by hand: `ip link del BRIDGE`, then re-add its address and default route"));
        }
        return Ok(LiveOutcome {
            plan,
            before: state,
            changed: false,
            probe: result,
            rolled_back: true,
            apply_ms,
            rollback_ms: Some(r0.elapsed().as_millis() as u64),
        });
    }
    Ok(LiveOutcome {
        plan,
        before: state,
        changed: true,
        probe: result,
        rolled_back: false,
        apply_ms,
        rollback_ms: None,
    })
}

/// Parse "10.0.0.2/24" or "2001:db8::2/64".
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8)> {
    let bad = |why: &str| {
        Error::invalid(format!("{s:?} is not a valid address: {why}"))
            .with_hint("write it as ADDRESS/PREFIX, e.g. 192.168.1.10/24")
    };
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| bad("the /PREFIX is missing"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| bad("the address part does not parse"))?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the prefix length is not a number"));
    }
    let len: u8 = len
        .parse()
        .map_err(|_| bad("the prefix length is too large"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad(&format!("the prefix length is above {max}")));
    }
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(bad("it is not a unicast host address"));
    }
    Ok((ip, len))
}

/// Parse a single IP address (gateway, DNS server, probe target).
pub fn parse_ip(what: &str, s: &str) -> Result<IpAddr> {
    let ip: IpAddr = s.trim().parse().map_err(|_| {
        Error::invalid(format!("{s:?} is not a valid {what} address"))
            .with_hint("write a plain IPv4 or IPv6 address, e.g. 192.168.1.1")
    })?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(Error::invalid(format!("{s} cannot be a {what} address")));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, kind: Option<&str>, master: Option<u32>) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some(format!("52:54:00:00:00:{index:02x}")),
            mtu: 1500,
            up: true,
            master,
            kind: kind.map(String::from),
            arptype: 1,
        }
    }

    fn addr(dev: &str, ip: &str, prefix: u8) -> Addr {
        Addr {
            dev: dev.into(),
            ip: ip.parse().unwrap(),
            prefix,
            peer: None,
            broadcast: None,
            scope: 0,
            flags: 0x80,
            label: None,
            valid_until_ms: None,
            preferred_until_ms: None,
        }
    }

    fn route(dev: &str, dst: Option<(&str, u8)>, gw: Option<&str>, proto: u8) -> Route {
        Route {
            dev: dev.into(),
            family: libc::AF_INET as u8,
            dst: dst.map(|d| d.0.parse().unwrap()),
            dst_len: dst.map(|d| d.1).unwrap_or(0),
            gateway: gw.map(|g| g.parse().unwrap()),
            table: 254,
            protocol: proto,
            scope: if gw.is_some() { 0 } else { 253 },
            kind: 1,
            metric: None,
            prefsrc: None,
        }
    }

    fn host() -> State {
        State {
            links: vec![
                {
                    let mut lo = link(1, "lo", None, None);
                    lo.arptype = 772;
                    lo.mac = Some("00:00:00:00:00:00".into());
                    lo
                },
                link(2, "eth1", Some("veth"), None),
            ],
            addrs: vec![addr("eth1", "10.88.1.2", 24), {
                let mut a = addr("eth1", "fe80::1", 64);
                a.scope = 253;
                a
            }],
            routes: vec![
                route("eth1", Some(("10.88.1.0", 24)), None, 2),
                route("eth1", None, Some("10.88.1.1"), 4),
                route("eth1", Some(("10.99.0.0", 16)), Some("10.88.1.254"), 4),
            ],
            wireless: vec![],
        }
    }

    fn req() -> LiveRequest {
        LiveRequest {
            nic: "eth1".into(),
            bridge: "br0".into(),
            address: None,
            gateway: None,
        }
    }

    #[test]
    fn plan_moves_addresses_and_routes() {
        let plan = plan_live(&host(), &req()).unwrap();
        let d: Vec<String> = plan.steps.iter().map(Step::describe).collect();
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
    fn undo_is_the_reverse_of_the_inverses() {
        let plan = plan_live(&host(), &req()).unwrap();
        let undo = undo_steps(&plan.steps);
        let d: Vec<String> = undo.iter().map(Step::describe).collect();
        assert_eq!(d[0], "delete route 10.99.0.0/16 via 10.88.1.254 dev br0");
        assert_eq!(d[4], "set eth1 nomaster");
        assert_eq!(d[5], "add address 10.88.1.2/24 on eth1");
        assert_eq!(d.last().unwrap(), "delete br0");
        // Undoing the undo gives the plan back, but for the bridge's creation (a deletion
        // does not remember the MAC).
        assert_eq!(undo_steps(&undo)[1..], plan.steps[1..]);
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
        let d: Vec<String> = plan.steps.iter().map(Step::describe).collect();
        assert!(
            d.contains(&"add address 10.88.1.5/24 on br0".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"add route default via 10.88.1.1 dev br0".to_string()),
            "{d:?}"
        );
        let a = plan.steps.iter().find_map(|s| match s {
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

    /// eth1 with a primary, a secondary, a labelled secondary and a leased address of
    /// another subnet, and a v6 pair.
    fn multi() -> State {
        let mut s = host();
        let mut sec = addr("eth1", "10.88.1.3", 24);
        sec.flags |= 0x01;
        let mut lab = addr("eth1", "10.88.1.4", 24);
        lab.flags |= 0x01;
        lab.label = Some("eth1:lab".into());
        let mut dynamic = addr("eth1", "10.87.1.5", 24);
        dynamic.flags = 0;
        dynamic.valid_until_ms = Some(3_000_000);
        dynamic.preferred_until_ms = Some(2_000_000);
        s.addrs.insert(1, sec);
        s.addrs.insert(2, lab);
        s.addrs.insert(3, dynamic);
        s.addrs.push(addr("eth1", "fd88::2", 64));
        s.addrs.push(addr("eth1", "fd88::3", 64));
        s
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
        let dels = deleted(&plan.steps);
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
        let undo = undo_steps(&plan.steps);
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
        let d: Vec<String> = plan.steps.iter().map(Step::describe).collect();
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
    fn differences_see_order_flags_and_lifetimes() {
        let before = multi();
        let steps = plan_live(&before, &req()).unwrap().steps;
        assert!(differences(&before, &before, &steps).is_empty());
        // Lifetimes a second apart are the same; a minute apart are not.
        let mut now = before.clone();
        now.addrs[3].valid_until_ms = Some(3_001_000);
        assert!(differences(&before, &now, &steps).is_empty());
        now.addrs[3].valid_until_ms = None;
        assert_eq!(differences(&before, &now, &steps).len(), 1);
        // A secondary that came back first (promoted) is a difference.
        let mut now = before.clone();
        now.addrs.swap(0, 1);
        now.addrs[0].flags &= !0x01;
        now.addrs[1].flags |= 0x01;
        let d = differences(&before, &now, &steps);
        assert!(d[0].contains("eth1 has addresses"), "{d:?}");
        // A secondary gone; a bridge left behind.
        let mut now = before.clone();
        now.addrs.remove(2);
        now.links.push(link(9, "br0", Some("bridge"), None));
        assert_eq!(differences(&before, &now, &steps).len(), 2);
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

    #[test]
    fn cidr_and_ip_parsing() {
        assert_eq!(parse_cidr("10.0.0.2/24").unwrap().1, 24);
        assert_eq!(parse_cidr("2001:db8::2/64").unwrap().1, 64);
        for bad in [
            "10.0.0.2",
            "10.0.0.2/33",
            "10.0.0.2/",
            "10.0.0.2/x",
            "10.0.0/24",
            "0.0.0.0/0",
            "224.0.0.1/4",
            "10.0.0.2/+4",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_ip("gateway", "10.0.0.1").is_ok());
        for bad in ["", "10.0.0.256", "abc", "0.0.0.0", "10.0.0.1/24"] {
            assert!(parse_ip("gateway", bad).is_err(), "{bad} accepted");
        }
    }

    /// A fake that records steps and fails the n-th one.
    struct Recorder {
        state: State,
        done: Vec<Step>,
        fail_at: Option<usize>,
    }

    impl Recorder {
        /// A recorder of the host from `host()`, failing the step at `fail_at` if given.
        fn new(fail_at: Option<usize>) -> Recorder {
            Recorder {
                state: host(),
                done: vec![],
                fail_at,
            }
        }
    }

    impl Net for Recorder {
        fn observe(&mut self) -> Result<State> {
            Ok(self.state.clone())
        }
        fn apply_step(&mut self, step: &Step) -> std::result::Result<(), NlError> {
            if self.fail_at == Some(self.done.len()) {
                self.fail_at = None;
                return Err(NlError {
                    errno: libc::EINVAL,
                    error: Error::host("boom"),
                });
            }
            self.done.push(step.clone());
            Ok(())
        }
    }

    #[test]
    fn failed_step_undoes_the_earlier_ones() {
        let mut net = Recorder::new(Some(3));
        let plan = plan_live(&host(), &req()).unwrap();
        let err = apply(&mut net, &plan.steps).unwrap_err();
        assert!(err.message.contains("boom"));
        assert_eq!(net.done.len(), 6);
        assert_eq!(net.done[3..], undo_steps(&plan.steps[..3])[..]);
    }

    /// `live` on a recorder of `host()` with a probe that answers as told.
    fn live_with_probe(answered: bool) -> (Recorder, LiveOutcome) {
        let mut net = Recorder::new(None);
        let mut probe = |_: IpAddr, _: Duration| Ok(answered);
        let out = live(
            &mut net,
            &req(),
            None,
            Duration::from_millis(10),
            &mut probe,
        )
        .unwrap();
        (net, out)
    }

    #[test]
    fn unanswered_probe_rolls_back() {
        let (net, out) = live_with_probe(false);
        assert!(out.rolled_back);
        assert!(!out.changed);
        let n = out.plan.steps.len();
        assert_eq!(net.done.len(), 2 * n);
        assert_eq!(net.done[n..], undo_steps(&out.plan.steps)[..]);

        let (net, out) = live_with_probe(true);
        assert!(out.changed && !out.rolled_back);
        assert_eq!(net.done, out.plan.steps);
    }
}
