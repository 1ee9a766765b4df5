//! `host-bridge --remove`: the inverse of every way in. Live, the NIC leaves the bridge and
//! gets the bridge's addresses and routes back (probe, exact rollback, as `--live`); on
//! disk, the files vbridge wrote for the bridge go and the user's files it edited come back
//! from their backups. Running it again changes nothing.

use super::live::{live_with, LiveOutcome};
use super::pending::{self, Pending};
use super::persist::describe_files;
use super::{leave_pending, revert_at, Mode, Options, Report};
use crate::error::Result;
use crate::host::backends::{self, Backend, FileApplier, FileStep};
use crate::host::bridge::{self, Net, Step};
use crate::host::probe;
use crate::plan::{self, Applier, Plan};
use std::net::IpAddr;
use std::time::Duration;

/// The file plan: each stack's removal for the bridge (of `backend`, or of all of them),
/// and the stacks that had files.
pub fn file_plan(
    backend: Option<Backend>,
    root: &std::path::Path,
    bridge: &str,
) -> Result<(Plan<FileStep>, Vec<Backend>)> {
    let mut steps = Vec::new();
    let mut found = Vec::new();
    for b in backend.map_or(Backend::ALL.to_vec(), |b| vec![b]) {
        let p = b.remove(root, bridge)?;
        if !p.is_empty() {
            found.push(b);
            steps.extend(p.steps);
        }
    }
    Ok((Plan::new(steps), found))
}

/// Undo the file removal (the files come back) after the live part was refused or rolled
/// back; the problems, if any.
fn restore_files(files: &Plan<FileStep>) -> Vec<String> {
    files
        .undo()
        .iter()
        .filter_map(|s| FileApplier.apply_step(s).err().map(|e| e.message))
        .collect()
}

/// The NIC the plan gives the addresses back to.
fn nic_of(steps: &[Step]) -> Option<String> {
    steps.iter().find_map(|s| match s {
        Step::SetMaster {
            dev, master: None, ..
        } => Some(dev.clone()),
        Step::AddAddr { addr } => Some(addr.dev.clone()),
        _ => None,
    })
}

/// `host-bridge --remove`, through any [`Net`].
pub fn run_remove(o: &Options, net: &mut dyn Net) -> Result<Report> {
    let Mode::Remove { backend, root } = &o.mode else {
        unreachable!("run_remove is called for --remove")
    };
    let mut rep = Report::new(o, "remove");
    let revert_at_ms = o.confirm_within.map(revert_at).transpose()?;
    if o.confirm_within.is_some() && !o.dry_run {
        pending::refuse_if_pending(&o.state_dir)?;
    }
    let nic = (!o.nic.is_empty()).then_some(o.nic.as_str());
    let (files, found) = file_plan(*backend, root, &o.bridge)?;
    rep.backends = found.iter().map(|b| b.name().to_string()).collect();
    describe_files(&mut rep, &files);
    rep.backup = None;
    rep.backups.clear();
    // Planned on what is there now; refused (e.g. a VM's tap still on the bridge) before
    // anything changes.
    let state = net.observe()?;
    let live_plan = bridge::plan_unbridge(&state, nic, &o.bridge)?;
    if let Some(n) = nic_of(&live_plan.steps.steps) {
        rep.nic = n;
    }
    let reloads: Vec<String> = found
        .iter()
        .flat_map(|b| b.reload_commands_after_remove(&rep.nic))
        .map(|c| c.join(" "))
        .collect();
    if o.dry_run {
        rep.steps = files.describe();
        rep.steps.extend(live_plan.steps.describe());
        rep.changed = !rep.steps.is_empty();
        rep.diff = Some(backends::diff(&files));
        rep.addresses = live_plan.addresses.iter().map(|a| a.cidr()).collect();
        rep.routes = live_plan.routes.iter().map(|r| r.describe()).collect();
        return Ok(rep);
    }
    plan::apply_or_roll_back(&files, &mut FileApplier)?;
    let bound = rep.nic.clone();
    let mut probe = |t: IpAddr, within: Duration| {
        probe::icmp_echo(t, (!bound.is_empty()).then_some(bound.as_str()), within)
    };
    let outcome: LiveOutcome = match live_with(
        net,
        |s| bridge::plan_unbridge(s, nic, &o.bridge),
        o.probe,
        o.rollback_after,
        &mut probe,
    ) {
        Ok(out) => out,
        Err(e) => {
            let problems = restore_files(&files);
            return Err(if problems.is_empty() {
                e
            } else {
                e.context(format!(
                    "putting vbridge's files back also failed: {}",
                    problems.join("; ")
                ))
            });
        }
    };
    rep.steps = files.describe();
    rep.steps.extend(outcome.plan.steps.describe());
    rep.addresses = outcome.plan.addresses.iter().map(|a| a.cidr()).collect();
    rep.routes = outcome.plan.routes.iter().map(|r| r.describe()).collect();
    rep.probe = outcome.probe.clone();
    rep.apply_ms = outcome.apply_ms;
    rep.rollback_ms = outcome.rollback_ms;
    if outcome.rolled_back {
        rep.rolled_back = true;
        let problems = restore_files(&files);
        if !problems.is_empty() {
            rep.notes.push(format!(
                "putting vbridge's files back failed: {}",
                problems.join("; ")
            ));
        }
        return Ok(rep);
    }
    rep.changed = outcome.changed || !files.is_empty();
    if !files.is_empty() {
        rep.notes.push(format!(
            "the running network stack may still hold the removed configuration: `{}` makes it read the files again",
            reloads.join("; ")
        ));
    }
    if let (Some(window), true) = (o.confirm_within, rep.changed) {
        let p = Pending {
            id: pending::new_id(),
            mode: "remove".into(),
            bridge: o.bridge.clone(),
            nic: rep.nic.clone(),
            undo: outcome.plan.steps.undo(),
            files: files.undo(),
            reload: vec![],
            revert_at_ms: revert_at_ms.unwrap_or_default(),
            reverter_pid: None,
            reverter_unit: None,
            before: Some(outcome.before.clone()),
        };
        leave_pending(o, &p, &mut rep, window, |p| pending::undo_change(p, net))?;
    }
    Ok(rep)
}
