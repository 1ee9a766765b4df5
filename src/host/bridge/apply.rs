//! Applying host-bridge steps through rtnetlink (or a test's fake), and putting the host
//! back exactly: undo what went through, then compare links, addresses and routes with what
//! was observed before.

use super::{movable_addr, State, Step, ADDR_FLAGS_SETTABLE};
use crate::error::{Error, Result};
use crate::host::netlink::{self, Netlink, NlError};
use crate::host::{sysfs, Addr, Route};
use crate::plan::{Applier, Plan};

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
            Step::DeleteLink { name } | Step::DeleteBridge { name, .. } => {
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
            Step::SetIpv6 { dev, enabled } => {
                self.nl.index_of(dev)?;
                crate::host::sysctl::set_ipv6_disabled(dev, !enabled).map_err(|error| NlError {
                    errno: libc::EIO,
                    error,
                })
            }
            Step::SetMtu { dev, mtu, .. } => {
                let i = self.nl.index_of(dev)?;
                self.nl.set_mtu(i, *mtu, dev)
            }
        }
    }
}

/// Read links, addresses and routes through an open netlink socket.
pub fn observe_with(nl: &mut Netlink) -> Result<State> {
    let (links, addrs) = nl.addrs_named()?;
    let routes = nl.routes(&netlink::names(&links))?;
    let wireless = links
        .iter()
        .filter(|l| sysfs::is_wireless(&l.name))
        .map(|l| l.name.clone())
        .collect();
    let ipv6_disabled = links
        .iter()
        .filter(|l| crate::host::sysctl::ipv6_disabled(&l.name))
        .map(|l| l.name.clone())
        .collect();
    Ok(State {
        links,
        addrs,
        routes,
        wireless,
        ipv6_disabled,
    })
}

/// Observe the current network namespace.
pub fn observe() -> Result<State> {
    observe_with(&mut Netlink::open()?)
}

/// Run the plan. On the first failure, undo what was applied and return the error; its
/// hint says whether the host is back to exactly what it was (compared, not assumed).
pub fn apply(net: &mut dyn Net, plan: &Plan<Step>) -> Result<()> {
    let before = net.observe()?;
    apply_from(net, &before, plan)
}

/// [`apply`] with the state observed before the first step.
pub fn apply_from(net: &mut dyn Net, before: &State, plan: &Plan<Step>) -> Result<()> {
    let Err(stopped) = crate::plan::apply(&plan.steps, &mut Checked(&mut *net)) else {
        return Ok(());
    };
    // Compared over every step's devices: the failed step may have done part of it.
    let problems = undo_applied(net, before, plan, stopped.applied);
    Err(stopped.error.with_hint(if problems.is_empty() {
        "nothing was changed: the steps already made were undone, and the links, addresses and routes compare equal to before".to_string()
    } else {
        format!(
            "undoing the steps already made did not restore everything ({}); check `ip addr` and `ip route`",
            problems.join("; ")
        )
    }))
}

/// A [`Net`] as the plan's applier: each step through [`apply_checked`].
struct Checked<'a>(&'a mut dyn Net);

impl Applier<Step> for Checked<'_> {
    fn apply_step(&mut self, step: &Step) -> Result<()> {
        apply_checked(self.0, step).map_err(|e| e.error)
    }
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
            Step::CreateBridge { name, .. }
            | Step::DeleteLink { name }
            | Step::DeleteBridge { name, .. } => name,
            Step::SetMaster { dev, .. } | Step::SetUp { dev, .. } | Step::SetMtu { dev, .. } => dev,
            Step::AddAddr { addr } | Step::DelAddr { addr } => &addr.dev,
            Step::AddRoute { route } | Step::DelRoute { route } => &route.dev,
            Step::SetIpv6 { dev, .. } => dev,
        };
        if !devs.contains(&d.as_str()) {
            devs.push(d);
        }
    }
    differences_on(before, now, &devs)
}

/// [`differences`] on the devices named.
pub fn differences_on(before: &State, now: &State, devs: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for &dev in devs {
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
                let off = |s: &State| s.ipv6_disabled.iter().any(|d| d == dev);
                if off(before) != off(now) {
                    out.push(format!(
                        "IPv6 is {} on {dev}",
                        if off(now) { "off" } else { "on" }
                    ));
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
                r.kind, r.flags,
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
pub fn restore_differences(net: &mut dyn Net, before: &State, steps: &[Step]) -> Vec<String> {
    match net.observe() {
        Ok(now) => differences(before, &now, steps),
        Err(e) => vec![format!("cannot observe the result: {}", e.message)],
    }
}

/// Undo the whole plan and check the result against `before`; returns what is not as before.
pub fn rollback(net: &mut dyn Net, before: &State, plan: &Plan<Step>) -> Vec<String> {
    undo_applied(net, before, plan, plan.steps.len())
}

/// [`rollback`] when only the first `applied` steps went through (the plan stopped there):
/// undo those, then compare every device the plan touches with `before`.
fn undo_applied(
    net: &mut dyn Net,
    before: &State,
    plan: &Plan<Step>,
    applied: usize,
) -> Vec<String> {
    let mut problems: Vec<String> = revert(net, &plan.undo_of(applied))
        .into_iter()
        .map(|e| e.message)
        .collect();
    problems.extend(restore_differences(net, before, &plan.steps));
    problems
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::plan_live;
    use super::*;

    #[test]
    fn differences_see_order_flags_and_lifetimes() {
        let before = multi();
        let steps = plan_live(&before, &req()).unwrap().steps.steps;
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
    fn failed_step_undoes_the_earlier_ones() {
        let mut net = Recorder::new(Some(3));
        let plan = plan_live(&host(), &req()).unwrap();
        let err = apply(&mut net, &plan.steps).unwrap_err();
        assert!(err.message.contains("boom"));
        assert_eq!(net.done.len(), 6);
        assert_eq!(net.done[3..], plan.steps.undo_of(3)[..]);
    }
}
