//! `vbridge plan FILE` and `vbridge apply FILE`: a desired-state file, compared with (and
//! made true on) each of its hosts.

use super::output::Text;
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
    fn text(&self, g: &Globals, t: &mut Text) {
        render(&self.report, g, t)
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
        run::apply(
            &want,
            g.connect.as_deref(),
            &StateDir::from_env(),
            &g.progress,
        )
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

/// The failures of a plan or apply, for stderr, each under its host (and VM) heading, which
/// is written once before the first failure under it: a failure read alone says where it is.
struct Failures<'a> {
    err: &'a mut String,
    host: Option<String>,
    vm: Option<String>,
}

impl Failures<'_> {
    fn line(&mut self, line: &str) {
        for heading in [self.host.take(), self.vm.take()].into_iter().flatten() {
            self.err.push_str(&heading);
        }
        let _ = writeln!(self.err, "{line}");
    }
}

fn render_host(out: &mut String, fail: &mut Failures, plan: &HostPlan, planned: bool, g: &Globals) {
    for n in &plan.networks {
        if let Some(e) = &n.error {
            fail.line(&format!("  network {}: FAILED: {}", n.name, e));
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
        let heading = format!("  vm {}:\n", vm.name);
        let answered = vm.verified.as_ref().filter(|r| r.ok());
        let failed = |c: &&NicPlan| c.status == Status::Failed;
        if vm.changes.iter().any(|c| !failed(&c)) || answered.is_some() || !vm.notes.is_empty() {
            out.push_str(&heading);
        }
        fail.vm = Some(heading);
        // A NIC change that failed is a failure; the ones done, pending or skipped are not.
        for c in &vm.changes {
            let line = format!("    {}", nic_line(c, planned));
            if failed(&c) {
                fail.line(&line);
            } else {
                let _ = writeln!(out, "{line}");
            }
        }
        if let Some(e) = &vm.error {
            fail.line(&format!("    FAILED: {e}"));
        }
        if let Some(r) = &vm.verified {
            let line = format!(
                "    verify: {} ({:.1} s)",
                if r.ok() { "answers" } else { "FAILED" },
                r.elapsed
            );
            if r.ok() {
                let _ = writeln!(out, "{line}");
            } else {
                fail.line(&line);
            }
        }
        for n in &vm.notes {
            let _ = writeln!(out, "    note: {n}");
        }
        fail.vm = None;
    }
    for n in &plan.notes {
        let _ = writeln!(out, "  note: {n}");
    }
}

/// Per host: what is (or was) to change on stdout, what failed on stderr; the summary on
/// stdout.
fn render(r: &FileReport, g: &Globals, t: &mut Text) {
    let planned = r.command == "plan";
    let out = &mut t.out;
    let mut fail = Failures {
        err: &mut t.err,
        host: None,
        vm: None,
    };
    for h in &r.hosts {
        let uri = h.uri.as_deref().unwrap_or("(libvirt's default URI)");
        let heading = format!("host {uri}:\n");
        out.push_str(&heading);
        fail.host = Some(heading);
        if let Some(e) = &h.error {
            fail.line(&format!("  FAILED: {e}"));
        }
        if let Some(p) = &h.plan {
            render_host(out, &mut fail, p, planned, g);
        }
        fail.host = None;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use vbridge::desired::diff::VmPlan;
    use vbridge::desired::run::HostReport;
    use vbridge::error::Error;

    fn nic(status: Status) -> NicPlan {
        NicPlan {
            mac: Some("52:54:00:00:00:09".into()),
            mode: Mode::Persistent,
            action: NicAction::Update,
            target: Target::Bridge(vbridge::validate::BridgeName::parse("br0").unwrap()),
            definitions: vec![Definition::Config],
            differences: Vec::new(),
            status,
            want: serde_json::from_value(
                serde_json::json!({"bridge": "br0", "mode": "persistent"}),
            )
            .unwrap(),
        }
    }

    fn vm(name: &str, error: Option<Error>, notes: &[&str]) -> VmPlan {
        VmPlan {
            name: name.into(),
            changes: Vec::new(),
            verify: None,
            verified: None,
            error,
            notes: notes.iter().map(|n| n.to_string()).collect(),
            running: false,
        }
    }

    /// Each failure goes to stderr under its host and VM headings, written once; the rest
    /// of the report, summary included, stays on stdout.
    #[test]
    fn failures_go_to_stderr_under_their_headings() {
        let host = |uri: &str, error: Option<Error>, plan: Option<HostPlan>| HostReport {
            uri: Some(uri.into()),
            changes: 0,
            ok: false,
            error,
            plan,
        };
        let r = FileReport {
            command: "apply",
            changes: 0,
            ok: false,
            hosts: vec![
                host(
                    "qemu:///a",
                    None,
                    Some(HostPlan {
                        networks: Vec::new(),
                        vms: vec![
                            vm(
                                "ghost",
                                Some(Error::not_found("no domain named \"ghost\"")),
                                &["a note"],
                            ),
                            // Nothing but a note: not shown, as before.
                            vm("web", None, &["web is running"]),
                            VmPlan {
                                changes: vec![nic(Status::Failed), nic(Status::Skipped)],
                                ..vm("gone", Some(Error::host("define refused")), &[])
                            },
                        ],
                        notes: Vec::new(),
                    }),
                ),
                host(
                    "qemu:///b",
                    Some(Error::new(
                        vbridge::error::ErrorKind::Connection,
                        "cannot connect",
                    )),
                    None,
                ),
            ],
        };
        let mut t = Text::plain();
        render(&r, &Globals::default(), &mut t);
        let nic = "nic 52:54:00:00:00:09: changed on bridge br0 (persistent, config)";
        assert_eq!(
            t.out,
            format!(
                "host qemu:///a:\n  vm ghost:\n    note: a note\n  vm gone:\n    {nic} [skipped]\n  0 changed, with failures\n\
             host qemu:///b:\n  0 changed, with failures\n\
             apply: nothing to change on 2 host(s); some failed\n"
            )
        );
        assert_eq!(
            t.err,
            format!(
                "host qemu:///a:\n  vm ghost:\n    FAILED: no domain named \"ghost\"\n  vm gone:\n    {nic} [failed]\n    FAILED: define refused\n\
                 host qemu:///b:\n  FAILED: cannot connect\n"
            )
        );
    }
}
