//! Checks on names and addresses a user types, done before anything touches libvirt or the host.

use crate::error::{Error, Result};
use serde::Serialize;
use std::net::IpAddr;

/// A Linux interface name as the kernel accepts it (`dev_valid_name`): 1-15 bytes, not `.`
/// or `..`, no `/`, `:` or whitespace.
pub fn interface_name(name: &str) -> Result<()> {
    BridgeName::parse(name).map(drop)
}

/// A host bridge's name, checked once where it enters (the command line, a library call):
/// a Linux interface name as the kernel accepts it. Code that holds one needs no re-check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BridgeName(String);

impl BridgeName {
    pub fn parse(name: &str) -> Result<BridgeName> {
        let why = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > 15 {
            Some("it is longer than 15 bytes, the kernel's limit (IFNAMSIZ)")
        } else if name == "." || name == ".." {
            Some("`.` and `..` are not allowed")
        } else if name.contains('/') {
            Some("it contains '/'")
        } else if name.contains(':') {
            Some("it contains ':'")
        } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("it contains whitespace or a control character")
        } else {
            None
        };
        match why {
            Some(why) => Err(Error::invalid(format!(
                "{name:?} is not a valid interface name: {why}"
            ))
            .with_hint("use 1-15 characters such as br0, without '/', ':' or spaces")),
            None => Ok(BridgeName(name.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A unicast MAC address, checked once where it enters, kept in the lower-case form libvirt
/// prints (so comparing two is comparing strings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(String);

impl Mac {
    /// Six colon-separated hex pairs, unicast.
    pub fn parse(mac: &str) -> Result<Mac> {
        mac_bytes(mac).map(|b| Mac::from_bytes(&b))
    }

    /// The bytes are taken as they are (the caller made them unicast).
    pub fn from_bytes(b: &[u8; 6]) -> Mac {
        Mac(format_mac(b))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The string types share their text conversions: parse with `FromStr`, show and
/// serialise as the plain string.
macro_rules! text_type {
    ($t:ident) => {
        impl std::str::FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<$t> {
                $t::parse(s)
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}
text_type!(BridgeName);
text_type!(Mac);

/// A libvirt object name (network, domain) that vbridge places into XML. libvirt refuses
/// '/' in names; control characters and empty names make no sense either. Everything else
/// is escaped when rendered.
pub fn object_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("the {what} name is empty")));
    }
    if name.contains('/') || name.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{name:?} is not a valid {what} name: it contains '/' or a control character"
        )));
    }
    Ok(())
}

/// Parse a unicast MAC address written as six colon-separated hex pairs; returns it in the
/// lower-case form libvirt prints.
pub fn mac(mac: &str) -> Result<String> {
    Mac::parse(mac).map(Mac::into_string)
}

/// [`mac`] as the six bytes, for netlink.
pub fn mac_bytes(mac: &str) -> Result<[u8; 6]> {
    let bad = || {
        Error::invalid(format!("{mac:?} is not a valid MAC address"))
            .with_hint("write it as six hex pairs separated by ':', e.g. 52:54:00:12:34:56")
    };
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut bytes = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        bytes[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if bytes[0] & 1 == 1 {
        return Err(Error::invalid(format!(
            "{mac:?} is a multicast MAC address; a NIC needs a unicast one"
        ))
        .with_hint("the lowest bit of the first byte must be 0, e.g. 52:54:00:..."));
    }
    Ok(bytes)
}

/// 00:00:00:00:00:00, what a link without an Ethernet address (tun, wireguard) reports.
pub fn is_zero_mac(mac: &str) -> bool {
    mac_bytes(mac).is_ok_and(|b| b == [0; 6])
}

/// A gateway must be of the address's IP version.
pub fn same_ip_version(gateway: Option<IpAddr>, address: Option<(IpAddr, u8)>) -> Result<()> {
    match (gateway, address) {
        (Some(g), Some((a, _))) if g.is_ipv4() != a.is_ipv4() => Err(Error::invalid(format!(
            "the gateway {g} and the address {a} are of different IP versions"
        ))),
        _ => Ok(()),
    }
}

/// A NIC's MTU, checked once where it enters: 68 (the IPv4 minimum) to 65535 (the largest
/// an IP packet can be; libvirt and the kernel refuse more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Mtu(u32);

impl Mtu {
    pub const MIN: u32 = 68;
    pub const MAX: u32 = 65535;

    pub fn new(mtu: u32) -> Result<Mtu> {
        if (Mtu::MIN..=Mtu::MAX).contains(&mtu) {
            Ok(Mtu(mtu))
        } else {
            Err(Error::invalid(format!(
                "MTU {mtu} is out of range: it must be {} to {}",
                Mtu::MIN,
                Mtu::MAX
            ))
            .with_hint("1500 is Ethernet's usual MTU, 9000 a jumbo-frame LAN's"))
        }
    }

    pub fn parse(text: &str) -> Result<Mtu> {
        let n: u32 = text.trim().parse().map_err(|_| {
            Error::invalid(format!("MTU {text:?} is not a number"))
                .with_hint("give it in bytes, e.g. --mtu 9000")
        })?;
        Mtu::new(n)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Mtu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The number of queue pairs of a virtio NIC (`<driver queues='N'/>`): at least 1. Whether
/// the VM has enough vCPUs for them is checked against its definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Queues(u32);

impl Queues {
    /// virtio-net's limit on queue pairs in QEMU.
    pub const MAX: u32 = 256;

    pub fn new(n: u32) -> Result<Queues> {
        if n == 0 {
            Err(Error::invalid("--queues 0: a NIC needs at least one queue")
                .with_hint("use one queue per vCPU, e.g. --queues 4 on a 4-vCPU VM"))
        } else if n > Queues::MAX {
            Err(Error::invalid(format!(
                "--queues {n}: virtio-net has at most {} queues",
                Queues::MAX
            )))
        } else {
            Ok(Queues(n))
        }
    }

    pub fn parse(text: &str) -> Result<Queues> {
        let n: u32 = text.trim().parse().map_err(|_| {
            Error::invalid(format!("queues {text:?} is not a number"))
                .with_hint("give a count, e.g. --queues 4")
        })?;
        Queues::new(n)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a macvtap NIC (`type='direct'`) shares its host NIC (`<source mode>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectMode {
    /// Guests on the same NIC talk to each other inside the host; the usual choice.
    Bridge,
    /// Every frame goes out to the switch (which must reflect it: 802.1Qbg).
    Vepa,
    /// Like vepa, but guests on the NIC never reach each other.
    Private,
    /// The NIC is given to one guest alone.
    Passthrough,
}

impl DirectMode {
    pub fn parse(text: &str) -> Result<DirectMode> {
        match text {
            "bridge" => Ok(DirectMode::Bridge),
            "vepa" => Ok(DirectMode::Vepa),
            "private" => Ok(DirectMode::Private),
            "passthrough" => Ok(DirectMode::Passthrough),
            _ => Err(Error::invalid(format!(
                "unknown macvtap mode {text:?}: use bridge, vepa, private or passthrough"
            ))
            .with_hint("bridge is the usual choice")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DirectMode::Bridge => "bridge",
            DirectMode::Vepa => "vepa",
            DirectMode::Private => "private",
            DirectMode::Passthrough => "passthrough",
        }
    }
}

impl std::fmt::Display for DirectMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub fn format_mac(b: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        for ok in ["br0-network", "my net", "ünï", ".hidden", "a&b<c>"] {
            object_name("network", ok).unwrap();
        }
        for (bad, needle) in [
            ("", "the network name is empty"),
            ("a/b", "contains '/'"),
            ("a\nb", "control character"),
            ("tab\there", "control character"),
        ] {
            let e = object_name("network", bad).unwrap_err();
            assert_eq!(e.kind, crate::error::ErrorKind::InvalidInput, "{bad:?}");
            assert!(e.message.contains(needle), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["br0", "a", "br-lan.100", "123456789012345"] {
            interface_name(ok).unwrap();
        }
        for bad in [
            "",
            "1234567890123456",
            "br/0",
            "br 0",
            "br:0",
            ".",
            "..",
            "br\n",
        ] {
            assert!(interface_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(mac("52:54:00:AB:cd:01").unwrap(), "52:54:00:ab:cd:01");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52-54-00-ab-cd-01",
            "zz:54:00:ab:cd:01",
            "01:00:5e:00:00:01",
            "52:54:00:ab:cd:0",
        ] {
            assert!(mac(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            mac_bytes("52:54:00:AB:cd:01").unwrap(),
            [0x52, 0x54, 0, 0xab, 0xcd, 1]
        );
        assert!(is_zero_mac("00:00:00:00:00:00"));
        assert!(!is_zero_mac("00:00:00:00:00:01"));
        assert!(!is_zero_mac(""));
    }

    #[test]
    fn typed_names_parse_once_and_read_as_strings() {
        let b: BridgeName = "br0".parse().unwrap();
        assert_eq!((b.as_str(), b.to_string()), ("br0", "br0".to_string()));
        assert_eq!(serde_json::to_value(&b).unwrap(), "br0");
        assert!("br 0".parse::<BridgeName>().is_err());
        let m = Mac::parse("52:54:00:AB:cd:01").unwrap();
        assert_eq!(m.as_str(), "52:54:00:ab:cd:01");
        assert_eq!(serde_json::to_value(&m).unwrap(), "52:54:00:ab:cd:01");
        assert!("01:00:5e:00:00:01".parse::<Mac>().is_err());
    }

    #[test]
    fn mtus_queues_and_modes() {
        assert_eq!(Mtu::parse("9000").unwrap().get(), 9000);
        Mtu::new(68).unwrap();
        Mtu::new(65535).unwrap();
        for bad in ["67", "65536", "0", "-1", "jumbo", ""] {
            let e = Mtu::parse(bad).unwrap_err();
            assert_eq!(e.kind, crate::error::ErrorKind::InvalidInput, "{bad:?}");
            assert!(!e.message.contains('\n'), "{bad:?}: one line");
        }
        assert_eq!(Queues::parse("4").unwrap().get(), 4);
        assert!(Queues::parse("0")
            .unwrap_err()
            .message
            .contains("at least one"));
        assert!(Queues::parse("257").is_err());
        assert!(Queues::parse("x").is_err());
        for m in ["bridge", "vepa", "private", "passthrough"] {
            assert_eq!(DirectMode::parse(m).unwrap().as_str(), m);
        }
        assert!(DirectMode::parse("Bridge")
            .unwrap_err()
            .message
            .contains("use bridge"));
        assert_eq!(serde_json::to_value(Mtu::new(9000).unwrap()).unwrap(), 9000);
        assert_eq!(serde_json::to_value(DirectMode::Vepa).unwrap(), "vepa");
    }

    #[test]
    fn gateway_and_address_versions() {
        let v4 = Some(("10.0.0.2".parse().unwrap(), 24));
        same_ip_version(Some("10.0.0.1".parse().unwrap()), v4).unwrap();
        same_ip_version(None, v4).unwrap();
        assert!(same_ip_version(Some("2001:db8::1".parse().unwrap()), v4).is_err());
    }
}
