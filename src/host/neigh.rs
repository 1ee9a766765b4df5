//! The IPv4 neighbour (ARP) table of the caller's network namespace, from /proc/net/arp:
//! which MAC answered for which address on which device.

use crate::error::{Error, Result};
use serde::Serialize;
use std::net::Ipv4Addr;

/// ATF_COM: the entry is resolved (incomplete and failed entries lack it).
const ATF_COM: u32 = 0x2;

/// One resolved neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    /// Lower case, colon separated.
    pub mac: String,
    pub dev: String,
}

/// The resolved entries of this namespace's IPv4 neighbour table.
pub fn ipv4() -> Result<Vec<Neighbour>> {
    let text = std::fs::read_to_string("/proc/net/arp")
        .map_err(|e| Error::io("cannot read the neighbour table /proc/net/arp", e))?;
    Ok(parse_proc_arp(&text))
}

/// Parse /proc/net/arp ("IP address  HW type  Flags  HW address  Mask  Device"), keeping
/// only resolved entries. Pure.
pub fn parse_proc_arp(text: &str) -> Vec<Neighbour> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
            let mac = f[3].to_ascii_lowercase();
            if flags & ATF_COM == 0 || mac == "00:00:00:00:00:00" {
                return None;
            }
            Some(Neighbour {
                ip: f[0].parse().ok()?,
                mac,
                dev: f[5].to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_entries_only() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.77.3.101      0x1         0x2         52:54:00:AB:cd:01     *        br0\n\
                 10.77.3.102      0x1         0x0         00:00:00:00:00:00     *        br0\n\
                 10.77.3.1        0x1         0x2         aa:bb:cc:dd:ee:ff     *        br0\n\
                 garbage\n";
        let n = parse_proc_arp(t);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].ip, Ipv4Addr::new(10, 77, 3, 101));
        assert_eq!(n[0].mac, "52:54:00:ab:cd:01");
        assert_eq!(n[0].dev, "br0");
    }
}
