//! Read-only facts about interfaces from /sys/class/net: what the doctor and the host
//! commands check before they change anything. Every function answers for the caller's
//! network namespace (sysfs is per namespace when mounted there, as `ip netns exec` does).

use std::path::{Path, PathBuf};

fn base() -> PathBuf {
    PathBuf::from("/sys/class/net")
}

fn attr(iface: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(base().join(iface).join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The interface exists.
pub fn exists(iface: &str) -> bool {
    !iface.is_empty() && !iface.contains('/') && base().join(iface).exists()
}

/// The interface is a Linux bridge.
pub fn is_bridge(iface: &str) -> bool {
    exists(iface) && base().join(iface).join("bridge").is_dir()
}

/// The interface is wireless (cannot be a bridge port in station mode).
pub fn is_wireless(iface: &str) -> bool {
    exists(iface)
        && (base().join(iface).join("wireless").exists()
            || base().join(iface).join("phy80211").exists())
}

/// The interface is a TUN or TAP device.
pub fn is_tun(iface: &str) -> bool {
    exists(iface) && base().join(iface).join("tun_flags").exists()
}

/// The TUN/TAP flags (IFF_TUN = 0x1, IFF_TAP = 0x2, ...), when it is one.
pub fn tun_flags(iface: &str) -> Option<u32> {
    let s = attr(iface, "tun_flags")?;
    u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// The uid that owns a TUN/TAP device (None when unset or not a TAP).
pub fn tun_owner(iface: &str) -> Option<u32> {
    attr(iface, "owner")?
        .parse::<i64>()
        .ok()
        .filter(|&v| v >= 0)
        .map(|v| v as u32)
}

/// The bridge (or bond) the interface is a port of.
pub fn master(iface: &str) -> Option<String> {
    let link = std::fs::read_link(base().join(iface).join("master")).ok()?;
    link.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The interface is a bridge port (of any bridge).
pub fn is_bridge_port(iface: &str) -> bool {
    exists(iface) && base().join(iface).join("brport").is_dir()
}

/// The ports of a bridge, sorted.
pub fn ports(bridge: &str) -> Vec<String> {
    sorted_names(&base().join(bridge).join("brif"))
}

/// The bridge's STP state (0 = off, 1 = kernel STP, 2 = user-space STP).
pub fn stp_state(bridge: &str) -> Option<u32> {
    attr(bridge, "bridge/stp_state")?.parse().ok()
}

/// The bridge's forward delay in centiseconds, as sysfs reports it (1500 = 15 s).
pub fn forward_delay(bridge: &str) -> Option<u32> {
    attr(bridge, "bridge/forward_delay")?.parse().ok()
}

/// The ARPHRD_* link type (/sys/class/net/IF/type): 1 = Ethernet, 772 = loopback.
pub fn link_type(iface: &str) -> Option<u16> {
    attr(iface, "type")?.trim().parse().ok()
}

/// The interface's MAC address, lower case.
pub fn mac(iface: &str) -> Option<String> {
    attr(iface, "address")
}

/// "up", "down", "lowerlayerdown", ... as the kernel reports it.
pub fn operstate(iface: &str) -> Option<String> {
    attr(iface, "operstate")
}

/// The administrative up flag (IFF_UP in `flags`).
pub fn is_up(iface: &str) -> bool {
    attr(iface, "flags")
        .and_then(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .is_some_and(|f| f & 1 != 0)
}

/// The interface's MTU in bytes.
pub fn mtu(iface: &str) -> Option<u32> {
    attr(iface, "mtu")?.parse().ok()
}

/// How the MAC address was assigned (0 permanent, 1 random, 2 stolen, 3 set by user space).
/// A bridge whose MAC was not set follows its ports' MACs, so it can change under DHCP.
pub fn addr_assign_type(iface: &str) -> Option<u32> {
    attr(iface, "addr_assign_type")?.parse().ok()
}

/// The interface names of this namespace, sorted.
pub fn interfaces() -> Vec<String> {
    sorted_names(&base())
}

/// The names in a directory, sorted; none if it cannot be read.
fn sorted_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_facts() {
        // lo exists in every namespace, is no bridge, no port, not wireless.
        assert!(exists("lo"));
        assert!(!is_bridge("lo"));
        assert!(!is_bridge_port("lo"));
        assert!(!is_wireless("lo"));
        assert!(!is_tun("lo"));
        assert!(master("lo").is_none());
        assert!(!exists("no-such-if0"));
        assert!(!exists("../lo"));
    }
}
