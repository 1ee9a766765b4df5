//! `vbridge doctor`.

use super::{report, CmdResult, Globals};
use crate::doctor::{self, Report, Severity};
use crate::libvirt::Conn;
use clap::Args;
use std::fmt::Write as _;

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
                (None, false) => "not done".to_string(),
            };
            let _ = writeln!(s, "  {} ({}): {state}", f.change, f.ids.join(", "));
            if let Some(p) = &f.persisted {
                let _ = writeln!(s, "      persisted in {p}");
            }
            if let Some(h) = &f.persist_hint {
                if g.verbose || !f.done || f.persisted.is_none() {
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
