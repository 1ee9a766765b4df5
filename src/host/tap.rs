//! Persistent TAP devices on a bridge: what `ip tuntap add NAME mode tap; ip link set NAME
//! master BR up` does, with the TUN ioctls and rtnetlink. Idempotent both ways.

use super::netlink::{Netlink, NlError};
use super::sysfs;
use crate::error::{Error, Result};
use serde::Serialize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// From <linux/if_tun.h>: _IOW('T', 202..206, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_PERSIST: u32 = 0x0800;

/// struct ifreq as TUNSETIFF reads it: the name, then the flags (padded to 40 bytes).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[derive(Debug, Clone, Serialize)]
pub struct TapReport {
    pub name: String,
    pub bridge: Option<String>,
    pub owner: Option<u32>,
    pub changed: bool,
    /// What was done, in words.
    pub actions: Vec<String>,
}

/// Resolve a user name or numeric uid.
pub fn resolve_user(user: &str) -> Result<u32> {
    if !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit()) {
        // (uid_t)-1 means "no owner" to the kernel, so it cannot name a user.
        return match user.parse::<u32>() {
            Ok(uid) if uid != u32::MAX => Ok(uid),
            _ => Err(Error::invalid(format!(
                "uid {user} is out of range: a uid is 0 to {}",
                u32::MAX - 1
            ))
            .with_hint("give a user name or a uid that exists (`id -u USER`)")),
        };
    }
    let c = std::ffi::CString::new(user)
        .map_err(|_| Error::invalid(format!("{user:?} is not a valid user name")))?;
    // SAFETY: c is a valid NUL-terminated string; getpwnam returns NULL or a pointer to
    // static storage that we read once, right away, before any other passwd call.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(Error::not_found(format!("there is no user {user:?}"))
            .with_hint("name an existing user or give a numeric uid"));
    }
    // SAFETY: pw is non-null and points to a valid passwd record (see above).
    Ok(unsafe { (*pw).pw_uid })
}

fn ioctl_err(what: String) -> Error {
    let e = std::io::Error::last_os_error();
    let hint = if e.raw_os_error() == Some(libc::EPERM) {
        "creating TAP devices needs root (CAP_NET_ADMIN)"
    } else {
        "check that /dev/net/tun exists (modprobe tun)"
    };
    Error::io(what, e).with_hint(hint)
}

/// Attach to (or create) the TAP `name` and set persist and owner.
fn tun_setup(name: &str, owner: Option<u32>, persist: bool) -> Result<()> {
    // SAFETY: the path is a valid C string literal; the result is checked.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(ioctl_err("cannot open /dev/net/tun".into()));
    }
    // SAFETY: fd is fresh and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    for (i, b) in name.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
        req.name[i] = b as libc::c_char;
    }
    // SAFETY: req is a live, properly laid out ifreq for TUNSETIFF to read and write.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) } < 0 {
        return Err(ioctl_err(format!("cannot create TAP {name}")));
    }
    if let Some(uid) = owner {
        // SAFETY: TUNSETOWNER takes the uid by value; fd is a TUN fd attached above.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOWNER as _, uid as libc::c_ulong) } < 0 {
            return Err(ioctl_err(format!("cannot set the owner of {name}")));
        }
    }
    // SAFETY: TUNSETPERSIST takes an int by value; fd is a TUN fd attached above.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST as _, persist as libc::c_ulong) } < 0 {
        return Err(ioctl_err(format!("cannot make {name} persistent")));
    }
    Ok(())
}

fn refuse_non_tap(name: &str) -> Result<()> {
    if sysfs::exists(name) && sysfs::tun_flags(name).is_none_or(|f| f & IFF_TAP as u32 == 0) {
        return Err(
            Error::conflict(format!("{name} exists and is not a TAP device"))
                .with_hint("choose another name for the TAP"),
        );
    }
    Ok(())
}

/// Create a persistent TAP on `bridge`, up. Existing TAPs are brought to that state.
pub fn add(name: &str, bridge: &str, owner: Option<&str>, dry_run: bool) -> Result<TapReport> {
    crate::validate::interface_name(name)?;
    crate::validate::interface_name(bridge)?;
    refuse_non_tap(name)?;
    if !sysfs::is_bridge(bridge) {
        let what = if sysfs::exists(bridge) {
            "is not a bridge"
        } else {
            "does not exist"
        };
        return Err(Error::not_found(format!("{bridge} {what}"))
            .with_hint("create the bridge first, see `vbridge host-bridge`"));
    }
    let uid = owner.map(resolve_user).transpose()?;
    let mut actions = Vec::new();
    let exists = sysfs::exists(name);
    if !exists {
        actions.push(format!("create persistent TAP {name}"));
    }
    if let Some(u) = uid {
        if !exists || sysfs::tun_owner(name) != Some(u) {
            actions.push(format!("set owner of {name} to uid {u}"));
        }
    }
    let need_setup = !actions.is_empty();
    if sysfs::master(name).as_deref() != Some(bridge) {
        actions.push(format!("set {name} master {bridge}"));
    }
    if !exists || !sysfs::is_up(name) {
        actions.push(format!("set {name} up"));
    }
    if !dry_run && !actions.is_empty() {
        if need_setup {
            tun_setup(name, uid, true)?;
        }
        let mut nl = Netlink::open()?;
        let vanished = |e: NlError| match e.errno {
            libc::ENODEV => Error::host(format!("{name} or {bridge} vanished while being set up")),
            _ => e.error,
        };
        let t = nl.index_of(name).map_err(vanished)?;
        let b = nl.index_of(bridge).map_err(vanished)?;
        nl.set_master(t, b, name)?;
        nl.set_up(t, true, name)?;
    }
    Ok(TapReport {
        name: name.into(),
        bridge: Some(bridge.into()),
        owner: uid.or_else(|| sysfs::tun_owner(name)),
        changed: !actions.is_empty(),
        actions,
    })
}

/// Pids of processes with `name` open as a TUN/TAP file (their fdinfo says `iff: NAME`).
/// Best effort: /proc entries that vanish or cannot be read are skipped. The name is per
/// namespace, so a TAP of that name in another namespace counts too: a refusal, not a harm.
pub fn holders(name: &str) -> Vec<u32> {
    let want = format!("iff:\t{name}");
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        let held = fds
            .flatten()
            .any(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.lines().any(|l| l == want)));
        if held {
            out.push(pid);
        }
    }
    out
}

/// Delete a TAP; a missing one is success with no change. Refuses, unless `force`, a TAP
/// that is not persistent or that a process holds: that is a running VM's (libvirt's vnetX)
/// and deleting it cuts the guest off.
pub fn del(name: &str, force: bool, dry_run: bool) -> Result<TapReport> {
    crate::validate::interface_name(name)?;
    refuse_non_tap(name)?;
    if sysfs::exists(name) && !force {
        let persistent = sysfs::tun_flags(name).is_some_and(|f| f & IFF_PERSIST != 0);
        let pids = holders(name);
        if !persistent || !pids.is_empty() {
            let why = match (persistent, pids.is_empty()) {
                (false, true) => {
                    "it is not persistent: a process created it and owns it".to_string()
                }
                (_, false) => format!(
                    "process {} holds it open",
                    pids.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => unreachable!(),
            };
            return Err(Error::conflict(format!(
                "{name} is in use, {why} (a running VM's TAP looks like this)"
            ))
            .with_hint(format!(
                "stop the VM or process first; `{}` deletes it anyway and cuts that process off",
                crate::shell::join(["vbridge", "tap", "del", name, "--force"])
            )));
        }
    }
    let mut actions = Vec::new();
    if sysfs::exists(name) {
        actions.push(format!("delete TAP {name}"));
        if !dry_run {
            let mut nl = Netlink::open()?;
            match nl.index_of(name) {
                Ok(i) => nl.delete_link(i, name)?,
                // Gone meanwhile: nothing left to delete.
                Err(e) if e.errno == libc::ENODEV => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(TapReport {
        name: name.into(),
        bridge: None,
        owner: None,
        changed: !actions.is_empty(),
        actions,
    })
}
