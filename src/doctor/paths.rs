//! The path of each VM NIC to the LAN (NIC -> tap -> bridge -> uplink -> LAN), each hop
//! marked from the findings: what `doctor` draws above its findings.

use super::{Finding, Hop, NicPath, Observation, Severity};
use crate::topology::nic_host_bridge;

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
            if let ("direct", Some(dev)) = (nic.kind.as_str(), &nic.dev) {
                // A macvtap sits on its host NIC: no tap, no bridge; the LAN is not probed.
                hops.push(Hop {
                    kind: "macvtap",
                    name: dev.clone(),
                    mark: "ok",
                });
                hops.push(Hop {
                    kind: "lan",
                    name: "LAN".into(),
                    mark: "unknown",
                });
                out.push(NicPath {
                    domain: d.name.clone(),
                    mac: nic.mac.clone(),
                    hops,
                });
                continue;
            }
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
                let mtu = findings.iter().any(|f| {
                    f.id == "mtu-mismatch" && f.subject == tap && f.severity == Severity::Error
                });
                unknown(!has(&["tap-detached"], &tap) && !mtu)
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
                ["stp-forward-delay", "bridge-mac-unstable", "mtu-mismatch"].contains(&f.id)
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
            } else if !br_fail && has(&["bridge-owned-by-network"], &b) {
                // A NAT/routed/isolated network's bridge: libvirt forwards, no uplink expected.
                ("(libvirt network)".to_string(), "warn")
            } else if br_fail || uplinks.is_empty() {
                ("(none)".to_string(), "fail")
            } else if uplinks
                .iter()
                .any(|u| has(&["uplink-wireless", "uplink-down", "mtu-mismatch"], u))
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
            } else if has(&["forward-drop-ipv6"], &b) {
                "warn"
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
    use super::super::checks::fixture::*;
    use super::*;
    use crate::doctor::check;

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

    fn bridge_mark(findings: &[Finding]) -> &'static str {
        let p = paths(&healthy(), findings);
        let web = &p.iter().find(|p| p.domain == "web").unwrap().hops;
        assert_eq!(web[2].kind, "bridge");
        web[2].mark
    }

    /// Which findings mark the bridge hop "warn": a warning about STP or the bridge's MAC on
    /// that bridge, not one on another bridge, not an info, and a failure wins.
    #[test]
    fn the_bridge_hop_warns_for_its_own_warnings_only() {
        let f = |id: &'static str, subject: &str, severity: Severity| Finding {
            id,
            severity,
            subject: subject.into(),
            message: String::new(),
            fix: String::new(),
            action: None,
        };
        assert_eq!(bridge_mark(&[]), "ok");
        for id in ["stp-forward-delay", "bridge-mac-unstable"] {
            assert_eq!(
                bridge_mark(&[f(id, "br0", Severity::Warning)]),
                "warn",
                "{id}"
            );
            assert_eq!(
                bridge_mark(&[f(id, "br0", Severity::Error)]),
                "warn",
                "{id}"
            );
            assert_eq!(
                bridge_mark(&[f(id, "br1", Severity::Warning)]),
                "ok",
                "{id}"
            );
            assert_eq!(bridge_mark(&[f(id, "br0", Severity::Info)]), "ok", "{id}");
        }
        assert_eq!(
            bridge_mark(&[f("uplink-has-ip", "br0", Severity::Warning)]),
            "ok"
        );
        let both = [
            f("stp-forward-delay", "br0", Severity::Warning),
            f("bridge-down", "br0", Severity::Error),
        ];
        assert_eq!(bridge_mark(&both), "fail");
    }
}
