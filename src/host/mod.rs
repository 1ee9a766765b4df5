//! Host adapters: sysfs reads, netlink writes, sysctl, the firewall, probes, neighbours,
//! netplan rendering, TAP ioctls, running host programs, and the host bridge's model
//! (observe, plan, apply with exact restore). The commands (`host-bridge`, `tap`, `doctor`,
//! `verify`) sit one floor up and use these.
//!
//! The bridge follows plan-then-apply: [`bridge::observe`] reads the state,
//! [`bridge::plan_live`] computes the [`bridge::Step`]s (pure), and [`bridge::apply`] runs
//! them through the [`bridge::Net`] trait, whose real implementation speaks rtnetlink.

pub mod backends;
pub mod bridge;
pub mod cidr;
pub mod firewall;
pub mod neigh;
pub mod netlink;
pub mod netplan;
pub mod nft;
pub mod probe;
mod program;
pub mod sysctl;
pub mod sysfs;
pub mod tun;
pub mod verdict;

pub use program::{program_output, run_program, run_program_with_input};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One network interface as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<String>,
    pub mtu: u32,
    pub up: bool,
    /// Index of the bridge (or bond) this link is a port of.
    pub master: Option<u32>,
    /// The rtnetlink kind ("bridge", "veth", "tun", ...); None for plain hardware NICs.
    pub kind: Option<String>,
    /// ifi_type, the ARPHRD_* link type: 1 = Ethernet, 772 = loopback.
    #[serde(default = "ether")]
    pub arptype: u16,
}

/// ARPHRD_ETHER: the only link type a Linux bridge takes as a port.
pub const ARPHRD_ETHER: u16 = 1;

fn ether() -> u16 {
    ARPHRD_ETHER
}

/// One interface address, with what is needed to put it back exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr {
    pub dev: String,
    pub ip: IpAddr,
    pub prefix: u8,
    /// Point-to-point peer, when it differs from the local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<IpAddr>,
    pub scope: u8,
    pub flags: u32,
    /// An IPv4 label other than the device name (e.g. "eth1:0").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// When the address stops being valid (IFA_CACHEINFO valid_lft), as CLOCK_BOOTTIME
    /// milliseconds, so the remaining lifetime can be computed by any process later (the
    /// detached reverter included); None = forever. A DHCP lease is finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until_ms: Option<u64>,
    /// When it becomes deprecated (preferred_lft), the same way; None = forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_until_ms: Option<u64>,
}

impl Addr {
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }

    /// Whether the address has a finite lifetime (leased, or from an RA).
    pub fn is_dynamic(&self) -> bool {
        self.valid_until_ms.is_some()
    }
}

/// Wall-clock milliseconds since the Unix epoch (for records people read; waits use a
/// monotonic clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// CLOCK_BOOTTIME in milliseconds: monotonic, counts suspend, the clock the kernel's
/// address lifetimes run on, and the same for every process of the boot.
pub fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live, writable timespec; clock_gettime only writes it.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1000)
        .saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

/// Seconds left until `until_ms` (boottime), rounded up; u32::MAX (forever) for None.
pub fn secs_left(until_ms: Option<u64>, now_ms: u64) -> u32 {
    match until_ms {
        None => u32::MAX,
        Some(u) => u
            .saturating_sub(now_ms)
            .div_ceil(1000)
            .min(u32::MAX as u64 - 1) as u32,
    }
}

/// One route of the main table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dev: String,
    pub family: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    pub dst_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub table: u32,
    pub protocol: u8,
    pub scope: u8,
    /// rtm_type: 1 = unicast.
    pub kind: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefsrc: Option<IpAddr>,
    /// rtm_flags that are configuration, not state: RTNH_F_ONLINK (ifupdown2 adds its
    /// gateway routes `onlink`; moved without it, the route would not be the same).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flags: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// RTNH_F_ONLINK: the gateway is on the link even if no address says so.
pub const RTNH_F_ONLINK: u32 = 4;

impl Route {
    pub fn is_default(&self) -> bool {
        self.dst_len == 0
    }

    /// `ip route`-like text: "default via 10.0.0.1", "10.1.0.0/16 via 10.0.0.254".
    pub fn describe(&self) -> String {
        let mut s = match (&self.dst, self.dst_len) {
            (_, 0) => "default".to_string(),
            (Some(d), l) => format!("{d}/{l}"),
            (None, l) => format!("?/{l}"),
        };
        if let Some(g) = &self.gateway {
            s.push_str(&format!(" via {g}"));
        }
        if !self.dev.is_empty() {
            s.push_str(&format!(" dev {}", self.dev));
        }
        if let Some(m) = self.metric {
            s.push_str(&format!(" metric {m}"));
        }
        s
    }
}

/// Write `body` to `path` readable by root only (0600), atomically: into `tmp` first, synced,
/// then renamed over `path`. Creates the parent directory.
pub(crate) fn write_0600(path: &std::path::Path, tmp: &std::path::Path, body: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
    f.write_all(body)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
    std::fs::rename(tmp, path).map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}
