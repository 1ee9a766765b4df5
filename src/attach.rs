//! `vbridge attach` (persistent rewrite), `vbridge undo`: the `virsh edit` change done right.
//! Observe the persistent XML, plan the rewrite (pure, in `domxml`) as a [`Define`] step,
//! back up every domain's definition with one flush, then define each after checking nobody
//! changed it meanwhile.
//!
//! [`Define`]: crate::edit::DomainStep::Define

use crate::backup::StateDir;
use crate::domxml::{self, Selection};
use crate::edit::{self, DomainApplier, DomainStep, Keep};
use crate::error::{Error, ErrorKind, Result};
use crate::fanout::parallel;
use crate::libvirt::{Conn, Dom};
use crate::plan::{self, Plan};
use crate::report::{AttachReport, DomainResult, NicResult};
use crate::validate::BridgeName;

/// Options for `attach` without `--hotplug`, checked where they entered (the types).
#[derive(Debug, Clone)]
pub struct AttachOptions {
    pub bridge: BridgeName,
    pub selection: Selection,
    pub dry_run: bool,
}

/// The one check the types cannot make: `--index` counts from 1.
fn check_selection(selection: &Selection) -> Result<()> {
    match selection {
        Selection::Index(0) => Err(Error::invalid("--index counts from 1")),
        _ => Ok(()),
    }
}

/// One domain's part of an attach: its report so far and, when it is to change, the domain
/// and the plan to apply.
pub struct DomainPlan {
    pub result: DomainResult,
    pub todo: Option<(Dom, Plan<DomainStep>)>,
}

/// What `attach` would do to each domain, computed from what was read. Changes nothing.
pub struct AttachPlan {
    pub dry_run: bool,
    pub domains: Vec<DomainPlan>,
    /// The request, to plan a domain again when its definition changed meanwhile.
    pub options: AttachOptions,
}

/// The plan of rewriting one domain's persistent definition `original`. Pure.
pub fn plan_domain(
    domain: &str,
    original: &str,
    running: bool,
    bridge: &BridgeName,
    selection: &Selection,
) -> Result<(DomainResult, Plan<DomainStep>)> {
    let rewritten = domxml::rewrite_to_bridge(original, bridge, selection)?;
    let changed = rewritten.changed();
    let notes = rewritten.notes();
    let interfaces = rewritten.changes.into_iter().map(NicResult::from).collect();
    let mut result = DomainResult::new(domain, changed, interfaces);
    result.notes = notes;
    if changed && running {
        result.notes.push(format!(
            "{domain} is running: the new NIC setup takes effect after a full power-off (virsh shutdown, then start; a reboot inside the guest is not enough), or use --hotplug to add a NIC now"
        ));
    }
    let steps = if changed {
        vec![DomainStep::Define {
            domain: domain.to_string(),
            before: Some(original.to_string()),
            after: rewritten.xml,
            keep: Keep::Backup,
        }]
    } else {
        Vec::new()
    };
    Ok((result, Plan::new(steps)))
}

/// Observe each domain and plan its rewrite. One connection; a domain that cannot be read
/// or rewritten gets its error and the others go on. The same VM named twice (or by name and
/// by UUID) is planned once, at its first mention, or it would be defined twice.
pub fn plan(conn: &Conn, domains: &[String], opts: &AttachOptions) -> Result<AttachPlan> {
    check_selection(&opts.selection)?;
    let host_warning = host_bridge_warning(conn, &opts.bridge);
    let planned: Vec<(Option<String>, DomainPlan)> = parallel(domains.iter().collect(), |name| {
        let observed = conn.domain(name).and_then(|dom| {
            let original = dom.persistent_xml()?;
            Ok((dom, original))
        });
        let planned = observed.and_then(|(dom, original)| {
            // The id libvirt returned with the lookup: no extra round trip per VM.
            let running = dom.is_running_at_lookup();
            let (r, p) = plan_domain(
                dom.name(),
                &original,
                running,
                &opts.bridge,
                &opts.selection,
            )?;
            Ok((dom, r, p))
        });
        match planned {
            Ok((dom, mut r, p)) => {
                if r.changed {
                    r.notes.extend(host_warning.iter().cloned());
                }
                if opts.dry_run {
                    r.diff = p.steps.first().and_then(DomainStep::diff);
                }
                let uuid = dom.uuid().ok();
                let todo = (!p.is_empty() && !opts.dry_run).then_some((dom, p));
                (uuid, DomainPlan { result: r, todo })
            }
            Err(e) => (
                None,
                DomainPlan {
                    result: DomainResult::failed(name, e),
                    todo: None,
                },
            ),
        }
    });
    let mut seen = std::collections::HashSet::new();
    let domains = planned
        .into_iter()
        .filter(|(uuid, _)| uuid.as_ref().is_none_or(|u| seen.insert(u.clone())))
        .map(|(_, p)| p)
        .collect();
    Ok(AttachPlan {
        dry_run: opts.dry_run,
        domains,
        options: opts.clone(),
    })
}

/// Apply an attach plan: back up every definition to replace and flush them once, then
/// define each domain (in parallel) after checking nobody edited it since it was read.
/// Each domain gets its own result; a failure in one does not stop the others.
pub fn apply(conn: &Conn, plan: AttachPlan, state: &StateDir) -> AttachReport {
    struct Slot {
        result: DomainResult,
        todo: Option<(Dom, Plan<DomainStep>)>,
        backup: Option<std::path::PathBuf>,
    }
    let mut slots: Vec<Slot> = plan
        .domains
        .into_iter()
        .map(|d| Slot {
            result: d.result,
            todo: d.todo,
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
    let domains = parallel(slots, |s| {
        let Some((dom, p)) = s.todo else {
            return s.result;
        };
        let mut by = DomainApplier::with_backup(conn, Some(&dom), Some(state), s.backup);
        match plan::apply(&p.steps, &mut by) {
            Ok(()) => {
                let mut r = s.result;
                r.backup = by.backup().cloned();
                r
            }
            Err(stopped) if by.outcome_unknown() => {
                DomainResult::unknown(&s.result.domain, stopped.error, by.backup().cloned())
            }
            // Read under the domain's lock (still held by `by`): when another vbridge made
            // this very change meanwhile, there is nothing left to do, and saying "changed"
            // would count it twice.
            Err(stopped) => match by.found_instead().map(|now| {
                let o = &plan.options;
                plan_domain(dom.name(), now, false, &o.bridge, &o.selection)
            }) {
                Some(Ok((r, p))) if p.is_empty() => r,
                _ => DomainResult::failed(&s.result.domain, stopped.error),
            },
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

fn host_bridge_warning(conn: &Conn, bridge: &BridgeName) -> Vec<String> {
    if conn.shares_host() {
        crate::topology::bridge_warnings(bridge.as_str())
    } else {
        Vec::new()
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

/// What undo found: the domain (None when it no longer exists), its definition now, and
/// the latest backup.
struct UndoView {
    name: String,
    dom: Option<Dom>,
    current: Option<String>,
    backup_path: std::path::PathBuf,
    backup: String,
}

fn observe_undo(conn: &Conn, name: &str, state: &StateDir) -> Result<UndoView> {
    // Backups are filed under the domain's name: resolve a UUID to it first. A domain that
    // no longer exists can still be restored by its name.
    let (current, dom) = match conn.domain(name) {
        Ok(dom) => (Some(dom.persistent_xml()?), Some(dom)),
        Err(e) if e.kind == ErrorKind::NotFound => (None, None),
        Err(e) => return Err(e),
    };
    let name = dom.as_ref().map(|d| d.name()).unwrap_or(name).to_string();
    let backup_path = state.latest_backup(&name)?.ok_or_else(|| {
        Error::not_found(format!(
            "no backup of {name} in {}",
            state.backup_dir(&name).display()
        ))
        .with_hint("vbridge keeps a backup for each change it makes; set VBRIDGE_STATE_DIR if you used another one")
    })?;
    let backup = std::fs::read_to_string(&backup_path)
        .map_err(|e| Error::io(format!("cannot read {}", backup_path.display()), e))?;
    let backup_facts = domxml::facts(&backup)?;
    if let (Some(dom), Some(want)) = (&dom, &backup_facts.uuid) {
        let have = dom.uuid()?;
        if !have.eq_ignore_ascii_case(want) {
            return Err(Error::conflict(format!(
                "the backup {} is of another domain named {name} (UUID {want}, this one is {have})",
                backup_path.display()
            )));
        }
    }
    Ok(UndoView {
        name,
        dom,
        current,
        backup_path,
        backup,
    })
}

/// The plan of an undo: define the backup again (keeping what it replaces as
/// `*.xml.pre-undo`), then mark the backup used. Pure.
fn plan_undo(v: &UndoView) -> Plan<DomainStep> {
    let changed = v.current.as_deref() != Some(v.backup.as_str());
    let mut steps = Vec::new();
    if changed {
        steps.push(DomainStep::Define {
            domain: v.name.clone(),
            before: v.current.clone(),
            after: v.backup.clone(),
            keep: Keep::PreUndo,
        });
    } else if let Some(cur) = &v.current {
        steps.push(DomainStep::SavePreUndo {
            domain: v.name.clone(),
            xml: cur.clone(),
        });
    }
    steps.push(DomainStep::MarkUndone {
        backup: v.backup_path.clone(),
    });
    Plan::new(steps)
}

/// `vbridge undo VM`: define the latest backup again. The definition it replaces is saved
/// beside it (`*.xml.pre-undo`), and the backup is marked used so a second undo goes one
/// step further back.
pub fn undo(conn: &Conn, name: &str, state: &StateDir, dry_run: bool) -> Result<DomainResult> {
    let v = observe_undo(conn, name, state)?;
    let p = plan_undo(&v);
    let changed = p
        .steps
        .iter()
        .any(|s| matches!(s, DomainStep::Define { .. }));
    let mut result = DomainResult::new(&v.name, changed, Vec::new());
    result.backup = Some(v.backup_path.clone());
    if dry_run {
        // An unchanged domain shows an empty diff, as `diff -u` would.
        result.diff = Some(
            p.steps
                .iter()
                .find_map(DomainStep::diff)
                .unwrap_or_default(),
        );
        return Ok(result);
    }
    let mut by = DomainApplier::new(conn, v.dom.as_ref(), Some(state));
    if let Err(stopped) = plan::apply(&p.steps, &mut by) {
        if by.outcome_unknown() {
            // The backup stays unmarked: a second undo defines it again.
            return Ok(DomainResult::unknown(
                &v.name,
                stopped.error,
                Some(v.backup_path),
            ));
        }
        return Err(stopped.error);
    }
    if changed
        && v.dom
            .as_ref()
            .map(|d| d.is_active())
            .transpose()?
            .unwrap_or(false)
    {
        result.notes.push(format!(
            "{} is running: the restored definition takes effect after a full power-off",
            v.name
        ));
    }
    Ok(result)
}
