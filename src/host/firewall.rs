//! The part of the IPv4 firewall that decides whether bridged frames pass (with
//! `net.bridge.bridge-nf-call-iptables=1` they cross the IPv4 forward hook): the filter
//! table's FORWARD chain with the user chains it jumps to (Docker's DOCKER-USER and
//! DOCKER-FORWARD, ufw's, ...), read with `iptables -S`, and nftables' forward base chains
//! of family ip/inet, read with `nft -j list ruleset`. Both run with an argument vector, no
//! shell; parsing and the verdict are pure functions.
//!
//! The verdict is for one frame crossing bridge BR (in BR, out BR, bridged). A rule applies
//! to all such frames when its only matches are `-i BR`, `-o BR` (or a `+` wildcard),
//! `--physdev-is-bridged` and comments; it applies to none when one of those cannot hold
//! (`-i other`, `! -o BR`); anything else (addresses, protocols, conntrack, ...) may hold
//! for some frames and not others. Conservatively, such a rule neither saves nor condemns
//! the frames: the walk goes on, and the verdict lists it as a doubt.

use super::verdict::{iface_matches, Applies};
pub use super::verdict::{Outcome, Verdict};
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// What was read of the firewall.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    /// The FORWARD chain's policy (`ACCEPT`, `DROP`), None when it could not be read.
    pub forward_policy: Option<String>,
    /// Every rule of the filter table, in order, as `iptables -S` prints them (`-A CHAIN ...`).
    #[serde(default)]
    pub rules: Vec<String>,
    /// The user-defined chains (`-N NAME`).
    #[serde(default)]
    pub chains: Vec<String>,
    /// Docker's DOCKER-USER chain exists (Docker manages FORWARD; its policy is DROP).
    #[serde(default)]
    pub docker: bool,
    /// Why the table could not be read (iptables missing, not root, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// nftables' forward hooks; None when not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nft: Option<super::nft::Nft>,
}

/// Parse `iptables -S` output (filter table).
pub fn parse(text: &str) -> Firewall {
    let mut fw = Firewall::default();
    for line in text.lines().map(str::trim) {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("-P"), Some("FORWARD")) => fw.forward_policy = w.next().map(str::to_string),
            (Some("-N"), Some(chain)) => {
                fw.docker |= chain == "DOCKER-USER";
                fw.chains.push(chain.to_string());
            }
            (Some("-A"), Some(_)) => fw.rules.push(line.to_string()),
            _ => {}
        }
    }
    fw
}

/// A rule's target: `(true, X)` for `-g X`, `(false, X)` for `-j X`.
type Target = (bool, String);

/// An iptables rule's chain, whether it applies to `bridge`'s frames, and its target.
fn classify(rule: &str, bridge: &str) -> Option<(String, Applies, Option<Target>)> {
    let mut toks = tokens(rule).into_iter();
    if toks.next().as_deref() != Some("-A") {
        return None;
    }
    let chain = toks.next()?;
    let mut applies = Applies::All;
    let mut negate = false;
    let mut target = None;
    let some = |a: &mut Applies| {
        if *a == Applies::All {
            *a = Applies::Some;
        }
    };
    while let Some(t) = toks.next() {
        let neg = std::mem::take(&mut negate);
        match t.as_str() {
            "!" => negate = true,
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let dev = toks.next().unwrap_or_default();
                if iface_matches(&dev, bridge, '+') == neg {
                    applies = Applies::None;
                }
            }
            "-m" | "--match" => {
                let m = toks.next().unwrap_or_default();
                if m != "physdev" && m != "comment" {
                    some(&mut applies);
                }
            }
            "--comment" => {
                toks.next();
            }
            // Every bridged frame has an in and out port and is bridged.
            "--physdev-is-bridged" | "--physdev-is-in" | "--physdev-is-out" => {
                if neg {
                    applies = Applies::None;
                }
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                target = toks
                    .next()
                    .map(|n| (t.starts_with("-g") || t == "--goto", n));
                break; // what follows are the target's options
            }
            _ => some(&mut applies),
        }
    }
    Some((chain, applies, target))
}

/// Whether a rule accepts every bridged frame of `bridge`: `-j ACCEPT` with no match but
/// `-i BRIDGE`, `-o BRIDGE`, `-m physdev --physdev-is-bridged` (and a comment).
pub fn accepts_bridged(rule: &str, bridge: &str) -> bool {
    matches!(classify(rule, bridge), Some((_, Applies::All, Some((_, t)))) if t == "ACCEPT")
}

/// How deep user chains are followed. The brief asked for one level; Docker 28
/// (FORWARD -> DOCKER-FORWARD -> DOCKER-CT/DOCKER-BRIDGE) and ufw (FORWARD ->
/// ufw-before-forward -> ufw-user-forward) nest two, so one level would leave every such host
/// "uncertain". Deeper ones become doubts.
const MAX_DEPTH: usize = 3;

enum Flow {
    Accept(String),
    Drop(String),
    /// Fell off the end or hit RETURN: back to the caller (or FORWARD's policy).
    Next,
}

fn walk(
    fw: &Firewall,
    chain: &str,
    bridge: &str,
    depth: usize,
    cond: bool,
    doubts: &mut (Vec<String>, Vec<String>),
) -> Flow {
    for rule in &fw.rules {
        let Some((c, applies, target)) = classify(rule, bridge) else {
            continue;
        };
        if c != chain || applies == Applies::None {
            continue;
        }
        // `cond`: reached only through a rule that may not match, so not decisive.
        let all = applies == Applies::All && !cond;
        let Some((goto, t)) = target else { continue };
        match t.as_str() {
            "ACCEPT" if all => return Flow::Accept(rule.clone()),
            "ACCEPT" => doubts.0.push(rule.clone()),
            "DROP" | "REJECT" if all => return Flow::Drop(rule.clone()),
            "DROP" | "REJECT" => doubts.1.push(rule.clone()),
            "RETURN" if all => return Flow::Next,
            "RETURN" => doubts.0.push(rule.clone()),
            "QUEUE" | "NFQUEUE" => {
                doubts.0.push(rule.clone());
                doubts.1.push(rule.clone());
            }
            user if fw.chains.iter().any(|c| c == user) => {
                if depth >= MAX_DEPTH {
                    let d = format!("{rule} (chain {user} not followed)");
                    doubts.0.push(d.clone());
                    doubts.1.push(d);
                    continue;
                }
                match walk(fw, user, bridge, depth + 1, !all, doubts) {
                    Flow::Next if goto && all => return Flow::Next,
                    Flow::Next => {}
                    decided => return decided,
                }
            }
            _ => {} // LOG, MARK, CT, ...: not a verdict
        }
    }
    Flow::Next
}

/// Where FORWARD (with the chains it jumps to) leaves a frame crossing `bridge`.
pub fn iptables_verdict(fw: &Firewall, bridge: &str) -> Verdict {
    let mut doubts = (Vec::new(), Vec::new());
    let flow = walk(fw, "FORWARD", bridge, 0, false, &mut doubts);
    let (outcome, by) = match flow {
        Flow::Accept(r) => (Outcome::Accept, r),
        Flow::Drop(r) => (Outcome::Drop, r),
        Flow::Next => match fw.forward_policy.as_deref() {
            Some("DROP") => (Outcome::Drop, "policy DROP".to_string()),
            Some(p) => (Outcome::Accept, format!("policy {p}")),
            None => (Outcome::Unknown, "unreadable".to_string()),
        },
    };
    let doubts = match outcome {
        Outcome::Drop => doubts.0,
        _ => doubts.1,
    };
    Verdict {
        outcome,
        by,
        doubts,
    }
}

/// Split a rule into words, keeping a double-quoted comment as one.
fn tokens(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Read the filter table with `iptables -w 2 -S`, and nftables. Never fails: what went
/// wrong is kept in `error` (and the policy stays unknown) or in the nft note.
pub fn observe() -> Firewall {
    let mut fw = observe_table("iptables");
    fw.nft = Some(super::nft::observe());
    fw
}

/// The IPv6 filter table, `ip6tables -w 2 -S` (nftables is read once, by [`observe`]).
pub fn observe6() -> Firewall {
    observe_table("ip6tables")
}

fn observe_table(program: &str) -> Firewall {
    match super::run_program(program, &["-w", "2", "-S"]) {
        Ok(out) => parse(&out),
        Err(e) => Firewall {
            error: Some(e.message),
            ..Firewall::default()
        },
    }
}

/// The iptables argument vector that inserts (`-I`) or deletes (`-D`) the rule accepting
/// bridged traffic of `bridge` in `chain`.
pub fn accept_rule_args(op: &str, chain: &str, bridge: &str) -> Vec<String> {
    [
        "-w",
        op,
        chain,
        "-i",
        bridge,
        "-o",
        bridge,
        "-m",
        "comment",
        "--comment",
        "vbridge: bridged VM traffic",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["-j".to_string(), "ACCEPT".to_string()])
    .collect()
}

/// Run iptables with an argument vector.
pub fn run(args: &[String]) -> Result<()> {
    super::run_program("iptables", args).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER: &str = "-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n-N DOCKER\n-N DOCKER-USER\n-A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n-A DOCKER-USER -j RETURN\n";

    #[test]
    fn parses_docker_table() {
        let fw = parse(DOCKER);
        assert_eq!(fw.forward_policy.as_deref(), Some("DROP"));
        assert!(fw.docker);
        assert_eq!(fw.rules.len(), 4);
        assert_eq!(fw.chains, ["DOCKER", "DOCKER-USER"]);
        assert!(!fw.rules.iter().any(|r| accepts_bridged(r, "br0")));
    }

    #[test]
    fn bridged_accept_rules() {
        for r in [
            "-A FORWARD -m physdev --physdev-is-bridged -j ACCEPT",
            "-A FORWARD -i br0 -o br0 -j ACCEPT",
            "-A DOCKER-USER -i br+ -o br+ -j ACCEPT",
            "-A FORWARD -i br0 -o br0 -m comment --comment \"vbridge: bridged VM traffic\" -j ACCEPT",
            "-A FORWARD -j ACCEPT",
        ] {
            assert!(accepts_bridged(r, "br0"), "{r}");
        }
        for r in [
            "-A FORWARD -i br1 -o br1 -j ACCEPT",
            "-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A FORWARD -i br0 ! -o br0 -j ACCEPT",
            "-A FORWARD -i br0 -o br0 -j DROP",
            "-P FORWARD ACCEPT",
        ] {
            assert!(!accepts_bridged(r, "br0"), "{r}");
        }
    }

    fn verdict(text: &str) -> Verdict {
        iptables_verdict(&parse(text), "br0")
    }

    #[test]
    fn terminal_drop_rule_with_policy_accept_drops() {
        let v = verdict("-P FORWARD ACCEPT\n-A FORWARD -j DROP\n");
        assert_eq!(
            (v.outcome, v.by.as_str()),
            (Outcome::Drop, "-A FORWARD -j DROP")
        );
        let v = verdict(
            "-P FORWARD ACCEPT\n-A FORWARD -j REJECT --reject-with icmp-port-unreachable\n",
        );
        assert_eq!(v.outcome, Outcome::Drop);
        // A drop for another bridge's frames does not touch br0's.
        let v = verdict(
            "-P FORWARD ACCEPT\n-A FORWARD -i docker0 -j DROP\n-A FORWARD ! -o br0 -j DROP\n",
        );
        assert_eq!(v.outcome, Outcome::Accept);
        assert!(v.doubts.is_empty(), "{v:?}");
    }

    #[test]
    fn rule_order_decides() {
        // ACCEPT after a DROP that matches everything does not help...
        let v =
            verdict("-P FORWARD ACCEPT\n-A FORWARD -j DROP\n-A FORWARD -i br0 -o br0 -j ACCEPT\n");
        assert_eq!(v.outcome, Outcome::Drop);
        // ...before it, it does.
        let v = verdict("-P FORWARD DROP\n-A FORWARD -m physdev --physdev-is-bridged -j ACCEPT\n-A FORWARD -j DROP\n");
        assert_eq!(
            (v.outcome, v.by.as_str()),
            (
                Outcome::Accept,
                "-A FORWARD -m physdev --physdev-is-bridged -j ACCEPT"
            )
        );
    }

    #[test]
    fn conditional_rules_are_doubts_not_verdicts() {
        // A conditional accept before the policy: still a drop, but uncertain.
        let v = verdict("-P FORWARD DROP\n-A FORWARD -s 10.0.0.0/8 -j ACCEPT\n");
        assert_eq!(v.outcome, Outcome::Drop);
        assert_eq!(v.doubts, ["-A FORWARD -s 10.0.0.0/8 -j ACCEPT"]);
        // A conditional drop before an accept: accepted, with a doubt.
        let v = verdict("-P FORWARD ACCEPT\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\n");
        assert_eq!(v.outcome, Outcome::Accept);
        assert_eq!(v.doubts.len(), 1);
        // A jump under a condition: what the chain decides is only a doubt.
        let v = verdict("-P FORWARD ACCEPT\n-N X\n-A FORWARD -p tcp -j X\n-A X -j DROP\n");
        assert_eq!(v.outcome, Outcome::Accept);
        assert_eq!(v.doubts, ["-A X -j DROP"]);
    }

    /// RETURN, queues, targets that are not chains, and gotos: each as iptables runs them.
    #[test]
    fn returns_queues_and_gotos() {
        // An unconditional RETURN in FORWARD ends it: the policy decides, the DROP after it
        // never runs.
        let v = verdict("-P FORWARD ACCEPT\n-A FORWARD -j RETURN\n-A FORWARD -j DROP\n");
        assert_eq!(
            (v.outcome, v.by.as_str()),
            (Outcome::Accept, "policy ACCEPT")
        );
        // A conditional one may skip the DROP: a drop with a doubt.
        let v = verdict("-P FORWARD ACCEPT\n-A FORWARD -p udp -j RETURN\n-A FORWARD -j DROP\n");
        assert_eq!(v.outcome, Outcome::Drop);
        assert_eq!(v.doubts, ["-A FORWARD -p udp -j RETURN"]);
        // A queue may do either: a doubt both ways.
        let q = "-A FORWARD -j NFQUEUE --queue-num 1";
        let v = verdict(&format!("-P FORWARD DROP\n{q}\n"));
        assert_eq!(
            (v.outcome, v.doubts.as_slice()),
            (Outcome::Drop, [q.to_string()].as_slice())
        );
        let v = verdict(&format!("-P FORWARD ACCEPT\n{q}\n"));
        assert_eq!(
            (v.outcome, v.doubts.as_slice()),
            (Outcome::Accept, [q.to_string()].as_slice())
        );
        // A target that is no chain of the table (LOG, a chain not listed) decides nothing.
        let v = verdict("-P FORWARD ACCEPT\n-A FORWARD -j LOG\n-A FORWARD -j GONE\n");
        assert_eq!((v.outcome, v.doubts.len()), (Outcome::Accept, 0));
        // A goto to a chain that falls through ends FORWARD (the policy); a jump returns.
        let chain = "-N X\n-A X -s 10.0.0.0/8 -j ACCEPT\n";
        let v = verdict(&format!(
            "-P FORWARD ACCEPT\n{chain}-A FORWARD -g X\n-A FORWARD -j DROP\n"
        ));
        assert_eq!(v.outcome, Outcome::Accept);
        let v = verdict(&format!(
            "-P FORWARD ACCEPT\n{chain}-A FORWARD -j X\n-A FORWARD -j DROP\n"
        ));
        assert_eq!(v.outcome, Outcome::Drop);
        // A conditional goto may not be taken: the rules after it still run.
        let v = verdict(&format!(
            "-P FORWARD ACCEPT\n{chain}-A FORWARD -p tcp -g X\n-A FORWARD -j DROP\n"
        ));
        assert_eq!(v.outcome, Outcome::Drop);
        // An interface match with the `+` wildcard of another bridge name does not apply.
        let v = verdict("-P FORWARD ACCEPT\n-A FORWARD -i virbr+ -j DROP\n");
        assert_eq!(v.outcome, Outcome::Accept);
        let v = verdict("-P FORWARD ACCEPT\n-A FORWARD -i br+ -j DROP\n");
        assert_eq!(v.outcome, Outcome::Drop);
    }

    #[test]
    fn user_chains_are_followed() {
        // Old Docker: DOCKER-USER returns, the policy drops.
        let v = verdict(DOCKER);
        assert_eq!((v.outcome, v.by.as_str()), (Outcome::Drop, "policy DROP"));
        assert!(v.doubts.is_empty(), "{v:?}");
        // An accept in DOCKER-USER decides.
        let with = DOCKER.replace(
            "-A DOCKER-USER -j RETURN",
            "-A DOCKER-USER -i br0 -o br0 -j ACCEPT\n-A DOCKER-USER -j RETURN",
        );
        assert_eq!(verdict(&with).outcome, Outcome::Accept);
        // Docker 28: FORWARD -> DOCKER-FORWARD -> DOCKER-CT/-BRIDGE; nothing is for br0.
        let d28 = include_str!("../../tests/data/doctor/iptables-docker28.txt");
        let v = verdict(d28);
        assert_eq!((v.outcome, v.by.as_str()), (Outcome::Drop, "policy DROP"));
        assert!(v.doubts.is_empty(), "{v:?}");
        assert!(parse(d28).docker);
        // ufw: conditional accepts two chains down make the drop uncertain, not absent.
        let v = verdict(include_str!("../../tests/data/doctor/iptables-ufw.txt"));
        assert_eq!(v.outcome, Outcome::Drop);
        assert_eq!(v.doubts.len(), 2, "{v:?}");
        // A goto whose chain falls through ends FORWARD: the policy decides.
        let v = verdict("-P FORWARD ACCEPT\n-N G\n-A FORWARD -g G\n-A FORWARD -j DROP\n");
        assert_eq!(v.outcome, Outcome::Accept);
        // Too deep to follow: a doubt.
        let v = verdict("-P FORWARD DROP\n-N A\n-N B\n-N C\n-N D\n-A FORWARD -j A\n-A A -j B\n-A B -j C\n-A C -j D\n-A D -j ACCEPT\n");
        assert_eq!(v.outcome, Outcome::Drop);
        assert!(v.doubts[0].contains("chain D not followed"), "{v:?}");
        // Unreadable: unknown.
        assert_eq!(verdict("").outcome, Outcome::Unknown);
    }

    #[test]
    fn rule_args_round_trip() {
        let a = accept_rule_args("-I", "DOCKER-USER", "br0");
        let line = format!(
            "-A DOCKER-USER {}",
            a[3..]
                .iter()
                .map(|t| if t.contains(' ') {
                    format!("\"{t}\"")
                } else {
                    t.clone()
                })
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(accepts_bridged(&line, "br0"), "{line}");
    }
}
