//! `vbridge attach`, `vbridge detach`, `vbridge undo`.

use super::output::Text;
use super::{report, CmdResult, Globals};
use clap::{ArgGroup, Args};
use serde::Serialize;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;
use vbridge::attach::live::{self, LiveOptions};
use vbridge::attach::{self, AttachRequest};
use vbridge::backup::StateDir;
use vbridge::domxml::{Nic, NicOptions, Selection, Target};
use vbridge::error::Error;
use vbridge::hotplug;
use vbridge::libvirt::Conn;
use vbridge::progress::Sink;
use vbridge::report::{AttachReport, DomainResult, NicResult, Outcome};
use vbridge::validate::{BridgeName, DirectMode, Mac, Mtu, Queues};
use vbridge::verify;

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
    /// Let the rewrite make a transient VM persistent
    #[arg(long, conflicts_with_all = ["hotplug", "xml"])]
    pub persist: bool,
    /// Also move the running VM's NIC now (no power-off), flap its link and verify it
    #[arg(long, conflicts_with_all = ["hotplug", "xml"])]
    pub live: bool,
    /// With --live: how long the link stays down after the move, in ms (0: no flap)
    #[arg(long, value_name = "MS", requires = "live", default_value_t = 1000)]
    pub flap_ms: u64,
    /// With --live: seconds a moved NIC has to answer on the LAN before it is moved back
    #[arg(long, value_name = "S", requires = "live", value_parser = super::verify::seconds)]
    pub verify_within: Option<f64>,
    /// With --live: keep the move without checking that a LAN address answers
    #[arg(long, requires = "live", conflicts_with = "verify_within")]
    pub no_verify: bool,
    /// Set the NIC's MTU (68-65535), written as <mtu size='N'/>
    #[arg(long, value_name = "N")]
    pub mtu: Option<String>,
    /// Give the virtio NIC N queue pairs (at most the VM's vCPUs): <driver queues='N'/>
    #[arg(long, value_name = "N")]
    pub queues: Option<String>,
    /// Put the NIC on this host NIC as macvtap (type='direct') instead of on a bridge
    #[arg(long, value_name = "NIC", conflicts_with_all = ["bridge", "hotplug"])]
    pub direct: Option<String>,
    /// With --direct: bridge, vepa, private or passthrough
    #[arg(long, requires = "direct", default_value = "bridge")]
    pub mode: String,
    /// Put the NIC on this libvirt network (type='network') instead of on a bridge
    #[arg(long, value_name = "NAME", conflicts_with_all = ["bridge", "direct"])]
    pub network: Option<String>,
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

    /// `--network NAME`, checked where it enters (whether libvirt has it is asked later).
    fn network_target(&self) -> Result<Option<Target>, Error> {
        self.network
            .as_ref()
            .map(|n| {
                vbridge::validate::object_name("network", n)?;
                Ok(Target::Network(n.clone()))
            })
            .transpose()
    }

    /// `--mtu` and `--queues`, checked where they enter.
    fn nic_options(&self) -> Result<NicOptions, Error> {
        Ok(NicOptions {
            mtu: self.mtu.as_deref().map(Mtu::parse).transpose()?,
            queues: self.queues.as_deref().map(Queues::parse).transpose()?,
        })
    }

    /// The whole request, every value checked before anything is looked up or changed.
    fn request(&self, dry_run: bool, progress: Sink) -> Result<AttachRequest, Error> {
        let (bridge, selection) = self.checked()?;
        let target = match (&self.direct, &self.network) {
            (Some(dev), _) => Target::Direct {
                dev: BridgeName::parse(dev)?,
                mode: DirectMode::parse(&self.mode)?,
            },
            (None, Some(_)) => self.network_target()?.expect("--network given"),
            (None, None) => Target::Bridge(bridge),
        };
        let live = self.live.then(|| LiveOptions {
            flap: Duration::from_millis(self.flap_ms),
            verify_within: if self.no_verify {
                None
            } else {
                Some(
                    self.verify_within
                        .map_or(live::DEFAULT_VERIFY_WITHIN, Duration::from_secs_f64),
                )
            },
        });
        Ok(AttachRequest {
            target,
            selection,
            nic: self.nic_options()?,
            live,
            dry_run,
            persist: self.persist,
            progress,
        })
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
    if a.hotplug {
        let conn = Conn::open(g.connect.as_deref())?;
        return Ok(report(
            hotplug_many(&conn, a, g.dry_run, &g.progress, &StateDir::from_env()),
            render,
            AttachReport::ok,
        ));
    }
    // Every value is checked before libvirt is asked anything.
    let req = a.request(g.dry_run, g.progress.clone())?;
    let conn = Conn::open(g.connect.as_deref())?;
    // `verify` is a command of its own: the binary hands its check to attach.
    let progress = g.progress.clone();
    let confirm = |dom: &str, mac: &Mac, within: Duration| {
        verify::lan_answer(&conn, dom, mac, within, &progress)
    };
    let r = attach::attach_request(
        &conn,
        &a.domains,
        &req,
        &StateDir::from_env(),
        Some(&confirm),
    )?;
    Ok(report(r, render, AttachReport::ok))
}

/// A bad bridge, network name, MAC, MTU or queue count fails each named VM, as it always has with
/// `--hotplug`.
fn hotplug_many(
    conn: &Conn,
    a: &AttachArgs,
    dry_run: bool,
    progress: &Sink,
    state: &StateDir,
) -> AttachReport {
    let checked = BridgeName::parse(&a.bridge).and_then(|b| {
        let target = a.network_target()?.unwrap_or(Target::Bridge(b));
        let mac = a.mac.as_deref().map(Mac::parse).transpose()?;
        Ok((target, mac, a.nic_options()?))
    });
    match checked {
        Ok((target, mac, nic)) => {
            let new = hotplug::NewNic {
                target: &target,
                mac: mac.as_ref(),
                options: &nic,
            };
            hotplug::hotplug_many_with(conn, &a.domains, &new, dry_run, progress, state)
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
    let req = a.request(false, Sink::default())?;
    let rw = attach::rewrite_document_request(&xml, &req)?;
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
            render: |r, _, t| t.out.push_str(&r.xml),
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
    let mut extra = String::new();
    if let Some(m) = n.mtu {
        extra.push_str(&format!(", MTU {m}"));
    }
    if let Some(q) = n.queues {
        extra.push_str(&format!(", {q} queues"));
    }
    format!(
        "{} ({src}, model {}{extra})",
        n.kind,
        n.model.as_deref().unwrap_or("default")
    )
}

/// Each VM's outcome: what changed on stdout, a VM that failed on stderr (the others go on).
fn render(r: &AttachReport, g: &Globals, t: &mut Text) {
    let would = if r.dry_run { "would change" } else { "changed" };
    for d in &r.domains {
        if let Some(e) = &d.error {
            if d.outcome == Outcome::Unknown {
                // The call's reply was lost: it may have happened. The backup is kept.
                t.err
                    .push_str(&format!("{}: unknown: check: {}\n", d.domain, e.message));
                if let Some(h) = &e.hint {
                    t.err.push_str(&format!("  hint: {h}\n"));
                }
                if let Some(b) = &d.backup {
                    t.err.push_str(&format!("  backup: {}\n", b.display()));
                }
            } else {
                t.error(&d.domain, e);
            }
            continue;
        }
        let out = &mut t.out;
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
        if let Some(l) = &d.live {
            let moved = if r.dry_run { "would move" } else { "moved" };
            for m in &l.moved {
                let flap = if l.flap_ms > 0 {
                    format!(", link held down {} ms", l.flap_ms)
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "  live: NIC {} {moved} from {} to {}{flap}\n",
                    m.mac, m.from, m.to
                ));
            }
            for v in &l.verified {
                out.push_str(&format!(
                    "  live: NIC {} answers on the LAN at {}\n",
                    v.mac, v.ip
                ));
            }
            if let Some(t) = l.seconds {
                out.push_str(&format!("  live: done in {t:.1} s\n"));
            }
        }
        if let Some(b) = &d.backup {
            out.push_str(&format!("  backup: {}\n", b.display()));
        }
        for note in &d.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        if let Some(diff) = &d.diff {
            if r.dry_run || g.verbose {
                t.diff(diff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vbridge::error::Error;

    /// Several VMs in one call: the ones that worked on stdout, the one that failed on
    /// stderr with its hint, in the words the one-stream output had.
    #[test]
    fn a_failed_vm_goes_to_stderr_the_others_to_stdout() {
        let r = AttachReport {
            dry_run: false,
            domains: vec![
                DomainResult::new("web", true, Vec::new()),
                DomainResult::failed(
                    "nosuchvm",
                    Error::not_found("no domain named \"nosuchvm\"").with_hint("list them"),
                ),
                DomainResult::new("db", false, Vec::new()),
            ],
        };
        let mut t = Text::plain();
        render(&r, &Globals::default(), &mut t);
        assert_eq!(t.out, "web: changed\ndb: unchanged\n");
        assert_eq!(
            t.err,
            "nosuchvm: error: no domain named \"nosuchvm\"\n  hint: list them\n"
        );
    }
}
