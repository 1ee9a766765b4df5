//! The rtnetlink wire format: message and attribute numbers, the attribute builder and
//! parser, and decoding a link message. Pure byte work, no socket.

use crate::host::Link;
use std::net::IpAddr;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_DUMP: u16 = 0x300;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_MASTER: u16 = 10;
pub const IFLA_LINKINFO: u16 = 18;
pub const IFLA_INFO_KIND: u16 = 1;
pub const IFLA_INFO_DATA: u16 = 2;
pub const IFLA_BR_FORWARD_DELAY: u16 = 1;
pub const IFLA_BR_STP_STATE: u16 = 5;
pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_TYPE_MASK: u16 = 0x3fff;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const IFA_LABEL: u16 = 3;
pub const IFA_BROADCAST: u16 = 4;
pub const IFA_CACHEINFO: u16 = 6;
pub const IFA_FLAGS: u16 = 8;
/// ifa_cacheinfo's "forever".
pub const INFINITY_LIFE_TIME: u32 = u32::MAX;

pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_PRIORITY: u16 = 6;
pub const RTA_PREFSRC: u16 = 7;
pub const RTA_TABLE: u16 = 15;

pub const IFF_UP: u32 = 0x1;

/// An attribute builder: type-length-value records padded to 4 bytes.
#[derive(Default)]
pub struct Attrs(pub Vec<u8>);

impl Attrs {
    pub fn put(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        pad(&mut self.0);
        self
    }
    pub fn put_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }
    pub fn put_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(ty, &b)
    }
    pub fn nest(&mut self, ty: u16, inner: Attrs) -> &mut Self {
        self.put(ty | NLA_F_NESTED, &inner.0)
    }
}

pub fn pad(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

/// Parse a run of attributes into (type, payload) pairs.
pub fn parse_attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        let next = (len + 3) & !3;
        b = &b[next.min(b.len())..];
    }
    out
}

pub fn u32_of(b: &[u8]) -> u32 {
    b.get(..4)
        .map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]))
        .unwrap_or(0)
}

pub fn str_of(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

pub fn ip_of(family: u8, b: &[u8]) -> Option<IpAddr> {
    match (family as i32, b.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
        (libc::AF_INET6, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

pub fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub fn family(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// A link from an RTM_NEWLINK message (None for any other message).
pub fn link_of(ty: u16, p: &[u8]) -> Option<Link> {
    if ty != RTM_NEWLINK || p.len() < 16 {
        return None;
    }
    let arptype = u16::from_ne_bytes([p[2], p[3]]);
    let index = u32_of(&p[4..8]);
    let flags = u32_of(&p[8..12]);
    let mut link = Link {
        arptype,
        index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: flags & IFF_UP != 0,
        master: None,
        kind: None,
    };
    for (at, v) in parse_attrs(&p[16..]) {
        match at {
            IFLA_IFNAME => link.name = str_of(v),
            IFLA_ADDRESS if v.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(v);
                link.mac = Some(crate::validate::format_mac(&m));
            }
            IFLA_MTU => link.mtu = u32_of(v),
            IFLA_MASTER => {
                let m = u32_of(v);
                link.master = (m != 0).then_some(m);
            }
            IFLA_LINKINFO => {
                for (it, iv) in parse_attrs(v) {
                    if it == IFLA_INFO_KIND {
                        link.kind = Some(str_of(iv));
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

pub fn ifinfomsg(family: u8, index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![family, 0, 0, 0];
    b.extend_from_slice(&index.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut a = Attrs::default();
        a.put_str(IFLA_IFNAME, "br0").put_u32(IFLA_MTU, 1500);
        let mut inner = Attrs::default();
        inner.put_str(IFLA_INFO_KIND, "bridge");
        a.nest(IFLA_LINKINFO, inner);
        assert_eq!(a.0.len() % 4, 0);
        let parsed = parse_attrs(&a.0);
        assert_eq!(parsed.len(), 3);
        assert_eq!(str_of(parsed[0].1), "br0");
        assert_eq!(u32_of(parsed[1].1), 1500);
        assert_eq!(parsed[2].0, IFLA_LINKINFO);
        assert_eq!(str_of(parse_attrs(parsed[2].1)[0].1), "bridge");
    }
}
