//! The steps that change a libvirt domain (define a new definition, attach or detach a
//! device, the bookkeeping of undo) and the applier that carries them out. Shared by attach,
//! hotplug, detach and undo, which plan in these steps and never import each other.

use crate::backup::{DomainLock, StateDir};
use crate::domxml;
use crate::error::{Error, ErrorKind, Result};
use crate::libvirt::{Conn, Dom};
use crate::plan::{Applier, Step};
use std::path::PathBuf;

/// How the definition a [`DomainStep::Define`] replaces is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// As a backup (`undo` restores it), made durable before anything changes.
    Backup,
    /// Beside the backups as `*.xml.pre-undo`: what an undo replaced, to restore by hand.
    PreUndo,
}

/// One change to a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainStep {
    /// Make `after` the persistent definition of `domain`, which was read as `before` (None:
    /// the domain no longer exists). Applying it keeps `before` as `keep` says, checks the
    /// definition is still `before` (nobody edited it meanwhile), then defines `after`.
    Define {
        domain: String,
        before: Option<String>,
        after: String,
        keep: Keep,
    },
    /// Keep a definition as `*.xml.pre-undo` without changing the domain.
    SavePreUndo { domain: String, xml: String },
    /// Mark a backup as used, so the next undo goes one step further back.
    MarkUndone { backup: PathBuf },
    /// `virsh attach-device` with `--config` and/or `--live`.
    AttachDevice {
        domain: String,
        xml: String,
        config: bool,
        live: bool,
    },
    /// `virsh detach-device` with `--config` and/or `--live`.
    DetachDevice {
        domain: String,
        xml: String,
        config: bool,
        live: bool,
    },
    /// `virsh update-device --live`: the running NIC, which is `before`, becomes `after`
    /// (another source, another link state). Its inverse makes it `before` again.
    UpdateDevice {
        domain: String,
        before: String,
        after: String,
    },
    /// Hold still for `ms` milliseconds: a NIC's link stays down long enough for the guest
    /// to notice. A pause undoes itself, so a rollback flaps the link too.
    Wait { domain: String, ms: u64 },
}

fn where_(config: bool, live: bool) -> &'static str {
    match (config, live) {
        (true, true) => "config and live",
        (true, false) => "config",
        _ => "live",
    }
}

impl Step for DomainStep {
    fn describe(&self) -> String {
        match self {
            DomainStep::Define { domain, keep, .. } => match keep {
                Keep::Backup => format!("back up and redefine {domain}"),
                Keep::PreUndo => format!("define {domain} from its backup"),
            },
            DomainStep::SavePreUndo { domain, .. } => {
                format!("keep the definition of {domain} as it is now")
            }
            DomainStep::MarkUndone { backup } => format!("mark {} as undone", backup.display()),
            DomainStep::AttachDevice {
                domain,
                config,
                live,
                ..
            } => format!("attach a NIC to {domain} ({})", where_(*config, *live)),
            DomainStep::DetachDevice {
                domain,
                config,
                live,
                ..
            } => format!("detach a NIC from {domain} ({})", where_(*config, *live)),
            DomainStep::UpdateDevice {
                domain,
                before,
                after,
            } => describe_update(domain, before, after),
            DomainStep::Wait { domain, ms } => {
                format!("hold {domain}'s NIC link down for {ms} ms")
            }
        }
    }

    fn inverse(&self) -> Option<DomainStep> {
        match self.clone() {
            // Putting the old definition back is what `undo` does.
            DomainStep::Define {
                domain,
                before: Some(before),
                after,
                ..
            } => Some(DomainStep::Define {
                domain,
                before: Some(after),
                after: before,
                keep: Keep::PreUndo,
            }),
            DomainStep::Define { before: None, .. }
            | DomainStep::SavePreUndo { .. }
            | DomainStep::MarkUndone { .. } => None,
            DomainStep::AttachDevice {
                domain,
                xml,
                config,
                live,
            } => Some(DomainStep::DetachDevice {
                domain,
                xml,
                config,
                live,
            }),
            DomainStep::DetachDevice {
                domain,
                xml,
                config,
                live,
            } => Some(DomainStep::AttachDevice {
                domain,
                xml,
                config,
                live,
            }),
            DomainStep::UpdateDevice {
                domain,
                before,
                after,
            } => Some(DomainStep::UpdateDevice {
                domain,
                before: after,
                after: before,
            }),
            wait @ DomainStep::Wait { .. } => Some(wait),
        }
    }
}

/// "move web's NIC 52:54:00:3a:10:01 from network default to bridge br0, link down (live)".
fn describe_update(domain: &str, before: &str, after: &str) -> String {
    let (Ok(b), Ok(a)) = (
        domxml::nic_of_element(before),
        domxml::nic_of_element(after),
    ) else {
        return format!("update a NIC of {domain} (live)");
    };
    let mac = a.mac.as_deref().unwrap_or("(no MAC)");
    let mut what = Vec::new();
    if (&b.kind, &b.source) != (&a.kind, &a.source) {
        what.push(format!(
            "from {} to {}",
            domxml::describe_source(&b),
            domxml::describe_source(&a)
        ));
    }
    let (lb, la) = (domxml::link_of(before), domxml::link_of(after));
    if lb != la {
        if let Some(l) = la {
            what.push(format!("link {l}"));
        }
    }
    if what.is_empty() {
        return format!("update {domain}'s NIC {mac} (live)");
    }
    let verb = if what[0].starts_with("from") {
        "move"
    } else {
        "set"
    };
    format!("{verb} {domain}'s NIC {mac} {} (live)", what.join(", "))
}

impl DomainStep {
    /// What `--dry-run` shows of the step: the diff of a definition, the XML of a device.
    pub fn diff(&self) -> Option<String> {
        match self {
            DomainStep::Define {
                domain,
                before,
                after,
                ..
            } => Some(unified_diff(domain, before.as_deref().unwrap_or(""), after)),
            DomainStep::AttachDevice { xml, .. } => Some(xml.clone()),
            DomainStep::UpdateDevice {
                domain,
                before,
                after,
            } => {
                // Elements, not files: end them with a line break so the diff reads cleanly.
                let line = |x: &str| format!("{}\n", x.trim_end());
                Some(unified_diff(
                    &format!("{domain}.live"),
                    &line(before),
                    &line(after),
                ))
            }
            _ => None,
        }
    }
}

/// Unified diff of two definitions, as `diff -u` prints it.
pub fn unified_diff(name: &str, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}.xml"), &format!("b/{name}.xml"))
        .to_string()
}

/// Write the backup the Define step of `steps` will need, without flushing it: a caller
/// with many domains writes them all, flushes once ([`StateDir::sync`]), and hands each to
/// [`DomainApplier::with_backup`]. Returns the backup's path, if one was needed.
pub fn write_backup(state: &StateDir, steps: &[DomainStep]) -> Result<Option<PathBuf>> {
    for s in steps {
        if let DomainStep::Define {
            domain,
            before: Some(before),
            keep: Keep::Backup,
            ..
        } = s
        {
            return state.save_backup(domain, before).map(Some);
        }
    }
    Ok(None)
}

/// Carries [`DomainStep`]s out on one domain through libvirt, keeping backups in `state`.
pub struct DomainApplier<'a> {
    conn: &'a Conn,
    /// None: the domain does not exist (undo of a domain removed since).
    dom: Option<&'a Dom>,
    state: Option<&'a StateDir>,
    /// The backup a Define step made (or was given, already durable).
    backup: Option<PathBuf>,
    durable: bool,
    /// The per-domain lock, taken before the first definition change and held until the
    /// applier is dropped, so the caller can re-plan under it.
    lock: Option<DomainLock>,
    /// The definition found instead of the one a Define step was planned from.
    found: Option<String>,
    /// A change was sent and its reply lost: it may or may not have been made.
    unknown: bool,
}

impl<'a> DomainApplier<'a> {
    /// `state` is needed only by plans that define or keep definitions.
    pub fn new(conn: &'a Conn, dom: Option<&'a Dom>, state: Option<&'a StateDir>) -> Self {
        DomainApplier {
            conn,
            dom,
            state,
            backup: None,
            durable: false,
            lock: None,
            found: None,
            unknown: false,
        }
    }

    /// An applier for a plan whose backup is already written and flushed
    /// ([`write_backup`], then one [`StateDir::sync`] for many domains).
    pub fn with_backup(
        conn: &'a Conn,
        dom: Option<&'a Dom>,
        state: Option<&'a StateDir>,
        backup: Option<PathBuf>,
    ) -> Self {
        DomainApplier {
            durable: backup.is_some(),
            backup,
            ..DomainApplier::new(conn, dom, state)
        }
    }

    /// Remove the backup written for a change that will not be made: a backup of a state
    /// vbridge did not replace would mislead `undo`.
    pub fn discard_backup(&mut self) {
        if let Some(b) = self.backup.take() {
            let _ = std::fs::remove_file(b);
        }
    }

    /// The backup of the definition replaced, once a Define step kept one.
    pub fn backup(&self) -> Option<&PathBuf> {
        self.backup.as_ref()
    }

    /// After a Define step refused because the definition was not the one planned from:
    /// the definition found, read under the domain's lock (still held), so the caller can
    /// tell whether another vbridge already made the change.
    pub fn found_instead(&self) -> Option<&str> {
        self.found.as_deref()
    }

    /// Whether the failing step's change was sent and its reply lost (the connection to
    /// libvirtd broke): the change may or may not be in place, and the backup is kept.
    pub fn outcome_unknown(&self) -> bool {
        self.unknown
    }

    /// Take the domain's lock in the state dir unless held already.
    fn lock(&mut self, domain: &str) -> Result<()> {
        if self.lock.is_none() {
            let key = match self.dom {
                Some(d) => d.uuid()?,
                // A domain removed since (undo): its name is all there is.
                None => format!("name-{domain}"),
            };
            self.lock = Some(self.state()?.lock_domain(&key)?);
        }
        Ok(())
    }

    /// A failed call that changes the domain: a lost reply leaves its outcome unknown.
    fn changing_call_failed(&mut self, e: Error) -> Error {
        if e.kind == ErrorKind::ConnectionLost {
            self.unknown = true;
        }
        e
    }

    fn state(&self) -> Result<&'a StateDir> {
        self.state.ok_or_else(|| {
            Error::invalid("internal error: a definition change without a state dir")
        })
    }

    fn dom(&self) -> Result<&'a Dom> {
        self.dom
            .ok_or_else(|| Error::invalid("internal error: a device change without a domain"))
    }

    fn define(
        &mut self,
        domain: &str,
        before: Option<&str>,
        after: &str,
        keep: Keep,
    ) -> Result<()> {
        match (keep, before) {
            (Keep::Backup, Some(before)) if self.backup.is_none() || !self.durable => {
                if self.backup.is_none() {
                    self.backup = Some(self.state()?.save_backup(domain, before)?);
                }
                if let Err(e) = self.state()?.sync() {
                    self.discard_backup();
                    return Err(e);
                }
                self.durable = true;
            }
            (Keep::PreUndo, Some(before)) => {
                self.state()?.save_pre_undo(domain, before)?;
            }
            _ => {}
        }
        // Read, compare and define under the domain's lock: another vbridge cannot slip a
        // change in between (other tools can; the comparison is best-effort against them).
        if let Err(e) = self.lock(domain) {
            if keep == Keep::Backup {
                self.discard_backup();
            }
            return Err(e);
        }
        if let (Some(dom), Some(before)) = (self.dom, before) {
            let now = dom.persistent_xml();
            if now.as_deref().ok() != Some(before) {
                if keep == Keep::Backup {
                    self.discard_backup();
                }
                self.found = now.as_ref().ok().cloned();
                return Err(now.err().unwrap_or_else(|| {
                    Error::conflict(format!(
                        "the definition of {domain} changed while vbridge was working on it (someone else edited it); nothing was written"
                    ))
                    .with_hint("run the command again to work from the new definition")
                }));
            }
        }
        if let Err(e) = self.conn.define_domain(after) {
            if e.kind == ErrorKind::ConnectionLost {
                // The definition may have reached libvirtd: its backup must stay for undo.
                self.unknown = true;
                let keep_note = match &self.backup {
                    Some(b) => format!("the backup {} is kept", b.display()),
                    None => "nothing was backed up".to_string(),
                };
                return Err(e
                    .context(format!(
                        "the connection to libvirtd was lost while defining {domain}: the new definition may or may not be in place"
                    ))
                    .with_hint(format!(
                        "check with `virsh dumpxml --inactive {domain}`, then run the command again or `vbridge undo {domain}`; {keep_note}"
                    )));
            }
            if keep == Keep::Backup {
                self.discard_backup();
            }
            return Err(e.context(format!("libvirt refused the new definition of {domain}")));
        }
        Ok(())
    }
}

impl Applier<DomainStep> for DomainApplier<'_> {
    fn apply_step(&mut self, step: &DomainStep) -> Result<()> {
        match step {
            DomainStep::Define {
                domain,
                before,
                after,
                keep,
            } => self.define(domain, before.as_deref(), after, *keep),
            DomainStep::SavePreUndo { domain, xml } => {
                self.state()?.save_pre_undo(domain, xml).map(drop)
            }
            DomainStep::MarkUndone { backup } => self.state()?.mark_undone(backup),
            DomainStep::AttachDevice {
                xml, config, live, ..
            } => self
                .dom()?
                .attach_device(xml, *config, *live)
                .map_err(|e| self.changing_call_failed(e)),
            DomainStep::DetachDevice {
                xml, config, live, ..
            } => self
                .dom()?
                .detach_device(xml, *config, *live)
                .map_err(|e| self.changing_call_failed(e)),
            DomainStep::UpdateDevice { after, .. } => self
                .dom()?
                .update_device(after, false, true)
                .map_err(|e| self.changing_call_failed(e)),
            DomainStep::Wait { ms, .. } => {
                std::thread::sleep(std::time::Duration::from_millis(*ms));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    #[test]
    fn inverses_put_back_what_a_step_changed() {
        let define = DomainStep::Define {
            domain: "web".into(),
            before: Some("<a/>".into()),
            after: "<b/>".into(),
            keep: Keep::Backup,
        };
        let attach = DomainStep::AttachDevice {
            domain: "web".into(),
            xml: "<interface/>".into(),
            config: true,
            live: false,
        };
        let plan = Plan::new(vec![define, attach]);
        let undo = plan.undo();
        assert!(matches!(
            &undo[0],
            DomainStep::DetachDevice {
                config: true,
                live: false,
                ..
            }
        ));
        assert!(matches!(
            &undo[1],
            DomainStep::Define { before: Some(b), after, keep: Keep::PreUndo, .. } if b == "<b/>" && after == "<a/>"
        ));
        assert_eq!(
            plan.describe(),
            vec!["back up and redefine web", "attach a NIC to web (config)"]
        );
        assert_eq!(plan.steps[1].diff().as_deref(), Some("<interface/>"));
        assert!(plan.steps[0].diff().unwrap().contains("-<a/>"));
    }

    #[test]
    fn a_live_move_and_its_flap_undo_as_a_move_back_with_a_flap() {
        let nat = "<interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/><model type='virtio'/></interface>";
        let br0 = crate::validate::BridgeName::parse("br0").unwrap();
        let down = domxml::live_move(nat, &br0, Some(domxml::Link::Down)).unwrap();
        let up = domxml::live_link(&down, domxml::Link::Up).unwrap();
        let step = |before: &str, after: &str| DomainStep::UpdateDevice {
            domain: "web".into(),
            before: before.into(),
            after: after.into(),
        };
        let wait = DomainStep::Wait {
            domain: "web".into(),
            ms: 1000,
        };
        let plan = Plan::new(vec![step(nat, &down), wait.clone(), step(&down, &up)]);
        assert_eq!(
            plan.describe(),
            vec![
                "move web's NIC 52:54:00:00:00:01 from network default to bridge br0, link down (live)",
                "hold web's NIC link down for 1000 ms",
                "set web's NIC 52:54:00:00:00:01 link up (live)",
            ]
        );
        assert_eq!(plan.undo(), vec![step(&up, &down), wait, step(&down, nat)]);
        assert!(plan.steps[0].diff().unwrap().contains("+++ b/web.live.xml"));
    }
}
