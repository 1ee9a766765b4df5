//! The lab's network: a "host" namespace with br0 and its uplink, a "LAN" namespace with the
//! uplink's peer and dnsmasq as DHCP server. Nothing here touches the root namespace.
//!
//! ```text
//! [host netns]  vnetX (libvirt's TAP) --\
//!                                        br0 (10.77.N.2/24) -- uplink0 (veth, the "physical NIC")
//! [lan netns]                                                   lan0 (veth peer) 10.77.N.1/24
//!                                                               dnsmasq DHCP 10.77.N.100-150
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::stop_child;
use crate::common::Netns;

/// Bridge name inside the host namespace: the product's default, safe in a private netns.
pub const BRIDGE: &str = "br0";
/// The host namespace's port of br0 towards the LAN.
pub const UPLINK: &str = "uplink0";
/// The LAN namespace's end of the veth pair.
pub const LAN_IF: &str = "lan0";

/// The uplink's MAC (locally administered; each lab has its own namespaces).
const UPLINK_MAC: &str = "02:77:00:00:00:02";

/// Wire the two namespaces: br0 with the host address, the veth pair, the LAN address.
pub fn wire(host: &Netns, lan: &Netns, subnet: u8) {
    host.ip(&[
        "link",
        "add",
        BRIDGE,
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
    ]);
    // Both ends are created inside the namespaces: the pair never exists in the root one.
    // The uplink gets a fixed low MAC, as a real NIC's vendor prefix is: a random veth MAC is
    // now and then above libvirt's fe:54:00:... taps, and then br0 takes a tap's MAC and
    // doctor warns (bridge-mac-unstable) where the lab tests expect a healthy bridge.
    host.ip(&[
        "link", "add", UPLINK, "address", UPLINK_MAC, "type", "veth", "peer", "name", LAN_IF,
        "netns", &lan.name,
    ]);
    host.ip(&["link", "set", UPLINK, "master", BRIDGE]);
    host.ip(&["addr", "add", &addr(subnet, 2, true), "dev", BRIDGE]);
    host.ip(&["link", "set", UPLINK, "up"]);
    host.ip(&["link", "set", BRIDGE, "up"]);
    lan.ip(&["addr", "add", &addr(subnet, 1, true), "dev", LAN_IF]);
    lan.ip(&["link", "set", LAN_IF, "up"]);
}

/// `10.77.N.host`, with `/24` when `prefix`.
pub fn addr(subnet: u8, host: u8, prefix: bool) -> String {
    let s = format!("10.77.{subnet}.{host}");
    if prefix {
        s + "/24"
    } else {
        s
    }
}

/// dnsmasq serving DHCP on lan0, started by us and ended by pid on drop.
pub struct Dhcp {
    child: Option<Child>,
    pub lease_file: PathBuf,
}

impl Dhcp {
    /// Start dnsmasq in the LAN namespace (DHCP only, .100-.150) and wait until it is up.
    pub fn start(lan: &Netns, subnet: u8, dir: &Path) -> Dhcp {
        let lease_file = dir.join("dnsmasq.leases");
        let pid_file = dir.join("dnsmasq.pid");
        let log_file = dir.join("dnsmasq.log");
        let range = format!(
            "--dhcp-range={},{},255.255.255.0,1h",
            addr(subnet, 100, false),
            addr(subnet, 150, false)
        );
        let lease = format!("--dhcp-leasefile={}", lease_file.display());
        let pidf = format!("--pid-file={}", pid_file.display());
        let log = format!("--log-facility={}", log_file.display());
        let iface = format!("--interface={LAN_IF}");
        let child = Command::new("ip")
            .args(["netns", "exec", &lan.name, "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--user=root",
                "--group=root",
                &iface,
                "--bind-interfaces",
                "--except-interface=lo",
                &range,
                "--dhcp-authoritative",
                "--no-resolv",
                "--no-hosts",
                "--port=0",
                // Without it each new lease waits ~3 s for an ICMP probe.
                "--no-ping",
                "--log-dhcp",
                &lease,
                &pidf,
                &log,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start dnsmasq (package dnsmasq-base)");
        let mut d = Dhcp {
            child: Some(child),
            lease_file,
        };
        // dnsmasq writes its pid file after binding its sockets: that is "ready".
        let t0 = Instant::now();
        while !pid_file.exists() {
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                let log = fs::read_to_string(&log_file).unwrap_or_default();
                panic!("dnsmasq exited at start-up ({st}): {log}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "dnsmasq did not write {} within 10 s",
                pid_file.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// dnsmasq's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The lease file's contents ("" before the first lease).
    pub fn leases(&self) -> String {
        fs::read_to_string(&self.lease_file).unwrap_or_default()
    }

    /// End dnsmasq (by pid) and wait for it.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            stop_child(c, "dnsmasq", Duration::from_secs(5));
        }
    }
}

impl Drop for Dhcp {
    fn drop(&mut self) {
        self.stop();
    }
}
