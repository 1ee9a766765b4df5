//! Kernel knobs the doctor reads and its `--fix` flips: `net.bridge.*` sysctls (per network
//! namespace: /proc/sys/net belongs to the namespace of the process that opens it) and a
//! bridge's STP settings in sysfs. Each write is one value, put back by writing the old one.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The sysctl that sends bridged IPv4 frames through iptables (br_netfilter).
pub const BRIDGE_NF_CALL_IPTABLES: &str = "net.bridge.bridge-nf-call-iptables";

fn proc_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// A sysctl's value, trimmed; None when the key does not exist (for `net.bridge.*`: the
/// br_netfilter module is not active in this namespace).
pub fn read(key: &str) -> Option<String> {
    std::fs::read_to_string(proc_path(key))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Set a sysctl in this network namespace.
pub fn write(key: &str, value: &str) -> Result<()> {
    std::fs::write(proc_path(key), value)
        .map_err(|e| Error::io(format!("cannot set {key}={value}"), e))
}

/// Write a bridge knob under /sys/class/net/BRIDGE/bridge/ (`stp_state`, `forward_delay`).
pub fn write_bridge_attr(bridge: &str, attr: &str, value: &str) -> Result<()> {
    crate::validate::interface_name(bridge)?;
    let p = Path::new("/sys/class/net")
        .join(bridge)
        .join("bridge")
        .join(attr);
    std::fs::write(&p, value).map_err(|e| Error::io(format!("cannot set {attr} of {bridge}"), e))
}

/// The text of a sysctl.d drop-in that sets `key` to `value` at boot.
pub fn dropin(key: &str, value: &str, why: &str) -> String {
    format!("# Written by `vbridge doctor --fix --persist`: {why}\n{key} = {value}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_dropin() {
        assert_eq!(
            proc_path(BRIDGE_NF_CALL_IPTABLES),
            PathBuf::from("/proc/sys/net/bridge/bridge-nf-call-iptables")
        );
        let d = dropin(BRIDGE_NF_CALL_IPTABLES, "0", "why");
        assert!(
            d.ends_with("net.bridge.bridge-nf-call-iptables = 0\n"),
            "{d}"
        );
        assert!(read("no.such.key").is_none());
    }
}
