//! A small synchronous rtnetlink client: the handful of link, address and route messages
//! vbridge needs, written out by hand so there is no async runtime and no crate whose API
//! shifts between versions. Everything here acts on the caller's network namespace.

mod wire;

use super::{Addr, Link, Route};
use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use wire::*;

/// One open NETLINK_ROUTE socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn errno_error(what: &str, errno: i32) -> Error {
    let os = std::io::Error::from_raw_os_error(errno);
    let kind = if errno == libc::EPERM || errno == libc::EACCES {
        crate::error::ErrorKind::Permission
    } else {
        crate::error::ErrorKind::Host
    };
    let e = Error::new(kind, format!("{what}: {os}"));
    if kind == crate::error::ErrorKind::Permission {
        e.with_hint("changing host networking needs root (CAP_NET_ADMIN): run it with sudo")
    } else {
        e
    }
}

/// A netlink error with the kernel's errno kept, so callers can tolerate EEXIST/ESRCH.
#[derive(Debug)]
pub struct NlError {
    pub errno: i32,
    pub error: Error,
}

impl From<NlError> for Error {
    fn from(e: NlError) -> Error {
        e.error
    }
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        // SAFETY: socket() takes no pointers; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(Error::io(
                "cannot open a netlink socket",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a freshly opened descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (kernel picks the port).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sa is a valid sockaddr_nl and its size is passed with it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                "cannot bind a netlink socket",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Netlink { fd, seq: 1 })
    }

    fn send(&mut self, ty: u16, flags: u16, body: &[u8]) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: msg is a live buffer of msg.len() bytes.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
            )
        };
        if n < 0 {
            return Err(Error::io(
                "netlink send failed",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(self.seq)
    }

    /// Receive messages for `seq` until the ack (request) or DONE (dump). Returns the
    /// (type, payload) of every data message.
    fn recv_all(
        &mut self,
        seq: u32,
        what: &str,
    ) -> std::result::Result<Vec<(u16, Vec<u8>)>, NlError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is a live, writable buffer of buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NlError {
                    errno: err.raw_os_error().unwrap_or(0),
                    error: Error::io("netlink receive failed", err),
                });
            }
            let mut b = &buf[..n as usize];
            while b.len() >= 16 {
                let len = u32_of(&b[0..4]) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32_of(&b[8..12]);
                if len < 16 || len > b.len() {
                    break;
                }
                let payload = &b[16..len];
                if mseq == seq {
                    match ty {
                        NLMSG_DONE => return Ok(out),
                        NLMSG_ERROR => {
                            let code = u32_of(payload) as i32;
                            if code == 0 {
                                return Ok(out);
                            }
                            return Err(NlError {
                                errno: -code,
                                error: errno_error(what, -code),
                            });
                        }
                        _ => out.push((ty, payload.to_vec())),
                    }
                }
                let next = (len + 3) & !3;
                b = &b[next.min(b.len())..];
            }
        }
    }

    fn request(
        &mut self,
        ty: u16,
        flags: u16,
        body: &[u8],
        what: &str,
    ) -> std::result::Result<(), NlError> {
        let seq = self
            .send(ty, NLM_F_REQUEST | NLM_F_ACK | flags, body)
            .map_err(|error| NlError { errno: 0, error })?;
        self.recv_all(seq, what).map(|_| ())
    }

    fn dump(&mut self, ty: u16, body: &[u8], what: &str) -> Result<Vec<(u16, Vec<u8>)>> {
        let seq = self.send(ty, NLM_F_REQUEST | NLM_F_DUMP, body)?;
        Ok(self.recv_all(seq, what)?)
    }

    /// All links of this namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let body = ifinfomsg(0, 0, 0, 0);
        let msgs = self.dump(RTM_GETLINK, &body, "cannot list links")?;
        Ok(msgs.iter().filter_map(|(ty, p)| link_of(*ty, p)).collect())
    }

    /// The index of the link named `name`: one RTM_GETLINK by IFLA_IFNAME, not a dump of
    /// the link table. A missing link is errno ENODEV, which undo steps tolerate.
    pub fn index_of(&mut self, name: &str) -> std::result::Result<u32, NlError> {
        let mut body = ifinfomsg(0, 0, 0, 0);
        let mut a = Attrs::default();
        a.put_str(IFLA_IFNAME, name);
        body.extend_from_slice(&a.0);
        let seq = self
            .send(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, &body)
            .map_err(|error| NlError { errno: 0, error })?;
        let gone = || NlError {
            errno: libc::ENODEV,
            error: Error::not_found(format!("{name} does not exist")),
        };
        let msgs = self
            .recv_all(seq, &format!("cannot look up {name}"))
            .map_err(|e| if e.errno == libc::ENODEV { gone() } else { e })?;
        msgs.iter()
            .filter_map(|(ty, p)| link_of(*ty, p))
            .find(|l| l.name == name)
            .map(|l| l.index)
            .ok_or_else(gone)
    }

    /// The links, and all addresses with their device names: what most readers of addresses
    /// need, in one call.
    pub fn addrs_named(&mut self) -> Result<(Vec<Link>, Vec<Addr>)> {
        let links = self.links()?;
        let addrs = self.addrs(&names(&links))?;
        Ok((links, addrs))
    }

    /// All addresses (IPv4 and IPv6) of this namespace.
    pub fn addrs(&mut self, names: &dyn Fn(u32) -> Option<String>) -> Result<Vec<Addr>> {
        let body = [0u8; 8];
        let msgs = self.dump(RTM_GETADDR, &body, "cannot list addresses")?;
        let now = super::boottime_ms();
        let mut out = Vec::new();
        for (ty, p) in msgs {
            if ty != RTM_NEWADDR || p.len() < 8 {
                continue;
            }
            let fam = p[0];
            let prefix = p[1];
            let mut flags = p[2] as u32;
            let scope = p[3];
            let index = u32_of(&p[4..8]);
            let (mut address, mut local, mut broadcast, mut label) = (None, None, None, None);
            let (mut valid_until_ms, mut preferred_until_ms) = (None, None);
            for (at, v) in parse_attrs(&p[8..]) {
                match at {
                    IFA_ADDRESS => address = ip_of(fam, v),
                    IFA_LOCAL => local = ip_of(fam, v),
                    IFA_BROADCAST => broadcast = ip_of(fam, v),
                    IFA_LABEL => label = Some(str_of(v)),
                    IFA_FLAGS => flags = u32_of(v),
                    // struct ifa_cacheinfo { ifa_prefered, ifa_valid, cstamp, tstamp }.
                    IFA_CACHEINFO if v.len() >= 8 => {
                        let until = |secs: u32| {
                            (secs != INFINITY_LIFE_TIME).then(|| now + secs as u64 * 1000)
                        };
                        preferred_until_ms = until(u32_of(&v[0..4]));
                        valid_until_ms = until(u32_of(&v[4..8]));
                    }
                    _ => {}
                }
            }
            let Some(ip) = local.or(address) else {
                continue;
            };
            out.push(Addr {
                dev: names(index).unwrap_or_else(|| index.to_string()),
                ip,
                prefix,
                peer: address.filter(|a| Some(*a) != local && local.is_some()),
                broadcast,
                scope,
                flags,
                label: label.filter(|l| Some(l) != names(index).as_ref()),
                valid_until_ms,
                preferred_until_ms,
            });
        }
        Ok(out)
    }

    /// All routes of the main table (both families).
    pub fn routes(&mut self, names: &dyn Fn(u32) -> Option<String>) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for fam in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            let mut body = [0u8; 12];
            body[0] = fam;
            let msgs = self.dump(RTM_GETROUTE, &body, "cannot list routes")?;
            for (ty, p) in msgs {
                if ty != RTM_NEWROUTE || p.len() < 12 {
                    continue;
                }
                let mut r = Route {
                    dev: String::new(),
                    family: p[0],
                    dst: None,
                    dst_len: p[1],
                    gateway: None,
                    table: p[4] as u32,
                    protocol: p[5],
                    scope: p[6],
                    kind: p[7],
                    metric: None,
                    prefsrc: None,
                    flags: u32_of(&p[8..12]) & crate::host::RTNH_F_ONLINK,
                };
                for (at, v) in parse_attrs(&p[12..]) {
                    match at {
                        RTA_DST => r.dst = ip_of(r.family, v),
                        RTA_GATEWAY => r.gateway = ip_of(r.family, v),
                        RTA_OIF => r.dev = names(u32_of(v)).unwrap_or_default(),
                        RTA_PRIORITY => r.metric = Some(u32_of(v)),
                        RTA_PREFSRC => r.prefsrc = ip_of(r.family, v),
                        RTA_TABLE => r.table = u32_of(v),
                        _ => {}
                    }
                }
                if r.table == libc::RT_TABLE_MAIN as u32 && !r.dev.is_empty() {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Create a bridge with STP off, forward delay 0 and (optionally) a pinned MAC.
    pub fn create_bridge(
        &mut self,
        name: &str,
        mac: Option<&str>,
    ) -> std::result::Result<(), NlError> {
        let mut a = Attrs::default();
        a.put_str(IFLA_IFNAME, name);
        if let Some(mac) = mac {
            let bytes = crate::validate::mac_bytes(mac).map_err(|error| NlError {
                errno: libc::EINVAL,
                error,
            })?;
            a.put(IFLA_ADDRESS, &bytes);
        }
        let mut data = Attrs::default();
        data.put_u32(IFLA_BR_STP_STATE, 0);
        data.put_u32(IFLA_BR_FORWARD_DELAY, 0);
        let mut info = Attrs::default();
        info.put_str(IFLA_INFO_KIND, "bridge");
        info.nest(IFLA_INFO_DATA, data);
        a.nest(IFLA_LINKINFO, info);
        let mut body = ifinfomsg(0, 0, 0, 0);
        body.extend_from_slice(&a.0);
        self.request(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            &body,
            &format!("cannot create bridge {name}"),
        )
    }

    pub fn delete_link(&mut self, index: u32, name: &str) -> std::result::Result<(), NlError> {
        let body = ifinfomsg(0, index, 0, 0);
        self.request(RTM_DELLINK, 0, &body, &format!("cannot delete {name}"))
    }

    /// Enslave a link to `master`, or release it with 0.
    pub fn set_master(
        &mut self,
        index: u32,
        master: u32,
        name: &str,
    ) -> std::result::Result<(), NlError> {
        let mut body = ifinfomsg(0, index, 0, 0);
        let mut a = Attrs::default();
        a.put_u32(IFLA_MASTER, master);
        body.extend_from_slice(&a.0);
        self.request(
            RTM_NEWLINK,
            0,
            &body,
            &format!("cannot set the master of {name}"),
        )
    }

    /// Set a link's MTU (`ip link set NAME mtu N`).
    pub fn set_mtu(
        &mut self,
        index: u32,
        mtu: u32,
        name: &str,
    ) -> std::result::Result<(), NlError> {
        let mut body = ifinfomsg(0, index, 0, 0);
        let mut a = Attrs::default();
        a.put_u32(IFLA_MTU, mtu);
        body.extend_from_slice(&a.0);
        self.request(
            RTM_NEWLINK,
            0,
            &body,
            &format!("cannot set the MTU of {name} to {mtu}"),
        )
    }

    pub fn set_up(&mut self, index: u32, up: bool, name: &str) -> std::result::Result<(), NlError> {
        let body = ifinfomsg(0, index, if up { IFF_UP } else { 0 }, IFF_UP);
        let what = format!("cannot set {name} {}", if up { "up" } else { "down" });
        self.request(RTM_NEWLINK, 0, &body, &what)
    }

    pub fn address(&mut self, add: bool, index: u32, a: &Addr) -> std::result::Result<(), NlError> {
        let mut body = vec![family(&a.ip), a.prefix, (a.flags & 0xff) as u8, a.scope];
        body.extend_from_slice(&index.to_ne_bytes());
        let mut at = Attrs::default();
        at.put(IFA_LOCAL, &ip_bytes(&a.ip));
        at.put(IFA_ADDRESS, &ip_bytes(a.peer.as_ref().unwrap_or(&a.ip)));
        if let Some(b) = &a.broadcast {
            at.put(IFA_BROADCAST, &ip_bytes(b));
        }
        if add {
            if let Some(l) = &a.label {
                at.put_str(IFA_LABEL, l);
            }
            at.put_u32(IFA_FLAGS, a.flags);
            // The remaining lifetimes, so a leased address keeps expiring when it would have
            // (and is not made permanent by the move). The kernel refuses a valid_lft of 0.
            if a.valid_until_ms.is_some() || a.preferred_until_ms.is_some() {
                let now = super::boottime_ms();
                let valid = super::secs_left(a.valid_until_ms, now).max(1);
                let preferred = super::secs_left(a.preferred_until_ms, now).min(valid);
                let mut ci = Vec::with_capacity(16);
                for v in [preferred, valid, 0, 0] {
                    ci.extend_from_slice(&v.to_ne_bytes());
                }
                at.put(IFA_CACHEINFO, &ci);
            }
        }
        body.extend_from_slice(&at.0);
        let (ty, flags, verb) = if add {
            (RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, "add")
        } else {
            (RTM_DELADDR, 0, "delete")
        };
        let what = format!("cannot {verb} address {}/{} on {}", a.ip, a.prefix, a.dev);
        self.request(ty, flags, &body, &what)
    }

    pub fn route(&mut self, add: bool, index: u32, r: &Route) -> std::result::Result<(), NlError> {
        let table = if r.table < 256 {
            r.table as u8
        } else {
            libc::RT_TABLE_UNSPEC
        };
        let mut body = vec![
            r.family, r.dst_len, 0, 0, table, r.protocol, r.scope, r.kind,
        ];
        body.extend_from_slice(&(r.flags & crate::host::RTNH_F_ONLINK).to_ne_bytes());
        let mut at = Attrs::default();
        if let Some(d) = &r.dst {
            at.put(RTA_DST, &ip_bytes(d));
        }
        if let Some(g) = &r.gateway {
            at.put(RTA_GATEWAY, &ip_bytes(g));
        }
        at.put_u32(RTA_OIF, index);
        if let Some(m) = r.metric {
            at.put_u32(RTA_PRIORITY, m);
        }
        if let Some(s) = &r.prefsrc {
            at.put(RTA_PREFSRC, &ip_bytes(s));
        }
        at.put_u32(RTA_TABLE, r.table);
        body.extend_from_slice(&at.0);
        let (ty, flags, verb) = if add {
            (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, "add")
        } else {
            (RTM_DELROUTE, 0, "delete")
        };
        let what = format!("cannot {verb} route {} on {}", r.describe(), r.dev);
        self.request(ty, flags, &body, &what)
    }
}

/// Device names by index, from a list of links (for [`Netlink::addrs`] and
/// [`Netlink::routes`]).
pub fn names(links: &[Link]) -> impl Fn(u32) -> Option<String> + '_ {
    |i| links.iter().find(|l| l.index == i).map(|l| l.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_of_asks_for_one_link() {
        // Every namespace has lo; reading needs no privilege.
        let mut nl = Netlink::open().unwrap();
        let lo = nl
            .links()
            .unwrap()
            .into_iter()
            .find(|l| l.name == "lo")
            .unwrap();
        assert_eq!(nl.index_of("lo").unwrap(), lo.index);
        let e = nl.index_of("vbridge-none0").unwrap_err();
        assert_eq!(e.errno, libc::ENODEV);
        assert!(e.error.message.contains("does not exist"), "{}", e.error);
    }
}
