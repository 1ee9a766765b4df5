//! Host-side address input: a CIDR for the bridge, a plain IP for a gateway, DNS server or
//! probe target, checked to be usable host addresses.

use crate::error::{Error, Result};
use std::net::IpAddr;

/// Parse "10.0.0.2/24" or "2001:db8::2/64".
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8)> {
    let bad = |why: &str| {
        Error::invalid(format!("{s:?} is not a valid address: {why}"))
            .with_hint("write it as ADDRESS/PREFIX, e.g. 192.168.1.10/24")
    };
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| bad("the /PREFIX is missing"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| bad("the address part does not parse"))?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the prefix length is not a number"));
    }
    let len: u8 = len
        .parse()
        .map_err(|_| bad("the prefix length is too large"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad(&format!("the prefix length is above {max}")));
    }
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(bad("it is not a unicast host address"));
    }
    Ok((ip, len))
}

/// Parse a single IP address (gateway, DNS server, probe target).
pub fn parse_ip(what: &str, s: &str) -> Result<IpAddr> {
    let ip: IpAddr = s.trim().parse().map_err(|_| {
        Error::invalid(format!("{s:?} is not a valid {what} address"))
            .with_hint("write a plain IPv4 or IPv6 address, e.g. 192.168.1.1")
    })?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(Error::invalid(format!("{s} cannot be a {what} address")));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_ip_parsing() {
        assert_eq!(parse_cidr("10.0.0.2/24").unwrap().1, 24);
        assert_eq!(parse_cidr("2001:db8::2/64").unwrap().1, 64);
        for bad in [
            "10.0.0.2",
            "10.0.0.2/33",
            "10.0.0.2/",
            "10.0.0.2/x",
            "10.0.0/24",
            "0.0.0.0/0",
            "224.0.0.1/4",
            "10.0.0.2/+4",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_ip("gateway", "10.0.0.1").is_ok());
        for bad in ["", "10.0.0.256", "abc", "0.0.0.0", "10.0.0.1/24"] {
            assert!(parse_ip("gateway", bad).is_err(), "{bad} accepted");
        }
    }
}
