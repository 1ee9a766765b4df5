//! The part of the IPv4 firewall that decides whether bridged frames pass: the filter table's
//! FORWARD chain (and Docker's DOCKER-USER, which FORWARD jumps to first). Read with
//! `iptables -S` (an argument vector, no shell); parsed by a pure function.

use serde::{Deserialize, Serialize};
use std::process::Command;

/// What was read of the filter table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    /// The FORWARD chain's policy (`ACCEPT`, `DROP`), None when it could not be read.
    pub forward_policy: Option<String>,
    /// The rules of FORWARD and DOCKER-USER, as `iptables -S` prints them (`-A FORWARD ...`).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Docker's DOCKER-USER chain exists (Docker manages FORWARD; its policy is DROP).
    #[serde(default)]
    pub docker: bool,
    /// Why the table could not be read (iptables missing, not root, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Parse `iptables -S` output (filter table).
pub fn parse(text: &str) -> Firewall {
    let mut fw = Firewall::default();
    for line in text.lines().map(str::trim) {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("-P"), Some("FORWARD")) => fw.forward_policy = w.next().map(str::to_string),
            (Some("-N"), Some("DOCKER-USER")) => fw.docker = true,
            (Some("-A"), Some("FORWARD" | "DOCKER-USER")) => fw.rules.push(line.to_string()),
            _ => {}
        }
    }
    fw
}

/// Whether a rule accepts every bridged frame of `bridge`: `-j ACCEPT` with no match but
/// `-i BRIDGE`, `-o BRIDGE`, `-m physdev --physdev-is-bridged` (and a comment).
pub fn accepts_bridged(rule: &str, bridge: &str) -> bool {
    let mut toks = tokens(rule).into_iter();
    if toks.next().as_deref() != Some("-A") {
        return false;
    }
    toks.next(); // the chain
    let mut accept = false;
    while let Some(t) = toks.next() {
        match t.as_str() {
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let dev = toks.next().unwrap_or_default();
                let matches =
                    dev == bridge || dev.strip_suffix('+').is_some_and(|p| bridge.starts_with(p));
                if !matches {
                    return false;
                }
            }
            "-m" => {
                let m = toks.next().unwrap_or_default();
                if m != "physdev" && m != "comment" {
                    return false;
                }
            }
            "--physdev-is-bridged" => {}
            "--comment" => {
                toks.next();
            }
            "-j" => accept = toks.next().as_deref() == Some("ACCEPT"),
            _ => return false,
        }
    }
    accept
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

/// Read the filter table with `iptables -w 2 -S`. Never fails: what went wrong is kept in
/// `error` and the policy stays unknown.
pub fn observe() -> Firewall {
    match Command::new("iptables").args(["-w", "2", "-S"]).output() {
        Ok(out) if out.status.success() => parse(&String::from_utf8_lossy(&out.stdout)),
        Ok(out) => Firewall {
            error: Some(format!(
                "`iptables -S` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            ..Firewall::default()
        },
        Err(e) => Firewall {
            error: Some(format!("cannot run iptables: {e}")),
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
pub fn run(args: &[String]) -> crate::Result<()> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .map_err(|e| crate::Error::host(format!("cannot run iptables: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(crate::Error::host(format!(
            "iptables {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
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
