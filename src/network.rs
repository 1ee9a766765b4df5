//! `net-define` / `net-undefine`: a libvirt network with `<forward mode='bridge'/>` on a host
//! bridge. Observe, plan (pure: a [`Plan`] of [`Action`]s), apply through [`plan::apply`]
//! with the libvirt network as applier, report.

use crate::error::{Error, Result};
use crate::libvirt::{Conn, Net};
use crate::plan::{self, Applier, Plan, Step};
use crate::topology::{self, NetworkDef, NetworkObs};
use crate::{template, validate};
use serde::Serialize;

/// What `net-define` should make.
#[derive(Debug, Clone)]
pub struct NetDefine {
    pub name: String,
    pub bridge: String,
    pub start: bool,
    pub autostart: bool,
    pub force: bool,
}

impl Default for NetDefine {
    fn default() -> Self {
        NetDefine {
            name: "br0-network".into(),
            bridge: "br0".into(),
            start: true,
            autostart: true,
            force: false,
        }
    }
}

/// One step of a `net-define` / `net-undefine` plan, on the network the command names. The
/// report lists them as kebab-case words (`"define"`, `"start"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Stop the active network (before a forced redefinition, or before undefining).
    Stop,
    /// Define the rendered XML (a new network, or a transient one made persistent).
    Define,
    /// Define the rendered XML over a differing definition (`--force`).
    Redefine,
    Start,
    Autostart,
    Undefine,
}

impl Step for Action {
    fn describe(&self) -> String {
        match self {
            Action::Stop => "stop the network",
            Action::Define => "define the network",
            Action::Redefine => "redefine the network",
            Action::Start => "start the network",
            Action::Autostart => "mark the network autostart",
            Action::Undefine => "undefine the network",
        }
        .to_string()
    }

    /// Redefine and Undefine have none: the definition they replace is not kept. Nothing
    /// clears autostart, as no command needs it.
    fn inverse(&self) -> Option<Action> {
        match self {
            Action::Stop => Some(Action::Start),
            Action::Start => Some(Action::Stop),
            Action::Define => Some(Action::Undefine),
            Action::Redefine | Action::Autostart | Action::Undefine => None,
        }
    }
}

/// Carries the steps out on libvirt. Holds the network once it exists (found, or defined by
/// a step), so later steps act on that one.
struct NetApplier<'a> {
    conn: &'a Conn,
    name: &'a str,
    /// What Define and Redefine define.
    xml: Option<&'a str>,
    net: Option<Net>,
}

impl Applier<Action> for NetApplier<'_> {
    fn apply_step(&mut self, step: &Action) -> Result<()> {
        if let Action::Define | Action::Redefine = step {
            let xml = self.xml.ok_or_else(|| {
                Error::invalid(format!("no XML to define network {:?} with", self.name))
            })?;
            self.net = Some(self.conn.define_network(xml)?);
            return Ok(());
        }
        let net = self
            .net
            .as_ref()
            .ok_or_else(|| Error::not_found(format!("no network named {:?}", self.name)))?;
        match step {
            Action::Stop => net.stop(),
            Action::Start => net.start(),
            Action::Autostart => net.set_autostart(true),
            Action::Undefine => net.undefine(),
            Action::Define | Action::Redefine => Ok(()),
        }
    }
}

/// The outcome of `net-define` / `net-undefine`.
#[derive(Debug, Clone, Serialize)]
pub struct NetReport {
    pub name: String,
    pub bridge: String,
    pub changed: bool,
    pub active: bool,
    pub autostart: bool,
    pub persistent: bool,
    pub actions: Vec<Action>,
    pub warnings: Vec<String>,
    pub dry_run: bool,
    /// The network XML that is (or would be) defined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xml: Option<String>,
}

/// What was observed of an existing network of that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub def: NetworkDef,
    pub active: bool,
    pub autostart: bool,
    pub persistent: bool,
}

/// Render the network XML from the template, with the existing UUID kept on redefinition
/// (libvirt refuses a redefinition under the same name with another UUID).
pub fn render(name: &str, bridge: &str, uuid: Option<&str>) -> Result<String> {
    let xml = template::render(
        template::NETWORK_BRIDGE,
        &[("name", name), ("bridge", bridge)],
    )?;
    match uuid {
        Some(u) => insert_uuid(&xml, u),
        None => Ok(xml),
    }
}

/// Put `<uuid>` on its own line after `</name>`, indented and ended like the `<name>` line.
fn insert_uuid(xml: &str, uuid: &str) -> Result<String> {
    let end = xml
        .find("</name>")
        .ok_or_else(|| Error::invalid("the network template has no <name> element"))?
        + "</name>".len();
    let line_start = xml[..end].rfind('\n').map_or(0, |i| i + 1);
    let indent: String = xml[line_start..]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect();
    let eol = if xml.contains("\r\n") { "\r\n" } else { "\n" };
    Ok(format!(
        "{}{eol}{indent}<uuid>{}</uuid>{}",
        &xml[..end],
        crate::xml::escape(uuid),
        &xml[end..]
    ))
}

/// Decide what `net-define` does, from what exists. Pure.
pub fn plan_define(want: &NetDefine, existing: Option<&Existing>) -> Result<Plan<Action>> {
    let mut actions = Vec::new();
    let (active, autostart) = match existing {
        None => {
            actions.push(Action::Define);
            (false, false)
        }
        Some(ex) => {
            let same = ex.def.forward_mode.as_deref() == Some("bridge")
                && ex.def.bridge.as_deref() == Some(want.bridge.as_str());
            if !same {
                if !want.force {
                    return Err(Error::conflict(format!(
                        "network {:?} exists and differs: it has forward mode {} and bridge {}, wanted forward mode 'bridge' and bridge {:?}",
                        want.name,
                        quoted(ex.def.forward_mode.as_deref()),
                        quoted(ex.def.bridge.as_deref()),
                        want.bridge
                    ))
                    .with_hint("pick another --name, or pass --force to redefine it"));
                }
                if ex.active {
                    actions.push(Action::Stop);
                }
                actions.push(Action::Redefine);
                (false, ex.autostart)
            } else {
                if !ex.persistent {
                    // A transient network of that shape: make it persistent.
                    actions.push(Action::Define);
                }
                (ex.active, ex.autostart)
            }
        }
    };
    if want.start && !active {
        actions.push(Action::Start);
    }
    if want.autostart && !autostart {
        actions.push(Action::Autostart);
    }
    Ok(Plan::new(actions))
}

/// Whether `want.bridge` may carry a bridge-mode network: not when another libvirt network
/// owns it (virbr0 of the NAT network `default`), as that would call VMs behind NAT bridged.
/// Refused, or with `--force` a warning. Pure.
pub fn check_bridge_owner(want: &NetDefine, networks: &[NetworkObs]) -> Result<Vec<String>> {
    let others: Vec<NetworkObs> = networks
        .iter()
        .filter(|n| n.name != want.name)
        .cloned()
        .collect();
    let Some(owner) = topology::bridge_owner(&others, &want.bridge) else {
        return Ok(Vec::new());
    };
    let why = topology::owned_bridge_warning(owner, &want.bridge);
    if want.force {
        return Ok(vec![format!("--force: {why}")]);
    }
    Err(Error::conflict(format!(
        "refusing a bridge-mode network on {}: {why}",
        want.bridge
    ))
    .with_hint("name a bridge on the LAN NIC with --bridge, or pass --force to define it anyway"))
}

/// Decide what `net-undefine` does with the network it found. Pure.
pub fn plan_undefine(existing: &Existing) -> Plan<Action> {
    let mut actions = Vec::new();
    if existing.active {
        actions.push(Action::Stop);
    }
    if existing.persistent {
        actions.push(Action::Undefine);
    }
    Plan::new(actions)
}

fn quoted(v: Option<&str>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "(none)".into(),
    }
}

fn observe(net: &Net, name: &str) -> Result<Existing> {
    let (def, obs) = topology::read_network(net, name.to_string())?;
    Ok(Existing {
        def,
        active: obs.active,
        autostart: obs.autostart,
        persistent: obs.persistent,
    })
}

/// `vbridge net-define`: define, start and autostart the network, idempotently.
pub fn define(conn: &Conn, want: &NetDefine, dry_run: bool) -> Result<NetReport> {
    validate::object_name("network", &want.name)?;
    validate::interface_name(&want.bridge)?;
    // Observe.
    let net = conn.network(&want.name)?;
    let existing = net.as_ref().map(|n| observe(n, &want.name)).transpose()?;
    let networks = topology::all_networks(conn)?;
    // Plan.
    let mut warnings = check_bridge_owner(want, &networks)?;
    let plan = plan_define(want, existing.as_ref())?;
    if conn.shares_host() {
        warnings.extend(topology::bridge_warnings(&want.bridge));
    }
    let redefining = plan.steps.contains(&Action::Redefine);
    if redefining && existing.as_ref().is_some_and(|e| e.active) {
        warnings.push(format!(
            "network {:?} was active: stopping it detaches the taps of its running guests; power-cycle or re-attach them",
            want.name
        ));
    }
    let uuid = existing.as_ref().and_then(|e| e.def.uuid.clone());
    let xml = render(&want.name, &want.bridge, uuid.as_deref())?;

    if dry_run {
        let before = existing.unwrap_or(Existing {
            def: NetworkDef::default(),
            active: false,
            autostart: false,
            persistent: false,
        });
        return Ok(NetReport {
            name: want.name.clone(),
            bridge: want.bridge.clone(),
            changed: !plan.is_empty(),
            active: before.active && !redefining || plan.steps.contains(&Action::Start),
            autostart: before.autostart || plan.steps.contains(&Action::Autostart),
            persistent: true,
            actions: plan.steps,
            warnings,
            dry_run,
            xml: Some(xml),
        });
    }
    // Apply.
    let mut by = NetApplier {
        conn,
        name: &want.name,
        xml: Some(&xml),
        net,
    };
    plan::apply(&plan.steps, &mut by).map_err(|stopped| stopped.error)?;
    // Report what is there now.
    let net = by
        .net
        .ok_or_else(|| Error::not_found(format!("no network named {:?}", want.name)))?;
    let now = observe(&net, &want.name)?;
    Ok(NetReport {
        name: want.name.clone(),
        bridge: want.bridge.clone(),
        changed: !plan.is_empty(),
        active: now.active,
        autostart: now.autostart,
        persistent: now.persistent,
        actions: plan.steps,
        warnings,
        dry_run,
        xml: None,
    })
}

/// `vbridge net-undefine`: stop and undefine the network; nothing to do is success.
pub fn undefine(conn: &Conn, name: &str, dry_run: bool) -> Result<NetReport> {
    validate::object_name("network", name)?;
    // Observe.
    let net = conn.network(name)?;
    let mut report = NetReport {
        name: name.to_string(),
        bridge: String::new(),
        changed: false,
        active: false,
        autostart: false,
        persistent: false,
        actions: Vec::new(),
        warnings: Vec::new(),
        dry_run,
        xml: None,
    };
    let Some(net) = net else {
        return Ok(report);
    };
    let ex = observe(&net, name)?;
    report.bridge = ex.def.bridge.clone().unwrap_or_default();
    // Plan.
    let plan = plan_undefine(&ex);
    report.changed = !plan.is_empty();
    if dry_run {
        report.active = ex.active;
        report.autostart = ex.autostart;
        report.persistent = ex.persistent;
    } else {
        // Apply.
        let mut by = NetApplier {
            conn,
            name,
            xml: None,
            net: Some(net),
        };
        plan::apply(&plan.steps, &mut by).map_err(|stopped| stopped.error)?;
    }
    report.actions = plan.steps;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(mode: &str, bridge: &str, active: bool, autostart: bool) -> Existing {
        Existing {
            def: NetworkDef {
                uuid: Some("u".into()),
                forward_mode: Some(mode.into()),
                bridge: Some(bridge.into()),
            },
            active,
            autostart,
            persistent: true,
        }
    }

    #[test]
    fn plans() {
        let want = NetDefine::default();
        assert_eq!(
            plan_define(&want, None).unwrap().steps,
            vec![Action::Define, Action::Start, Action::Autostart]
        );
        assert!(
            plan_define(&want, Some(&existing("bridge", "br0", true, true)))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            plan_define(&want, Some(&existing("bridge", "br0", false, true)))
                .unwrap()
                .steps,
            vec![Action::Start]
        );
        let err = plan_define(&want, Some(&existing("nat", "virbr1", true, true))).unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::Conflict);
        assert!(
            err.message.contains("\"nat\"") && err.message.contains("virbr1"),
            "{}",
            err.message
        );
        let force = NetDefine {
            force: true,
            ..NetDefine::default()
        };
        assert_eq!(
            plan_define(&force, Some(&existing("nat", "virbr1", true, true)))
                .unwrap()
                .steps,
            vec![Action::Stop, Action::Redefine, Action::Start]
        );
        let no = NetDefine {
            start: false,
            autostart: false,
            ..NetDefine::default()
        };
        assert_eq!(plan_define(&no, None).unwrap().steps, vec![Action::Define]);
    }

    #[test]
    fn a_bridge_libvirt_owns_is_refused_or_warned_about_with_force() {
        let nat = NetworkObs {
            name: "default".into(),
            forward_mode: Some("nat".into()),
            bridge: Some("virbr0".into()),
            ..NetworkObs::default()
        };
        let on_virbr0 = NetDefine {
            name: "lan".into(),
            bridge: "virbr0".into(),
            ..NetDefine::default()
        };
        let err = check_bridge_owner(&on_virbr0, std::slice::from_ref(&nat)).unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::Conflict);
        assert!(
            err.message.contains("network default (forward mode nat)"),
            "{}",
            err.message
        );
        let forced = NetDefine {
            force: true,
            ..on_virbr0.clone()
        };
        let w = check_bridge_owner(&forced, std::slice::from_ref(&nat)).unwrap();
        assert!(w[0].starts_with("--force: bridge virbr0 belongs to libvirt network default"));
        // Another bridge, or redefining that very network (--force): no owner in the way.
        assert!(
            check_bridge_owner(&NetDefine::default(), std::slice::from_ref(&nat))
                .unwrap()
                .is_empty()
        );
        let itself = NetDefine {
            name: "default".into(),
            ..on_virbr0
        };
        assert!(check_bridge_owner(&itself, &[nat]).unwrap().is_empty());
    }

    #[test]
    fn undefine_plan_and_undo_of_a_define() {
        let ex = existing("bridge", "br0", true, true);
        assert_eq!(
            plan_undefine(&ex).steps,
            vec![Action::Stop, Action::Undefine]
        );
        let transient = Existing {
            persistent: false,
            ..existing("bridge", "br0", true, false)
        };
        assert_eq!(plan_undefine(&transient).steps, vec![Action::Stop]);
        // A fresh network can be taken back; a redefinition cannot (the old XML is gone).
        let fresh = plan_define(&NetDefine::default(), None).unwrap();
        assert_eq!(fresh.undo(), vec![Action::Stop, Action::Undefine]);
        assert_eq!(
            fresh.describe(),
            [
                "define the network",
                "start the network",
                "mark the network autostart"
            ]
        );
        assert_eq!(Action::Redefine.inverse(), None);
    }

    #[test]
    fn parses_network_xml() {
        let d = topology::parse_network(
            "<network>\n<name>n</name><uuid> 0b1c </uuid><forward mode=\"bridge\"/><bridge name='br7'/></network>",
        )
        .unwrap();
        assert_eq!(d.forward_mode.as_deref(), Some("bridge"));
        assert_eq!(d.bridge.as_deref(), Some("br7"));
        assert_eq!(d.uuid.as_deref(), Some("0b1c"));
        let nat = topology::parse_network(
            "<network><name>d</name><forward/><bridge name='virbr0'/></network>",
        )
        .unwrap();
        assert_eq!(nat.forward_mode.as_deref(), Some("nat"));
        let isolated = topology::parse_network("<network><name>i</name></network>").unwrap();
        assert_eq!(isolated.forward_mode, None);
        assert!(topology::parse_network("<network><name>x</nam></network>").is_err());
    }

    #[test]
    fn uuid_goes_after_name_in_any_layout() {
        let crlf = insert_uuid("<network>\r\n\t<name>n</name>\r\n</network>", "u").unwrap();
        assert_eq!(
            crlf,
            "<network>\r\n\t<name>n</name>\r\n\t<uuid>u</uuid>\r\n</network>"
        );
        let one = insert_uuid("<network><name>n</name></network>", "u").unwrap();
        assert_eq!(
            topology::parse_network(&one).unwrap().uuid.as_deref(),
            Some("u")
        );
    }

    #[test]
    fn render_keeps_uuid() {
        let xml = render("n", "br0", Some("1234")).unwrap();
        assert!(xml.contains("<uuid>1234</uuid>"), "{xml}");
        assert_eq!(
            topology::parse_network(&xml).unwrap().uuid.as_deref(),
            Some("1234")
        );
    }
}
