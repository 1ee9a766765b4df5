//! Carry a host's plan out through the commands' own library calls (`net-define`,
//! `attach`, `attach --hotplug`, `verify`), so an apply keeps everything they guarantee:
//! backups, concurrent-edit detection, undo. The one place `plan`/`apply` names them.

use super::diff::{HostPlan, NicAction, NicPlan, Status, VmPlan};
use super::{Mode, Target};
use crate::attach::{self, AttachOptions};
use crate::backup::StateDir;
use crate::domxml::Selection;
use crate::error::{Error, Result};
use crate::libvirt::Conn;
use crate::network::{self, NetDefine};
use crate::validate::{BridgeName, Mac};
use crate::verify::{self, VerifyOptions};
use crate::{fanout, hotplug};
use std::time::Duration;

/// The MAC `attach --hotplug` gives a NIC on `bridge` when none is named.
pub fn derived_mac(uuid: &str, bridge: &BridgeName) -> Mac {
    hotplug::derive_mac(uuid, bridge)
}

/// Apply the plan: networks first (VMs may use them), then each VM's NICs, then verify.
pub fn apply(conn: &Conn, plan: &mut HostPlan, state: &StateDir) {
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
        apply_vm(conn, &mut vm, state);
        vm
    });
}

fn apply_vm(conn: &Conn, vm: &mut VmPlan, state: &StateDir) {
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
        };
        match verify::verify(conn, &vm.name, &opts) {
            Ok(r) => vm.verified = Some(r),
            Err(e) => vm.error = Some(e),
        }
    }
}

/// Why this change cannot be made by the calls vbridge has today, if it cannot.
fn unsupported(c: &NicPlan, running: bool) -> Option<Error> {
    let w = &c.want;
    if c.mode == Mode::Live {
        return Some(Error::unsupported(
            "mode live (moving a running VM's NIC in place) is not supported by apply yet",
        )
        .with_hint("use mode persistent (takes effect at the next cold start) or hotplug (a new NIC now)"));
    }
    if let Target::Network(n) = &c.target {
        return Some(Error::unsupported(format!(
            "NICs on a libvirt network (network: {n}) are not applied yet: attach and hotplug write type='bridge' NICs"
        ))
        .with_hint("name the network's bridge instead (`bridge: BR`)"));
    }
    if w.model() != "virtio" || w.mtu.is_some() || w.queues.is_some() {
        let extra = c
            .differences
            .iter()
            .any(|d| ["model", "mtu", "queues"].contains(&d.key.as_str()));
        if c.action == NicAction::Add || extra {
            return Some(Error::unsupported(format!(
                "NIC {}: vbridge's attach and hotplug write virtio NICs without mtu or queues; model/mtu/queues cannot be set yet",
                c.mac.as_deref().unwrap_or("(new)")
            ))
            .with_hint("drop model, mtu and queues from this NIC, or set them with virsh"));
        }
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

fn apply_nic(conn: &Conn, vm: &str, c: &NicPlan, state: &StateDir) -> Result<()> {
    let Target::Bridge(bridge) = &c.target else {
        unreachable!("refused by unsupported()")
    };
    match (c.mode, c.action) {
        (Mode::Persistent, NicAction::Update) => {
            let opts = AttachOptions {
                bridge: bridge.clone(),
                selection: c
                    .want
                    .mac
                    .clone()
                    .map(Selection::Mac)
                    .unwrap_or(Selection::Auto),
                dry_run: false,
                // A transient VM is refused, as `attach` refuses it without --persist.
                persist: false,
            };
            let report = attach::attach(conn, &[vm.to_string()], &opts, state)?;
            match report.domains.into_iter().find_map(|d| d.error) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        // A shut-off VM: hotplug adds the NIC to its definition only.
        (Mode::Persistent, NicAction::Add) | (Mode::Hotplug, _) => {
            hotplug::hotplug(conn, vm, bridge, c.want.mac.as_ref(), false).map(|_| ())
        }
        (Mode::Live, _) => unreachable!("refused by unsupported()"),
    }
}
