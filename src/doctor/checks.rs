//! The checks: pure functions from an [`Observation`] to [`Finding`]s, one per broken or
//! risky link, each with a stable id, a subject and the fix.
//!
//! Severity is chosen by one rule: an error is something that stops a VM's traffic now
//! (exit 1); a warning is a setup that works today but breaks under a usual event (a host
//! reboot, a new port, DHCP renewal); info is a cost or a limit worth knowing.
//! `bridge-no-uplink` is a warning in general: a bridge with only taps is also how an
//! isolated VM segment is built on purpose, and doctor must not fail such a host. It is an
//! error when both hold: a running VM has a NIC on the bridge now, and the bridge is the one
//! VMs are meant to reach the LAN through (a bridge-mode libvirt network names it, or it is
//! vbridge's default bridge, [`DEFAULT_BRIDGE`]). Then a VM is cut off from the LAN today.

use super::{
    Action, Finding, Hop, HostState, NicPath, Observation, Severity, MODULES_LOAD_DIR, SYSCTL_DIR,
    SYSCTL_DROPIN,
};
use crate::host::firewall::{self, Outcome};
use crate::host::sysctl::MODULES_LOAD_FILE;
use crate::topology::nic_host_bridge;
use std::collections::BTreeMap;

/// The bridge vbridge puts VMs on when none is named (`--bridge` default of attach,
/// net-define, host-bridge).
pub const DEFAULT_BRIDGE: &str = "br0";

/// Who needs a bridge.
#[derive(Debug, Default)]
struct Need {
    /// "network NAME", "VM NAME", in order.
    users: Vec<String>,
    /// A bridge-mode libvirt network names it.
    by_network: bool,
    /// A running VM has a NIC on it.
    running_vm: bool,
}

impl Need {
    /// The bridge VMs are expected to reach the LAN through.
    fn is_lan_bridge(&self, bridge: &str) -> bool {
        self.by_network || bridge == DEFAULT_BRIDGE
    }
}

const VIRTIO_COST: &str = "an emulated NIC costs a host CPU per packet burst and tops out around 1 Gbit/s; virtio is several times faster and lighter (the guest needs virtio-net, built into Linux; Windows needs the virtio-win drivers)";

fn finding(
    id: &'static str,
    severity: Severity,
    subject: &str,
    message: String,
    fix: String,
    action: Option<Action>,
) -> Finding {
    Finding {
        id,
        severity,
        subject: subject.to_string(),
        message,
        fix,
        action,
    }
}

/// Run every check.
pub fn check(obs: &Observation) -> Vec<Finding> {
    let mut out = Vec::new();
    // Bridge name -> who needs it, in a stable order.
    let mut needs: BTreeMap<String, Need> = BTreeMap::new();
    let network = |name: &str| obs.networks.iter().find(|n| n.name == name);

    for n in &obs.networks {
        if n.forward_mode.as_deref() != Some("bridge") {
            continue;
        }
        let br = n.bridge.as_deref().unwrap_or("?");
        if !n.active {
            out.push(finding(
                "network-inactive",
                Severity::Error,
                &n.name,
                format!("network {} (bridge mode on {br}) is not active: VMs that use it cannot start and nothing can be hot-plugged into it", n.name),
                format!("`virsh net-start {}`; --fix starts it", n.name),
                Some(Action::StartNetwork { network: n.name.clone() }),
            ));
        }
        if n.persistent && !n.autostart {
            out.push(finding(
                "network-no-autostart",
                Severity::Error,
                &n.name,
                format!("network {} is not started at boot: after a host reboot, VMs on it fail to start until someone runs net-start", n.name),
                format!("`virsh net-autostart {}`; --fix sets it", n.name),
                Some(Action::AutostartNetwork { network: n.name.clone() }),
            ));
        }
        if let Some(b) = &n.bridge {
            let need = needs.entry(b.clone()).or_default();
            need.users.push(format!("network {}", n.name));
            need.by_network = true;
        }
    }

    for d in &obs.domains {
        let mut bridged = false;
        for nic in &d.nics {
            let mac = nic.mac.as_deref().unwrap_or("(no MAC)");
            let net = nic.network.as_deref().and_then(network);
            // Only a bridge that joins the LAN: a NAT network's virbr0 has no uplink by design.
            let bridge = nic_host_bridge(&nic.kind, nic.bridge.as_deref(), net)
                .filter(|h| h.lan)
                .map(|h| h.bridge);
            if let (Some(name), None, "network") = (nic.network.as_deref(), net, &nic.kind[..]) {
                out.push(finding(
                    "network-missing",
                    Severity::Error,
                    name,
                    format!("VM {}'s NIC {mac} uses network {name}, which is not defined: the VM cannot start", d.name),
                    // No action: an undefined network cannot be started, only defined.
                    format!("define it on the host bridge: `vbridge net-define --name {name} --bridge {}`, or move the NIC: `vbridge attach {} --mac {mac}`; --fix cannot do this (there is no network to start)", nic.bridge.as_deref().unwrap_or("BR"), d.name),
                    None,
                ));
            }
            if bridge.is_some() || nic.kind == "direct" {
                bridged = true;
            }
            if let Some(b) = &bridge {
                let need = needs.entry(b.clone()).or_default();
                need.users.push(format!("VM {}", d.name));
                need.running_vm |= d.running;
                if let (true, Some(tap), Some(host)) = (d.running, &nic.tap, &obs.host) {
                    tap_check(&mut out, host, &d.name, mac, tap, b);
                }
            }
            if matches!(nic.kind.as_str(), "bridge" | "network" | "user" | "direct")
                && nic.model.as_deref() != Some("virtio")
            {
                let model = nic
                    .model
                    .as_deref()
                    .unwrap_or("the hypervisor's default (rtl8139 or e1000)");
                out.push(finding(
                    "model-not-virtio",
                    Severity::Info,
                    &d.name,
                    format!("VM {}'s NIC {mac} is {model}: {VIRTIO_COST}", d.name),
                    format!(
                        "`vbridge attach {} --mac {mac}` rewrites it as virtio (after a power-off)",
                        d.name
                    ),
                    None,
                ));
            }
        }
        if !bridged && !d.nics.is_empty() {
            out.push(finding(
                "vm-nat-only",
                Severity::Info,
                &d.name,
                format!("VM {} has no NIC on a bridge: it reaches the LAN only through NAT, and the LAN cannot reach it", d.name),
                format!("`vbridge attach {}` puts a NIC on the bridge", d.name),
                None,
            ));
        }
        if let Some(e) = d.facts.hotplug_blocker() {
            out.push(finding(
                "hotplug-unavailable",
                Severity::Info,
                &d.name,
                e.message,
                e.hint.unwrap_or_default(),
                None,
            ));
        }
    }

    match &obs.host {
        Some(host) => {
            for (b, need) in &needs {
                bridge_checks(&mut out, host, b, need);
            }
            firewall_checks(&mut out, host, &needs);
        }
        None => {
            let why = obs
                .host_skipped
                .clone()
                .unwrap_or_else(|| "host-side checks were skipped".into());
            out.push(finding(
                "host-checks-skipped",
                Severity::Info,
                &obs.uri,
                why,
                "run `vbridge doctor` on the host that runs the VMs".into(),
                None,
            ));
        }
    }
    out.sort_by(|a, b| (a.severity, a.id, &a.subject).cmp(&(b.severity, b.id, &b.subject)));
    out.dedup_by(|a, b| a.id == b.id && a.subject == b.subject && a.message == b.message);
    out
}

fn tap_check(
    out: &mut Vec<Finding>,
    host: &HostState,
    dom: &str,
    mac: &str,
    tap: &str,
    bridge: &str,
) {
    let Some(t) = host.interfaces.get(tap) else {
        return; // a tap libvirt names but the host lacks: the VM is not really running here
    };
    if !host.interfaces.get(bridge).is_some_and(|b| b.is_bridge) {
        return; // bridge-missing / not-a-bridge says it
    }
    if t.master.as_deref() != Some(bridge) {
        let now = match &t.master {
            Some(m) => format!("it is a port of {m}"),
            None => "it is on no bridge".to_string(),
        };
        out.push(finding(
            "tap-detached",
            Severity::Error,
            tap,
            format!("VM {dom}'s NIC {mac} uses tap {tap}, which its XML puts on {bridge}, but {now}: the VM is cut off (this happens when the bridge is recreated under running VMs; libvirt does not notice)"),
            format!("`ip link set {tap} master {bridge} up`; --fix re-attaches it"),
            Some(Action::AttachTap { tap: tap.to_string(), bridge: bridge.to_string() }),
        ));
    }
}

fn bridge_checks(out: &mut Vec<Finding>, host: &HostState, b: &str, need: &Need) {
    let mut users = need.users.clone();
    users.dedup();
    let who = users.join(", ");
    let Some(br) = host.interfaces.get(b) else {
        out.push(finding(
            "bridge-missing",
            Severity::Error,
            b,
            format!("bridge {b} does not exist on this host, but {who} uses it: VMs on it fail to start (\"Cannot get interface MTU on '{b}'\"), though libvirt calls a bridge-mode network active"),
            format!("create it on the LAN NIC: `vbridge host-bridge NIC --bridge {b} --dhcp` (or point the network/VM at an existing bridge)"),
            None,
        ));
        return;
    };
    if !br.is_bridge {
        let fix = match &br.master {
            Some(m) => format!("{b} is a port of bridge {m}: use {m} instead (`vbridge attach VM --bridge {m}`, `vbridge net-define --bridge {m} --force`)"),
            None => format!("make a bridge on it: `vbridge host-bridge {b} --bridge br0 --dhcp`, then use br0"),
        };
        out.push(finding(
            "not-a-bridge",
            Severity::Error,
            b,
            format!("{b} is named as the bridge by {who}, but it is a NIC, not a bridge: libvirt cannot put a tap on it"),
            fix,
            None,
        ));
        return;
    }
    if !br.up {
        out.push(finding(
            "bridge-down",
            Severity::Error,
            b,
            format!("bridge {b} is down: nothing crosses it"),
            format!("`ip link set {b} up`; --fix does it"),
            Some(Action::BridgeUp {
                bridge: b.to_string(),
            }),
        ));
    }
    let uplinks = host.uplinks(b);
    if uplinks.is_empty() {
        let ports = host.ports(b);
        let ports = if ports.is_empty() {
            "none".to_string()
        } else {
            ports.join(", ")
        };
        // See the module doc: an error only when a running VM is cut off from the LAN now.
        let (severity, why) = if need.running_vm && need.is_lan_bridge(b) {
            let via = if need.by_network {
                "a bridge-mode libvirt network names it".to_string()
            } else {
                format!("{b} is vbridge's default bridge")
            };
            (
                Severity::Error,
                format!(
                    "running VMs on it are cut off from the LAN ({via}, so it is their way out)"
                ),
            )
        } else {
            (
                Severity::Warning,
                "its VMs reach each other and the host, not the LAN (fine for an isolated segment built on purpose)".to_string(),
            )
        };
        out.push(finding(
            "bridge-no-uplink",
            severity,
            b,
            format!("bridge {b} has no port but taps (ports: {ports}): {why}"),
            format!("enslave the LAN NIC with its address moved to the bridge: `vbridge host-bridge NIC --bridge {b} --dhcp` (--fix never moves a NIC's address)"),
            None,
        ));
    }
    for u in &uplinks {
        let Some(i) = host.interfaces.get(*u) else {
            continue;
        };
        if i.wireless {
            out.push(finding(
                "uplink-wireless",
                Severity::Error,
                u,
                format!("{u} is a Wi-Fi NIC and a port of {b}: an access point accepts frames only from the station's own MAC, so the VMs' frames are dropped"),
                format!("bridge a wired NIC instead, or use NAT (libvirt's default network) or routed mode for VMs behind Wi-Fi; remove it with `ip link set {u} nomaster`"),
                None,
            ));
        }
        let down = !i.up
            || matches!(
                i.operstate.as_deref(),
                Some("down" | "lowerlayerdown" | "notpresent")
            );
        if down {
            out.push(finding(
                "uplink-down",
                Severity::Error,
                u,
                format!(
                    "{b}'s uplink {u} is {}: no frame reaches the LAN",
                    if i.up {
                        "up but has no carrier (cable? switch port?)".to_string()
                    } else {
                        "administratively down".to_string()
                    }
                ),
                format!("`ip link set {u} up` and check the cable"),
                None,
            ));
        }
        if !i.ipv4.is_empty() {
            let a = i.ipv4.join(", ");
            out.push(finding(
                "uplink-has-ip",
                Severity::Error,
                u,
                format!("{u} is a port of {b} but still carries {a}: a bridge port's own address answers erratically (the bridge takes its frames), so the host loses its LAN address; it belongs on {b}"),
                format!("move it: `ip addr del {} dev {u}` then `ip addr add {} dev {b}` (or let `vbridge host-bridge {u} --bridge {b}` do it with rollback); --fix never touches a NIC's addresses", i.ipv4[0], i.ipv4[0]),
                None,
            ));
        }
    }
    if br.stp_state.is_some_and(|s| s != 0) {
        // With STP on, a new port spends forward_delay in listening and again in learning
        // before it forwards. With forward_delay 0 both states pass at once, so DHCP is not
        // stalled; what is left is STP itself: it blocks a port it believes closes a loop
        // (after a topology change, or when the LAN's switches send BPDUs with a better path).
        let fix = format!("--fix sets stp_state 0 and forward_delay 0 (sysfs); to keep it, say `parameters: {{stp: false, forward-delay: 0}}` in the netplan bridge (or `ip link set {b} type bridge stp_state 0 forward_delay 0` in your network config)");
        let action = Some(Action::StpOff {
            bridge: b.to_string(),
        });
        match br.forward_delay {
            // No action here: nothing is stalled, and STP may be on deliberately against a
            // loop (two uplinks); turning it off is the admin's call.
            Some(0) => out.push(finding(
                "stp-forward-delay",
                Severity::Info,
                b,
                format!("STP is on for {b} with a forward delay of 0: new ports forward at once, so DHCP is not stalled; but STP can still block a port it thinks closes a loop (after a topology change, or on BPDUs from the LAN's switches), cutting the VMs behind it off"),
                format!("with a single uplink and no loop, turn it off: `ip link set {b} type bridge stp_state 0` (netplan `parameters: {{stp: false}}`); --fix leaves it, as STP may be there to stop a loop"),
                None,
            )),
            fd => {
                // Unreadable: the kernel's default, 15 s.
                let fd = fd.unwrap_or(1500);
                let secs = |cs: u32| {
                    if cs % 100 == 0 {
                        format!("{}", cs / 100)
                    } else {
                        format!("{:.2}", f64::from(cs) / 100.0)
                    }
                };
                out.push(finding(
                    "stp-forward-delay",
                    Severity::Warning,
                    b,
                    format!("STP is on for {b} with a forward delay of {} s: every new port (each VM start or hot-plug) waits {} s in listening and learning before it forwards, and the guest's DHCP may give up first", secs(fd), secs(2 * fd)),
                    fix,
                    action,
                ));
            }
        }
    }
    // An unpinned bridge MAC follows the lowest port MAC: when the uplink is not that port,
    // or a port with a lower MAC comes along, the host's DHCP identity changes.
    if !br.mac_pinned && !br.ipv4.is_empty() {
        let mut umacs: Vec<&str> = uplinks
            .iter()
            .filter_map(|u| host.interfaces.get(*u)?.mac.as_deref())
            .collect();
        umacs.sort();
        if let (Some(lowest_uplink), Some(bmac)) = (umacs.first(), br.mac.as_deref()) {
            let lower_port = host.ports(b).into_iter().find(|p| {
                host.interfaces
                    .get(*p)
                    .and_then(|i| i.mac.as_deref())
                    .is_some_and(|m| m < *lowest_uplink)
            });
            if bmac != *lowest_uplink || lower_port.is_some() {
                let why = match lower_port {
                    Some(p) => format!("port {p} has a lower MAC than the uplink"),
                    None => format!("it is {bmac}, not the uplink's {lowest_uplink}"),
                };
                out.push(finding(
                    "bridge-mac-unstable",
                    Severity::Warning,
                    b,
                    format!("bridge {b}'s MAC is not pinned and follows its ports ({why}): when ports come and go it changes, and the DHCP server hands the host a new address"),
                    format!("pin it to the uplink's MAC: `ip link set {b} address {lowest_uplink}`, and `macaddress: {lowest_uplink}` in the netplan bridge"),
                    None,
                ));
            }
        }
    }
}

fn firewall_checks(out: &mut Vec<Finding>, host: &HostState, needs: &BTreeMap<String, Need>) {
    if host.bridge_nf_call_iptables != Some(1) {
        return; // bridged frames never meet iptables
    }
    let bridges: Vec<&str> = needs
        .keys()
        .map(String::as_str)
        .filter(|b| host.interfaces.get(*b).is_some_and(|i| i.is_bridge))
        .collect();
    if bridges.is_empty() {
        return;
    }
    let key = crate::host::sysctl::BRIDGE_NF_CALL_IPTABLES;
    let fw = host.firewall.clone().unwrap_or_default();
    let nft = fw.nft.clone().unwrap_or_default();
    // iptables-nft keeps its filter table as nft's `ip filter` with base chain FORWARD: when
    // `iptables -S` was read, that chain has been judged already, in its own words.
    let nft_chains: Vec<_> = nft
        .chains
        .iter()
        .filter(|c| {
            !(fw.error.is_none()
                && fw.forward_policy.is_some()
                && c.family == "ip"
                && c.table == "filter"
                && c.name == "FORWARD")
        })
        .collect();
    let mut dropping = false;
    let mut notes: Vec<String> = Vec::new();
    for b in &bridges {
        let ipt = firewall::iptables_verdict(&fw, b);
        let mut drops = Vec::new();
        let mut doubts = Vec::new();
        let mut nft_drops = Vec::new();
        match ipt.outcome {
            Outcome::Drop => {
                drops.push(if ipt.by.starts_with("policy") {
                    format!("iptables FORWARD {}", ipt.by)
                } else {
                    format!("iptables rule `{}`", ipt.by)
                });
                doubts.extend(ipt.doubts.iter().map(|d| format!("`{d}`")));
            }
            _ => notes.extend(
                ipt.doubts
                    .iter()
                    .map(|d| format!("`{d}` may drop some of {b}'s frames")),
            ),
        }
        for c in &nft_chains {
            let v = firewall::nft_verdict(c, b);
            if v.outcome == Outcome::Drop {
                drops.push(format!("nftables chain {} ({})", c.label(), v.by));
                doubts.extend(v.doubts.iter().map(|d| format!("`{d}` in {}", c.label())));
                nft_drops.push(*c);
            } else {
                notes.extend(
                    v.doubts
                        .iter()
                        .map(|d| format!("`{d}` in {} may drop some of {b}'s frames", c.label())),
                );
            }
        }
        if drops.is_empty() {
            continue;
        }
        dropping = true;
        let nft_cmds: Vec<String> = nft_drops
            .iter()
            .map(|c| {
                format!(
                    "`nft insert rule {} {} {} iifname {b} oifname {b} accept`",
                    c.family, c.table, c.name
                )
            })
            .collect();
        // Under Docker, a rule in DOCKER-USER keeps the sysctl Docker relies on; it helps only
        // when FORWARD reaches DOCKER-USER before what drops, which the walk itself tells.
        let docker_rule_helps = fw.docker && nft_drops.is_empty() && {
            let mut with = fw.clone();
            let rule = format!("-A DOCKER-USER -i {b} -o {b} -j ACCEPT");
            let at = with
                .rules
                .iter()
                .position(|r| r.starts_with("-A DOCKER-USER "))
                .unwrap_or(with.rules.len());
            with.rules.insert(at, rule);
            firewall::iptables_verdict(&with, b).outcome == Outcome::Accept
        };
        let (fix, action) = if docker_rule_helps {
            (
                format!("Docker manages FORWARD and needs {key}=1 for its own bridges, so --fix keeps the sysctl and adds `iptables -I DOCKER-USER -i {b} -o {b} -j ACCEPT` (Docker never flushes DOCKER-USER); to keep it across reboots, save it with your firewall (e.g. `iptables-save > /etc/iptables/rules.v4` with iptables-persistent)"),
                Some(Action::AcceptBridged { chain: "DOCKER-USER".into(), bridge: b.to_string() }),
            )
        } else if fw.docker {
            (
                format!("Docker needs {key}=1 for its own bridges, so --fix changes nothing here; allow {b}'s frames before what drops them: {}", if nft_cmds.is_empty() { format!("`iptables -I FORWARD -i {b} -o {b} -j ACCEPT`") } else { nft_cmds.join(", ") }),
                None,
            )
        } else {
            let mut alt = Vec::new();
            if drops.iter().any(|d| d.starts_with("iptables")) {
                alt.push(format!("`iptables -I FORWARD -i {b} -o {b} -j ACCEPT`"));
            }
            alt.extend(nft_cmds);
            // The default paths (the message is pure; VBRIDGE_SYSCTL_DIR is for tests).
            let dropin = format!("{SYSCTL_DIR}/{SYSCTL_DROPIN}");
            let modules = format!("{MODULES_LOAD_DIR}/{MODULES_LOAD_FILE}");
            (
                format!("--fix sets {key}=0: bridged frames then skip iptables and nftables' ip/inet forward chains, as on a switch (routed and host traffic are still filtered); --persist also writes {dropin} (and {modules} when br_netfilter is a module, so the key exists when systemd-sysctl applies it). Or keep filtering bridged frames and allow the VMs: {}", alt.join(", ")),
                Some(Action::BridgeNfOff),
            )
        };
        let doubt = if doubts.is_empty() {
            String::new()
        } else {
            format!(" (uncertain: earlier rules this check cannot evaluate may accept part of the traffic: {})", doubts.join("; "))
        };
        out.push(finding(
            "forward-drop",
            Severity::Error,
            b,
            format!("frames crossing {b} pass through the firewall ({key}=1) and it drops them: {}, with no earlier rule accepting all of {b}'s traffic (installing Docker does this){doubt}: DHCP and all VM traffic die while the bridge looks healthy", drops.join(" and ")),
            fix,
            action,
        ));
    }
    if !dropping {
        let now = match (&fw.forward_policy, &fw.error) {
            (Some(_), _) => "the firewall lets them through now".to_string(),
            (None, Some(e)) => format!("the FORWARD chain could not be read ({e})"),
            (None, None) => "the FORWARD chain could not be read".to_string(),
        };
        let mut extra = String::new();
        if !notes.is_empty() {
            notes.dedup();
            extra.push_str(&format!(
                " (some rules match only part of the traffic: {})",
                notes.join("; ")
            ));
        }
        if let Some(n) = &nft.note {
            extra.push_str(&format!(" (note: {n})"));
        }
        out.push(finding(
            "bridge-nf-call-iptables",
            Severity::Info,
            key,
            format!("frames crossing {} pass through iptables ({key}=1); {now}{extra}, but a DROP policy later (Docker sets one) cuts the VMs off", bridges.join(", ")),
            format!("`sysctl -w {key}=0` and a file in /etc/sysctl.d, unless you filter bridged traffic on purpose; `vbridge doctor --fix` does it once FORWARD drops"),
            None,
        ));
    }
}

/// The path of every VM NIC, hop by hop, marked from the findings.
pub fn paths(obs: &Observation, findings: &[Finding]) -> Vec<NicPath> {
    let has = |ids: &[&str], subject: &str| {
        findings
            .iter()
            .any(|f| ids.contains(&f.id) && f.subject == subject)
    };
    let checked = obs.host.is_some();
    let mut out = Vec::new();
    for d in &obs.domains {
        for nic in &d.nics {
            let net = nic
                .network
                .as_deref()
                .and_then(|n| obs.networks.iter().find(|x| x.name == n));
            // The same rule as check(): a NAT network's bridge is drawn as NAT, not the LAN.
            let bridge = nic_host_bridge(&nic.kind, nic.bridge.as_deref(), net)
                .filter(|h| h.lan)
                .map(|h| h.bridge);
            let mut hops = vec![Hop {
                kind: "nic",
                name: nic
                    .model
                    .clone()
                    .unwrap_or_else(|| "(default model)".into()),
                mark: "ok",
            }];
            let Some(b) = bridge else {
                let what = match (&nic.kind[..], &nic.network) {
                    ("network", Some(n)) => format!("network {n} (NAT, not bridged)"),
                    (k, _) => format!("{k} (not bridged)"),
                };
                hops.push(Hop {
                    kind: "nat",
                    name: what,
                    mark: "warn",
                });
                out.push(NicPath {
                    domain: d.name.clone(),
                    mac: nic.mac.clone(),
                    hops,
                });
                continue;
            };
            let unknown = |ok: bool| {
                if !checked {
                    "unknown"
                } else if ok {
                    "ok"
                } else {
                    "fail"
                }
            };
            // tap
            let tap = nic.tap.clone().unwrap_or_else(|| "-".into());
            let tap_mark = if !d.running {
                "off"
            } else {
                unknown(!has(&["tap-detached"], &tap))
            };
            hops.push(Hop {
                kind: "tap",
                name: tap,
                mark: tap_mark,
            });
            // bridge
            let br_fail = has(&["bridge-missing", "not-a-bridge", "bridge-down"], &b);
            // An info-level STP finding (delay 0) does not slow the bridge: no mark for it.
            let br_warn = findings.iter().any(|f| {
                ["stp-forward-delay", "bridge-mac-unstable"].contains(&f.id)
                    && f.subject == b
                    && f.severity <= Severity::Warning
            });
            let br_mark = if br_fail {
                unknown(false)
            } else if br_warn {
                "warn"
            } else {
                unknown(true)
            };
            hops.push(Hop {
                kind: "bridge",
                name: b.clone(),
                mark: br_mark,
            });
            // uplink
            let uplinks = obs.host.as_ref().map(|h| h.uplinks(&b)).unwrap_or_default();
            let (name, mark) = if !checked {
                ("uplink".to_string(), "unknown")
            } else if br_fail || uplinks.is_empty() {
                ("(none)".to_string(), "fail")
            } else if uplinks
                .iter()
                .any(|u| has(&["uplink-wireless", "uplink-down"], u))
            {
                (uplinks.join("+"), "fail")
            } else if uplinks.iter().any(|u| has(&["uplink-has-ip"], u)) {
                (uplinks.join("+"), "warn")
            } else {
                (uplinks.join("+"), "ok")
            };
            hops.push(Hop {
                kind: "uplink",
                name,
                mark,
            });
            // The LAN itself is not probed here (`vbridge verify` does that).
            let lan = if has(&["forward-drop"], &b) {
                "fail"
            } else {
                "unknown"
            };
            hops.push(Hop {
                kind: "lan",
                name: "LAN".into(),
                mark: lan,
            });
            out.push(NicPath {
                domain: d.name.clone(),
                mac: nic.mac.clone(),
                hops,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Each check against a recorded host state (tests/data/doctor/healthy.json: a host with
    //! br0 on enp3s0, a running VM on a bridge-mode network, a shut-off one on br0) with one
    //! fault put in.

    use super::super::{Iface, NicObs, Observation};
    use super::*;
    use crate::host::firewall::Firewall;

    fn healthy() -> Observation {
        serde_json::from_str(include_str!("../../tests/data/doctor/healthy.json")).unwrap()
    }

    fn host(o: &mut Observation) -> &mut HostState {
        o.host.as_mut().unwrap()
    }

    fn iface<'a>(o: &'a mut Observation, name: &str) -> &'a mut Iface {
        host(o).interfaces.get_mut(name).unwrap()
    }

    fn errors(f: &[Finding]) -> Vec<(&str, &str)> {
        f.iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| (f.id, f.subject.as_str()))
            .collect()
    }

    fn find<'a>(f: &'a [Finding], id: &str) -> &'a Finding {
        f.iter()
            .find(|x| x.id == id)
            .unwrap_or_else(|| panic!("no {id} in {f:#?}"))
    }

    /// The one error is `id` about `subject`: that finding.
    fn only_error<'a>(f: &'a [Finding], id: &str, subject: &str) -> &'a Finding {
        assert_eq!(errors(f), [(id, subject)]);
        find(f, id)
    }

    #[test]
    fn healthy_host_has_no_error_or_warning() {
        let f = check(&healthy());
        let loud: Vec<_> = f.iter().filter(|f| f.severity != Severity::Info).collect();
        assert!(loud.is_empty(), "{loud:#?}");
        // The sysctl is 1 with FORWARD accepting: worth knowing, not an error.
        assert_eq!(find(&f, "bridge-nf-call-iptables").severity, Severity::Info);
        let p = paths(&healthy(), &f);
        let web = &p.iter().find(|p| p.domain == "web").unwrap().hops;
        let marks: Vec<_> = web
            .iter()
            .map(|h| (h.kind, h.name.as_str(), h.mark))
            .collect();
        assert_eq!(
            marks,
            [
                ("nic", "virtio", "ok"),
                ("tap", "vnet0", "ok"),
                ("bridge", "br0", "ok"),
                ("uplink", "enp3s0", "ok"),
                ("lan", "LAN", "unknown")
            ]
        );
        let db = &p.iter().find(|p| p.domain == "db").unwrap().hops;
        assert_eq!(db[1].mark, "off");
    }

    #[test]
    fn bridge_missing_for_network_and_vm() {
        let mut o = healthy();
        host(&mut o).interfaces.retain(|n, _| n != "br0");
        iface(&mut o, "enp3s0").master = None;
        iface(&mut o, "vnet0").master = None;
        let f = check(&o);
        let m = &only_error(&f, "bridge-missing", "br0").message;
        assert!(
            m.contains("network br0-network") && m.contains("VM web"),
            "{m}"
        );
        assert!(find(&f, "bridge-missing").action.is_none());
    }

    #[test]
    fn not_a_bridge_names_the_real_bridge() {
        let mut o = healthy();
        o.domains[1].nics[0].bridge = Some("enp3s0".into());
        let f = check(&o);
        assert!(only_error(&f, "not-a-bridge", "enp3s0")
            .fix
            .contains("use br0"));
    }

    #[test]
    fn bridge_down_is_fixed_by_link_up() {
        let mut o = healthy();
        iface(&mut o, "br0").up = false;
        let f = check(&o);
        assert_eq!(
            only_error(&f, "bridge-down", "br0").action,
            Some(Action::BridgeUp {
                bridge: "br0".into()
            })
        );
    }

    #[test]
    fn bridge_without_uplink_is_an_error_under_a_running_vm_on_the_lan_bridge() {
        // web runs on br0-network (bridge mode, br0): cut off from the LAN now.
        let mut o = healthy();
        iface(&mut o, "enp3s0").master = None;
        let f = check(&o);
        let w = find(&f, "bridge-no-uplink");
        assert_eq!((w.severity, w.subject.as_str()), (Severity::Error, "br0"));
        assert!(w.message.contains("vnet0"), "{}", w.message);
        assert!(w.message.contains("network names it"), "{}", w.message);
        let p = paths(&o, &f);
        assert_eq!(p[1].hops[3].mark, "fail", "{p:#?}");

        // No network names it, but br0 is vbridge's default bridge: still an error.
        o.domains[0].nics[0].kind = "bridge".into();
        o.domains[0].nics[0].network = None;
        o.networks.retain(|n| n.name != "br0-network");
        let w = find(&check(&o), "bridge-no-uplink").clone();
        assert_eq!(w.severity, Severity::Error);
        assert!(w.message.contains("default bridge"), "{}", w.message);
    }

    #[test]
    fn bridge_without_uplink_warns_when_no_vm_runs_or_the_segment_is_isolated() {
        // Nothing running on br0: a warning.
        let mut o = healthy();
        iface(&mut o, "enp3s0").master = None;
        o.domains[0].running = false;
        o.domains[0].nics[0].tap = None;
        let w = find(&check(&o), "bridge-no-uplink").clone();
        assert_eq!((w.severity, w.subject.as_str()), (Severity::Warning, "br0"));

        // A running VM on a bridge no network names and that is not br0: an isolated
        // segment built on purpose is a warning.
        let mut o = healthy();
        o.domains[0].nics[0].kind = "bridge".into();
        o.domains[0].nics[0].network = None;
        o.domains[0].nics[0].bridge = Some("isol0".into());
        o.domains[0].nics[0].tap = Some("vnet9".into());
        let h = host(&mut o);
        h.interfaces.insert(
            "isol0".into(),
            Iface {
                is_bridge: true,
                up: true,
                ..Iface::default()
            },
        );
        h.interfaces.insert(
            "vnet9".into(),
            Iface {
                up: true,
                tun: true,
                master: Some("isol0".into()),
                ..Iface::default()
            },
        );
        let f = check(&o);
        let w = find(&f, "bridge-no-uplink");
        assert_eq!(
            (w.severity, w.subject.as_str()),
            (Severity::Warning, "isol0")
        );
        assert!(errors(&f).is_empty(), "{f:#?}");
    }

    #[test]
    fn uplink_with_address_is_an_error_and_is_never_fixed() {
        let mut o = healthy();
        iface(&mut o, "enp3s0").ipv4 = vec!["192.168.1.20/24".into()];
        let f = check(&o);
        let w = find(&f, "uplink-has-ip");
        assert_eq!(
            (w.severity, w.subject.as_str()),
            (Severity::Error, "enp3s0")
        );
        assert!(w.fix.contains("ip addr del 192.168.1.20/24 dev enp3s0"));
        assert!(w.action.is_none());
    }

    #[test]
    fn stp_on_warns_with_the_delay() {
        let mut o = healthy();
        iface(&mut o, "br0").stp_state = Some(1);
        iface(&mut o, "br0").forward_delay = Some(1500);
        let f = check(&o);
        let w = find(&f, "stp-forward-delay");
        assert_eq!(w.subject, "br0");
        assert!(
            w.message.contains("15 s") && w.message.contains("30 s"),
            "{}",
            w.message
        );
        assert_eq!(
            w.action,
            Some(Action::StpOff {
                bridge: "br0".into()
            })
        );
        assert_eq!(w.severity, Severity::Warning);
        // virbr0 has STP on too, but no VM uses it: not reported.
        assert_eq!(f.iter().filter(|f| f.id == "stp-forward-delay").count(), 1);
        // A delay that is not whole seconds is not rounded down to 0.
        iface(&mut o, "br0").forward_delay = Some(50);
        let w = find(&check(&o), "stp-forward-delay").clone();
        assert!(
            w.message.contains("0.50 s") && w.message.contains("waits 1 s"),
            "{}",
            w.message
        );
    }

    #[test]
    fn stp_on_with_zero_delay_is_info_about_blocking() {
        let mut o = healthy();
        iface(&mut o, "br0").stp_state = Some(1);
        iface(&mut o, "br0").forward_delay = Some(0);
        let f = check(&o);
        let w = find(&f, "stp-forward-delay");
        assert_eq!((w.severity, w.subject.as_str()), (Severity::Info, "br0"));
        assert!(!w.message.contains("waits 0"), "{}", w.message);
        assert!(w.message.contains("block a port"), "{}", w.message);
        // Not changed by --fix: STP may be on against a loop.
        assert!(w.action.is_none());
        // Only info: the bridge hop stays ok.
        assert_eq!(paths(&o, &f)[0].hops[2].mark, "ok");
    }

    #[test]
    fn tap_off_the_bridge_is_detached() {
        let mut o = healthy();
        iface(&mut o, "vnet0").master = None;
        let f = check(&o);
        assert_eq!(
            only_error(&f, "tap-detached", "vnet0").action,
            Some(Action::AttachTap {
                tap: "vnet0".into(),
                bridge: "br0".into()
            })
        );
        iface(&mut o, "vnet0").master = Some("virbr0".into());
        let f = check(&o);
        assert!(find(&f, "tap-detached").message.contains("port of virbr0"));
    }

    #[test]
    fn forward_drop_with_the_sysctl_on() {
        let mut o = healthy();
        host(&mut o).firewall = Some(Firewall {
            forward_policy: Some("DROP".into()),
            ..Firewall::default()
        });
        let f = check(&o);
        assert_eq!(
            only_error(&f, "forward-drop", "br0").action,
            Some(Action::BridgeNfOff)
        );
        assert!(!f.iter().any(|f| f.id == "bridge-nf-call-iptables"));
        assert_eq!(paths(&o, &f)[1].hops[4].mark, "fail");

        // An ACCEPT rule for bridged frames makes DROP harmless.
        host(&mut o).firewall.as_mut().unwrap().rules =
            vec!["-A FORWARD -m physdev --physdev-is-bridged -j ACCEPT".into()];
        assert!(errors(&check(&o)).is_empty());

        // With the sysctl at 0 (or br_netfilter absent) iptables never sees bridged frames.
        host(&mut o).firewall.as_mut().unwrap().rules.clear();
        host(&mut o).bridge_nf_call_iptables = Some(0);
        let f = check(&o);
        assert!(errors(&f).is_empty());
        assert!(!f.iter().any(|f| f.id == "bridge-nf-call-iptables"));
        host(&mut o).bridge_nf_call_iptables = None;
        assert!(errors(&check(&o)).is_empty());
    }

    #[test]
    fn forward_drop_under_docker_adds_a_rule_instead() {
        let mut o = healthy();
        host(&mut o).firewall = Some(crate::host::firewall::parse(
            "-P FORWARD DROP\n-N DOCKER-USER\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\n",
        ));
        let f = check(&o);
        assert_eq!(
            find(&f, "forward-drop").action,
            Some(Action::AcceptBridged {
                chain: "DOCKER-USER".into(),
                bridge: "br0".into()
            })
        );
    }

    fn with_iptables(o: &mut Observation, text: &str) {
        host(o).firewall = Some(crate::host::firewall::parse(text));
    }

    /// No error, and the bridge-nf-call-iptables info names `what`.
    fn no_error_but_info_names(o: &Observation, what: &str) {
        let f = check(o);
        assert!(errors(&f).is_empty());
        assert!(find(&f, "bridge-nf-call-iptables").message.contains(what));
    }

    #[test]
    fn forward_drop_from_a_terminal_rule_under_policy_accept() {
        let mut o = healthy();
        with_iptables(&mut o, "-P FORWARD ACCEPT\n-A FORWARD -j DROP\n");
        let f = check(&o);
        let d = only_error(&f, "forward-drop", "br0");
        assert!(
            d.message.contains("iptables rule `-A FORWARD -j DROP`"),
            "{}",
            d.message
        );
        assert!(!d.message.contains("uncertain"), "{}", d.message);
        assert_eq!(d.action, Some(Action::BridgeNfOff));
        // An accept for br0 placed after that drop does not help.
        with_iptables(
            &mut o,
            "-P FORWARD ACCEPT\n-A FORWARD -j DROP\n-A FORWARD -i br0 -o br0 -j ACCEPT\n",
        );
        assert_eq!(errors(&check(&o)), [("forward-drop", "br0")]);
        // Before it, it does.
        with_iptables(
            &mut o,
            "-P FORWARD ACCEPT\n-A FORWARD -i br0 -o br0 -j ACCEPT\n-A FORWARD -j DROP\n",
        );
        assert!(errors(&check(&o)).is_empty());
    }

    #[test]
    fn forward_drop_behind_conditional_rules_says_it_is_uncertain() {
        let mut o = healthy();
        with_iptables(
            &mut o,
            include_str!("../../tests/data/doctor/iptables-ufw.txt"),
        );
        let f = check(&o);
        let d = find(&f, "forward-drop");
        assert_eq!(d.severity, Severity::Error);
        assert!(
            d.message.contains("uncertain") && d.message.contains("--ctstate"),
            "{}",
            d.message
        );
        // A conditional drop before an accept is not an error, but the info names it.
        with_iptables(
            &mut o,
            "-P FORWARD ACCEPT\n-A FORWARD -s 10.9.0.0/16 -j DROP\n",
        );
        no_error_but_info_names(&o, "-s 10.9.0.0/16");
    }

    #[test]
    fn docker28_forward_drop_gets_a_docker_user_rule_unless_a_drop_comes_first() {
        let mut o = healthy();
        let d28 = include_str!("../../tests/data/doctor/iptables-docker28.txt");
        with_iptables(&mut o, d28);
        let f = check(&o);
        assert_eq!(
            find(&f, "forward-drop").action,
            Some(Action::AcceptBridged {
                chain: "DOCKER-USER".into(),
                bridge: "br0".into()
            })
        );
        // A DROP ahead of the jump to DOCKER-USER: a rule there would not be reached.
        let first = d28.replace(
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -j DROP\n-A FORWARD -j DOCKER-USER",
        );
        with_iptables(&mut o, &first);
        let d = find(&check(&o), "forward-drop").clone();
        assert_eq!(d.action, None);
        assert!(
            d.fix
                .contains("iptables -I FORWARD -i br0 -o br0 -j ACCEPT"),
            "{}",
            d.fix
        );
    }

    fn nft(json: &str) -> crate::host::firewall::Nft {
        crate::host::firewall::parse_nft(json).unwrap()
    }

    #[test]
    fn forward_drop_from_nftables() {
        let mut o = healthy();
        let fw = host(&mut o).firewall.as_mut().unwrap();
        fw.nft = Some(nft(include_str!(
            "../../tests/data/doctor/nft-inet-forward-drop.json"
        )));
        let f = check(&o);
        let d = only_error(&f, "forward-drop", "br0");
        assert!(
            d.message
                .contains("nftables chain inet filter forward (policy drop)")
                && d.message.contains("uncertain")
                && d.message.contains("ct state accept"),
            "{}",
            d.message
        );
        assert_eq!(d.action, Some(Action::BridgeNfOff));
        assert!(
            d.fix
                .contains("nft insert rule inet filter forward iifname br0 oifname br0 accept"),
            "{}",
            d.fix
        );

        // iptables-nft's own `ip filter FORWARD` is judged through `iptables -S`, not twice.
        let mut o = healthy();
        let fw = host(&mut o).firewall.as_mut().unwrap();
        fw.nft = Some(nft(
            r#"{"nftables":[{"chain":{"family":"ip","table":"filter","name":"FORWARD","type":"filter","hook":"forward","prio":0,"policy":"drop"}}]}"#,
        ));
        assert!(errors(&check(&o)).is_empty());
        // ...unless iptables could not be read.
        let fw = host(&mut o).firewall.as_mut().unwrap();
        fw.forward_policy = None;
        fw.error = Some("cannot run iptables".into());
        assert_eq!(errors(&check(&o)), [("forward-drop", "br0")]);
    }

    #[test]
    fn nft_not_installed_is_a_note() {
        let mut o = healthy();
        host(&mut o).firewall.as_mut().unwrap().nft = Some(crate::host::firewall::Nft {
            chains: Vec::new(),
            note: Some("nft is not installed: nftables rules were not read".into()),
        });
        no_error_but_info_names(&o, "nft is not installed");
    }

    #[test]
    fn unreadable_firewall_is_info() {
        let mut o = healthy();
        host(&mut o).firewall = Some(Firewall {
            error: Some("cannot run iptables: No such file or directory".into()),
            ..Firewall::default()
        });
        no_error_but_info_names(&o, "could not be read");
    }

    #[test]
    fn network_inactive_and_no_autostart() {
        let mut o = healthy();
        o.networks[0].active = false;
        o.networks[0].autostart = false;
        let f = check(&o);
        assert_eq!(
            errors(&f),
            [
                ("network-inactive", "br0-network"),
                ("network-no-autostart", "br0-network")
            ]
        );
        // NAT networks are libvirt's own business.
        o.networks[1].active = false;
        o.networks[1].autostart = false;
        assert_eq!(errors(&check(&o)).len(), 2);
        // Fixes: start, then autostart, each once.
        let plan = crate::doctor::plan(&check(&o));
        let acts: Vec<_> = plan.iter().map(|p| p.change.as_str()).collect();
        assert_eq!(
            acts,
            [
                "virsh net-start br0-network",
                "virsh net-autostart br0-network"
            ]
        );
    }

    #[test]
    fn network_missing() {
        let mut o = healthy();
        o.domains[0].nics[0].network = Some("gone".into());
        o.domains[0].nics[0].bridge = None;
        let f = check(&o);
        let m = only_error(&f, "network-missing", "gone");
        assert!(m.action.is_none());
        assert!(
            m.fix
                .contains("`vbridge net-define --name gone --bridge BR`"),
            "{}",
            m.fix
        );
        assert!(!m.fix.contains("starts") && !m.message.contains("start it"));
        // Nothing in a --fix plan claims to start it.
        assert!(crate::doctor::plan(&f).is_empty());
    }

    #[test]
    fn hotplug_unavailable_for_i440fx_without_acpi_and_full_q35() {
        let mut o = healthy();
        o.domains[0].facts.acpi = false;
        o.domains[1].facts.free_pcie_root_ports = 0;
        let f = check(&o);
        let subjects: Vec<_> = f
            .iter()
            .filter(|f| f.id == "hotplug-unavailable")
            .map(|f| (f.severity, f.subject.as_str()))
            .collect();
        assert_eq!(subjects, [(Severity::Info, "db"), (Severity::Info, "web")]);
    }

    #[test]
    fn model_not_virtio_and_nat_only() {
        let mut o = healthy();
        o.domains[1].nics = vec![NicObs {
            mac: Some("52:54:00:00:00:03".into()),
            kind: "network".into(),
            network: Some("default".into()),
            model: Some("e1000".into()),
            ..NicObs::default()
        }];
        let f = check(&o);
        let m = find(&f, "model-not-virtio");
        assert_eq!((m.severity, m.subject.as_str()), (Severity::Info, "db"));
        assert!(m.message.contains("e1000") && m.message.contains("Gbit/s"));
        assert_eq!(find(&f, "vm-nat-only").subject, "db");
    }

    #[test]
    fn wireless_and_down_uplinks_are_errors() {
        let mut o = healthy();
        iface(&mut o, "enp3s0").wireless = true;
        iface(&mut o, "enp3s0").operstate = Some("down".into());
        let f = check(&o);
        assert_eq!(
            errors(&f),
            [("uplink-down", "enp3s0"), ("uplink-wireless", "enp3s0")]
        );
    }

    #[test]
    fn bridge_mac_that_follows_ports_warns() {
        let mut o = healthy();
        iface(&mut o, "br0").mac = Some("52:54:00:aa:00:99".into());
        assert_eq!(find(&check(&o), "bridge-mac-unstable").subject, "br0");
        // Pinned, it stays whatever the ports do.
        iface(&mut o, "br0").mac_pinned = true;
        assert!(!check(&o).iter().any(|f| f.id == "bridge-mac-unstable"));
        // Following the uplink, but a port with a lower MAC would take over.
        let mut o = healthy();
        iface(&mut o, "vnet0").mac = Some("02:00:00:00:00:01".into());
        assert!(find(&check(&o), "bridge-mac-unstable")
            .message
            .contains("vnet0"));
    }

    #[test]
    fn remote_host_skips_host_checks() {
        let mut o = healthy();
        o.host = None;
        o.host_skipped = Some("remote".into());
        o.uri = "qemu+ssh://kvm1/system".into();
        iface_free_errors(&o);
        let f = check(&o);
        let s = find(&f, "host-checks-skipped");
        assert_eq!(s.subject, "qemu+ssh://kvm1/system");
        // libvirt-side checks still run.
        o.networks[0].active = false;
        assert_eq!(errors(&check(&o)), [("network-inactive", "br0-network")]);
        assert_eq!(paths(&o, &check(&o))[1].hops[2].mark, "unknown");
    }

    fn iface_free_errors(o: &Observation) {
        assert!(errors(&check(o)).is_empty());
    }

    #[test]
    fn plan_dedups_and_orders() {
        let mut o = healthy();
        iface(&mut o, "vnet0").master = None;
        iface(&mut o, "br0").stp_state = Some(1);
        iface(&mut o, "br0").forward_delay = Some(1500);
        host(&mut o).firewall = Some(Firewall {
            forward_policy: Some("DROP".into()),
            ..Firewall::default()
        });
        o.domains[1].nics[0].bridge = Some("br1".into());
        host(&mut o).interfaces.insert(
            "br1".into(),
            Iface {
                is_bridge: true,
                up: true,
                ..Iface::default()
            },
        );
        let f = check(&o);
        let plan = crate::doctor::plan(&f);
        let acts: Vec<_> = plan
            .iter()
            .map(|p| (p.change.as_str(), p.ids.clone()))
            .collect();
        assert_eq!(
            acts,
            [
                (
                    "ip link set br0 type bridge stp_state 0 forward_delay 0",
                    vec!["stp-forward-delay"]
                ),
                (
                    "sysctl -w net.bridge.bridge-nf-call-iptables=0",
                    vec!["forward-drop"]
                ),
                ("ip link set vnet0 master br0 up", vec!["tap-detached"]),
            ]
        );
    }
}
