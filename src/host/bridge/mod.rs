//! The host bridge's model: what was observed ([`State`]), the typed change ([`Step`],
//! one of the [`crate::plan::Step`]s) and a computed [`Plan`]. Planning is pure ([`plan`]);
//! applying and exact restoring go through the [`Net`] trait ([`apply`]).

mod apply;
#[cfg(test)]
pub(crate) mod fixtures;
mod plan;
mod settle;
mod unbridge;

pub use apply::{
    apply, apply_from, differences, differences_on, observe, observe_with, restore_differences,
    revert, rollback, Net, NetlinkNet,
};
pub use plan::{check_names, check_request, plan_live};
pub use settle::{settle, QUIET, SETTLE_MAX};
pub use unbridge::{plan_restore, plan_unbridge};

use super::{Addr, Link, Route};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub(crate) const RTPROT_KERNEL: u8 = 2;
pub(crate) const RTPROT_RA: u8 = 9;
pub(crate) const RTPROT_STATIC: u8 = 4;
pub(crate) const RTN_UNICAST: u8 = 1;
pub(crate) const RT_SCOPE_UNIVERSE: u8 = 0;
pub(crate) const RT_SCOPE_LINK: u8 = 253;
pub(crate) const RT_TABLE_MAIN: u32 = 254;

/// What was observed: the namespace's links, addresses and main-table routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
    /// Names of wireless links (from sysfs).
    #[serde(default)]
    pub wireless: Vec<String>,
    /// Names of links with IPv6 switched off (`disable_ipv6`: ifupdown2 does it to ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6_disabled: Vec<String>,
}

impl State {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
    pub(crate) fn name_of(&self, index: u32) -> Option<&str> {
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
    /// The MTU the NIC and the bridge get (`--mtu`); None leaves them as they are.
    pub mtu: Option<u32>,
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
    /// Delete a bridge being taken apart (`--remove`): unlike `DeleteLink` its inverse
    /// creates it again, with its MAC, so a remove rolls back.
    DeleteBridge {
        name: String,
        mac: Option<String>,
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
    /// Switch IPv6 on or off on a link (`disable_ipv6`).
    SetIpv6 {
        dev: String,
        enabled: bool,
    },
    /// `ip link set DEV mtu MTU`; `previous` is the MTU it had.
    SetMtu {
        dev: String,
        mtu: u32,
        previous: u32,
    },
}

impl crate::plan::Step for Step {
    fn describe(&self) -> String {
        match self {
            Step::CreateBridge { name, mac } => match mac {
                Some(m) => format!("create bridge {name} (mac {m}, stp off, forward delay 0)"),
                None => format!("create bridge {name} (stp off, forward delay 0)"),
            },
            Step::DeleteLink { name } => format!("delete {name}"),
            Step::DeleteBridge { name, .. } => format!("delete bridge {name}"),
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
            Step::SetIpv6 { dev, enabled } => format!(
                "{} IPv6 on {dev}",
                if *enabled { "enable" } else { "disable" }
            ),
            Step::SetMtu { dev, mtu, .. } => format!("set {dev} mtu {mtu}"),
        }
    }

    /// Every step has one: a pending undo list is made of them.
    fn inverse(&self) -> Option<Step> {
        Some(match self {
            Step::CreateBridge { name, .. } => Step::DeleteLink { name: name.clone() },
            // Deleting is never planned forward; its inverse is itself (a no-op once gone).
            Step::DeleteLink { name } => Step::DeleteLink { name: name.clone() },
            Step::DeleteBridge { name, mac } => Step::CreateBridge {
                name: name.clone(),
                mac: mac.clone(),
            },
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
            Step::SetIpv6 { dev, enabled } => Step::SetIpv6 {
                dev: dev.clone(),
                enabled: !enabled,
            },
            Step::SetMtu { dev, mtu, previous } => Step::SetMtu {
                dev: dev.clone(),
                mtu: *previous,
                previous: *mtu,
            },
        })
    }
}

/// The steps that undo `steps`, in reverse order.
pub fn undo_steps(steps: &[Step]) -> Vec<Step> {
    crate::plan::Plan::new(steps.to_vec()).undo()
}

/// A computed change: the steps and what the bridge ends up with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub steps: crate::plan::Plan<Step>,
    pub addresses: Vec<Addr>,
    pub routes: Vec<Route>,
    /// The address to probe after applying (the default gateway), if any.
    pub probe: Option<IpAddr>,
}

/// Addresses worth moving: not link-local (the kernel makes those per device).
pub(crate) fn movable_addr(a: &Addr) -> bool {
    a.scope != RT_SCOPE_LINK
}

/// Routes worth moving: the ones the kernel does not derive from addresses or RAs.
pub(crate) fn movable_route(r: &Route) -> bool {
    r.table == RT_TABLE_MAIN
        && !kernel_derived(r)
        && r.protocol != RTPROT_RA
        && r.kind == RTN_UNICAST
}

/// A prefix route the kernel made for an address: `proto kernel`, no gateway, and the
/// kernel's own metric (none for IPv4, 256 for IPv6). Stacks also add routes as `proto
/// kernel` (ifupdown2 its default route, NetworkManager the prefix route of an address it
/// sets with `noprefixroute`, metric 425): those carry a gateway or their own metric, and
/// nothing derives them again once moved, so they move.
fn kernel_derived(r: &Route) -> bool {
    let kernel_metric = match r.family as i32 {
        libc::AF_INET6 => r.metric == Some(256),
        _ => matches!(r.metric, None | Some(0)),
    };
    r.protocol == RTPROT_KERNEL && r.gateway.is_none() && kernel_metric
}

/// Flags the kernel accepts back on RTM_NEWADDR; the rest (secondary, tentative,
/// permanent, ...) it derives itself.
pub(crate) const ADDR_FLAGS_SETTABLE: u32 = 0x02 | 0x10 | 0x100 | 0x200 | 0x400;
