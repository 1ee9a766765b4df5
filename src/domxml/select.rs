//! Which `<interface>` elements a rewrite takes (by MAC, index, all, or the one that is not
//! there yet), and the refusals that name every NIC that cannot be converted.

use super::dest::Dest;
use super::{Nic, Selection};
use crate::error::{Error, Result};

const BY_HAND: &str = "choose the NIC with --mac or --index";

/// Refuse the selection when a selected NIC cannot become a bridge NIC, naming every such
/// NIC. The hint offers the others only when there are others to rewrite.
pub(super) fn refuse_unconvertible(
    nics: &[Nic],
    selected: &[usize],
    selection: &Selection,
) -> Result<()> {
    let why: Vec<String> = selected
        .iter()
        .filter_map(|&i| {
            Some(format!(
                "{} is {}",
                describe(&nics[i]),
                unconvertible(&nics[i])?
            ))
        })
        .collect();
    if why.is_empty() {
        return Ok(());
    }
    let others = nics.iter().any(|n| unconvertible(n).is_none());
    let err = Error::unsupported(why.join("; "));
    Err(match (selection, others) {
        (Selection::All, true) => err
            .context("cannot rewrite all interfaces")
            .with_hint(format!("{BY_HAND} to rewrite only the others")),
        (Selection::All, false) => err
            .context("cannot rewrite all interfaces")
            .with_hint(HOTPLUG_INSTEAD),
        (_, true) => {
            err.with_hint("choose another NIC with --mac or --index, or add one with --hotplug")
        }
        (_, false) => err.with_hint(HOTPLUG_INSTEAD),
    })
}

const HOTPLUG_INSTEAD: &str = "add a NIC on the bridge with --hotplug instead";

/// Zero-based indexes of the interfaces the selection names.
pub(super) fn select(nics: &[Nic], dest: Dest, selection: &Selection) -> Result<Vec<usize>> {
    let bridge = dest.label();
    let list = || {
        nics.iter()
            .map(|n| format!("{} ({})", n.index, n.mac.as_deref().unwrap_or("no MAC")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match selection {
        Selection::Mac(mac) => {
            let found: Vec<usize> = (0..nics.len())
                .filter(|&i| nics[i].mac.as_deref() == Some(mac.as_str()))
                .collect();
            match found.as_slice() {
                [i] => Ok(vec![*i]),
                [] if nics.is_empty() => Err(no_nics()),
                [] => Err(Error::not_found(format!(
                    "no interface has MAC {mac}; the domain's interfaces are {}",
                    list()
                ))
                .with_hint("pick one of those with --mac or --index")),
                // libvirt allows it (failover and teaming pairs share a MAC): do not guess.
                several => Err(Error::conflict(format!(
                    "{} interfaces have MAC {mac}: interfaces {}",
                    several.len(),
                    several
                        .iter()
                        .map(|i| (i + 1).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .with_hint("choose one of them with --index")),
            }
        }
        Selection::Index(index) => {
            if (1..=nics.len()).contains(index) {
                Ok(vec![index - 1])
            } else if nics.is_empty() {
                Err(no_nics())
            } else {
                Err(Error::not_found(format!(
                    "there is no interface {index}: the domain has {} ({})",
                    plural(nics.len(), "interface"),
                    list()
                ))
                .with_hint(format!("--index counts from 1 to {}", nics.len())))
            }
        }
        Selection::All => {
            if nics.is_empty() {
                Err(no_nics())
            } else {
                Ok((0..nics.len()).collect())
            }
        }
        Selection::Auto => {
            if nics.is_empty() {
                return Err(no_nics());
            }
            let candidates: Vec<usize> = (0..nics.len())
                .filter(|&i| unconvertible(&nics[i]).is_none() && !dest.holds(&nics[i]))
                .collect();
            let on_bridge: Vec<usize> = (0..nics.len()).filter(|&i| dest.holds(&nics[i])).collect();
            match candidates.len() {
                // Only NICs that cannot be converted: "no change" would hide that.
                0 if on_bridge.is_empty() => {
                    let why: Vec<String> = nics
                        .iter()
                        .filter_map(|n| Some(format!("{} is {}", describe(n), unconvertible(n)?)))
                        .collect();
                    Err(Error::unsupported(format!(
                        "no interface can be put on {bridge}: {}",
                        why.join("; ")
                    ))
                    .with_hint(HOTPLUG_INSTEAD))
                }
                // Nothing to do; report what is already there.
                0 => Ok(on_bridge),
                1 => Ok(candidates),
                n => Err(Error::conflict(format!(
                    "{n} interfaces could be put on {bridge}: {}",
                    candidates
                        .iter()
                        .map(|&i| describe(&nics[i]))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .with_hint("choose one with --mac or --index, or rewrite them all with --all")),
            }
        }
    }
}

pub(super) fn no_nics() -> Error {
    Error::not_found("the domain has no <interface>")
        .with_hint("add a NIC on the bridge with --hotplug (or `virsh attach-interface`) instead")
}

pub(super) fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// "interface 2 (52:54:00:12:34:56)".
pub(super) fn describe(nic: &Nic) -> String {
    format!(
        "interface {} ({})",
        nic.index,
        one_line(nic.mac.as_deref().unwrap_or("no MAC"))
    )
}

/// A value from the document, shown in a message that must stay on one line.
pub(super) fn one_line(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_debug().to_string()
    } else {
        s.to_string()
    }
}

/// Why a NIC of this type cannot become a bridge NIC, or None when it can.
pub(super) fn unconvertible(nic: &Nic) -> Option<String> {
    let why = match nic.kind.as_str() {
        "network" | "bridge" | "user" | "direct" | "ethernet" => return None,
        "hostdev" => "a passed-through device cannot be put on a bridge",
        "vhostuser" => "its packets go to a vhost-user process (such as OVS-DPDK), not to a host TAP device a bridge could hold",
        "vdpa" => "a vDPA device is a hardware datapath, not a TAP device a bridge could hold",
        "server" | "client" | "mcast" | "udp" => "it is a socket tunnel between QEMU processes, not a host TAP device",
        "null" => "it is a placeholder with no host side",
        "vds" => "it is a port on a VMware distributed switch",
        "" => "missing: the <interface> has no type attribute",
        _ => "not one vbridge knows how to convert",
    };
    Some(format!("type '{}': {why}", one_line(&nic.kind)))
}
