//! The persistent way of `host-bridge`: the network stack's files (netplan, networkd,
//! ifupdown, NetworkManager) as a plan of file steps, validated by the stack's own tool
//! before anything is written, applied through `plan::apply`; with `--apply` the stack reads
//! them under the probe and restore guard, and with `--confirm-within` the file plan's undo
//! is what the reverter runs.

use super::pending::{self, Pending};
use super::{leave_pending, revert_at, Mode, Options, ProbeResult, Report};
use crate::error::{Error, Result};
use crate::host::backends::{self, nm, Backend, Config, FileApplier, FileStep};
use crate::host::bridge::{self, Net, State};
use crate::host::{netplan, probe, run_program};
use crate::plan::{self, Plan};
use std::path::Path;
use std::time::{Duration, Instant};

/// The stack asked for, or the one that manages the NIC under `root`.
pub fn choose_backend(choice: Option<Backend>, root: &Path, nic: &str) -> Result<Backend> {
    match choice {
        Some(b) => Ok(b),
        None => backends::detect(root, nic, nm::nm_running(root)),
    }
}

/// The report's view of a file plan: every file it touches, and the backups it makes.
pub(crate) fn describe_files(rep: &mut Report, plan: &Plan<FileStep>) {
    for s in &plan.steps {
        let p = s.path().to_path_buf();
        if !rep.files.contains(&p) {
            rep.files.push(p);
        }
        if let FileStep::Edit { backup, .. } = s {
            rep.backups.push(backup.clone());
        }
    }
    rep.backup = rep.backups.first().cloned();
}

/// A command line as one string, for the report.
fn command_line(c: &[String]) -> String {
    c.join(" ")
}

/// Run the stack's reload programs in order.
fn reload(cmds: &[Vec<String>]) -> Result<()> {
    for c in cmds {
        if let Some((program, args)) = c.split_first() {
            run_program(program, args)?;
        }
    }
    Ok(())
}

/// The persistent way.
pub fn run_persist(o: &Options, net: &mut dyn Net) -> Result<Report> {
    let Mode::Persist {
        backend,
        root,
        apply,
    } = &o.mode
    else {
        unreachable!("run_persist is called for the persistent mode")
    };
    let revert_at_ms = o.confirm_within.map(revert_at).transpose()?;
    if o.confirm_within.is_some() && !o.dry_run {
        pending::refuse_if_pending(&o.state_dir)?;
    }
    // The same refusals as the live way, on the same netlink view of the host.
    let state = net.observe()?;
    bridge::check_request(&state, &o.request())?;
    // The NIC's own MAC (check_request refused a missing or all-zero one); once it is a
    // port of our bridge the bridge carries the same one.
    let mac = state
        .link(&o.nic)
        .and_then(|l| l.mac.clone())
        .expect("check_request refuses a NIC without a MAC");
    let cfg = Config {
        nic: o.nic.clone(),
        bridge: o.bridge.clone(),
        mac,
        dhcp: o.dhcp,
        address: o.address,
        gateway: o.gateway,
        dns: o.dns.clone(),
        mtu: o.mtu,
    };
    let backend = choose_backend(*backend, root, &o.nic)?;
    let mut rep = Report::new(o, backend.name());
    rep.backends = vec![backend.name().to_string()];
    // Observe -> plan (pure but for reading the files) -> validate by the stack's own tool.
    let files = backend.plan(root, &cfg)?;
    if !files.is_empty() {
        backend.validate(root, &cfg, &files)?;
    }
    rep.changed = !files.is_empty();
    rep.steps = files.describe();
    describe_files(&mut rep, &files);
    if backend == Backend::Netplan {
        rep.netplan_file = Some(netplan::file_path(root, &cfg.bridge));
    }
    rep.addresses = o.address.iter().map(|(a, l)| format!("{a}/{l}")).collect();
    rep.routes = o
        .gateway
        .iter()
        .map(|g| format!("default via {g} dev {}", o.bridge))
        .collect();
    let cmds = backend.reload_commands(&cfg);
    if o.dry_run {
        rep.diff = Some(backends::diff(&files));
        if *apply {
            rep.steps.extend(cmds.iter().map(|c| command_line(c)));
        }
        return Ok(rep);
    }
    plan::apply_or_roll_back(&files, &mut FileApplier)?;
    if !*apply {
        if rep.changed && backend != Backend::Netplan {
            rep.notes.push(format!(
                "the running network is unchanged until {} reads the files: add --apply, or run `{}`",
                backend,
                cmds.iter().map(|c| command_line(c)).collect::<Vec<_>>().join("; ")
            ));
        }
        return Ok(rep);
    }
    apply_files(o, net, &state, &files, &cmds, &mut rep, revert_at_ms)?;
    Ok(rep)
}

/// Everything needed to undo a stack's reload: the file plan's undo, the reload again, and
/// the NIC and bridge as observed before.
fn pending_record(
    o: &Options,
    files: &Plan<FileStep>,
    cmds: &[Vec<String>],
    before: &State,
    mode: &str,
) -> Pending {
    Pending {
        id: pending::new_id(),
        mode: mode.into(),
        bridge: o.bridge.clone(),
        nic: o.nic.clone(),
        undo: vec![],
        files: files.undo(),
        reload: cmds.to_vec(),
        revert_at_ms: 0,
        reverter_pid: None,
        reverter_unit: None,
        before: Some(before.clone()),
        // Recorded once the files are in place (the live half keeps its own journal).
        complete: true,
        maker_pid: None,
    }
}

/// Wait until the stack made the bridge with the NIC as its port (a reload returns before
/// the stack acted); false when it did not within `within`.
fn wait_for_bridge(net: &mut dyn Net, nic: &str, bridge: &str, within: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = net.observe() {
            let br = s.link(bridge).map(|l| l.index);
            if br.is_some() && s.link(nic).and_then(|l| l.master) == br {
                return true;
            }
        }
        if t0.elapsed() >= within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--apply`: the stack reads the files; the probe target must answer, or the files, the
/// stack and the NIC are put back. With a confirm window the change is left pending.
fn apply_files(
    o: &Options,
    net: &mut dyn Net,
    before: &State,
    files: &Plan<FileStep>,
    cmds: &[Vec<String>],
    rep: &mut Report,
    revert_at_ms: Option<u64>,
) -> Result<()> {
    // Undone, the files are as before vbridge: the stack reads them as after a removal.
    let backend: Backend = rep.mode.parse()?;
    let again = backend.reload_commands_after_remove(&o.nic);
    let mut record = pending_record(o, files, &again, before, &rep.mode);
    record.revert_at_ms = revert_at_ms.unwrap_or_default();
    // The probe target: asked for, the new gateway, or the default gateway before the change.
    let target = o.probe.or(o.gateway).or_else(|| {
        before
            .routes
            .iter()
            .find(|r| r.is_default() && r.gateway.is_some_and(|g| g.is_ipv4()))
            .and_then(|r| r.gateway)
    });
    let t0 = Instant::now();
    rep.steps.extend(cmds.iter().map(|c| command_line(c)));
    let put_back = |net: &mut dyn Net| -> std::result::Result<(), String> {
        let problems = pending::undo_change(&record, net);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    };
    let restored_hint = |r: std::result::Result<(), String>| {
        match r {
        Ok(()) => "the previous configuration was restored and applied".to_string(),
        Err(p) => format!(
            "restoring the previous configuration did not go through ({p}): check the files listed by --dry-run, `ip addr` and `ip route`"
        ),
    }
    };
    if let Err(e) = reload(cmds) {
        let r = put_back(net);
        return Err(e.with_hint(restored_hint(r)));
    }
    if !wait_for_bridge(net, &o.nic, &o.bridge, o.rollback_after) {
        let r0 = Instant::now();
        let r = put_back(net);
        let e = Error::host(format!(
            "the network stack did not make {} with {} as its port within {} s",
            o.bridge,
            o.nic,
            o.rollback_after.as_secs()
        ));
        let e = e.with_hint(restored_hint(r));
        rep.rollback_ms = Some(r0.elapsed().as_millis() as u64);
        return Err(e);
    }
    // The bridge is there, but the stack may still be setting its addresses and routes
    // (networkd adds the gateway's route after the address): the probe, the report and
    // whatever the user runs next see what the stack made once it has finished.
    if let Err(e) = pending::observe_settled(net, &o.nic, &o.bridge, cmds) {
        let r = put_back(net);
        return Err(e.with_hint(restored_hint(r)));
    }
    if let Some(t) = target {
        let p0 = Instant::now();
        let answered = match probe::icmp_echo(t, Some(&o.bridge), o.rollback_after) {
            Ok(a) => a,
            Err(e) => {
                // Like the live way: a probe that cannot run is no proof; put it back.
                let r = put_back(net);
                return Err(e.context("probe failed").with_hint(restored_hint(r)));
            }
        };
        rep.probe = Some(ProbeResult {
            target: t,
            answered,
            ms: p0.elapsed().as_millis() as u64,
        });
        if !answered {
            let r0 = Instant::now();
            put_back(net).map_err(|p| {
                Error::host(format!(
                    "the probe got no answer and restoring the previous configuration did not go through: {p}"
                ))
            })?;
            rep.rolled_back = true;
            rep.changed = false;
            rep.rollback_ms = Some(r0.elapsed().as_millis() as u64);
            return Ok(());
        }
    }
    rep.apply_ms = t0.elapsed().as_millis() as u64;
    // Changed: files written, or the stack changed the running network (files staged
    // earlier and applied now).
    if let Ok(now) = net.observe() {
        rep.changed |= !bridge::differences_on(before, &now, &[&o.nic, &o.bridge]).is_empty();
    }
    if let Some(window) = o.confirm_within {
        leave_pending(o, &record, rep, window, |p| pending::undo_change(p, net))?;
    }
    Ok(())
}
