//! Reachability probe without a `ping` binary: ICMP echo on a raw socket (root), falling
//! back to an unprivileged ICMP datagram socket (needs net.ipv4.ping_group_range); and a
//! one-shot sweep of a small subnet that makes the kernel resolve every neighbour on it.

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

fn open(kind: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: socket() takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
    // SAFETY: fd is fresh and owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An ICMP socket: raw (root) or, failing that, an unprivileged datagram one. The bool says raw.
fn icmp_socket() -> Result<(OwnedFd, bool)> {
    if let Some(fd) = open(libc::SOCK_RAW) {
        return Ok((fd, true));
    }
    if let Some(fd) = open(libc::SOCK_DGRAM) {
        return Ok((fd, false));
    }
    Err(Error::io(
        "cannot open an ICMP socket",
        std::io::Error::last_os_error(),
    )
    .with_hint("run as root, or allow ICMP sockets with sysctl net.ipv4.ping_group_range"))
}

/// Whether `buf[..n]` is an echo reply to us. On a raw socket the IP header comes first and
/// the id must be ours (a datagram socket's id is rewritten by the kernel and filtered for us).
fn is_our_reply(buf: &[u8], n: usize, raw: bool, id: u16) -> bool {
    let icmp = if raw {
        let ihl = ((buf[0] & 0x0f) as usize) * 4;
        if n < ihl + 8 {
            return false;
        }
        &buf[ihl..n]
    } else {
        &buf[..n]
    };
    icmp.len() >= 8 && icmp[0] == 0 && (!raw || icmp[4..6] == id.to_be_bytes())
}

/// Send ICMP echo requests to `target` until one is answered or `timeout` passes.
/// Ok(true) when it answered.
pub fn icmp_echo(target: IpAddr, timeout: Duration) -> Result<bool> {
    let IpAddr::V4(v4) = target else {
        return Err(Error::unsupported(format!(
            "cannot probe {target}: only IPv4 probes are implemented"
        ))
        .with_hint("name an IPv4 address with --probe"));
    };
    let (fd, raw) = icmp_socket()?;
    let id = (std::process::id() & 0xffff) as u16;
    let deadline = Instant::now() + timeout;
    let mut seq: u16 = 0;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        seq = seq.wrapping_add(1);
        send_to(&fd, v4, &echo_request(id, seq));
        let until = (now + RESEND).min(deadline);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() || !readable(&fd, left) {
                break;
            }
            let mut buf = [0u8; 1500];
            let Some((n, from)) = recv_from(&fd, &mut buf) else {
                break;
            };
            if from == v4 && is_our_reply(&buf, n, raw, id) {
                return Ok(true);
            }
        }
    }
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
    let (fd, raw) = icmp_socket()?;
    let id = (std::process::id() & 0xffff) as u16 ^ 0x5a5a;
    for (i, t) in targets.iter().enumerate() {
        send_to(&fd, *t, &echo_request(id, i as u16));
    }
    let deadline = Instant::now() + wait;
    let mut answered = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() || !readable(&fd, left) {
            break;
        }
        let mut buf = [0u8; 1500];
        let Some((n, from)) = recv_from(&fd, &mut buf) else {
            continue;
        };
        if targets.contains(&from) && !answered.contains(&from) && is_our_reply(&buf, n, raw, id) {
            answered.push(from);
            if answered.len() == targets.len() || enough(from) {
                break;
            }
        }
    }
    Ok(answered)
}

fn send_to(fd: &OwnedFd, to: Ipv4Addr, pkt: &[u8]) {
    // SAFETY: sockaddr_in is plain data; zero is a valid start.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_addr.s_addr = u32::from_ne_bytes(to.octets());
    // SAFETY: pkt and sa are live for the call; sizes are passed with them.
    unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr() as *const libc::c_void,
            pkt.len(),
            libc::MSG_DONTWAIT,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
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

fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, Ipv4Addr)> {
    // SAFETY: sockaddr_in is plain data; zero is a valid start.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: buf and sa are live and writable for the sizes given.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
            &mut sa as *mut libc::sockaddr_in as *mut libc::sockaddr,
            &mut len,
        )
    };
    (n > 0).then(|| (n as usize, Ipv4Addr::from(sa.sin_addr.s_addr.to_ne_bytes())))
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
