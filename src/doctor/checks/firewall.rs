//! Whether the firewall drops bridged frames: with `bridge-nf-call-iptables=1`, iptables'
//! FORWARD chain and nftables' ip/inet forward hooks see every IPv4 frame that crosses a
//! bridge; with `bridge-nf-call-ip6tables=1`, ip6tables' FORWARD and the ip6/inet hooks see
//! every IPv6 one. A drop of IPv4 cuts the VMs off (an error); a drop of IPv6 only (Docker
//! sets ip6tables' FORWARD policy to DROP on IPv6 hosts) leaves IPv4 working and breaks
//! the VMs' IPv6 (a warning: many LANs have none).

use super::{finding, Need};
use crate::doctor::{
    Action, Finding, HostState, Severity, MODULES_LOAD_DIR, SYSCTL_DIR, SYSCTL_DROPIN,
    SYSCTL_DROPIN6,
};
use crate::host::firewall::{self, Firewall, Outcome};
use crate::host::nft::{nft_verdict, Nft, NftChain};
use crate::host::sysctl::MODULES_LOAD_FILE;
use crate::shell::{join, quote};
use std::collections::BTreeMap;

/// The nftables forward chains that see frames of `family` (`ip` or `ip6`; `inet` sees
/// both). iptables-nft keeps its filter table as nft's `FAMILY filter` with base chain
/// FORWARD: when `iptables -S` (`ip6tables -S`) was read, that chain has been judged
/// already, in its own words.
fn forward_chains<'a>(nft: &'a Nft, table: &Firewall, family: &str) -> Vec<&'a NftChain> {
    let read = table.error.is_none() && table.forward_policy.is_some();
    nft.chains
        .iter()
        .filter(|c| c.family == family || c.family == "inet")
        .filter(|c| !(read && c.family == family && c.table == "filter" && c.name == "FORWARD"))
        .collect()
}

/// The bridges VMs need that exist as bridges here.
fn needed_bridges<'a>(host: &HostState, needs: &'a BTreeMap<String, Need>) -> Vec<&'a str> {
    needs
        .keys()
        .map(String::as_str)
        .filter(|b| host.interfaces.get(*b).is_some_and(|i| i.is_bridge))
        .collect()
}

/// With `bridge-nf-call-ip6tables=1`: does ip6tables or an ip6/inet forward chain drop the
/// IPv6 frames crossing a bridge VMs need?
pub(super) fn firewall6_checks(
    out: &mut Vec<Finding>,
    host: &HostState,
    needs: &BTreeMap<String, Need>,
) {
    if host.bridge_nf_call_ip6tables != Some(1) {
        return;
    }
    let key = crate::host::sysctl::BRIDGE_NF_CALL_IP6TABLES;
    let fw6 = host.firewall6.clone().unwrap_or_default();
    let nft = host
        .firewall
        .as_ref()
        .and_then(|f| f.nft.clone())
        .unwrap_or_default();
    let chains = forward_chains(&nft, &fw6, "ip6");
    for b in needed_bridges(host, needs) {
        let mut drops = Vec::new();
        let mut doubts = Vec::new();
        let v = firewall::iptables_verdict(&fw6, b);
        if v.outcome == Outcome::Drop {
            drops.push(if v.by.starts_with("policy") {
                format!("ip6tables FORWARD {}", v.by)
            } else {
                format!("ip6tables rule `{}`", v.by)
            });
            doubts.extend(v.doubts.iter().map(|d| format!("`{d}`")));
        }
        for c in &chains {
            let v = nft_verdict(&nft, c, b);
            if v.outcome == Outcome::Drop {
                drops.push(format!("nftables chain {} ({})", c.label(), v.by));
                doubts.extend(v.doubts.iter().map(|d| format!("`{d}` in {}", c.label())));
            }
        }
        if drops.is_empty() {
            continue;
        }
        let allow = format!("`ip6tables -I FORWARD -i {b} -o {b} -j ACCEPT`");
        let (fix, action) = if fw6.docker {
            (
                format!("Docker manages ip6tables' FORWARD and needs {key}=1 for its own IPv6 bridges, so --fix changes nothing here; allow {b}'s frames with `ip6tables -I DOCKER-USER -i {b} -o {b} -j ACCEPT` (Docker never flushes DOCKER-USER) and save it with your firewall"),
                None,
            )
        } else {
            (
                format!("--fix sets {key}=0: bridged IPv6 frames then skip ip6tables and nftables' ip6/inet forward chains, as on a switch; --persist also writes {SYSCTL_DIR}/{SYSCTL_DROPIN6}. Or keep filtering bridged frames and allow the VMs: {allow}"),
                Some(Action::BridgeNf6Off),
            )
        };
        let doubt = if doubts.is_empty() {
            String::new()
        } else {
            format!(
                " (uncertain: earlier rules this check cannot evaluate may accept part of the traffic: {})",
                doubts.join("; ")
            )
        };
        out.push(finding(
            "forward-drop-ipv6",
            Severity::Warning,
            b,
            format!("IPv6 frames crossing {b} pass through the firewall ({key}=1) and it drops them: {}{doubt}: the VMs' IPv6 (router advertisements, SLAAC, DHCPv6, neighbour discovery) dies while IPv4 may still work", drops.join(" and ")),
            fix,
            action,
        ));
    }
}

pub(super) fn firewall_checks(
    out: &mut Vec<Finding>,
    host: &HostState,
    needs: &BTreeMap<String, Need>,
) {
    if host.bridge_nf_call_iptables != Some(1) {
        return; // bridged frames never meet iptables
    }
    let bridges = needed_bridges(host, needs);
    if bridges.is_empty() {
        return;
    }
    let key = crate::host::sysctl::BRIDGE_NF_CALL_IPTABLES;
    let fw = host.firewall.clone().unwrap_or_default();
    let nft = fw.nft.clone().unwrap_or_default();
    // iptables-nft keeps its filter table as nft's `ip filter` with base chain FORWARD: when
    // `iptables -S` was read, that chain has been judged already, in its own words.
    let nft_chains = forward_chains(&nft, &fw, "ip");
    let mut dropping = false;
    let mut notes: Vec<String> = Vec::new();
    for b in &bridges {
        let qb = quote(b);
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
            let v = nft_verdict(&nft, c, b);
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
                    "`{}`",
                    join([
                        "nft", "insert", "rule", &c.family, &c.table, &c.name, "iifname", b,
                        "oifname", b, "accept"
                    ])
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
                format!("Docker manages FORWARD and needs {key}=1 for its own bridges, so --fix keeps the sysctl and adds `iptables -I DOCKER-USER -i {qb} -o {qb} -j ACCEPT` (Docker never flushes DOCKER-USER); to keep it across reboots, save it with your firewall (e.g. `iptables-save > /etc/iptables/rules.v4` with iptables-persistent)"),
                Some(Action::AcceptBridged { chain: "DOCKER-USER".into(), bridge: b.to_string() }),
            )
        } else if fw.docker {
            (
                format!("Docker needs {key}=1 for its own bridges, so --fix changes nothing here; allow {b}'s frames before what drops them: {}", if nft_cmds.is_empty() { format!("`iptables -I FORWARD -i {qb} -o {qb} -j ACCEPT`") } else { nft_cmds.join(", ") }),
                None,
            )
        } else {
            let mut alt = Vec::new();
            if drops.iter().any(|d| d.starts_with("iptables")) {
                alt.push(format!("`iptables -I FORWARD -i {qb} -o {qb} -j ACCEPT`"));
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
#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use super::*;
    use crate::doctor::{check, paths, Observation};
    use crate::host::firewall::Firewall;

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
            include_str!("../../../tests/data/doctor/iptables-ufw.txt"),
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
        let d28 = include_str!("../../../tests/data/doctor/iptables-docker28.txt");
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

    fn nft(json: &str) -> crate::host::nft::Nft {
        crate::host::nft::parse_nft(json).unwrap()
    }

    #[test]
    fn forward_drop_from_nftables() {
        let mut o = healthy();
        let fw = host(&mut o).firewall.as_mut().unwrap();
        fw.nft = Some(nft(include_str!(
            "../../../tests/data/doctor/nft-inet-forward-drop.json"
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
        host(&mut o).firewall.as_mut().unwrap().nft = Some(crate::host::nft::Nft {
            note: Some("nft is not installed: nftables rules were not read".into()),
            ..Default::default()
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

    /// With bridge-nf-call-ip6tables=1 and ip6tables' FORWARD dropping (Docker on an IPv6
    /// host): a warning with the IPv6 sysctl as the fix, the LAN hop drawn as a warning.
    fn ipv6_on(o: &mut Observation, rules: &str) {
        host(o).bridge_nf_call_ip6tables = Some(1);
        host(o).firewall6 = Some(crate::host::firewall::parse(rules));
    }

    #[test]
    fn ipv6_forward_drop_is_a_warning_with_its_own_fix() {
        let mut o = healthy();
        ipv6_on(&mut o, "-P FORWARD DROP\n");
        let f = check(&o);
        assert!(errors(&f).is_empty(), "IPv4 still works: {f:#?}");
        let w = find(&f, "forward-drop-ipv6");
        assert_eq!((w.severity, w.subject.as_str()), (Severity::Warning, "br0"));
        assert!(
            w.message.contains("ip6tables FORWARD policy DROP"),
            "{}",
            w.message
        );
        assert_eq!(w.action, Some(Action::BridgeNf6Off));
        assert!(w.fix.contains("90-vbridge-bridge-nf6.conf"), "{}", w.fix);
        let p = paths(&o, &f);
        let web = &p.iter().find(|p| p.domain == "web").unwrap().hops;
        assert_eq!((web[4].kind, web[4].mark), ("lan", "warn"));
        // Accepting br0's frames first, or the sysctl at 0: nothing to say.
        ipv6_on(
            &mut o,
            "-P FORWARD DROP\n-A FORWARD -i br0 -o br0 -j ACCEPT\n",
        );
        assert!(!check(&o).iter().any(|f| f.id == "forward-drop-ipv6"));
        ipv6_on(&mut o, "-P FORWARD DROP\n");
        host(&mut o).bridge_nf_call_ip6tables = Some(0);
        assert!(!check(&o).iter().any(|f| f.id == "forward-drop-ipv6"));
        // Under Docker (DOCKER-USER in ip6tables) the sysctl stays: a rule, by hand.
        ipv6_on(
            &mut o,
            "-P FORWARD DROP\n-N DOCKER-USER\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\n",
        );
        let w = find(&check(&o), "forward-drop-ipv6").clone();
        assert_eq!(w.action, None);
        assert!(
            w.fix
                .contains("ip6tables -I DOCKER-USER -i br0 -o br0 -j ACCEPT"),
            "{}",
            w.fix
        );
    }

    #[test]
    fn nft_ip6_chains_count_for_ipv6_only_and_inet_for_both() {
        let chain = |family: &str| {
            format!(
                r#"{{"nftables":[{{"chain":{{"family":"{family}","table":"t","name":"fwd","type":"filter","hook":"forward","prio":0,"policy":"drop"}}}}]}}"#
            )
        };
        let mut o = healthy();
        ipv6_on(&mut o, "-P FORWARD ACCEPT\n");
        host(&mut o).firewall.as_mut().unwrap().nft = Some(nft(&chain("ip6")));
        let f = check(&o);
        assert!(
            errors(&f).is_empty(),
            "an ip6 chain never sees IPv4: {f:#?}"
        );
        let w = find(&f, "forward-drop-ipv6");
        assert!(
            w.message.contains("nftables chain ip6 t fwd (policy drop)"),
            "{}",
            w.message
        );
        host(&mut o).firewall.as_mut().unwrap().nft = Some(nft(&chain("inet")));
        let f = check(&o);
        assert_eq!(errors(&f), [("forward-drop", "br0")]);
        assert!(f.iter().any(|f| f.id == "forward-drop-ipv6"));
    }

    /// iptables-nft's `ip filter FORWARD` is left to `iptables -S` only when that was read (a
    /// policy came back); otherwise nftables' view of it is judged.
    #[test]
    fn nft_judges_iptables_nft_forward_when_iptables_said_nothing() {
        let json = r#"{"nftables":[{"chain":{"family":"ip","table":"filter","name":"FORWARD","type":"filter","hook":"forward","prio":0,"policy":"drop"}}]}"#;
        let mut o = healthy();
        host(&mut o).firewall = Some(Firewall {
            nft: Some(nft(json)),
            ..Firewall::default()
        });
        let f = check(&o);
        let d = only_error(&f, "forward-drop", "br0");
        assert!(
            d.message.contains("nftables chain ip filter FORWARD"),
            "{}",
            d.message
        );
    }

    /// A jump to a chain that accepts the bridge's frames saves them from the policy.
    #[test]
    fn nft_jumps_are_followed_by_the_check() {
        let json = r#"{"nftables":[
            {"chain":{"family":"inet","table":"t","name":"fwd","type":"filter","hook":"forward","prio":0,"policy":"drop"}},
            {"rule":{"family":"inet","table":"t","chain":"fwd","expr":[{"jump":{"target":"vms"}}]}},
            {"chain":{"family":"inet","table":"t","name":"vms"}},
            {"rule":{"family":"inet","table":"t","chain":"vms","expr":[{"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"br0"}},{"accept":null}]}}]}"#;
        let mut o = healthy();
        host(&mut o).firewall.as_mut().unwrap().nft = Some(nft(json));
        assert!(errors(&check(&o)).is_empty());
        let dropping = json.replace(r#"{"accept":null}"#, r#"{"drop":null}"#);
        host(&mut o).firewall.as_mut().unwrap().nft = Some(nft(&dropping));
        let f = check(&o);
        let d = only_error(&f, "forward-drop", "br0");
        assert!(d.message.contains("(in chain vms)"), "{}", d.message);
    }
}
