//! Carry a host's plan out through the commands' own library calls (`net-define`,
//! `attach`, `attach --hotplug`, `verify`), so an apply keeps everything they guarantee:
//! backups, concurrent-edit detection, undo. The one place `plan`/`apply` names them.

use super::diff::{HostPlan, NicAction, NicPlan, Status, VmPlan};
use super::{Mode, Target};
use crate::attach::live::LiveOptions;
use crate::attach::{self, AttachRequest};
use crate::backup::StateDir;
use crate::domxml::{NicOptions, Selection, Target as NicTarget};
use crate::error::{Error, Result};
use crate::libvirt::Conn;
use crate::network::{self, NetDefine};
use crate::progress::Sink;
use crate::validate::{Mac, Mtu, Queues};
use crate::verify::{self, VerifyOptions};
use crate::{fanout, hotplug};
use std::time::Duration;

/// The MAC `attach --hotplug` gives a NIC on a bridge or network (`place`) when none is named.
pub fn derived_mac(uuid: &str, place: &str) -> Mac {
    hotplug::derive_mac_for(uuid, place)
}

/// Apply the plan: networks first (VMs may use them), then each VM's NICs, then verify;
/// `progress` is told as each VM is finished and while its verify waits.
pub fn apply(conn: &Conn, plan: &mut HostPlan, state: &StateDir, progress: &Sink) {
    for n in plan
        .networks
        .iter_mut()
        .filter(|n| n.error.is_none() && !n.actions.is_empty())
    {
        let want = NetDefine {
            name: n.name.clone(),
            bridge: n.bridge.clone(),
            ..NetDefine::default()
        };
        if let Err(e) = network::define(conn, &want, false) {
            n.error = Some(e);
        }
    }
    let vms = std::mem::take(&mut plan.vms);
    plan.vms = fanout::parallel(conn.calls_in_flight(), vms, |mut vm| {
        apply_vm(conn, &mut vm, state, progress);
        progress.done(&vm.name);
        vm
    });
}

fn apply_vm(conn: &Conn, vm: &mut VmPlan, state: &StateDir, progress: &Sink) {
    if vm.error.is_some() {
        return;
    }
    // Refuse what the calls cannot do before changing anything of this VM.
    if let Some(e) = vm.changes.iter().find_map(|c| unsupported(c, vm.running)) {
        for c in &mut vm.changes {
            c.status = Status::Skipped;
        }
        vm.error = Some(e);
        return;
    }
    for i in 0..vm.changes.len() {
        let r = apply_nic(conn, &vm.name, &vm.changes[i], state);
        if let Err(e) = r {
            vm.changes[i].status = Status::Failed;
            for c in &mut vm.changes[i + 1..] {
                c.status = Status::Skipped;
            }
            vm.error = Some(e);
            return;
        }
        vm.changes[i].status = Status::Applied;
    }
    if let Some(timeout) = vm.verify {
        if !vm.running {
            vm.notes
                .push(format!("{} is not running: not verified", vm.name));
            return;
        }
        let opts = VerifyOptions {
            timeout: Duration::from_secs_f64(timeout.max(0.0)),
            mac: None,
            progress: progress.clone(),
        };
        match verify::verify(conn, &vm.name, &opts) {
            Ok(r) => vm.verified = Some(r),
            Err(e) => vm.error = Some(e),
        }
    }
}

/// Why this change cannot be made by the calls vbridge has today, if it cannot.
fn unsupported(c: &NicPlan, running: bool) -> Option<Error> {
    if c.want.model() != "virtio" {
        return Some(Error::unsupported(format!(
            "NIC {}: model {} cannot be set: attach and hotplug write virtio NICs (and keep the model of a NIC they move)",
            c.mac.as_deref().unwrap_or("(new)"),
            c.want.model()
        ))
        .with_hint("drop `model` from this NIC, or set it with virsh"));
    }
    if c.mode == Mode::Persistent && c.action == NicAction::Add && running {
        return Some(
            Error::unsupported(
                "adding a NIC to the definition only of a running VM is not supported",
            )
            .with_hint("use mode hotplug to add it to the running VM and its definition"),
        );
    }
    None
}

/// The NIC options a wanted NIC asks for (the file's ranges were checked when it was read).
fn nic_options(c: &NicPlan) -> Result<NicOptions> {
    Ok(NicOptions {
        mtu: c.want.mtu.map(Mtu::new).transpose()?,
        queues: c.want.queues.map(Queues::new).transpose()?,
    })
}

fn apply_nic(conn: &Conn, vm: &str, c: &NicPlan, state: &StateDir) -> Result<()> {
    // The file's network name was checked with validate::object_name when it was read.
    let target = match &c.target {
        Target::Bridge(b) => NicTarget::Bridge(b.clone()),
        Target::Network(n) => NicTarget::Network(n.clone()),
    };
    let nic = nic_options(c)?;
    match (c.mode, c.action) {
        // `persistent` rewrites the definition; `live` also moves the running NIC now, with
        // attach --live's flap and never-strand check (a shut-off VM: the definition only).
        (Mode::Persistent | Mode::Live, NicAction::Update) => {
            let req = AttachRequest {
                target: target.clone(),
                selection: c
                    .want
                    .mac
                    .clone()
                    .map(Selection::Mac)
                    .unwrap_or(Selection::Auto),
                nic,
                live: (c.mode == Mode::Live).then(LiveOptions::default),
                dry_run: false,
                // A transient VM is refused, as `attach` refuses it without --persist.
                persist: false,
                // One VM: the host's progress counts it as a whole.
                progress: Sink::default(),
            };
            let confirm = |dom: &str, mac: &Mac, within: Duration| {
                verify::lan_answer(conn, dom, mac, within, &Sink::default())
            };
            let report =
                attach::attach_request(conn, &[vm.to_string()], &req, state, Some(&confirm))?;
            match report.domains.into_iter().find_map(|d| d.error) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        // A shut-off VM: hotplug adds the NIC to its definition only.
        (Mode::Persistent, NicAction::Add) | (Mode::Hotplug, _) => {
            hotplug::hotplug_with(conn, vm, &target, c.want.mac.as_ref(), &nic, false, state)
                .map(|_| ())
        }
        (Mode::Live, NicAction::Add) => Err(Error::not_found(format!(
            "{vm} has no such NIC to move in place (mode live moves an existing NIC)"
        ))
        .with_hint("use mode hotplug to add a new NIC")),
    }
}
