//! `vbridge attach` (persistent rewrite), `vbridge undo`: the `virsh edit` change done right.
//! Observe the persistent XML, plan the rewrite (pure, in `domxml`) as a [`Define`] step,
//! back up every domain's definition with one flush, then define each after checking nobody
//! changed it meanwhile.
//!
//! With `--live` ([`live`]) the running VM's NIC moves too, now, and is verified.
//!
//! [`Define`]: crate::edit::DomainStep::Define

pub mod live;
mod undo;

pub use undo::undo;

use crate::backup::StateDir;
use crate::domain;
use crate::domxml::{self, NicOptions, Selection, Target};
use crate::edit::{self, DomainApplier, DomainStep, Keep};
use crate::error::{Error, Result};
use crate::fanout::parallel;
use crate::libvirt::{Conn, Dom, Found};
use crate::plan::{self, Applier, Plan, Step};
use crate::report::{AttachReport, DomainResult, NicResult};
use crate::validate::{BridgeName, Mac};
use live::{Confirm, LiveOptions};
use std::time::{Duration, Instant};

/// Options for `attach` without `--hotplug`, checked where they entered (the types).
#[derive(Debug, Clone)]
pub struct AttachOptions {
    pub bridge: BridgeName,
    pub selection: Selection,
    pub dry_run: bool,
    /// Make a transient VM persistent (its rewrite is refused otherwise).
    pub persist: bool,
    /// Told as each domain is read and defined (the CLI's progress line).
    pub progress: crate::progress::Sink,
}

/// Everything `attach` (without `--hotplug`) can be asked: where the NICs go, which, with
/// what options, and whether the running VM moves now.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub target: Target,
    pub selection: Selection,
    pub nic: NicOptions,
    /// Move the running VM's NICs now (`--live`); None leaves them to the next power-off.
    pub live: Option<LiveOptions>,
    pub dry_run: bool,
    /// Make a transient VM persistent (its persistent rewrite is refused otherwise).
    pub persist: bool,
    /// Told as each domain is read and defined (the CLI's progress line).
    pub progress: crate::progress::Sink,
}

impl From<&AttachOptions> for AttachRequest {
    fn from(o: &AttachOptions) -> AttachRequest {
        AttachRequest {
            target: Target::Bridge(o.bridge.clone()),
            selection: o.selection.clone(),
            nic: NicOptions::default(),
            live: None,
            dry_run: o.dry_run,
            persist: o.persist,
            progress: o.progress.clone(),
        }
    }
}

/// The one check the types cannot make: `--index` counts from 1.
fn check_selection(selection: &Selection) -> Result<()> {
    match selection {
        Selection::Index(0) => Err(Error::invalid("--index counts from 1")),
        _ => Ok(()),
    }
}

/// One domain's part of an attach: its report so far and, when it is to change, the domain
/// and the plan to apply, and the NICs to verify once it ran (`--live`).
pub struct DomainPlan {
    pub result: DomainResult,
    pub todo: Option<(Dom, Plan<DomainStep>)>,
    pub verify: Vec<Mac>,
}

/// What `attach` would do to each domain, computed from what was read. Changes nothing.
pub struct AttachPlan {
    pub dry_run: bool,
    pub domains: Vec<DomainPlan>,
    /// How long a moved NIC has to answer (`--live` with verification).
    pub verify_within: Option<Duration>,
    /// Domains changed at once.
    pub workers: usize,
    /// The options' sink, for [`apply`].
    pub progress: crate::progress::Sink,
    /// The request, to plan a domain again when its definition changed meanwhile.
    pub request: AttachRequest,
}

/// The plan of rewriting one domain's persistent definition `original`. Pure.
pub fn plan_domain(
    domain: &str,
    original: &str,
    running: bool,
    bridge: &BridgeName,
    selection: &Selection,
) -> Result<(DomainResult, Plan<DomainStep>)> {
    let req = AttachRequest::from(&AttachOptions {
        bridge: bridge.clone(),
        selection: selection.clone(),
        dry_run: false,
        persist: false,
        progress: Default::default(),
    });
    let (r, p, _) = plan_request_domain(domain, original, running.then_some(""), &req)?;
    Ok((r, p))
}

/// The plan of one domain for a request: the persistent rewrite and, with `--live` and the
/// running VM's XML in `live_xml` (`Some` when it runs), the live move. Pure. Returns the
/// NICs to verify after the plan ran.
pub fn plan_request_domain(
    domain: &str,
    original: &str,
    live_xml: Option<&str>,
    req: &AttachRequest,
) -> Result<(DomainResult, Plan<DomainStep>, Vec<Mac>)> {
    let rewritten = domxml::rewrite_nics(original, &req.target, &req.selection, &req.nic)?;
    let changed = rewritten.changed();
    let live = match (live_xml, &req.live) {
        (Some(xml), Some(opts)) => Some(live::plan(
            domain,
            xml,
            &rewritten,
            &req.target,
            &req.nic,
            opts,
        )?),
        _ => None,
    };
    let interfaces = rewritten
        .changes
        .iter()
        .cloned()
        .map(NicResult::from)
        .collect();
    let moved = live.as_ref().is_some_and(|l| !l.steps.is_empty());
    let mut result = DomainResult::new(domain, changed || moved, interfaces);
    // What the rewrite dropped that a person should know (a bandwidth floor, a virtualport).
    result.notes = rewritten.notes();
    if changed && live_xml.is_some() && live.is_none() {
        result.notes.push(format!(
            "{domain} is running: the new NIC setup takes effect after a full power-off (virsh shutdown, then start; a reboot inside the guest is not enough), or use --live to move it now, or --hotplug to add a NIC now"
        ));
    }
    let mut steps = Vec::new();
    if changed {
        steps.push(DomainStep::Define {
            domain: domain.to_string(),
            before: Some(original.to_string()),
            after: rewritten.xml,
            keep: Keep::Backup,
        });
    }
    let mut verify = Vec::new();
    if let Some(l) = live {
        steps.extend(l.steps);
        result.notes.extend(l.notes);
        result.live = Some(l.report);
        verify = l.verify;
    }
    Ok((result, Plan::new(steps), verify))
}

/// Observe each domain and plan its rewrite. One connection; a domain that cannot be read
/// or rewritten gets its error and the others go on. The same VM named twice (or by name and
/// by UUID) is planned once, at its first mention, or it would be defined twice. The domains
/// are found together ([`Conn::find_domains`]), their XML read with many calls in flight, and
/// the bridge's host-side warning read meanwhile: over a slow link, round trips overlap.
pub fn plan(conn: &Conn, domains: &[String], opts: &AttachOptions) -> Result<AttachPlan> {
    plan_request(conn, domains, &AttachRequest::from(opts))
}

/// [`plan`] for a full request (macvtap, MTU, queues, `--live`). The domains are found from
/// one listing and read with as many calls in flight as the link rewards; whether a libvirt
/// network owns the bridge is asked meanwhile.
pub fn plan_request(conn: &Conn, domains: &[String], req: &AttachRequest) -> Result<AttachPlan> {
    check_selection(&req.selection)?;
    let host_warning = host_warning(conn, &req.target)?;
    req.progress.begin("reading domains", domains.len());
    let (owner, planned) = std::thread::scope(|s| {
        // A bridge a libvirt network owns (virbr0) is a note, not a reason to refuse.
        let owner = s.spawn(|| match &req.target {
            Target::Bridge(b) => crate::topology::bridge_owner_notes(conn, b.as_str()),
            Target::Direct { .. } | Target::Network(_) => Vec::new(),
        });
        let found = domains.iter().zip(conn.find_domains(domains)).collect();
        let planned = parallel(conn.calls_in_flight(), found, |(name, found)| {
            plan_found(name, found, req, &host_warning)
        });
        (
            owner.join().expect("the bridge owner check does not panic"),
            planned,
        )
    });
    let mut seen = std::collections::HashSet::new();
    let domains = planned
        .into_iter()
        .filter(|(uuid, _)| uuid.as_ref().is_none_or(|u| seen.insert(u.clone())))
        .map(|(_, mut p)| {
            if p.result.changed {
                p.result.notes.extend(owner.iter().cloned());
            }
            p
        })
        .collect();
    Ok(AttachPlan {
        dry_run: req.dry_run,
        domains,
        verify_within: req.live.and_then(|l| l.verify_within),
        progress: req.progress.clone(),
        workers: if req.live.is_some() {
            live::MOVERS.max(conn.calls_in_flight())
        } else {
            conn.calls_in_flight()
        },
        request: req.clone(),
    })
}

/// What `--dry-run` shows: the persistent diff, then each live change and pause.
fn dry_run_diff(p: &Plan<DomainStep>) -> Option<String> {
    let mut out = String::new();
    for s in &p.steps {
        match s {
            DomainStep::Define { .. } => out.push_str(&s.diff().unwrap_or_default()),
            DomainStep::UpdateDevice { .. } => {
                out.push_str(&format!("# {}\n", s.describe()));
                out.push_str(&s.diff().unwrap_or_default());
            }
            _ => out.push_str(&format!("# {}\n", s.describe())),
        }
    }
    (!p.is_empty()).then_some(out)
}

/// Tells the sink a domain is finished when dropped: on every way out of its closure.
struct Tick<'a>(&'a crate::progress::Sink, &'a str);

impl Drop for Tick<'_> {
    fn drop(&mut self) {
        self.0.done(self.1);
    }
}

/// One found domain's plan, and its UUID when it was read. `host_warning`: why the target
/// cannot take a NIC on this host (refuses a live move; a note otherwise).
fn plan_found(
    name: &str,
    found: Result<Found>,
    req: &AttachRequest,
    host_warning: &[String],
) -> (Option<String>, DomainPlan) {
    let _tick = Tick(&req.progress, name);
    let failed = |e| DomainPlan {
        result: DomainResult::failed(name, e),
        todo: None,
        verify: Vec::new(),
    };
    let planned = found.and_then(|found| {
        let dom = &found.dom;
        let original = dom.persistent_xml()?;
        // The id libvirt returned with the domain: no extra round trip per VM.
        let running = dom.is_running_at_lookup();
        // The live XML only when the running NIC is to move: one read more per VM.
        let live_xml = match (running, req.live.is_some()) {
            (true, true) => Some(dom.live_xml()?),
            (true, false) => Some(String::new()),
            _ => None,
        };
        if live_xml.as_deref().is_some_and(|x| !x.is_empty()) {
            if let Some(w) = host_warning.first() {
                // A live move onto a bridge that is not there fails in libvirt: refuse
                // before anything changes.
                return Err(Error::not_found(w.clone()));
            }
        }
        let (r, p, v) = plan_request_domain(dom.name(), &original, live_xml.as_deref(), req)?;
        Ok((found, r, p, v))
    });
    let (found, mut r, mut p, verify) = match planned {
        Ok(planned) => planned,
        Err(e) => return (None, failed(e)),
    };
    let dom = found.dom;
    if r.changed {
        let defines = p
            .steps
            .iter()
            .any(|s| matches!(s, DomainStep::Define { .. }));
        let moves_live = p
            .steps
            .iter()
            .any(|s| !matches!(s, DomainStep::Define { .. }));
        let persistent = match (defines, found.persistent) {
            (false, _) => Ok(true),
            (true, Some(p)) => Ok(p),
            (true, None) => dom.is_persistent(),
        };
        let decision = persistent.and_then(|persistent| {
            if !persistent && !req.persist && moves_live {
                // --live on a transient VM: move the running NIC, define nothing.
                p.steps.retain(|s| !matches!(s, DomainStep::Define { .. }));
                return Ok(Some(domain::transient_live_only(dom.name())));
            }
            domain::persistent_rewrite(dom.name(), persistent, req.persist)
        });
        match decision {
            Ok(note) => r.notes.extend(note),
            Err(e) => return (None, failed(e)),
        }
        r.notes.extend(host_warning.iter().cloned());
    }
    if req.dry_run {
        r.diff = dry_run_diff(&p);
    }
    let uuid = dom.uuid().ok();
    let todo = (!p.is_empty() && !req.dry_run).then_some((dom, p));
    (
        uuid,
        DomainPlan {
            result: r,
            todo,
            verify,
        },
    )
}

/// Apply an attach plan: back up every definition to replace and flush them once, then
/// define each domain (in parallel) after checking nobody edited it since it was read.
/// Each domain gets its own result; a failure in one does not stop the others.
pub fn apply(conn: &Conn, plan: AttachPlan, state: &StateDir) -> AttachReport {
    apply_confirmed(conn, plan, state, None)
}

/// [`apply`], then for `--live` ask `confirm` whether each moved NIC reaches the LAN, and
/// put back the domains where one does not ([`live::confirm_or_revert`]). A domain whose
/// plan stops part way has the steps already made undone.
pub fn apply_confirmed(
    conn: &Conn,
    plan: AttachPlan,
    state: &StateDir,
    confirm: Option<Confirm>,
) -> AttachReport {
    struct Slot {
        result: DomainResult,
        todo: Option<(Dom, Plan<DomainStep>)>,
        verify: Vec<Mac>,
        backup: Option<std::path::PathBuf>,
    }
    let mut slots: Vec<Slot> = plan
        .domains
        .into_iter()
        .map(|d| Slot {
            result: d.result,
            todo: d.todo,
            verify: d.verify,
            backup: None,
        })
        .collect();
    let mut backed_up = false;
    for s in slots.iter_mut() {
        if let Some((_, p)) = &s.todo {
            match edit::write_backup(state, &p.steps) {
                Ok(path) => {
                    backed_up |= path.is_some();
                    s.backup = path;
                }
                Err(e) => {
                    s.result = DomainResult::failed(&s.result.domain, e);
                    s.todo = None;
                }
            }
        }
    }
    if backed_up {
        if let Err(e) = state.sync() {
            for s in slots.iter_mut() {
                if s.todo.take().is_some() {
                    if let Some(b) = s.backup.take() {
                        let _ = std::fs::remove_file(b);
                    }
                    s.result = DomainResult::failed(&s.result.domain, e.clone());
                }
            }
        }
    }
    let within = plan.verify_within;
    let todo = slots.iter().filter(|s| s.todo.is_some()).count();
    plan.progress.begin("defining domains", todo);
    let domains = parallel(plan.workers, slots, |s| {
        let Some((dom, p)) = s.todo else {
            return s.result;
        };
        let name = s.result.domain.clone();
        let _tick = Tick(&plan.progress, &name);
        let started = Instant::now();
        let mut by = DomainApplier::with_backup(conn, Some(&dom), Some(state), s.backup);
        match plan::apply(&p.steps, &mut by) {
            Ok(()) => {
                let mut r = s.result;
                r.backup = by.backup().cloned();
                match (confirm, within) {
                    (Some(confirm), Some(within)) if !s.verify.is_empty() => {
                        live::confirm_or_revert(
                            &dom, &mut by, &p.steps, &s.verify, within, confirm, started, r,
                        )
                    }
                    _ => {
                        if let Some(l) = r.live.as_mut() {
                            l.seconds = Some(started.elapsed().as_secs_f64());
                        }
                        r
                    }
                }
            }
            Err(stopped) if by.outcome_unknown() => {
                DomainResult::unknown(&s.result.domain, stopped.error, by.backup().cloned())
            }
            // Read under the domain's lock (still held by `by`): when another vbridge made
            // this very change meanwhile, there is nothing left to do, and saying "changed"
            // would count it twice.
            Err(stopped) if stopped.applied == 0 => match by
                .found_instead()
                .map(|now| plan_request_domain(dom.name(), now, None, &plan.request))
            {
                Some(Ok((r, p, _))) if p.is_empty() => r,
                _ => DomainResult::failed(&s.result.domain, stopped.error),
            },
            Err(stopped) => {
                // A live step failed after the definition changed: put back what was done.
                let problems: Vec<String> = p
                    .undo_of(stopped.applied)
                    .iter()
                    .filter_map(|st| by.apply_step(st).err().map(|e| e.message))
                    .collect();
                let hint = if problems.is_empty() {
                    by.discard_backup();
                    "nothing was changed: the steps already made were undone".to_string()
                } else {
                    format!(
                        "undoing the steps already made did not go through: {}",
                        problems.join("; ")
                    )
                };
                DomainResult::failed(&s.result.domain, stopped.error.with_hint(hint))
            }
        }
    });
    AttachReport {
        dry_run: plan.dry_run,
        domains,
    }
}

/// `vbridge attach VM...`: rewrite each domain's NIC onto the bridge ([`plan`], then
/// [`apply`] unless it is a dry run).
pub fn attach(
    conn: &Conn,
    domains: &[String],
    opts: &AttachOptions,
    state: &StateDir,
) -> Result<AttachReport> {
    let planned = plan(conn, domains, opts)?;
    Ok(apply(conn, planned, state))
}

/// `vbridge attach VM...` for a full request: [`plan_request`], then [`apply_confirmed`]
/// with `confirm` as the check of each NIC moved live.
pub fn attach_request(
    conn: &Conn,
    domains: &[String],
    req: &AttachRequest,
    state: &StateDir,
    confirm: Option<Confirm>,
) -> Result<AttachReport> {
    let planned = plan_request(conn, domains, req)?;
    Ok(apply_confirmed(conn, planned, state, confirm))
}

/// Why the target cannot take a NIC on this host, checked before anything changes: a
/// macvtap's host NIC and a libvirt network must exist (an error); a bridge that is
/// missing or a network not started is a note, and refuses a live move.
fn host_warning(conn: &Conn, target: &Target) -> Result<Vec<String>> {
    match target {
        // libvirt's own answer: a network is checked over a remote URI too.
        Target::Network(n) => crate::topology::network_warnings(conn, n),
        _ if !conn.shares_host() => Ok(Vec::new()),
        Target::Bridge(b) => Ok(crate::topology::bridge_warnings(b.as_str())),
        Target::Direct { dev, .. } => {
            if crate::host::sysfs::exists(dev.as_str()) {
                Ok(Vec::new())
            } else {
                Err(Error::not_found(format!(
                    "{dev} does not exist on this host: a macvtap NIC needs the host NIC it sits on"
                ))
                .with_hint("name an existing NIC (`ip -br link` lists them)"))
            }
        }
    }
}

/// Rewrite a document given as text (`attach --xml`): no libvirt involved.
pub fn rewrite_document(
    xml: &str,
    bridge: &BridgeName,
    selection: &Selection,
) -> Result<domxml::Rewritten> {
    check_selection(selection)?;
    domxml::rewrite_to_bridge(xml, bridge, selection)
}

/// [`rewrite_document`] for a full request (macvtap, MTU, queues); `live` plays no part.
pub fn rewrite_document_request(xml: &str, req: &AttachRequest) -> Result<domxml::Rewritten> {
    check_selection(&req.selection)?;
    domxml::rewrite_nics(xml, &req.target, &req.selection, &req.nic)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON_BR0: &str = "<domain type='kvm'>\n  <name>web</name>\n  <devices>\n    <interface type='bridge'>\n      <mac address='52:54:00:00:00:01'/>\n      <source bridge='br0'/>\n      <model type='virtio'/>\n    </interface>\n  </devices>\n</domain>\n";

    /// `attach` without `--live` earlier, `--live` now: only the running NIC moves.
    #[test]
    fn a_definition_already_done_moves_only_the_running_nic() {
        let live = ON_BR0.replace(
            "<interface type='bridge'>\n      <mac address='52:54:00:00:00:01'/>\n      <source bridge='br0'/>",
            "<interface type='network'>\n      <mac address='52:54:00:00:00:01'/>\n      <source network='default'/>",
        );
        let req = AttachRequest {
            target: Target::Bridge(BridgeName::parse("br0").unwrap()),
            selection: Selection::Auto,
            nic: NicOptions::default(),
            live: Some(LiveOptions::default()),
            dry_run: false,
            persist: false,
            progress: Default::default(),
        };
        let (r, p, verify) = plan_request_domain("web", ON_BR0, Some(&live), &req).unwrap();
        assert!(r.changed);
        assert!(!r.interfaces[0].changed, "the definition stays");
        assert!(p
            .steps
            .iter()
            .all(|s| matches!(s, DomainStep::UpdateDevice { .. } | DomainStep::Wait { .. })));
        assert_eq!(p.steps.len(), 3);
        assert_eq!(verify.len(), 1);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        // Both done: nothing at all.
        let (r, p, _) = plan_request_domain("web", ON_BR0, Some(ON_BR0), &req).unwrap();
        assert!(!r.changed && p.is_empty());
    }
}
