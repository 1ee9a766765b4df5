//! Kernel knobs the doctor reads and its `--fix` flips: `net.bridge.*` sysctls (per network
//! namespace: /proc/sys/net belongs to the namespace of the process that opens it) and a
//! bridge's STP settings in sysfs. Each write is one value, put back by writing the old one.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The sysctl that sends bridged IPv4 frames through iptables (br_netfilter).
pub const BRIDGE_NF_CALL_IPTABLES: &str = "net.bridge.bridge-nf-call-iptables";
/// The sysctl that sends bridged IPv6 frames through ip6tables (br_netfilter).
pub const BRIDGE_NF_CALL_IP6TABLES: &str = "net.bridge.bridge-nf-call-ip6tables";

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

/// `net.ipv6.conf.DEV.disable_ipv6` (by path: a device name may hold dots).
fn ipv6_disable_path(dev: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv6/conf")
        .join(dev)
        .join("disable_ipv6")
}

/// Whether IPv6 is switched off on `dev` (ifupdown2 switches it off on bridge ports).
pub fn ipv6_disabled(dev: &str) -> bool {
    std::fs::read_to_string(ipv6_disable_path(dev)).is_ok_and(|v| v.trim() == "1")
}

/// Switch IPv6 on or off on `dev`; switched on, the kernel makes its link-local address again.
pub fn set_ipv6_disabled(dev: &str, disabled: bool) -> Result<()> {
    crate::validate::interface_name(dev)?;
    let v = if disabled { "1" } else { "0" };
    std::fs::write(ipv6_disable_path(dev), v)
        .map_err(|e| Error::io(format!("cannot set disable_ipv6={v} on {dev}"), e))
}

/// The text of a sysctl.d drop-in that sets `key` to `value` at boot.
pub fn dropin(key: &str, value: &str, why: &str) -> String {
    format!("# Written by `vbridge doctor --fix --persist`: {why}\n{key} = {value}\n")
}

/// The file `--persist` writes in the modules-load.d directory.
pub const MODULES_LOAD_FILE: &str = "br_netfilter.conf";

/// Whether br_netfilter is a loadable module in the running kernel (so something, Docker
/// for one, loads it late, after systemd-sysctl has applied sysctl.d at boot, and a
/// `net.bridge.*` drop-in then has no key to set). `root` is `/` (tests give a temp dir),
/// `release` the kernel release (`uname -r`). False when it is built in, or unknown.
///
/// Only a loadable module has /sys/module/NAME/initstate (a built-in one has no such file,
/// and /sys/module/NAME itself only when it has parameters); an unloaded module is found by
/// its file under /lib/modules/RELEASE; modules.builtin lists what is built in.
pub fn br_netfilter_is_module(root: &Path, release: &str) -> bool {
    if root.join("sys/module/br_netfilter/initstate").exists() {
        return true;
    }
    let lib = root.join("lib/modules").join(release);
    let builtin = std::fs::read_to_string(lib.join("modules.builtin")).unwrap_or_default();
    if builtin
        .lines()
        .any(|l| l.trim().ends_with("/br_netfilter.ko"))
    {
        return false;
    }
    std::fs::read_dir(lib.join("kernel/net/bridge"))
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("br_netfilter.ko")
            })
        })
        .unwrap_or(false)
}

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    read("kernel.osrelease").unwrap_or_default()
}

/// The text of a modules-load.d file that loads `module` at boot.
pub fn modules_load(module: &str, why: &str) -> String {
    format!("# Written by `vbridge doctor --fix --persist`: {why}\n{module}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn br_netfilter_module_or_built_in() {
        let rel = "6.1.0-18-amd64";
        // Nothing known (this lab's kernel: built in, no /lib/modules): not a module.
        let root = tempfile::tempdir().unwrap();
        assert!(!br_netfilter_is_module(root.path(), rel));
        // Loaded as a module: initstate exists.
        touch(
            &root.path().join("sys/module/br_netfilter/initstate"),
            "live\n",
        );
        assert!(br_netfilter_is_module(root.path(), rel));
        // Not loaded, but shipped as a module (Debian/Ubuntu compress it).
        let root = tempfile::tempdir().unwrap();
        let ko = format!("lib/modules/{rel}/kernel/net/bridge/br_netfilter.ko.xz");
        touch(&root.path().join(ko), "");
        assert!(br_netfilter_is_module(root.path(), rel));
        assert!(!br_netfilter_is_module(root.path(), "other-release"));
        // Built in: listed in modules.builtin; /sys/module/br_netfilter without initstate.
        let root = tempfile::tempdir().unwrap();
        touch(
            &root
                .path()
                .join(format!("lib/modules/{rel}/modules.builtin")),
            "kernel/net/bridge/bridge.ko\nkernel/net/bridge/br_netfilter.ko\n",
        );
        std::fs::create_dir_all(root.path().join("sys/module/br_netfilter/parameters")).unwrap();
        assert!(!br_netfilter_is_module(root.path(), rel));
        assert_eq!(
            modules_load("br_netfilter", "why"),
            "# Written by `vbridge doctor --fix --persist`: why\nbr_netfilter\n"
        );
    }

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
