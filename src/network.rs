//! `net-define` / `net-undefine`: a libvirt network with `<forward mode='bridge'/>` on a host
//! bridge. Observe, plan (pure), apply.

use crate::error::{Error, Result};
use crate::libvirt::{Conn, Net};
use crate::topology::{self, NetworkDef};
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

/// One step of a plan, in the order it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Stop the active network (before a forced redefinition, or before undefining).
    Stop,
    Define,
    Redefine,
    Start,
    Autostart,
    Undefine,
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
pub fn plan_define(want: &NetDefine, existing: Option<&Existing>) -> Result<Vec<Action>> {
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
    Ok(actions)
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
    let net = conn.network(&want.name)?;
    let existing = net.as_ref().map(|n| observe(n, &want.name)).transpose()?;
    let actions = plan_define(want, existing.as_ref())?;
    let mut warnings = Vec::new();
    if conn.shares_host() {
        warnings.extend(topology::bridge_warnings(&want.bridge));
    }
    let redefining = actions.contains(&Action::Redefine);
    if redefining && existing.as_ref().is_some_and(|e| e.active) {
        warnings.push(format!(
            "network {:?} was active: stopping it detaches the taps of its running guests; power-cycle or re-attach them",
            want.name
        ));
    }
    let uuid = existing.as_ref().and_then(|e| e.def.uuid.clone());
    let xml = render(&want.name, &want.bridge, uuid.as_deref())?;

    if !dry_run {
        let mut net = net;
        for action in &actions {
            match action {
                Action::Stop => net
                    .as_ref()
                    .expect("stop planned for an existing network")
                    .stop()?,
                Action::Define | Action::Redefine => net = Some(conn.define_network(&xml)?),
                Action::Start => net
                    .as_ref()
                    .expect("network defined before start")
                    .start()?,
                Action::Autostart => net
                    .as_ref()
                    .expect("network defined before autostart")
                    .set_autostart(true)?,
                Action::Undefine => unreachable!("net-define never undefines"),
            }
        }
        let net = net.expect("network exists after define");
        let now = observe(&net, &want.name)?;
        return Ok(NetReport {
            name: want.name.clone(),
            bridge: want.bridge.clone(),
            changed: !actions.is_empty(),
            active: now.active,
            autostart: now.autostart,
            persistent: now.persistent,
            actions,
            warnings,
            dry_run,
            xml: None,
        });
    }
    let before = existing.unwrap_or(Existing {
        def: NetworkDef::default(),
        active: false,
        autostart: false,
        persistent: false,
    });
    Ok(NetReport {
        name: want.name.clone(),
        bridge: want.bridge.clone(),
        changed: !actions.is_empty(),
        active: before.active && !redefining || actions.contains(&Action::Start),
        autostart: before.autostart || actions.contains(&Action::Autostart),
        persistent: true,
        actions,
        warnings,
        dry_run,
        xml: Some(xml),
    })
}

/// `vbridge net-undefine`: stop and undefine the network; nothing to do is success.
pub fn undefine(conn: &Conn, name: &str, dry_run: bool) -> Result<NetReport> {
    validate::object_name("network", name)?;
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
    if ex.active {
        report.actions.push(Action::Stop);
    }
    if ex.persistent {
        report.actions.push(Action::Undefine);
    }
    report.changed = !report.actions.is_empty();
    if !dry_run {
        if ex.active {
            net.stop()?;
        }
        if ex.persistent {
            net.undefine()?;
        }
    } else {
        report.active = ex.active;
        report.autostart = ex.autostart;
        report.persistent = ex.persistent;
    }
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
            plan_define(&want, None).unwrap(),
            vec![Action::Define, Action::Start, Action::Autostart]
        );
        assert!(
            plan_define(&want, Some(&existing("bridge", "br0", true, true)))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            plan_define(&want, Some(&existing("bridge", "br0", false, true))).unwrap(),
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
            plan_define(&force, Some(&existing("nat", "virbr1", true, true))).unwrap(),
            vec![Action::Stop, Action::Redefine, Action::Start]
        );
        let no = NetDefine {
            start: false,
            autostart: false,
            ..NetDefine::default()
        };
        assert_eq!(plan_define(&no, None).unwrap(), vec![Action::Define]);
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
