//! TAP devices through the TUN driver: create or attach with TUNSETIFF, set owner and
//! persistence, read who holds one open, and resolve the owner's uid.

use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// From <linux/if_tun.h>: _IOW('T', 202..206, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
pub const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
pub const IFF_PERSIST: u32 = 0x0800;

/// struct ifreq as TUNSETIFF reads it: the name, then the flags (padded to 40 bytes).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
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
pub fn tun_setup(name: &str, owner: Option<u32>, persist: bool) -> Result<()> {
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
