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
use crate::plan::{self, Plan};
use std::net::IpAddr;
use std::time::{Duration, Instant};

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

/// Wait until the stack took the bridge away itself (NetworkManager and ifupdown2 delete
/// what they made; networkd leaves it, and then this waits `within`).
fn wait_for_bridge_gone(net: &mut dyn Net, bridge: &str, within: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if net.observe().is_ok_and(|s| s.link(bridge).is_none()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `host-bridge --remove`, through any [`Net`].
pub fn run_remove(o: &Options, net: &mut dyn Net) -> Result<Report> {
    let Mode::Remove {
        backend,
        root,
        apply,
    } = &o.mode
    else {
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
    let before = net.observe()?;
    let live_plan = bridge::plan_unbridge(&before, nic, &o.bridge)?;
    if let Some(n) = nic_of(&live_plan.steps.steps) {
        rep.nic = n;
    }
    let after_remove: Vec<Vec<String>> = found
        .iter()
        .flat_map(|b| b.reload_commands_after_remove(&rep.nic))
        .collect();
    let shown = |c: &[Vec<String>]| c.iter().map(|c| c.join(" ")).collect::<Vec<_>>();
    rep.steps = files.describe();
    if *apply {
        rep.steps.extend(shown(&after_remove));
    }
    if o.dry_run {
        rep.steps.extend(live_plan.steps.describe());
        rep.changed = !files.is_empty() || !live_plan.steps.is_empty();
        rep.diff = Some(backends::diff(&files));
        rep.addresses = live_plan.addresses.iter().map(|a| a.cidr()).collect();
        rep.routes = live_plan.routes.iter().map(|r| r.describe()).collect();
        return Ok(rep);
    }
    // What puts everything back: the files, and with --apply the stacks reading them again
    // (then the NIC and bridge are restored from `before`).
    let mut record = Pending {
        id: pending::new_id(),
        mode: "remove".into(),
        bridge: o.bridge.clone(),
        nic: rep.nic.clone(),
        undo: vec![],
        files: files.undo(),
        reload: if *apply {
            found
                .iter()
                .flat_map(|b| b.reload_commands_for(&rep.nic, &o.bridge))
                .collect()
        } else {
            vec![]
        },
        revert_at_ms: revert_at_ms.unwrap_or_default(),
        reverter_pid: None,
        reverter_unit: None,
        before: Some(before.clone()),
        complete: true,
        maker_pid: None,
    };
    plan::apply_or_roll_back(&files, &mut FileApplier)?;
    let t0 = Instant::now();
    if *apply {
        // The stack takes down what it made (NetworkManager would fight a live change to
        // devices it manages); whatever it leaves is taken apart live below.
        for c in &after_remove {
            let run = c
                .split_first()
                .map(|(p, a)| crate::host::run_program(p, a))
                .unwrap_or(Ok(String::new()));
            if let Err(e) = run {
                let problems = pending::undo_change(&record, net);
                return Err(put_back_hint(e, &problems));
            }
        }
        wait_for_bridge_gone(net, &o.bridge, o.rollback_after);
        // What the stack leaves is taken apart below: once it has finished with it.
        if let Err(e) = pending::observe_settled(net, &rep.nic, &o.bridge, &after_remove) {
            let problems = pending::undo_change(&record, net);
            return Err(put_back_hint(e, &problems));
        }
    }
    // The NIC found before: the stack may have released it from the bridge already.
    let nic = (!rep.nic.is_empty()).then_some(rep.nic.clone());
    let nic = nic.as_deref();
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
        // --remove is itself the way back: it keeps no record of its own.
        &mut |_, _| Ok(()),
    ) {
        Ok(out) => out,
        Err(e) => {
            let problems = pending::undo_change(&record, net);
            return Err(put_back_hint(e, &problems));
        }
    };
    if !*apply {
        record.undo = outcome.plan.steps.undo();
    }
    rep.steps.extend(outcome.plan.steps.describe());
    rep.addresses = outcome.plan.addresses.iter().map(|a| a.cidr()).collect();
    rep.routes = outcome.plan.routes.iter().map(|r| r.describe()).collect();
    rep.probe = outcome.probe.clone();
    rep.rollback_ms = outcome.rollback_ms;
    // The stack did the work: the probe still guards it.
    let target = o.probe.or(live_plan.probe);
    if let (true, None, Some(t)) = (*apply && !outcome.rolled_back, &rep.probe, target) {
        let p0 = Instant::now();
        let answered = probe(t, o.rollback_after)?;
        rep.probe = Some(super::ProbeResult {
            target: t,
            answered,
            ms: p0.elapsed().as_millis() as u64,
        });
    }
    rep.apply_ms = t0.elapsed().as_millis() as u64;
    let unanswered = rep.probe.as_ref().is_some_and(|p| !p.answered);
    if outcome.rolled_back || unanswered {
        let r0 = Instant::now();
        // The live steps were undone by live_with already: only files and stack remain.
        let mut back = record.clone();
        back.undo = vec![];
        if !*apply {
            back.before = None;
        }
        let problems = pending::undo_change(&back, net);
        rep.rolled_back = true;
        rep.rollback_ms = Some(r0.elapsed().as_millis() as u64);
        if !problems.is_empty() {
            rep.notes.push(format!(
                "putting the bridge back did not restore everything: {}",
                problems.join("; ")
            ));
        }
        return Ok(rep);
    }
    // A stack that had files reacts to the live change even when not reloaded (networkd
    // drops a NIC that left its bridge and reads it again): the result and whatever the
    // user runs next (the note's `networkctl reconfigure`) find it done.
    if !found.is_empty() && root.as_path() == std::path::Path::new("/") {
        let _ = pending::observe_settled(net, &rep.nic, &o.bridge, &after_remove);
    }
    let now_differs = net
        .observe()
        .map(|now| !bridge::differences_on(&before, &now, &[&rep.nic, &o.bridge]).is_empty())
        .unwrap_or(true);
    rep.changed = outcome.changed || !files.is_empty() || now_differs;
    if !files.is_empty() && !*apply {
        rep.notes.push(format!(
            "the running network stack may still hold the removed configuration: `{}` makes it read the files again (or use --remove --apply)",
            shown(&after_remove).join("; ")
        ));
    }
    if let (Some(window), true) = (o.confirm_within, rep.changed) {
        leave_pending(o, &record, &mut rep, window, |p| {
            pending::undo_change(p, net)
        })?;
    }
    Ok(rep)
}

/// The error of a step that failed, with what putting things back left undone.
fn put_back_hint(e: crate::error::Error, problems: &[String]) -> crate::error::Error {
    if problems.is_empty() {
        e.with_hint("nothing was changed: vbridge's files and the bridge were put back")
    } else {
        e.with_hint(format!(
            "putting the bridge back did not restore everything ({}): check the files, `ip addr` and `ip route`",
            problems.join("; ")
        ))
    }
}
