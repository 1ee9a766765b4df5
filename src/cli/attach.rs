//! `vbridge attach`, `vbridge detach`, `vbridge undo`.

use super::{report, CmdResult, Globals};
use clap::{ArgGroup, Args};
use serde::Serialize;
use std::io::Read;
use std::path::PathBuf;
use vbridge::attach::{self, AttachOptions};
use vbridge::backup::StateDir;
use vbridge::domxml::{Nic, Selection};
use vbridge::error::Error;
use vbridge::hotplug;
use vbridge::libvirt::Conn;
use vbridge::report::{AttachReport, DomainResult, NicResult, Outcome};
use vbridge::validate::{BridgeName, Mac};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("select").args(["mac", "index", "all"])))]
pub struct AttachArgs {
    /// The VMs (names or UUIDs)
    #[arg(required_unless_present = "xml", conflicts_with = "xml")]
    pub domains: Vec<String>,
    /// Host bridge
    #[arg(long, default_value = "br0")]
    pub bridge: String,
    /// Select the NIC by MAC (with --hotplug: the new NIC's MAC)
    #[arg(long)]
    pub mac: Option<String>,
    /// Select the NIC by position, 1-based
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub index: Option<u32>,
    /// Rewrite every NIC
    #[arg(long)]
    pub all: bool,
    /// Add a new virtio NIC on the bridge to the running VM and its config
    #[arg(long, conflicts_with_all = ["index", "all", "xml"])]
    pub hotplug: bool,
    /// Rewrite this domain XML document (or - for stdin) and print it; no libvirt needed
    #[arg(long, value_name = "FILE")]
    pub xml: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The VM
    pub domain: String,
    /// MAC of the NIC to remove
    #[arg(long)]
    pub mac: String,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The VM
    pub domain: String,
}

impl AttachArgs {
    /// The bridge and the NIC selection, checked here, where they enter: bridge first.
    fn checked(&self) -> Result<(BridgeName, Selection), Error> {
        let bridge = BridgeName::parse(&self.bridge)?;
        let selection = if let Some(m) = &self.mac {
            Selection::Mac(Mac::parse(m)?)
        } else if let Some(i) = self.index {
            Selection::Index(i as usize)
        } else if self.all {
            Selection::All
        } else {
            Selection::Auto
        };
        Ok((bridge, selection))
    }
}

/// `attach --xml`: the rewritten document and what changed in it.
#[derive(Serialize)]
struct XmlReport {
    changed: bool,
    interfaces: Vec<NicResult>,
    /// What the rewrite dropped and why (text mode prints them to stderr).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
    xml: String,
}

pub fn attach(a: &AttachArgs, g: &Globals) -> CmdResult {
    if let Some(path) = &a.xml {
        return attach_xml(a, path);
    }
    let conn = Conn::open(g.connect.as_deref())?;
    let r = if a.hotplug {
        hotplug_many(&conn, a, g.dry_run, &StateDir::from_env())
    } else {
        let (bridge, selection) = a.checked()?;
        let opts = AttachOptions {
            bridge,
            selection,
            dry_run: g.dry_run,
        };
        attach::attach(&conn, &a.domains, &opts, &StateDir::from_env())?
    };
    Ok(report(r, render, AttachReport::ok))
}

/// A bad bridge or MAC fails each named VM, as it always has with `--hotplug`.
fn hotplug_many(conn: &Conn, a: &AttachArgs, dry_run: bool, state: &StateDir) -> AttachReport {
    let checked = BridgeName::parse(&a.bridge).and_then(|b| {
        let mac = a.mac.as_deref().map(Mac::parse).transpose()?;
        Ok((b, mac))
    });
    match checked {
        Ok((bridge, mac)) => {
            hotplug::hotplug_many(conn, &a.domains, &bridge, mac.as_ref(), dry_run, state)
        }
        Err(e) => AttachReport {
            dry_run,
            domains: a
                .domains
                .iter()
                .map(|d| DomainResult::failed(d, e.clone()))
                .collect(),
        },
    }
}

fn attach_xml(a: &AttachArgs, path: &std::path::Path) -> CmdResult {
    let mut xml = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut xml)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut xml))
    };
    read.map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let (bridge, selection) = a.checked()?;
    let rw = attach::rewrite_document(&xml, &bridge, &selection)?;
    let notes = rw.notes();
    let r = XmlReport {
        changed: rw.changed(),
        interfaces: rw.changes.into_iter().map(NicResult::from).collect(),
        notes: notes.clone(),
        xml: rw.xml,
    };
    // Text mode prints the document itself, byte for byte, for pipes; notes go to stderr.
    Ok(Box::new(super::Data(
        super::Rendered {
            value: r,
            render: |r, _| r.xml.clone(),
            success: |_| true,
        },
        notes,
    )))
}

pub fn detach(a: &DetachArgs, g: &Globals) -> CmdResult {
    let conn = Conn::open(g.connect.as_deref())?;
    let state = StateDir::from_env();
    let d = Mac::parse(&a.mac)
        .and_then(|mac| hotplug::detach(&conn, &a.domain, &mac, g.dry_run, &state));
    Ok(single(&a.domain, d, g))
}

pub fn undo(a: &UndoArgs, g: &Globals) -> CmdResult {
    let conn = Conn::open(g.connect.as_deref())?;
    let d = attach::undo(&conn, &a.domain, &StateDir::from_env(), g.dry_run);
    Ok(single(&a.domain, d, g))
}

/// A one-domain command reports in the same shape as a many-domain `attach`.
fn single(domain: &str, r: Result<DomainResult, Error>, g: &Globals) -> Box<dyn super::Report> {
    let d = r.unwrap_or_else(|e| DomainResult::failed(domain, e));
    report(
        AttachReport {
            dry_run: g.dry_run,
            domains: vec![d],
        },
        render,
        AttachReport::ok,
    )
}

fn describe(n: &Nic) -> String {
    let src = if let Some(b) = n.source.get("bridge") {
        format!("bridge {b}")
    } else if let Some(net) = n.source.get("network") {
        format!("network {net}")
    } else if let Some(dev) = n.source.get("dev") {
        format!("dev {dev}")
    } else {
        "no source".to_string()
    };
    format!(
        "{} ({src}, model {})",
        n.kind,
        n.model.as_deref().unwrap_or("default")
    )
}

fn render(r: &AttachReport, g: &Globals) -> String {
    let mut out = String::new();
    let would = if r.dry_run { "would change" } else { "changed" };
    for d in &r.domains {
        if let Some(e) = &d.error {
            let what = if d.outcome == Outcome::Unknown {
                "unknown: check"
            } else {
                "error"
            };
            out.push_str(&format!("{}: {what}: {}\n", d.domain, e.message));
            if let Some(h) = &e.hint {
                out.push_str(&format!("  hint: {h}\n"));
            }
            if let Some(b) = &d.backup {
                out.push_str(&format!("  backup: {}\n", b.display()));
            }
            continue;
        }
        out.push_str(&format!(
            "{}: {}\n",
            d.domain,
            if d.changed { would } else { "unchanged" }
        ));
        for n in &d.interfaces {
            let mac = n.mac.as_deref().unwrap_or("(no MAC)");
            let line = match (&n.before, &n.after, n.changed) {
                (Some(b), _, false) => format!("NIC {mac}: already {}", describe(b)),
                (Some(b), Some(a), true) => {
                    format!("NIC {mac}: {} -> {}", describe(b), describe(a))
                }
                (None, Some(a), true) => format!("NIC {mac}: added, {}", describe(a)),
                (Some(b), None, true) => format!("NIC {mac}: removed, was {}", describe(b)),
                _ => format!("NIC {mac}: unchanged"),
            };
            out.push_str(&format!("  {line}\n"));
        }
        if let Some(b) = &d.backup {
            out.push_str(&format!("  backup: {}\n", b.display()));
        }
        for note in &d.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        if let Some(diff) = &d.diff {
            if r.dry_run || g.verbose {
                out.push_str(diff);
                if !diff.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
    out
}
