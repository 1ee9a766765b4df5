//! `vbridge doctor`: name the broken link in Guest NIC -> TAP -> bridge -> uplink -> LAN and
//! fix what is safe to fix.
//!
//! Observe once ([`observe`]: one libvirt connection, each domain's XML read once, sysfs,
//! netlink, one `iptables -S`), check purely ([`check`]: an [`Observation`] in, findings
//! out), plan the fixes ([`plan`]: one [`Action`] per change, pure), apply them through
//! [`crate::plan::apply`] ([`apply`]), observe and check again, report.

mod checks;
mod fix;
mod observe;
mod paths;

pub use checks::check;
pub use fix::{apply, persist_bridge_nf_off, plan, FixOptions, SYSCTL_DROPIN, SYSCTL_DROPIN6};
pub use observe::observe;
pub use paths::paths;

use crate::domxml::DomainFacts;
use crate::error::Result;
use crate::host::firewall::Firewall;
use crate::libvirt::Conn;
pub use crate::topology::NetworkObs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How bad a finding is. Only errors make `doctor` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

/// One thing the doctor found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier (`tap-detached`, `forward-drop`, ...).
    pub id: &'static str,
    pub severity: Severity,
    /// The bridge, tap, network, VM or kernel setting it is about.
    pub subject: String,
    pub message: String,
    /// The command to run, or what `--fix` will do.
    pub fix: String,
    /// What `--fix` does about it, when it does anything.
    #[serde(skip)]
    pub action: Option<Action>,
}

/// A safe, reversible change `--fix` can make: a [`crate::plan::Step`] (see `fix.rs`). Never
/// an address of a real NIC. The order of the variants is the order `--fix` applies them in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// `ip link set BRIDGE up`
    BridgeUp { bridge: String },
    /// stp_state 0, forward_delay 0 in sysfs.
    StpOff { bridge: String },
    /// `net.bridge.bridge-nf-call-iptables=0` in this network namespace.
    BridgeNfOff,
    /// `net.bridge.bridge-nf-call-ip6tables=0` in this network namespace.
    BridgeNf6Off,
    /// `iptables -I DOCKER-USER -i BRIDGE -o BRIDGE -j ACCEPT` (Docker owns FORWARD).
    AcceptBridged { chain: String, bridge: String },
    /// `virsh net-start NAME`
    StartNetwork { network: String },
    /// `virsh net-autostart NAME`
    AutostartNetwork { network: String },
    /// Write NetworkManager's conf.d file that leaves libvirt's TAPs unmanaged (`conf`),
    /// then `nmcli general reload conf`; before the taps are touched.
    NmUnmanageTaps { conf: String },
    /// `ip link set TAP master BRIDGE up`
    AttachTap { tap: String, bridge: String },
    /// `ip link set DEV mtu MTU` (a tap or a bridge; `was` is the MTU it had).
    SetMtu { dev: String, mtu: u32, was: u32 },
    // The inverses: never planned from a finding, only to undo a fix.
    /// `ip link set BRIDGE down`
    BridgeDown { bridge: String },
    /// `net.bridge.bridge-nf-call-iptables=1`
    BridgeNfOn,
    /// `net.bridge.bridge-nf-call-ip6tables=1`
    BridgeNf6On,
    /// `iptables -D CHAIN -i BRIDGE -o BRIDGE -j ACCEPT`
    RemoveAcceptBridged { chain: String, bridge: String },
    /// `virsh net-destroy NAME`
    StopNetwork { network: String },
    /// `virsh net-autostart --disable NAME`
    NoAutostartNetwork { network: String },
    /// Remove vbridge's NetworkManager conf.d file again.
    NmRemoveUnmanagedTaps { conf: String },
}

/// One change `--fix` made (or, with `--dry-run`, would make).
#[derive(Debug, Clone, Serialize)]
pub struct Fixed {
    /// The finding ids this change answers.
    pub ids: Vec<&'static str>,
    pub subject: String,
    /// What was done, as a command a person could have typed.
    pub change: String,
    #[serde(flatten)]
    pub action: Action,
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::Error>,
    /// The files written so the change survives a reboot (`--persist`), each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub persisted: Vec<PersistedFile>,
    /// How to make it survive a reboot where vbridge does not write it itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist_hint: Option<String>,
}

/// A file `--persist` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersistedFile {
    pub path: String,
    /// What it does at boot, and why it is needed.
    pub why: String,
}

/// Everything the checks look at. Serialisable so host states can be recorded as fixtures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub uri: String,
    pub networks: Vec<NetworkObs>,
    pub domains: Vec<DomainObs>,
    /// None when libvirt runs on another host (or is the test driver): host checks skipped.
    pub host: Option<HostState>,
    /// Why the host was not observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_skipped: Option<String>,
    /// libvirt's network driver is missing (this says so): `networks` is then empty, not
    /// known to be empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_driver_unavailable: Option<String>,
}

/// A domain, read from one XML document (the live one when running).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainObs {
    pub name: String,
    pub running: bool,
    pub nics: Vec<NicObs>,
    pub facts: DomainFacts,
}

/// One `<interface>` of a domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicObs {
    pub mac: Option<String>,
    /// `bridge`, `network`, `user`, `direct`, ...
    pub kind: String,
    pub network: Option<String>,
    /// `<source bridge>` (libvirt also writes it for a network NIC of a running VM).
    pub bridge: Option<String>,
    /// `<target dev>`: the TAP of a running VM.
    pub tap: Option<String>,
    pub model: Option<String>,
    /// `<mtu size>`: the MTU the guest's NIC is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// A macvtap NIC's host NIC and mode (`<source dev mode>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// The host side, for the network namespace vbridge runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub interfaces: BTreeMap<String, Iface>,
    /// `net.bridge.bridge-nf-call-iptables`; None when br_netfilter is not active here.
    pub bridge_nf_call_iptables: Option<u8>,
    /// Read only when bridged frames go through iptables (the sysctl is 1); holds nftables
    /// too (read when either sysctl is 1).
    pub firewall: Option<Firewall>,
    /// NetworkManager, when it runs here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_manager: Option<NetworkManagerObs>,
    /// `net.bridge.bridge-nf-call-ip6tables`.
    #[serde(default)]
    pub bridge_nf_call_ip6tables: Option<u8>,
    /// ip6tables' filter table, read only when that sysctl is 1.
    #[serde(default)]
    pub firewall6: Option<Firewall>,
}

/// What NetworkManager's configuration says about libvirt's TAP devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkManagerObs {
    /// Its configuration directory (`/etc/NetworkManager`).
    pub conf_dir: String,
    /// NetworkManager.conf and conf.d leave `vnet*` and `tap*` unmanaged.
    pub taps_unmanaged: bool,
}

/// One interface, from sysfs (and its IPv4 addresses from netlink).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iface {
    #[serde(default)]
    pub is_bridge: bool,
    #[serde(default)]
    pub up: bool,
    pub operstate: Option<String>,
    /// The bridge this is a port of.
    pub master: Option<String>,
    /// A TUN/TAP device (a VM's tap).
    #[serde(default)]
    pub tun: bool,
    #[serde(default)]
    pub wireless: bool,
    pub mac: Option<String>,
    /// The MAC was set explicitly (addr_assign_type 3), so it does not follow the ports.
    #[serde(default)]
    pub mac_pinned: bool,
    pub stp_state: Option<u32>,
    /// Centiseconds.
    pub forward_delay: Option<u32>,
    /// Global IPv4 addresses, CIDR.
    #[serde(default)]
    pub ipv4: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl HostState {
    /// The ports of a bridge, sorted.
    pub fn ports(&self, bridge: &str) -> Vec<&str> {
        self.interfaces
            .iter()
            .filter(|(_, i)| i.master.as_deref() == Some(bridge))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The ports that lead off the host: neither a tap nor another bridge.
    pub fn uplinks(&self, bridge: &str) -> Vec<&str> {
        self.ports(bridge)
            .into_iter()
            .filter(|p| {
                self.interfaces
                    .get(*p)
                    .is_some_and(|i| !i.tun && !i.is_bridge)
            })
            .collect()
    }
}

/// One hop of a VM NIC's path to the LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// `nic`, `tap`, `bridge`, `uplink`, `lan`.
    pub kind: &'static str,
    pub name: String,
    /// `ok`, `warn`, `fail`, `unknown` (not checked), `off` (VM not running).
    pub mark: &'static str,
}

/// The path of one VM NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicPath {
    pub domain: String,
    pub mac: Option<String>,
    pub hops: Vec<Hop>,
}

/// What `vbridge doctor` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub uri: String,
    /// The findings that remain (after `--fix`, those of the second look).
    pub findings: Vec<Finding>,
    pub fixed: Vec<Fixed>,
    pub paths: Vec<NicPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_skipped: Option<String>,
    pub dry_run: bool,
    /// Wall time of observe + check (+ fix), connection already open; microsecond precision.
    pub elapsed_ms: f64,
}

impl Report {
    /// No error-severity finding remains.
    pub fn ok(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// VMs to check; empty = all (and then every network).
    pub domains: Vec<String>,
    pub fix: bool,
    pub persist: bool,
    pub dry_run: bool,
    /// Where `--persist` writes its sysctl drop-in (default /etc/sysctl.d, or
    /// `VBRIDGE_SYSCTL_DIR`).
    pub sysctl_dir: Option<PathBuf>,
    /// Where `--persist` writes the file that loads br_netfilter at boot, when it is a
    /// module (default /etc/modules-load.d, or `VBRIDGE_MODULES_LOAD_DIR`).
    pub modules_load_dir: Option<PathBuf>,
}

/// The sysctl.d directory `--persist` writes to unless `VBRIDGE_SYSCTL_DIR` says otherwise.
pub const SYSCTL_DIR: &str = "/etc/sysctl.d";
/// The modules-load.d directory `--persist` writes to unless `VBRIDGE_MODULES_LOAD_DIR` says
/// otherwise.
pub const MODULES_LOAD_DIR: &str = "/etc/modules-load.d";

/// The sysctl.d directory `--persist` writes to.
pub fn default_sysctl_dir() -> PathBuf {
    std::env::var_os("VBRIDGE_SYSCTL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SYSCTL_DIR))
}

/// The modules-load.d directory `--persist` writes to.
pub fn default_modules_load_dir() -> PathBuf {
    std::env::var_os("VBRIDGE_MODULES_LOAD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MODULES_LOAD_DIR))
}

/// Observe, check and (with `fix`) repair, then check again.
pub fn run(conn: &Conn, opts: &Options) -> Result<Report> {
    let t0 = std::time::Instant::now();
    // Observe, check.
    let mut obs = observe(conn, &opts.domains)?;
    let mut findings = check(&obs);
    let mut fixed = Vec::new();
    if opts.fix {
        // Plan.
        let changes = plan(&findings);
        if !changes.is_empty() {
            let fopts = FixOptions {
                dry_run: opts.dry_run,
                persist: opts.persist,
                sysctl_dir: opts.sysctl_dir.clone().unwrap_or_else(default_sysctl_dir),
                modules_load_dir: opts
                    .modules_load_dir
                    .clone()
                    .unwrap_or_else(default_modules_load_dir),
            };
            // Apply, then look again.
            fixed = apply(conn, changes, &fopts);
            if !opts.dry_run {
                obs = observe(conn, &opts.domains)?;
                findings = check(&obs);
            }
        }
    }
    // Report.
    let paths = paths(&obs, &findings);
    Ok(Report {
        uri: obs.uri.clone(),
        findings,
        fixed,
        paths,
        host_skipped: obs.host_skipped.clone(),
        dry_run: opts.dry_run,
        elapsed_ms: (t0.elapsed().as_micros() as f64 / 1000.0),
    })
}
