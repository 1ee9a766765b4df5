//! The netplan way of `host-bridge`: write the file (checked by `netplan generate`), and
//! with `--apply` run `netplan apply` under the probe and restore guard.

use super::pending::{self, Pending};
use super::{leave_pending, revert_at, Mode, Options, ProbeResult, Report};
use crate::error::Result;
use crate::host::{bridge, netplan, probe};
use std::time::Instant;

/// The netplan way.
pub fn run_netplan(o: &Options) -> Result<Report> {
    let Mode::Netplan { root, apply } = &o.mode else {
        unreachable!("run_netplan is called for netplan mode")
    };
    let mut rep = Report::new(o, "netplan");
    let revert_at_ms = o.confirm_within.map(revert_at).transpose()?;
    if o.confirm_within.is_some() && !o.dry_run {
        pending::refuse_if_pending(&o.state_dir)?;
    }
    // The same refusals as the live way, on the same netlink view of the host.
    let state = bridge::observe()?;
    bridge::check_request(&state, &o.request())?;
    // The NIC's own MAC (check_request refused a missing or all-zero one); once it is a
    // port of our bridge the bridge carries the same one.
    let mac = state
        .link(&o.nic)
        .and_then(|l| l.mac.clone())
        .expect("check_request refuses a NIC without a MAC");
    let cfg = netplan::Config {
        nic: o.nic.clone(),
        bridge: o.bridge.clone(),
        mac,
        dhcp: o.dhcp,
        address: o.address,
        gateway: o.gateway,
        dns: o.dns.clone(),
    };
    let (w, _yaml) = netplan::write(root, &cfg, o.dry_run)?;
    rep.changed = w.changed;
    rep.netplan_file = Some(w.path.clone());
    rep.backup = w.backup.clone();
    rep.addresses = o.address.iter().map(|(a, l)| format!("{a}/{l}")).collect();
    rep.routes = o
        .gateway
        .iter()
        .map(|g| format!("default via {g} dev {}", o.bridge))
        .collect();
    if w.changed {
        rep.steps.push(format!("write {}", w.path.display()));
    }
    if !*apply || o.dry_run {
        return Ok(rep);
    }
    // The probe target: asked for, the new gateway, or the default gateway before the change.
    let target = o.probe.or(o.gateway).or_else(|| {
        state
            .routes
            .iter()
            .find(|r| r.is_default() && r.gateway.is_some_and(|g| g.is_ipv4()))
            .and_then(|r| r.gateway)
    });
    let t0 = Instant::now();
    rep.steps.push("netplan apply".into());
    let undo = w.undo();
    if let Err(e) = netplan::apply() {
        let _ = netplan::restore(&undo);
        return Err(e);
    }
    if let Some(t) = target {
        let p0 = Instant::now();
        let answered = match probe::icmp_echo(t, Some(&o.bridge), o.rollback_after) {
            Ok(a) => a,
            Err(e) => {
                // Like the live way: a probe that cannot run is no proof; put it back.
                let restored = netplan::restore(&undo);
                return Err(e.context("probe failed").with_hint(match restored {
                    Ok(()) => "the previous netplan configuration was restored and applied".to_string(),
                    Err(r) => format!(
                        "restoring the previous netplan configuration also failed ({}): check {} and run `netplan apply`",
                        r.message,
                        undo.path.display()
                    ),
                }));
            }
        };
        rep.probe = Some(ProbeResult {
            target: t,
            answered,
            ms: p0.elapsed().as_millis() as u64,
        });
        if !answered {
            let r0 = Instant::now();
            netplan::restore(&undo)?;
            rep.rolled_back = true;
            rep.changed = false;
            rep.rollback_ms = Some(r0.elapsed().as_millis() as u64);
            return Ok(rep);
        }
    }
    rep.apply_ms = t0.elapsed().as_millis() as u64;
    if let Some(window) = o.confirm_within {
        let p = Pending {
            id: pending::new_id(),
            mode: "netplan".into(),
            bridge: o.bridge.clone(),
            nic: o.nic.clone(),
            undo: vec![],
            netplan: Some(undo.clone()),
            revert_at_ms: revert_at_ms.unwrap_or_default(),
            reverter_pid: None,
            reverter_unit: None,
            before: None,
            complete: true,
            maker_pid: None,
        };
        leave_pending(o, &p, &mut rep, window, |p| {
            p.netplan
                .as_ref()
                .and_then(|n| netplan::restore(n).err())
                .into_iter()
                .collect()
        })?;
    }
    Ok(rep)
}
