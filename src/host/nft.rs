//! nftables' side of whether bridged frames pass: the base chains on the forward hook of
//! families ip, ip6 and inet, read with `nft -j list ruleset` (an argument vector, no shell),
//! with the regular chains of their tables that jumps and gotos lead to. Parsing and the
//! verdict are pure functions; the verdict follows jumps to a bounded depth as the iptables
//! walk follows user chains (see [`super::firewall`] for what "applies" means).

use super::verdict::{iface_matches, Applies, Outcome, Verdict};
use crate::error::ErrorKind;
use serde::{Deserialize, Serialize};

/// nftables' base chains on the forward hook of family ip, ip6 and inet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nft {
    #[serde(default)]
    pub chains: Vec<NftChain>,
    /// The regular chains (no hook) of those families: where jumps and gotos lead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regular: Vec<NftChain>,
    /// Why nftables was not read (`nft` not installed, failed): a note, not an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One base chain with `hook forward`, or a regular chain one jumps to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftChain {
    pub family: String,
    pub table: String,
    pub name: String,
    /// `accept` or `drop` (empty for a regular chain).
    pub policy: String,
    #[serde(default)]
    pub rules: Vec<NftRule>,
}

/// One rule of such a chain, reduced to what the verdict needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftRule {
    /// Interface-name matches (`iifname`, `oifname`, `ibrname`, `obrname`, `iif`, `oif`).
    #[serde(default)]
    pub ifaces: Vec<NftIface>,
    /// Other matches, not evaluated (`ct state`, `ip saddr`, `@set`, ...).
    #[serde(default)]
    pub other: Vec<String>,
    /// `accept`, `drop`, `reject`, `return`, `jump NAME`, `goto NAME`, `queue`; None when
    /// the rule only counts or logs.
    pub verdict: Option<String>,
}

/// `KEY == NAME` / `KEY != NAME` / `KEY { A, B }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftIface {
    pub key: String,
    #[serde(default)]
    pub negated: bool,
    pub names: Vec<String>,
}

impl NftChain {
    /// `inet filter forward`
    pub fn label(&self) -> String {
        format!("{} {} {}", self.family, self.table, self.name)
    }
}

impl NftRule {
    /// The rule, roughly as `nft list` prints it.
    pub fn text(&self) -> String {
        let mut w: Vec<String> = self
            .ifaces
            .iter()
            .map(|c| {
                let names = if c.names.len() == 1 {
                    c.names[0].clone()
                } else {
                    format!("{{ {} }}", c.names.join(", "))
                };
                format!("{}{} {names}", c.key, if c.negated { " !=" } else { "" })
            })
            .collect();
        w.extend(self.other.iter().cloned());
        w.extend(self.verdict.iter().cloned());
        w.join(" ")
    }
}

/// How far jumps and gotos are followed (the iptables walk goes as deep).
const MAX_DEPTH: usize = 3;

/// Where a chain leaves a frame: decided by a rule, or on to what follows.
enum Flow {
    Accept(String),
    Drop(String),
    Next,
}

/// Rules whose effect could not be decided: may accept / may drop some of the frames.
#[derive(Default)]
struct Doubts {
    may_accept: Vec<String>,
    may_drop: Vec<String>,
}

impl Doubts {
    fn both(&mut self, d: String) {
        self.may_accept.push(d.clone());
        self.may_drop.push(d);
    }
}

/// Walk `chain` for a frame crossing `bridge`. `cond`: reached through a rule that may not
/// match, so nothing here is decisive.
fn walk(
    nft: &Nft,
    chain: &NftChain,
    bridge: &str,
    depth: usize,
    cond: bool,
    d: &mut Doubts,
) -> Flow {
    for r in &chain.rules {
        let mut applies = Applies::All;
        for c in &r.ifaces {
            let hit = c.names.iter().any(|n| iface_matches(n, bridge, '*'));
            if hit == c.negated {
                applies = Applies::None;
            }
        }
        if applies == Applies::None {
            continue;
        }
        if !r.other.is_empty() {
            applies = Applies::Some;
        }
        let all = applies == Applies::All && !cond;
        let text = if chain.policy.is_empty() {
            format!("{} (in chain {})", r.text(), chain.name)
        } else {
            r.text()
        };
        let Some(verdict) = r.verdict.as_deref() else {
            continue;
        };
        match verdict.split_once(' ') {
            None => match verdict {
                "accept" if all => return Flow::Accept(text),
                "drop" | "reject" if all => return Flow::Drop(text),
                "accept" => d.may_accept.push(text),
                "drop" | "reject" => d.may_drop.push(text),
                // `return` ends this chain: the caller goes on (a base chain: its policy).
                "return" if all => return Flow::Next,
                "return" => d.may_accept.push(text),
                _ => d.both(format!("{text} (not followed)")),
            },
            Some((kind, target)) => {
                let to = nft.regular.iter().find(|c| {
                    c.family == chain.family && c.table == chain.table && c.name == target
                });
                let Some(to) = to.filter(|_| depth < MAX_DEPTH) else {
                    d.both(format!("{text} (not followed)"));
                    continue;
                };
                match walk(nft, to, bridge, depth + 1, !all, d) {
                    // A goto does not come back: the chain that called this one goes on.
                    Flow::Next if kind == "goto" && all => return Flow::Next,
                    Flow::Next => {}
                    decided => return decided,
                }
            }
        }
    }
    Flow::Next
}

/// Where an nftables base chain leaves a frame crossing `bridge`, following its jumps and
/// gotos into the regular chains of `nft` (to a bounded depth; deeper ones are doubts).
pub fn nft_verdict(nft: &Nft, chain: &NftChain, bridge: &str) -> Verdict {
    let mut d = Doubts::default();
    let (outcome, by) = match walk(nft, chain, bridge, 0, false, &mut d) {
        Flow::Accept(by) => (Outcome::Accept, by),
        Flow::Drop(by) => (Outcome::Drop, by),
        Flow::Next if chain.policy == "drop" => (Outcome::Drop, "policy drop".to_string()),
        Flow::Next => (Outcome::Accept, format!("policy {}", chain.policy)),
    };
    Verdict {
        outcome,
        by,
        doubts: if outcome == Outcome::Drop {
            d.may_accept
        } else {
            d.may_drop
        },
    }
}

/// The description of a match's left side: `ct state`, `ip saddr`, `meta l4proto`.
fn describe_left(left: &serde_json::Value) -> String {
    match left.as_object().and_then(|o| o.iter().next()) {
        Some((k, v)) => {
            let inner = ["key", "field"]
                .iter()
                .find_map(|f| v.get(f).and_then(|x| x.as_str()));
            let proto = v.get("protocol").and_then(|x| x.as_str());
            [proto.unwrap_or(k.as_str()), inner.unwrap_or("")]
                .join(" ")
                .trim()
                .to_string()
        }
        None => left.to_string(),
    }
}

fn parse_nft_rule(exprs: &[serde_json::Value]) -> NftRule {
    let mut r = NftRule::default();
    for e in exprs {
        let Some((k, v)) = e.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        match k.as_str() {
            "match" => {
                let key = v
                    .pointer("/left/meta/key")
                    .and_then(|x| x.as_str())
                    .filter(|k| {
                        ["iifname", "oifname", "ibrname", "obrname", "iif", "oif"].contains(k)
                    });
                let op = v.get("op").and_then(|x| x.as_str()).unwrap_or("==");
                let right = v.get("right");
                let names: Option<Vec<String>> = match right {
                    Some(serde_json::Value::String(s)) if !s.starts_with('@') => {
                        Some(vec![s.clone()])
                    }
                    Some(x) => x
                        .get("set")
                        .and_then(|s| s.as_array())
                        .and_then(|a| a.iter().map(|n| n.as_str().map(str::to_string)).collect()),
                    None => None,
                };
                match (key, names, op) {
                    (Some(key), Some(names), "==" | "!=" | "in") => r.ifaces.push(NftIface {
                        key: key.to_string(),
                        negated: op == "!=",
                        names,
                    }),
                    _ => r.other.push(describe_left(v.get("left").unwrap_or(v))),
                }
            }
            "accept" | "drop" | "reject" | "return" | "queue" => r.verdict = Some(k.clone()),
            "jump" | "goto" => {
                let t = v.get("target").and_then(|x| x.as_str()).unwrap_or("?");
                r.verdict = Some(format!("{k} {t}"));
            }
            // Statements that do not filter.
            "counter" | "log" | "mangle" | "notrack" => {}
            other => r.other.push(other.to_string()),
        }
    }
    r
}

/// Parse `nft -j list ruleset`: the forward base chains of families ip, ip6 and inet, and
/// the regular chains of those families.
pub fn parse_nft(json: &str) -> Result<Nft, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("unreadable `nft -j` output: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(|x| x.as_array())
        .ok_or("`nft -j` output has no \"nftables\" list")?;
    let s = |o: &serde_json::Value, k: &str| {
        o.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut chains: Vec<NftChain> = Vec::new();
    let mut regular: Vec<NftChain> = Vec::new();
    for it in items {
        if let Some(c) = it.get("chain") {
            let fam = s(c, "family");
            if !matches!(fam.as_str(), "ip" | "ip6" | "inet") {
                continue;
            }
            let chain = |policy: String| NftChain {
                family: fam.clone(),
                table: s(c, "table"),
                name: s(c, "name"),
                policy,
                rules: Vec::new(),
            };
            match s(c, "hook").as_str() {
                "forward" => {
                    let policy = s(c, "policy");
                    chains.push(chain(if policy.is_empty() {
                        "accept".into()
                    } else {
                        policy
                    }));
                }
                "" => regular.push(chain(String::new())),
                _ => {}
            }
        }
    }
    for it in items {
        let Some(r) = it.get("rule") else { continue };
        let key = (s(r, "family"), s(r, "table"), s(r, "chain"));
        if let Some(c) = chains
            .iter_mut()
            .chain(regular.iter_mut())
            .find(|c| (c.family.clone(), c.table.clone(), c.name.clone()) == key)
        {
            let exprs = r
                .get("expr")
                .and_then(|x| x.as_array())
                .cloned()
                .unwrap_or_default();
            c.rules.push(parse_nft_rule(&exprs));
        }
    }
    Ok(Nft {
        chains,
        regular,
        note: None,
    })
}

/// Read nftables with `nft -j list ruleset`. Not installed is a note, not an error.
pub fn observe() -> Nft {
    let note = |n: String| Nft {
        note: Some(n),
        ..Nft::default()
    };
    match super::run_program("nft", &["-j", "list", "ruleset"]) {
        Ok(out) => parse_nft(&out).unwrap_or_else(note),
        Err(e) if e.kind == ErrorKind::NotFound => {
            note("nft is not installed: nftables rules were not read".into())
        }
        Err(e) => note(e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_forward_chains() {
        let nft = parse_nft(include_str!(
            "../../tests/data/doctor/nft-inet-forward-drop.json"
        ))
        .unwrap();
        // The bridge family chain and the input chain are not ours to judge.
        assert_eq!(nft.chains.len(), 1, "{nft:#?}");
        let c = &nft.chains[0];
        assert_eq!(
            (c.label().as_str(), c.policy.as_str()),
            ("inet filter forward", "drop")
        );
        let v = nft_verdict(&nft, c, "br0");
        assert_eq!((v.outcome, v.by.as_str()), (Outcome::Drop, "policy drop"));
        assert_eq!(v.doubts, ["ct state accept"]);
        // An accept for the bridge before the policy saves it; ibrname too.
        for key in ["iifname", "ibrname", "obrname"] {
            let mut c = c.clone();
            c.rules.insert(
                0,
                NftRule {
                    ifaces: vec![NftIface {
                        key: key.into(),
                        negated: false,
                        names: vec!["br*".into()],
                    }],
                    verdict: Some("accept".into()),
                    ..NftRule::default()
                },
            );
            assert_eq!(
                nft_verdict(&nft, &c, "br0").outcome,
                Outcome::Accept,
                "{key}"
            );
        }
        // Policy accept with a terminal drop: dropped; after it, an accept is too late.
        let json = r#"{"nftables":[{"chain":{"family":"ip","table":"t","name":"f","type":"filter","hook":"forward","prio":0,"policy":"accept"}},
            {"rule":{"family":"ip","table":"t","chain":"f","expr":[{"counter":{"packets":0,"bytes":0}},{"drop":null}]}},
            {"rule":{"family":"ip","table":"t","chain":"f","expr":[{"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":{"set":["br0","br1"]}}},{"accept":null}]}}]}"#;
        let nft = parse_nft(json).unwrap();
        let v = nft_verdict(&nft, &nft.chains[0], "br0");
        assert_eq!((v.outcome, v.by.as_str()), (Outcome::Drop, "drop"));
        assert_eq!(nft.chains[0].rules[1].text(), "oifname { br0, br1 } accept");
        // A jump to a chain that is not there: a doubt.
        let json = r#"{"nftables":[{"chain":{"family":"inet","table":"t","name":"f","type":"filter","hook":"forward","prio":0,"policy":"drop"}},
            {"rule":{"family":"inet","table":"t","chain":"f","expr":[{"jump":{"target":"vms"}}]}}]}"#;
        let nft = parse_nft(json).unwrap();
        let v = nft_verdict(&nft, &nft.chains[0], "br0");
        assert_eq!(v.outcome, Outcome::Drop);
        assert_eq!(v.doubts, ["jump vms (not followed)"]);
        assert!(parse_nft("not json").is_err());
    }

    /// A base chain with `policy` and rules, and regular chains, as `nft -j` prints them.
    fn ruleset(policy: &str, base: &[&str], regular: &[(&str, &[&str])]) -> Nft {
        let mut items = vec![format!(
            r#"{{"chain":{{"family":"inet","table":"t","name":"fwd","type":"filter","hook":"forward","prio":0,"policy":"{policy}"}}}}"#
        )];
        let rule = |chain: &str, expr: &str| {
            format!(
                r#"{{"rule":{{"family":"inet","table":"t","chain":"{chain}","expr":[{expr}]}}}}"#
            )
        };
        items.extend(base.iter().map(|e| rule("fwd", e)));
        for (name, rules) in regular {
            items.push(format!(
                r#"{{"chain":{{"family":"inet","table":"t","name":"{name}"}}}}"#
            ));
            items.extend(rules.iter().map(|e| rule(name, e)));
        }
        parse_nft(&format!(r#"{{"nftables":[{}]}}"#, items.join(","))).unwrap()
    }

    fn verdict_of(nft: &Nft) -> (Outcome, String, Vec<String>) {
        let v = nft_verdict(nft, &nft.chains[0], "br0");
        (v.outcome, v.by, v.doubts)
    }

    const BR0: &str = r#"{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"br0"}}"#;
    const CT: &str =
        r#"{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":["established"]}}"#;

    #[test]
    fn jumps_and_gotos_are_followed() {
        let jump = r#"{"jump":{"target":"vms"}}"#;
        let goto = r#"{"goto":{"target":"vms"}}"#;
        let accept = r#"{"accept":null}"#;
        let drop = r#"{"drop":null}"#;
        let ret = r#"{"return":null}"#;
        // The chain jumped to accepts br0's frames: policy drop does not get them.
        let cond_accept = format!("{BR0},{accept}");
        let nft = ruleset("drop", &[jump], &[("vms", &[&cond_accept])]);
        assert_eq!(verdict_of(&nft).0, Outcome::Accept);
        assert_eq!(verdict_of(&nft).1, "iifname br0 accept (in chain vms)");
        // It drops them, under policy accept.
        let nft = ruleset("accept", &[jump, accept], &[("vms", &[drop])]);
        assert_eq!(verdict_of(&nft).0, Outcome::Drop);
        // It returns: the base chain goes on after the jump.
        let nft = ruleset("accept", &[jump, drop], &[("vms", &[ret, accept])]);
        assert_eq!(verdict_of(&nft).0, Outcome::Drop);
        // A goto whose chain falls through does not come back: the policy decides.
        let nft = ruleset("accept", &[goto, drop], &[("vms", &[])]);
        assert_eq!(verdict_of(&nft).0, Outcome::Accept);
        let nft = ruleset("accept", &[jump, drop], &[("vms", &[])]);
        assert_eq!(verdict_of(&nft).0, Outcome::Drop);
        // A jump under a condition: what the chain decides is a doubt, not the verdict.
        let cond_jump = format!("{CT},{jump}");
        let nft = ruleset("drop", &[&cond_jump], &[("vms", &[accept])]);
        let (outcome, by, doubts) = verdict_of(&nft);
        assert_eq!((outcome, by.as_str()), (Outcome::Drop, "policy drop"));
        assert_eq!(doubts, ["accept (in chain vms)"]);
    }

    /// Conditional verdicts are doubts; unconditional ones decide, `return` included.
    #[test]
    fn conditions_return_and_sets() {
        let (accept, drop, ret) = (
            r#"{"accept":null}"#,
            r#"{"drop":null}"#,
            r#"{"return":null}"#,
        );
        let cond = |v: &str| format!("{CT},{v}");
        // A conditional drop under policy accept: accepted, with the doubt.
        let nft = ruleset("accept", &[&cond(drop)], &[]);
        let (outcome, _, doubts) = verdict_of(&nft);
        assert_eq!(outcome, Outcome::Accept);
        assert_eq!(doubts, ["ct state drop"]);
        // A conditional accept under policy drop: dropped, with the doubt.
        let nft = ruleset("drop", &[&cond(accept)], &[]);
        assert_eq!(verdict_of(&nft).2, ["ct state accept"]);
        // An unconditional return ends the base chain: the policy, not the drop after it.
        let nft = ruleset("accept", &[ret, drop], &[]);
        assert_eq!(
            verdict_of(&nft),
            (Outcome::Accept, "policy accept".to_string(), vec![])
        );
        // A conditional return may skip the drop: dropped, with the doubt.
        let nft = ruleset("accept", &[&cond(ret), drop], &[]);
        let (outcome, by, doubts) = verdict_of(&nft);
        assert_eq!((outcome, by.as_str()), (Outcome::Drop, "drop"));
        assert_eq!(doubts, ["ct state return"]);
        // An unconditional reject decides like a drop.
        let nft = ruleset("accept", &[r#"{"reject":null}"#], &[]);
        assert_eq!(verdict_of(&nft).0, Outcome::Drop);
        // An interface named by a set reference (@ifs) cannot be evaluated: a condition.
        let at_set = r#"{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"@ifs"}}"#;
        let nft = ruleset("drop", &[&format!("{at_set},{accept}")], &[]);
        let (outcome, _, doubts) = verdict_of(&nft);
        assert_eq!(outcome, Outcome::Drop);
        assert_eq!(doubts.len(), 1, "{doubts:?}");
    }

    #[test]
    fn jumps_are_followed_only_so_deep() {
        let to = |n: &str| format!(r#"{{"jump":{{"target":"{n}"}}}}"#);
        let (a, b, c, d) = (to("a"), to("b"), to("c"), to("d"));
        let accept = r#"{"accept":null}"#;
        // fwd -> a -> b -> c -> d: the third level is followed, the fourth is not.
        let nft = ruleset(
            "drop",
            &[&a],
            &[("a", &[&b]), ("b", &[&c]), ("c", &[accept])],
        );
        assert_eq!(verdict_of(&nft).0, Outcome::Accept);
        let nft = ruleset(
            "drop",
            &[&a],
            &[("a", &[&b]), ("b", &[&c]), ("c", &[&d]), ("d", &[accept])],
        );
        let (outcome, _, doubts) = verdict_of(&nft);
        assert_eq!(outcome, Outcome::Drop);
        assert_eq!(doubts, ["jump d (in chain c) (not followed)"]);
        // A loop ends at the bound too.
        let nft = ruleset("accept", &[&a], &[("a", &[&a])]);
        assert_eq!(verdict_of(&nft).0, Outcome::Accept);
    }
}
