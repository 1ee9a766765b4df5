//! Test fixtures of the host bridge: a small host, a request, and a [`Net`] that records.

use super::{LiveRequest, Net, State, Step};
use crate::error::{Error, Result};
use crate::host::netlink::NlError;
use crate::host::{Addr, Link, Route};

pub fn link(index: u32, name: &str, kind: Option<&str>, master: Option<u32>) -> Link {
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

pub fn addr(dev: &str, ip: &str, prefix: u8) -> Addr {
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

pub fn route(dev: &str, dst: Option<(&str, u8)>, gw: Option<&str>, proto: u8) -> Route {
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
        flags: 0,
    }
}

pub fn host() -> State {
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
        ipv6_disabled: vec![],
    }
}

pub fn req() -> LiveRequest {
    LiveRequest {
        nic: "eth1".into(),
        bridge: "br0".into(),
        address: None,
        gateway: None,
        mtu: None,
    }
}

/// eth1 with a primary, a secondary, a labelled secondary and a leased address of
/// another subnet, and a v6 pair.
pub fn multi() -> State {
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

/// A fake that records steps and fails the n-th one.
pub struct Recorder {
    pub state: State,
    pub done: Vec<Step>,
    pub fail_at: Option<usize>,
}

impl Recorder {
    /// A recorder of the host from `host()`, failing the step at `fail_at` if given.
    pub fn new(fail_at: Option<usize>) -> Recorder {
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

/// A small simulated kernel: applies steps to a [`State`] the way rtnetlink would (prefix
/// routes follow IPv4 addresses, a second address of a subnet is secondary, deleting a
/// link releases its ports and drops its addresses and routes).
pub struct Sim {
    pub state: State,
}

fn nl_err(errno: i32, what: &str) -> NlError {
    NlError {
        errno,
        error: Error::host(what.to_string()),
    }
}

fn subnet(a: &Addr) -> Option<(std::net::Ipv4Addr, u8)> {
    match a.ip {
        std::net::IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - a.prefix as u32).unwrap_or(0);
            Some((std::net::Ipv4Addr::from(u32::from(v4) & mask), a.prefix))
        }
        _ => None,
    }
}

impl Sim {
    /// The state with the kernel's prefix route of every IPv4 address added.
    pub fn new(state: State) -> Sim {
        let mut sim = Sim { state };
        for a in sim.state.addrs.clone() {
            sim.prefix_route(&a);
        }
        sim
    }

    fn prefix_route(&mut self, a: &Addr) {
        let Some((net, len)) = subnet(a) else { return };
        if len >= 32 {
            return;
        }
        let has = self.state.routes.iter().any(|r| {
            r.dev == a.dev && r.dst == Some(net.into()) && r.dst_len == len && r.protocol == 2
        });
        if !has {
            self.state
                .routes
                .push(route(&a.dev, Some((&net.to_string(), len)), None, 2));
        }
    }

    fn index(&self, name: &str) -> std::result::Result<u32, NlError> {
        self.state
            .link(name)
            .map(|l| l.index)
            .ok_or_else(|| nl_err(libc::ENODEV, name))
    }
}

impl Net for Sim {
    fn observe(&mut self) -> Result<State> {
        Ok(self.state.clone())
    }

    fn apply_step(&mut self, step: &Step) -> std::result::Result<(), NlError> {
        match step {
            Step::CreateBridge { name, mac } => {
                let s = &mut self.state;
                if s.link(name).is_some() {
                    return Err(nl_err(libc::EEXIST, name));
                }
                let index = s.links.iter().map(|l| l.index).max().unwrap_or(0) + 1;
                let mut l = link(index, name, Some("bridge"), None);
                l.up = false;
                l.mac = mac.clone();
                s.links.push(l);
            }
            Step::DeleteLink { name } | Step::DeleteBridge { name, .. } => {
                let i = self.index(name)?;
                let s = &mut self.state;
                s.links.retain(|l| l.index != i);
                for l in &mut s.links {
                    if l.master == Some(i) {
                        l.master = None;
                    }
                }
                s.addrs.retain(|a| &a.dev != name);
                s.routes.retain(|r| &r.dev != name);
            }
            Step::SetMaster { dev, master, .. } => {
                let m = match master {
                    Some(m) => Some(self.index(m)?),
                    None => None,
                };
                self.index(dev)?;
                let s = &mut self.state;
                s.links.iter_mut().find(|l| &l.name == dev).unwrap().master = m;
            }
            Step::SetUp { dev, up } => {
                self.index(dev)?;
                let s = &mut self.state;
                s.links.iter_mut().find(|l| &l.name == dev).unwrap().up = *up;
            }
            Step::AddAddr { addr } => {
                self.index(&addr.dev)?;
                let s = &mut self.state;
                if s.addrs_of(&addr.dev).any(|a| a.ip == addr.ip) {
                    return Err(nl_err(libc::EEXIST, "address exists"));
                }
                let mut a = addr.clone();
                a.flags &= super::ADDR_FLAGS_SETTABLE;
                if a.valid_until_ms.is_none() {
                    a.flags |= 0x80;
                }
                if subnet(&a).is_some()
                    && s.addrs_of(&a.dev)
                        .any(|x| subnet(x) == subnet(&a) && x.flags & 0x01 == 0)
                {
                    a.flags |= 0x01;
                }
                if a.ip.is_ipv6() {
                    // The kernel lists the newest IPv6 address first.
                    let at = s
                        .addrs
                        .iter()
                        .position(|x| x.dev == a.dev && x.ip.is_ipv6())
                        .unwrap_or(s.addrs.len());
                    s.addrs.insert(at, a.clone());
                } else {
                    s.addrs.push(a.clone());
                }
                // A dump lists every IPv4 address before the IPv6 ones.
                s.addrs.sort_by_key(|x| x.ip.is_ipv6());
                self.prefix_route(&a);
            }
            Step::DelAddr { addr } => {
                let s = &mut self.state;
                let Some(i) = s
                    .addrs
                    .iter()
                    .position(|a| a.dev == addr.dev && a.ip == addr.ip)
                else {
                    return Err(nl_err(libc::EADDRNOTAVAIL, "no such address"));
                };
                let gone = s.addrs.remove(i);
                if let Some(net) = subnet(&gone) {
                    if !s.addrs_of(&gone.dev).any(|x| subnet(x) == Some(net)) {
                        s.routes.retain(|r| {
                            !(r.dev == gone.dev
                                && r.protocol == 2
                                && r.dst == Some(net.0.into())
                                && r.dst_len == net.1)
                        });
                    }
                }
            }
            Step::AddRoute { route } => {
                self.index(&route.dev)?;
                let s = &mut self.state;
                if s.routes
                    .iter()
                    .any(|r| super::plan::same_route(r, route) && r.dev == route.dev)
                {
                    return Err(nl_err(libc::EEXIST, "route exists"));
                }
                s.routes.push(route.clone());
            }
            Step::SetMtu { dev, mtu, .. } => {
                let i = self.index(dev)?;
                for l in &mut self.state.links {
                    if l.index == i {
                        l.mtu = *mtu;
                    }
                }
            }
            Step::SetIpv6 { dev, enabled } => {
                self.index(dev)?;
                let s = &mut self.state;
                s.ipv6_disabled.retain(|d| d != dev);
                if !enabled {
                    s.ipv6_disabled.push(dev.clone());
                }
            }
            Step::DelRoute { route } => {
                let s = &mut self.state;
                let Some(i) = s
                    .routes
                    .iter()
                    .position(|r| super::plan::same_route(r, route) && r.dev == route.dev)
                else {
                    return Err(nl_err(libc::ESRCH, "no such route"));
                };
                s.routes.remove(i);
            }
        }
        Ok(())
    }
}
