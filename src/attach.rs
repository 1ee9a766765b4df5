//! `vbridge attach` (persistent rewrite), `vbridge undo`: the `virsh edit` change done right.
//! Read the persistent XML, plan the rewrite (pure, in `domxml`), back up, check nobody
//! changed the definition meanwhile, define.

use crate::backup::StateDir;
use crate::domain;
use crate::domxml::{self, Selection};
use crate::error::{Error, ErrorKind, Result};
use crate::fanout::parallel;
use crate::libvirt::{Conn, Dom};
use crate::report::{AttachReport, DomainResult, NicResult};
use crate::validate;
use std::path::PathBuf;

/// What the persistent rewrite of one domain would do, computed from what was read.
#[derive(Debug, Clone)]
pub struct Plan {
    pub domain: String,
    pub original: String,
    pub rewritten: domxml::Rewritten,
    pub running: bool,
}

impl Plan {
    pub fn changed(&self) -> bool {
        self.rewritten.changed()
    }

    /// Unified diff of the persistent XML, as `diff -u` prints it.
    pub fn diff(&self) -> String {
        unified_diff(&self.domain, &self.original, &self.rewritten.xml)
    }
}

pub fn unified_diff(name: &str, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}.xml"), &format!("b/{name}.xml"))
        .to_string()
}

/// Read the domain's persistent definition and plan the rewrite. Changes nothing.
pub fn plan(dom: &Dom, bridge: &str, selection: &Selection) -> Result<Plan> {
    let original = dom.persistent_xml()?;
    let rewritten = domxml::rewrite_to_bridge(&original, bridge, selection)?;
    Ok(Plan {
        domain: dom.name().to_string(),
        original,
        rewritten,
        // The id libvirt returned with the lookup: no extra round trip per VM.
        running: dom.is_running_at_lookup(),
    })
}

/// Apply one plan: back up (durably), make sure the definition is still what was read,
/// define. Returns the backup's path.
pub fn apply(conn: &Conn, dom: &Dom, plan: &Plan, state: &StateDir) -> Result<PathBuf> {
    let backup = state.save_backup(&plan.domain, &plan.original)?;
    if let Err(e) = state.sync() {
        let _ = std::fs::remove_file(&backup);
        return Err(e);
    }
    commit(conn, dom, plan, &backup)?;
    Ok(backup)
}

/// The last step of applying a plan whose backup is written: re-read the definition and
/// define the new one only if nobody changed it meanwhile. On failure the backup is removed:
/// a backup of a state vbridge did not replace would mislead `undo`.
fn commit(conn: &Conn, dom: &Dom, plan: &Plan, backup: &std::path::Path) -> Result<()> {
    let now = dom.persistent_xml();
    if now.as_deref().ok() != Some(plan.original.as_str()) {
        let _ = std::fs::remove_file(backup);
        return Err(now.err().unwrap_or_else(|| {
            Error::conflict(format!(
                "the definition of {} changed while vbridge was working on it (someone else edited it); nothing was written",
                plan.domain
            ))
            .with_hint("run the command again to work from the new definition")
        }));
    }
    if let Err(e) = conn.define_domain(&plan.rewritten.xml) {
        let _ = std::fs::remove_file(backup);
        return Err(e.context(format!(
            "libvirt refused the new definition of {}",
            plan.domain
        )));
    }
    Ok(())
}

/// Options for `attach` without `--hotplug`.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    pub bridge: String,
    pub selection: Selection,
    pub dry_run: bool,
    /// Make a transient VM persistent (its rewrite is refused otherwise).
    pub persist: bool,
}

/// Validate options once, before any libvirt call.
pub fn check_options(bridge: &str, selection: &Selection) -> Result<Selection> {
    validate::interface_name(bridge)?;
    Ok(match selection {
        Selection::Mac(m) => Selection::Mac(validate::mac(m)?),
        Selection::Index(0) => return Err(Error::invalid("--index counts from 1")),
        s => s.clone(),
    })
}

/// `vbridge attach VM...`: rewrite each domain's NIC onto the bridge. One connection; each
/// domain gets its own result, and a failure in one does not stop the others. Plan all, back
/// up all (one flush), then define each after checking nobody edited it meanwhile.
pub fn attach(
    conn: &Conn,
    domains: &[String],
    opts: &AttachOptions,
    state: &StateDir,
) -> Result<AttachReport> {
    let selection = check_options(&opts.bridge, &opts.selection)?;
    let host_warning = host_bridge_warning(conn, &opts.bridge);
    let planned: Vec<(Option<String>, DomainResult, Todo)> =
        parallel(domains.iter().collect(), |name| {
            match plan_one(conn, name, &opts.bridge, &selection) {
                Ok((dom, plan)) => {
                    let mut r = result_of(&plan);
                    if plan.changed() {
                        match dom
                            .is_persistent()
                            .and_then(|p| domain::persistent_rewrite(&plan.domain, p, opts.persist))
                        {
                            Ok(note) => r.notes.extend(note),
                            Err(e) => return (None, DomainResult::failed(name, e), None),
                        }
                        r.notes.extend(host_warning.iter().cloned());
                    }
                    if opts.dry_run && plan.changed() {
                        r.diff = Some(plan.diff());
                    }
                    let uuid = dom.uuid().ok();
                    let todo = (plan.changed() && !opts.dry_run).then_some((dom, plan));
                    (uuid, r, todo)
                }
                Err(e) => (None, DomainResult::failed(name, e), None),
            }
        });
    // The same VM named twice (or by name and by UUID) was planned twice from one definition:
    // keep its first mention only, or it would be defined twice.
    let mut seen = std::collections::HashSet::new();
    let mut slots: Vec<(DomainResult, Todo)> = planned
        .into_iter()
        .filter(|(uuid, _, _)| uuid.as_ref().is_none_or(|u| seen.insert(u.clone())))
        .map(|(_, r, todo)| (r, todo))
        .collect();

    let mut backed_up = false;
    for (r, todo) in slots.iter_mut() {
        if let Some((_, plan)) = todo {
            match state.save_backup(&plan.domain, &plan.original) {
                Ok(path) => {
                    r.backup = Some(path);
                    backed_up = true;
                }
                Err(e) => {
                    *r = DomainResult::failed(&r.domain, e);
                    *todo = None;
                }
            }
        }
    }
    if backed_up {
        if let Err(e) = state.sync() {
            for (r, todo) in slots.iter_mut() {
                if todo.take().is_some() {
                    if let Some(b) = &r.backup {
                        let _ = std::fs::remove_file(b);
                    }
                    *r = DomainResult::failed(&r.domain, e.clone());
                }
            }
        }
    }
    let domains = parallel(slots, |(r, todo)| match todo {
        Some((dom, plan)) => {
            let backup = r.backup.clone().expect("backed up before commit");
            match commit(conn, &dom, &plan, &backup) {
                Ok(()) => r,
                Err(e) => DomainResult::failed(&r.domain, e),
            }
        }
        None => r,
    });
    Ok(AttachReport {
        dry_run: opts.dry_run,
        domains,
    })
}

fn host_bridge_warning(conn: &Conn, bridge: &str) -> Vec<String> {
    if conn.shares_host() {
        crate::topology::bridge_warnings(bridge)
    } else {
        Vec::new()
    }
    .into_iter()
    .chain(crate::topology::bridge_owner_notes(conn, bridge))
    .collect()
}

/// A domain's plan still to apply (None: nothing to do, or it failed).
type Todo = Option<(Dom, Plan)>;

fn plan_one(conn: &Conn, name: &str, bridge: &str, selection: &Selection) -> Result<(Dom, Plan)> {
    let dom = conn.domain(name)?;
    let plan = plan(&dom, bridge, selection)?;
    Ok((dom, plan))
}

/// The report of one domain's plan, before anything is applied.
fn result_of(plan: &Plan) -> DomainResult {
    let mut notes = Vec::new();
    if plan.changed() && plan.running {
        notes.push(format!(
            "{} is running: the new NIC setup takes effect after a full power-off (virsh shutdown, then start; a reboot inside the guest is not enough), or use --hotplug to add a NIC now",
            plan.domain
        ));
    }
    DomainResult {
        domain: plan.domain.clone(),
        changed: plan.changed(),
        interfaces: plan
            .rewritten
            .changes
            .iter()
            .cloned()
            .map(NicResult::from)
            .collect(),
        error: None,
        backup: None,
        notes,
        diff: None,
    }
}

/// Rewrite a document given as text (`attach --xml`): no libvirt involved.
pub fn rewrite_document(
    xml: &str,
    bridge: &str,
    selection: &Selection,
) -> Result<domxml::Rewritten> {
    let selection = check_options(bridge, selection)?;
    domxml::rewrite_to_bridge(xml, bridge, &selection)
}

/// `vbridge undo VM`: define the latest backup again. The definition it replaces is saved
/// beside it (`*.xml.pre-undo`), and the backup is marked used so a second undo goes one
/// step further back.
pub fn undo(conn: &Conn, name: &str, state: &StateDir, dry_run: bool) -> Result<DomainResult> {
    // Backups are filed under the domain's name: resolve a UUID to it first. A domain that
    // no longer exists can still be restored by its name.
    let (current, dom) = match conn.domain(name) {
        Ok(dom) => (Some(dom.persistent_xml()?), Some(dom)),
        Err(e) if e.kind == ErrorKind::NotFound => (None, None),
        Err(e) => return Err(e),
    };
    let name = dom.as_ref().map(|d| d.name()).unwrap_or(name);
    let backup_path = state.latest_backup(name)?.ok_or_else(|| {
        Error::not_found(format!(
            "no backup of {name} in {}",
            state.backup_dir(name).display()
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
    let mut result = DomainResult {
        domain: name.to_string(),
        changed: current.as_deref() != Some(backup.as_str()),
        interfaces: Vec::new(),
        error: None,
        backup: Some(backup_path.clone()),
        notes: Vec::new(),
        diff: None,
    };
    if dry_run {
        result.diff = Some(unified_diff(
            name,
            current.as_deref().unwrap_or(""),
            &backup,
        ));
        return Ok(result);
    }
    if let Some(cur) = &current {
        state.save_pre_undo(name, cur)?;
    }
    if result.changed {
        conn.define_domain(&backup)?;
        if dom
            .as_ref()
            .map(|d| d.is_active())
            .transpose()?
            .unwrap_or(false)
        {
            result.notes.push(format!(
                "{name} is running: the restored definition takes effect after a full power-off"
            ));
        }
    }
    state.mark_undone(&backup_path)?;
    Ok(result)
}
