//! `vbridge doctor`.

use super::{report, CmdResult, Globals};
use clap::Args;
use std::fmt::Write as _;
use vbridge::doctor::{self, Report, Severity};
use vbridge::libvirt::Conn;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// VMs to check (default: all)
    pub domains: Vec<String>,
    /// Apply the safe, reversible fixes
    #[arg(long)]
    pub fix: bool,
    /// With --fix: also make the fixes survive a reboot
    #[arg(long, requires = "fix")]
    pub persist: bool,
}

pub fn run(args: &DoctorArgs, g: &Globals) -> CmdResult {
    let conn = Conn::open(g.connect.as_deref())?;
    let opts = doctor::Options {
        domains: args.domains.clone(),
        fix: args.fix,
        persist: args.persist,
        dry_run: g.dry_run,
        sysctl_dir: None,
        modules_load_dir: None,
    };
    let r = doctor::run(&conn, &opts)?;
    Ok(report(r, render, Report::ok))
}

fn mark(m: &str) -> &str {
    match m {
        "ok" => "ok",
        "fail" => "FAIL",
        "warn" => "warn",
        "off" => "off",
        _ => "?",
    }
}

fn render(r: &Report, g: &Globals) -> String {
    let mut s = String::new();
    if !r.paths.is_empty() {
        s.push_str("Paths (NIC -> tap -> bridge -> uplink -> LAN):\n");
        for p in &r.paths {
            let hops: Vec<String> = p
                .hops
                .iter()
                .map(|h| {
                    let name = match h.kind {
                        "nic" => format!("NIC {}", h.name),
                        "tap" => format!("tap {}", h.name),
                        _ => h.name.clone(),
                    };
                    format!("{name} {}", mark(h.mark))
                })
                .collect();
            let mac = p.mac.as_deref().unwrap_or("-");
            let _ = writeln!(s, "  {} {mac}: {}", p.domain, hops.join(" -> "));
        }
        s.push('\n');
    }
    let shown: Vec<_> = r
        .findings
        .iter()
        .filter(|f| !g.quiet || f.severity == Severity::Error)
        .collect();
    if shown.is_empty() {
        s.push_str("No problem found.\n");
    } else {
        s.push_str("Findings:\n");
        for f in shown {
            let sev = match f.severity {
                Severity::Error => "ERROR",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            let _ = writeln!(s, "  {sev} {} [{}]: {}", f.id, f.subject, f.message);
            let _ = writeln!(s, "      fix: {}", f.fix);
        }
    }
    if !r.fixed.is_empty() {
        let _ = writeln!(
            s,
            "\n{}:",
            if r.dry_run {
                "Would change (dry run)"
            } else {
                "Changed"
            }
        );
        for f in &r.fixed {
            let state = match (&f.error, f.done) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, true) => "done".to_string(),
                (None, false) if r.dry_run => "would do".to_string(),
                (None, false) => "not done".to_string(),
            };
            let _ = writeln!(s, "  {} ({}): {state}", f.change, f.ids.join(", "));
            for p in &f.persisted {
                let _ = writeln!(s, "      wrote {}: {}", p.path, p.why);
            }
            if let Some(h) = &f.persist_hint {
                if g.verbose || !f.done || f.persisted.is_empty() {
                    let _ = writeln!(s, "      {h}");
                }
            }
        }
    }
    let count = |sev| r.findings.iter().filter(|f| f.severity == sev).count();
    let _ = writeln!(
        s,
        "\n{} error(s), {} warning(s), {} info ({:.1} ms){}",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info),
        r.elapsed_ms,
        if r.fixed.is_empty() || r.dry_run {
            ""
        } else {
            ", after the fixes"
        }
    );
    s
}

#[cfg(test)]
mod tests {
    //! Golden text reports: tests/data/doctor/*.txt, rewritten with `VBRIDGE_BLESS=1`.

    use super::*;
    use vbridge::doctor::{check, paths, plan, Observation};

    fn globals() -> Globals {
        Globals {
            connect: None,
            output: super::super::Format::Text,
            dry_run: true,
            quiet: false,
            verbose: false,
        }
    }

    fn golden(name: &str, obs: &Observation, fix: bool) {
        let findings = check(obs);
        let fixed = if fix { plan(&findings) } else { Vec::new() };
        let r = Report {
            uri: obs.uri.clone(),
            paths: paths(obs, &findings),
            findings,
            fixed,
            host_skipped: obs.host_skipped.clone(),
            dry_run: true,
            elapsed_ms: 0.0,
        };
        let text = render(&r, &globals());
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/doctor")
            .join(format!("{name}.txt"));
        crate::golden::assert_golden(&p, &text);
    }

    fn healthy() -> Observation {
        serde_json::from_str(include_str!("../../tests/data/doctor/healthy.json")).unwrap()
    }

    #[test]
    fn golden_reports() {
        golden("healthy", &healthy(), false);
        let mut o = healthy();
        let host = o.host.as_mut().unwrap();
        host.interfaces.get_mut("vnet0").unwrap().master = None;
        host.interfaces.get_mut("enp3s0").unwrap().ipv4 = vec!["192.168.1.20/24".into()];
        host.firewall.as_mut().unwrap().forward_policy = Some("DROP".into());
        o.networks[0].autostart = false;
        golden("faults-dry-run-fix", &o, true);
        // The uplink gone from br0 under a running VM: an error (its way to the LAN).
        let mut o = healthy();
        let host = o.host.as_mut().unwrap();
        host.interfaces.get_mut("enp3s0").unwrap().master = None;
        golden("no-uplink-running-vm", &o, true);
    }
}
