//! The live way of `host-bridge`: observe, plan, apply through netlink, probe, and roll
//! back exactly when the probe gets no answer; optionally leave the change pending.

use super::pending::{self, Pending};
use super::{revert_at, Options, Report};
use crate::error::{Error, Result};
use crate::host::bridge::{self, LiveRequest, Net, Plan, State, Step};
use crate::host::probe;
use serde::Serialize;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The live way, through any [`Net`] (the tests' fakes, or netlink).
pub fn run_live(o: &Options, net: &mut dyn Net) -> Result<Report> {
    let mut rep = Report::new(o, "live");
    let req = o.request();
    // Refused before anything changes: a window that cannot be recorded, or another one open.
    let revert_at_ms = o.confirm_within.map(revert_at).transpose()?;
    if o.confirm_within.is_some() && !o.dry_run {
        pending::refuse_if_pending(&o.state_dir)?;
    }
    let outcome = if o.dry_run {
        let state = net.observe()?;
        let plan = bridge::plan_live(&state, &req)?;
        // Nothing is applied; `changed` reports whether it would be.
        LiveOutcome {
            changed: !plan.steps.is_empty(),
            ..LiveOutcome::unchanged(plan, state)
        }
    } else {
        // A record left by a run killed part-way must be removed (restored) first.
        pending::refuse_if_pending(&o.state_dir)?;
        let mut probe = |t: IpAddr, within: Duration| probe::icmp_echo(t, Some(&o.bridge), within);
        let mut journal = Journal {
            o,
            revert_at_ms,
            record: None,
        };
        let made = live(
            net,
            &req,
            o.probe,
            o.rollback_after,
            &mut probe,
            &mut |plan, before| journal.open(plan, before),
        );
        match made {
            Ok(outcome) => {
                journal.finish(&outcome, &mut rep)?;
                outcome
            }
            Err(e) => {
                // `live` undid what it had done (or says what it could not).
                journal.discard();
                return Err(e);
            }
        }
    };
    rep.steps = outcome.plan.steps.describe();
    let now = crate::host::boottime_ms();
    for s in &outcome.plan.steps.steps {
        if let Step::AddAddr { addr } = s {
            if addr.is_dynamic() {
                let left = crate::host::secs_left(addr.valid_until_ms, now);
                rep.notes.push(format!(
                    "{} is a leased address (valid {left} s more): it moved to {} with its remaining lifetime, but no DHCP client runs on {}, so nothing renews it and it expires then unless the host's network configuration takes over; make it persistent with `--netplan --dhcp --apply`",
                    addr.cidr(), o.bridge, o.bridge
                ));
            }
        }
    }
    if !o.dns.is_empty() {
        rep.notes.push(
            "--dns is written by --netplan only; the live way leaves resolv.conf alone".into(),
        );
    }
    rep.addresses = outcome.plan.addresses.iter().map(|a| a.cidr()).collect();
    rep.routes = outcome.plan.routes.iter().map(|r| r.describe()).collect();
    rep.changed = outcome.changed;
    rep.rolled_back = outcome.rolled_back;
    rep.probe = outcome.probe;
    rep.apply_ms = outcome.apply_ms;
    rep.rollback_ms = outcome.rollback_ms;
    Ok(rep)
}

/// The record of a live change in the state dir: written (and the reverter armed, with a
/// confirm window) before the first step, so a vbridge killed part-way leaves what restores
/// the state from before; removed when the change ends without being left pending.
struct Journal<'a> {
    o: &'a Options,
    revert_at_ms: Option<u64>,
    record: Option<Pending>,
}

impl Journal<'_> {
    fn open(&mut self, plan: &Plan, before: &State) -> Result<()> {
        let dir = &self.o.state_dir;
        let mut p = Pending {
            id: pending::new_id(),
            mode: "live".into(),
            bridge: self.o.bridge.clone(),
            nic: self.o.nic.clone(),
            undo: plan.steps.undo(),
            files: vec![],
            reload: vec![],
            revert_at_ms: self.revert_at_ms.unwrap_or_default(),
            reverter_pid: None,
            reverter_unit: None,
            before: Some(before.clone()),
            complete: false,
            maker_pid: Some(std::process::id()),
        };
        pending::write(dir, &p).map_err(|e| {
            e.context("cannot record the change before making it, so nothing was changed")
                .with_hint("vbridge keeps the way back in its state directory: make it writable, or set VBRIDGE_STATE_DIR")
        })?;
        self.record = Some(p.clone());
        if let Some(window) = self.o.confirm_within {
            match pending::spawn_reverter(&self.o.reverter, dir, &p.id, window) {
                Ok(r) => {
                    p.reverter_pid = r.pid;
                    p.reverter_unit = r.unit;
                    let _ = pending::rewrite(dir, &p);
                    self.record = Some(p);
                }
                Err(e) => {
                    self.discard();
                    return Err(e.context("cannot arm the confirm window, so nothing was changed"));
                }
            }
        }
        Ok(())
    }

    /// Remove the record, if it is still ours (a reverter may have claimed it).
    fn discard(&mut self) {
        let Some(mine) = self.record.take() else {
            return;
        };
        let dir = &self.o.state_dir;
        if pending::read(dir)
            .ok()
            .flatten()
            .is_some_and(|p| p.id == mine.id)
        {
            let _ = std::fs::remove_file(dir.join(pending::PENDING_FILE));
        }
    }

    /// The change ended: left pending (complete) under a confirm window, else forgotten.
    fn finish(&mut self, outcome: &LiveOutcome, rep: &mut Report) -> Result<()> {
        match (&self.record, outcome.changed, self.o.confirm_within) {
            (Some(p), true, Some(window)) => {
                let p = Pending {
                    complete: true,
                    maker_pid: None,
                    ..p.clone()
                };
                pending::rewrite(&self.o.state_dir, &p).map_err(|e| {
                    e.context("the change is made but cannot be marked complete; it reverts when its window ends")
                })?;
                rep.pending = true;
                rep.reverter_pid = p.reverter_pid;
                rep.reverter_unit = p.reverter_unit.clone();
                rep.confirm_within = Some(window.as_secs());
                self.record = None;
            }
            _ => self.discard(),
        }
        Ok(())
    }
}

/// How a live change ended.
#[derive(Debug, Clone, Serialize)]
pub struct LiveOutcome {
    pub plan: Plan,
    /// What was observed before the first step, to check an undo against.
    #[serde(skip)]
    pub before: State,
    pub changed: bool,
    pub probe: Option<ProbeResult>,
    pub rolled_back: bool,
    /// Time from the first step to the end of the probe.
    pub apply_ms: u64,
    /// Time the rollback took, when there was one.
    pub rollback_ms: Option<u64>,
}

impl LiveOutcome {
    /// Nothing applied: the host is as observed in `before`.
    pub fn unchanged(plan: Plan, before: State) -> LiveOutcome {
        LiveOutcome {
            plan,
            before,
            changed: false,
            probe: None,
            rolled_back: false,
            apply_ms: 0,
            rollback_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub target: IpAddr,
    pub answered: bool,
    /// Time until the first answer (or until giving up).
    pub ms: u64,
}

/// A reachability check: Ok(true) when `target` answered within `timeout`.
pub type ProbeFn<'a> = &'a mut dyn FnMut(IpAddr, Duration) -> Result<bool>;

/// What is done with the plan and the state from before, before the first step (the
/// journal); an error stops the change before it starts.
pub type BeforeFirstStep<'a> = &'a mut dyn FnMut(&Plan, &State) -> Result<()>;

/// Plan, apply and probe. If the probe target does not answer within `rollback_after`,
/// undo everything and report `rolled_back`. `probe_override` replaces the default gateway.
pub fn live(
    net: &mut dyn Net,
    req: &LiveRequest,
    probe_override: Option<IpAddr>,
    rollback_after: Duration,
    probe: ProbeFn<'_>,
    before_first_step: BeforeFirstStep<'_>,
) -> Result<LiveOutcome> {
    live_with(
        net,
        |state| bridge::plan_live(state, req),
        probe_override,
        rollback_after,
        probe,
        before_first_step,
    )
}

/// [`live`] with any planner of live steps (`plan_live` on the way in, `plan_unbridge` on
/// the way back): observe, plan, apply, probe, roll back exactly when unanswered.
pub fn live_with(
    net: &mut dyn Net,
    make_plan: impl FnOnce(&State) -> Result<Plan>,
    probe_override: Option<IpAddr>,
    rollback_after: Duration,
    probe: ProbeFn<'_>,
    before_first_step: BeforeFirstStep<'_>,
) -> Result<LiveOutcome> {
    let state = net.observe()?;
    let plan = make_plan(&state)?;
    let start = Instant::now();
    if plan.steps.is_empty() {
        return Ok(LiveOutcome::unchanged(plan, state));
    }
    before_first_step(&plan, &state)?;
    bridge::apply_from(net, &state, &plan.steps)?;
    let target = probe_override.or(plan.probe);
    let mut result = None;
    if let Some(t) = target {
        let p0 = Instant::now();
        let answered = match probe(t, rollback_after) {
            Ok(a) => a,
            Err(e) => {
                let problems = bridge::rollback(net, &state, &plan.steps);
                return Err(e.context("probe failed").with_hint(if problems.is_empty() {
                    "the change was rolled back; the NIC has exactly its previous addresses and routes".to_string()
                } else {
                    format!(
                        "rolling back did not restore everything ({}): check `ip addr` and `ip route`",
                        problems.join("; ")
                    )
                }));
            }
        };
        result = Some(ProbeResult {
            target: t,
            answered,
            ms: p0.elapsed().as_millis() as u64,
        });
    }
    let apply_ms = start.elapsed().as_millis() as u64;
    if result.as_ref().is_some_and(|r| !r.answered) {
        let r0 = Instant::now();
        let problems = bridge::rollback(net, &state, &plan.steps);
        if !problems.is_empty() {
            return Err(Error::host(format!(
                "the probe got no answer and rolling back did not restore everything: {}",
                problems.join("; ")
            ))
            .with_hint("restore the NIC by hand: `ip link del BRIDGE`, then re-add its address and default route"));
        }
        return Ok(LiveOutcome {
            plan,
            before: state,
            changed: false,
            probe: result,
            rolled_back: true,
            apply_ms,
            rollback_ms: Some(r0.elapsed().as_millis() as u64),
        });
    }
    Ok(LiveOutcome {
        plan,
        before: state,
        changed: true,
        probe: result,
        rolled_back: false,
        apply_ms,
        rollback_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::bridge::fixtures::*;

    /// `live` on a recorder of `host()` with a probe that answers as told.
    fn live_with_probe(answered: bool) -> (Recorder, LiveOutcome) {
        let mut net = Recorder::new(None);
        let mut probe = |_: IpAddr, _: Duration| Ok(answered);
        let out = live(
            &mut net,
            &req(),
            None,
            Duration::from_millis(10),
            &mut probe,
            &mut |_, _| Ok(()),
        )
        .unwrap();
        (net, out)
    }

    /// The way back is recorded before the first step, with the whole plan's undo; when it
    /// cannot be, nothing is done.
    #[test]
    fn the_journal_comes_before_the_first_step() {
        let mut net = Recorder::new(None);
        let mut probe = |_: IpAddr, _: Duration| Ok(true);
        let mut seen = None;
        let out = live(
            &mut net,
            &req(),
            None,
            Duration::from_millis(10),
            &mut probe,
            &mut |plan, before| {
                seen = Some((plan.steps.undo(), before.clone()));
                Ok(())
            },
        )
        .unwrap();
        let (undo, before) = seen.expect("called");
        assert_eq!(undo, out.plan.steps.undo());
        assert_eq!(before, out.before);

        let mut net = Recorder::new(None);
        let err = live(
            &mut net,
            &req(),
            None,
            Duration::from_millis(10),
            &mut probe,
            &mut |_, _| Err(Error::host("state dir full")),
        )
        .unwrap_err();
        assert!(err.message.contains("state dir full"));
        assert!(net.done.is_empty(), "a step ran: {:?}", net.done);
    }

    #[test]
    fn unanswered_probe_rolls_back() {
        let (net, out) = live_with_probe(false);
        assert!(out.rolled_back);
        assert!(!out.changed);
        let n = out.plan.steps.steps.len();
        assert_eq!(net.done.len(), 2 * n);
        assert_eq!(net.done[n..], out.plan.steps.undo()[..]);

        let (net, out) = live_with_probe(true);
        assert!(out.changed && !out.rolled_back);
        assert_eq!(net.done, out.plan.steps.steps);
    }
}
