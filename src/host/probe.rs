//! Reachability probe without a `ping` binary: ICMP or ICMPv6 echo on a raw socket (root),
//! falling back to an unprivileged ICMP datagram socket (needs net.ipv4.ping_group_range);
//! and a one-shot sweep of a small subnet that makes the kernel resolve every neighbour on it.

use crate::error::{Error, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How often a request is repeated while waiting.
const RESEND: Duration = Duration::from_millis(200);

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"vbridge-probe");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

fn open(domain: libc::c_int, kind: libc::c_int, proto: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: socket() takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, proto) };
    // SAFETY: fd is fresh and owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A destination socket address for either family; `scope` is the interface index a
/// link-local IPv6 target needs.
enum Dest {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl Dest {
    fn new(ip: IpAddr, scope: u32) -> Dest {
        match ip {
            IpAddr::V4(v4) => {
                // SAFETY: sockaddr_in is plain data; zero is a valid start.
                let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sa.sin_family = libc::AF_INET as u16;
                sa.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                Dest::V4(sa)
            }
            IpAddr::V6(v6) => {
                // SAFETY: sockaddr_in6 is plain data; zero is a valid start.
                let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sa.sin6_family = libc::AF_INET6 as u16;
                sa.sin6_addr.s6_addr = v6.octets();
                sa.sin6_scope_id = scope;
                Dest::V6(sa)
            }
        }
    }

    fn raw(&self) -> (*const libc::sockaddr, u32) {
        match self {
            Dest::V4(sa) => (
                sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            ),
            Dest::V6(sa) => (
                sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            ),
        }
    }
}

/// Send ICMP echo requests to `target` until one is answered or `timeout` passes; Ok(true)
/// when it answered. `dev` scopes a link-local IPv6 target (fe80::...) to an interface.
pub fn icmp_echo(target: IpAddr, dev: Option<&str>, timeout: Duration) -> Result<bool> {
    let v6 = target.is_ipv6();
    let (fd, raw) = icmp_socket(v6)?;
    let scope = match (v6, dev) {
        (true, Some(d)) => {
            let c = std::ffi::CString::new(d).unwrap_or_default();
            // SAFETY: c is a valid NUL-terminated string.
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        }
        _ => 0,
    };
    let dest = Dest::new(target, scope);
    let id = (std::process::id() & 0xffff) as u16;
    let deadline = Instant::now() + timeout;
    let mut seq: u16 = 0;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        seq = seq.wrapping_add(1);
        let mut pkt = echo_request(id, seq);
        if v6 {
            // ICMPv6 echo request; the kernel computes the checksum over the pseudo-header.
            pkt[0] = 128;
            pkt[2] = 0;
            pkt[3] = 0;
        }
        send_to(&fd, &dest, &pkt);
        let until = (now + RESEND).min(deadline);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() || !readable(&fd, left) {
                break;
            }
            let mut buf = [0u8; 1500];
            let Some((n, from)) = recv_from(&fd, &mut buf) else {
                break;
            };
            if from != Some(target) {
                continue;
            }
            if is_our_reply(&buf, n, raw, v6, id) {
                return Ok(true);
            }
        }
    }
}

/// An ICMP(v6) socket: raw (root) or, failing that, an unprivileged datagram one. The bool
/// says raw.
fn icmp_socket(v6: bool) -> Result<(OwnedFd, bool)> {
    let (domain, proto) = if v6 {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6)
    } else {
        (libc::AF_INET, libc::IPPROTO_ICMP)
    };
    if let Some(fd) = open(domain, libc::SOCK_RAW, proto) {
        return Ok((fd, true));
    }
    if let Some(fd) = open(domain, libc::SOCK_DGRAM, proto) {
        return Ok((fd, false));
    }
    Err(Error::io(
        "cannot open an ICMP socket",
        std::io::Error::last_os_error(),
    )
    .with_hint("run as root, or allow ICMP sockets with sysctl net.ipv4.ping_group_range"))
}

/// Whether `buf[..n]` is an echo reply to us. A raw IPv4 socket hands over the IP header
/// too; IPv6 and datagram ones do not. On a raw socket the id must be ours (a datagram
/// socket's id is rewritten by the kernel, which filters replies for us).
fn is_our_reply(buf: &[u8], n: usize, raw: bool, v6: bool, id: u16) -> bool {
    let icmp = if raw && !v6 {
        let ihl = ((buf[0] & 0x0f) as usize) * 4;
        if n < ihl + 8 {
            return false;
        }
        &buf[ihl..n]
    } else {
        &buf[..n]
    };
    let reply = if v6 { 129 } else { 0 };
    icmp.len() >= 8 && icmp[0] == reply && (!raw || icmp[4..6] == id.to_be_bytes())
}

/// Send one ICMP echo request to each of `targets` at once (non-blocking, no waiting between
/// them) and return those that answered within `wait`, in the order they answered; `enough`
/// is asked after each answer and ends the wait early when it says so. Besides the answers,
/// the sweep leaves the kernel's neighbour table filled with the MAC of every address that
/// exists on the link, which is what `vbridge verify` reads next.
pub fn icmp_sweep(
    targets: &[Ipv4Addr],
    wait: Duration,
    enough: &mut dyn FnMut(Ipv4Addr) -> bool,
) -> Result<Vec<Ipv4Addr>> {
    let (fd, raw) = icmp_socket(false)?;
    let id = (std::process::id() & 0xffff) as u16 ^ 0x5a5a;
    for (i, t) in targets.iter().enumerate() {
        send_to(
            &fd,
            &Dest::new(IpAddr::V4(*t), 0),
            &echo_request(id, i as u16),
        );
    }
    let deadline = Instant::now() + wait;
    let mut answered = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() || !readable(&fd, left) {
            break;
        }
        let mut buf = [0u8; 1500];
        let Some((n, Some(IpAddr::V4(from)))) = recv_from(&fd, &mut buf) else {
            continue;
        };
        if targets.contains(&from)
            && !answered.contains(&from)
            && is_our_reply(&buf, n, raw, false, id)
        {
            answered.push(from);
            if answered.len() == targets.len() || enough(from) {
                break;
            }
        }
    }
    Ok(answered)
}

fn send_to(fd: &OwnedFd, to: &Dest, pkt: &[u8]) {
    let (sa, len) = to.raw();
    // SAFETY: pkt and the address behind sa are live for the call; sizes go with them.
    unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr() as *const libc::c_void,
            pkt.len(),
            libc::MSG_DONTWAIT,
            sa,
            len,
        );
    }
}

fn readable(fd: &OwnedFd, wait: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: p is one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, Option<IpAddr>)> {
    // SAFETY: sockaddr_storage is plain data; zero is a valid start.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as u32;
    // SAFETY: buf and ss are live and writable for the sizes given.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
            &mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut len,
        )
    };
    if n <= 0 {
        return None;
    }
    let from = match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sa =
                unsafe { &*(&ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some(IpAddr::from(sa.sin_addr.s_addr.to_ne_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sa =
                unsafe { &*(&ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(IpAddr::from(sa.sin6_addr.s6_addr))
        }
        _ => None,
    };
    Some((n as usize, from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0);
        assert_eq!(p[0], 8);
    }
}
