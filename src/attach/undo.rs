//! `vbridge undo`: define a domain's latest backup again, keeping what it replaces.

use crate::backup::StateDir;
use crate::domxml;
use crate::edit::{DomainApplier, DomainStep, Keep};
use crate::error::{Error, ErrorKind, Result};
use crate::libvirt::{Conn, Dom};
use crate::plan::{self, Plan};
use crate::report::DomainResult;

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
