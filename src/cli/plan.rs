//! `vbridge plan FILE` and `vbridge apply FILE`: a desired-state file, compared with (and
//! made true on) each of its hosts.

use super::{exit, CmdResult, Globals, Report};
use clap::Args;
use std::fmt::Write;
use std::path::PathBuf;
use vbridge::backup::StateDir;
use vbridge::desired::diff::{Definition, HostPlan, NicAction, NicPlan, Status};
use vbridge::desired::run::{self, Report as FileReport};
use vbridge::desired::{self, Mode, Target};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The desired-state file (YAML or JSON; keys in the README, "Desired state")
    pub file: PathBuf,
    /// Exit 3 when changes are pending, 0 when there is nothing to do, 1 on failure
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The desired-state file (YAML or JSON; keys in the README, "Desired state")
    pub file: PathBuf,
}

struct Rendered {
    report: FileReport,
    detailed: bool,
}

impl Report for Rendered {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(&self.report).unwrap_or_else(
            |e| serde_json::json!({"error": {"kind": "internal", "message": e.to_string()}}),
        )
    }
    fn text(&self, g: &Globals) -> String {
        render(&self.report, g)
    }
    fn success(&self) -> bool {
        self.report.ok
    }
    fn exit_code(&self) -> Option<u8> {
        (self.detailed && self.report.ok && self.report.changes > 0)
            .then_some(exit::CHANGES_PENDING)
    }
}

pub fn plan(a: &PlanArgs, g: &Globals) -> CmdResult {
    let want = desired::load(&a.file)?;
    let report = run::plan(&want, g.connect.as_deref());
    Ok(Box::new(Rendered {
        report,
        detailed: a.detailed_exitcode,
    }))
}

pub fn apply(a: &ApplyArgs, g: &Globals) -> CmdResult {
    let want = desired::load(&a.file)?;
    let report = if g.dry_run {
        run::plan(&want, g.connect.as_deref())
    } else {
        run::apply(&want, g.connect.as_deref(), &StateDir::from_env())
    };
    Ok(Box::new(Rendered {
        report,
        detailed: false,
    }))
}

fn target(t: &Target) -> String {
    match t {
        Target::Bridge(b) => format!("bridge {b}"),
        Target::Network(n) => format!("network {n}"),
    }
}

fn nic_line(c: &NicPlan, planned: bool) -> String {
    let mac = c.mac.as_deref().unwrap_or("(new NIC)");
    let defs: Vec<&str> = c
        .definitions
        .iter()
        .map(|d| match d {
            Definition::Config => "config",
            Definition::Live => "live",
        })
        .collect();
    let verb = match (c.action, planned) {
        (NicAction::Add, true) => "add",
        (NicAction::Add, false) => "added",
        (NicAction::Update, true) => "change",
        (NicAction::Update, false) => "changed",
    };
    let mode = match c.mode {
        Mode::Persistent => "persistent",
        Mode::Live => "live",
        Mode::Hotplug => "hotplug",
    };
    let mut s = format!(
        "nic {mac}: {verb} on {} ({mode}, {})",
        target(&c.target),
        defs.join("+")
    );
    for d in &c.differences {
        let _ = write!(
            s,
            "; {} {} -> {}",
            d.key,
            d.have.as_deref().unwrap_or("none"),
            d.want.as_deref().unwrap_or("none")
        );
    }
    if c.status == Status::Failed {
        s.push_str(" [failed]");
    } else if c.status == Status::Skipped {
        s.push_str(" [skipped]");
    }
    s
}

fn render_host(out: &mut String, plan: &HostPlan, planned: bool, g: &Globals) {
    for n in &plan.networks {
        if let Some(e) = &n.error {
            let _ = writeln!(out, "  network {}: FAILED: {}", n.name, e);
        } else if !n.actions.is_empty() {
            let acts: Vec<String> = n
                .actions
                .iter()
                .map(|a| format!("{a:?}").to_lowercase())
                .collect();
            let _ = writeln!(
                out,
                "  network {} (bridge {}): {}",
                n.name,
                n.bridge,
                acts.join(", ")
            );
        } else if g.verbose {
            let _ = writeln!(out, "  network {}: no change", n.name);
        }
    }
    for vm in &plan.vms {
        if vm.changes.is_empty() && vm.error.is_none() && vm.verified.is_none() {
            if g.verbose {
                let _ = writeln!(out, "  vm {}: no change", vm.name);
            }
            continue;
        }
        let _ = writeln!(out, "  vm {}:", vm.name);
        for c in &vm.changes {
            let _ = writeln!(out, "    {}", nic_line(c, planned));
        }
        if let Some(e) = &vm.error {
            let _ = writeln!(out, "    FAILED: {e}");
        }
        if let Some(r) = &vm.verified {
            let verdict = if r.ok() { "answers" } else { "FAILED" };
            let _ = writeln!(out, "    verify: {verdict} ({:.1} s)", r.elapsed);
        }
        for n in &vm.notes {
            let _ = writeln!(out, "    note: {n}");
        }
    }
    for n in &plan.notes {
        let _ = writeln!(out, "  note: {n}");
    }
}

fn render(r: &FileReport, g: &Globals) -> String {
    let planned = r.command == "plan";
    let mut out = String::new();
    for h in &r.hosts {
        let uri = h.uri.as_deref().unwrap_or("(libvirt's default URI)");
        let _ = writeln!(out, "host {uri}:");
        if let Some(e) = &h.error {
            let _ = writeln!(out, "  FAILED: {e}");
        }
        if let Some(p) = &h.plan {
            render_host(&mut out, p, planned, g);
        }
        let what = if planned { "to change" } else { "changed" };
        let _ = writeln!(
            out,
            "  {} {what}{}",
            h.changes,
            if h.ok { "" } else { ", with failures" }
        );
    }
    let verdict = match (planned, r.changes) {
        (_, 0) => "nothing to change".to_string(),
        (true, n) => format!("{n} change(s) pending"),
        (false, n) => format!("{n} change(s) made"),
    };
    let _ = writeln!(
        out,
        "{}: {verdict} on {} host(s){}",
        r.command,
        r.hosts.len(),
        if r.ok { "" } else { "; some failed" }
    );
    out
}
