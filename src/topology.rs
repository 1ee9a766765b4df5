//! How a VM's NICs reach the host's bridges: what a libvirt network definition says, which
//! host bridge a NIC sits on and whether that bridge is the LAN, and whether a bridge named
//! by a command exists on this host. Shared by the commands (attach, hotplug, net-define,
//! verify, doctor), which never import each other.

use crate::error::{Error, Result};
use crate::host::sysfs;
use crate::libvirt::{Conn, Net};
use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};
use serde::{Deserialize, Serialize};

/// The parts of a network definition vbridge compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkDef {
    pub uuid: Option<String>,
    pub forward_mode: Option<String>,
    pub bridge: Option<String>,
}

/// Read uuid, forward mode and bridge name from network XML.
pub fn parse_network(xml: &str) -> Result<NetworkDef> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut def = NetworkDef::default();
    let mut in_uuid = false;
    loop {
        let ev = reader.read_event().map_err(|e| {
            Error::invalid(format!(
                "network XML is malformed at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name: String = AsRef::<str>::as_ref(&e.name()).to_string();
                let depth = path.len();
                if depth == 1 && path[0] == "network" {
                    let attr = |key: &str| -> Option<String> {
                        e.try_get_attribute(key).ok().flatten().and_then(|a| {
                            a.normalized_value(XmlVersion::Implicit1_0)
                                .ok()
                                .map(|v| v.into_owned())
                        })
                    };
                    match name.as_str() {
                        "forward" => {
                            def.forward_mode = Some(attr("mode").unwrap_or_else(|| "nat".into()))
                        }
                        "bridge" => def.bridge = attr("name"),
                        "uuid" => in_uuid = matches!(ev, Event::Start(_)),
                        _ => {}
                    }
                }
                if matches!(ev, Event::Start(_)) {
                    path.push(name);
                }
            }
            Event::Text(t) if in_uuid => {
                def.uuid = Some(t.xml_content(XmlVersion::Implicit1_0).trim().to_string());
            }
            Event::End(_) => {
                in_uuid = false;
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(def)
}

/// A libvirt network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkObs {
    pub name: String,
    /// `<forward mode>` (`bridge`, `nat`, ...); None for an isolated network.
    pub forward_mode: Option<String>,
    pub bridge: Option<String>,
    pub active: bool,
    pub autostart: bool,
    pub persistent: bool,
}

/// A libvirt network as the checks see it: its definition and its state, read once. `name`
/// is the network's name, which the caller has already asked for.
pub fn read_network(net: &Net, name: String) -> Result<(NetworkDef, NetworkObs)> {
    let (xml, persistent) = net.definition()?;
    let def = parse_network(&xml)?;
    let obs = NetworkObs {
        name,
        forward_mode: def.forward_mode.clone(),
        bridge: def.bridge.clone(),
        active: net.is_active()?,
        autostart: net.autostart()?,
        persistent,
    };
    Ok((def, obs))
}

/// The libvirt network `name` (its forward mode and bridge only: no state asked), None when
/// it is not defined.
pub fn network_by_name(conn: &Conn, name: &str) -> Result<Option<NetworkObs>> {
    let Some(net) = conn.network(name)? else {
        return Ok(None);
    };
    let def = parse_network(&net.xml()?)?;
    Ok(Some(NetworkObs {
        name: name.to_string(),
        forward_mode: def.forward_mode,
        bridge: def.bridge,
        ..NetworkObs::default()
    }))
}

/// The host bridge a NIC is a port of, and whether that bridge is the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBridge {
    pub bridge: String,
    /// The bridge joins the LAN (a `type='bridge'` NIC, or a bridge-mode libvirt network).
    /// False for the bridge of a libvirt NAT, routed, open or isolated network (virbr0):
    /// the VM is behind the host there, not on the LAN.
    pub lan: bool,
}

/// Which host bridge a NIC sits on: the one rule doctor and verify share. `kind` is the
/// `<interface type>`, `source_bridge` its `<source bridge>` (libvirt writes it into the live
/// XML of a running VM for every network NIC), `network` the libvirt network a
/// `type='network'` NIC uses (None when undefined or not looked up). Pure.
///
/// - `type='bridge'`: its source bridge, LAN. (libvirt also shows a NIC of a bridge-mode
///   network this way in the live XML.)
/// - `type='network'` on a bridge-mode network: the live source bridge, else the network's
///   `<bridge name>`, LAN.
/// - `type='network'` on any other network with a bridge: that bridge, not LAN.
/// - Anything else (user, direct/macvtap, an undefined network, no bridge name): None.
pub fn nic_host_bridge(
    kind: &str,
    source_bridge: Option<&str>,
    network: Option<&NetworkObs>,
) -> Option<HostBridge> {
    let named = |b: Option<&str>| b.filter(|b| !b.is_empty()).map(str::to_string);
    match kind {
        "bridge" => Some(HostBridge {
            bridge: named(source_bridge)?,
            lan: true,
        }),
        "network" => {
            let net = network?;
            Some(HostBridge {
                bridge: named(source_bridge).or_else(|| named(net.bridge.as_deref()))?,
                lan: net.forward_mode.as_deref() == Some("bridge"),
            })
        }
        _ => None,
    }
}

/// The libvirt network that owns `bridge`: one that libvirt creates the bridge for (NAT,
/// routed, open or isolated: every forward mode but `bridge`, which names a host bridge
/// made by someone else). Such a bridge is not the LAN, whatever a NIC or network calls it.
/// Pure.
pub fn bridge_owner<'a>(networks: &'a [NetworkObs], bridge: &str) -> Option<&'a NetworkObs> {
    networks.iter().find(|n| {
        n.bridge.as_deref() == Some(bridge) && n.forward_mode.as_deref() != Some("bridge")
    })
}

/// A network's forward mode in words: libvirt writes none for an isolated network.
pub fn forward_mode_name(net: &NetworkObs) -> &str {
    net.forward_mode.as_deref().unwrap_or("isolated")
}

/// Why a LAN bridge must not be a bridge a libvirt network owns, naming the network.
pub fn owned_bridge_warning(owner: &NetworkObs, bridge: &str) -> String {
    format!(
        "bridge {bridge} belongs to libvirt network {} (forward mode {}): libvirt creates and runs it, and VMs on it sit behind the host ({}), not on the LAN; use a host bridge on the LAN NIC instead (`vbridge host-bridge NIC --bridge br0`)",
        owner.name,
        forward_mode_name(owner),
        match forward_mode_name(owner) {
            "nat" => "NAT",
            "route" => "routed",
            "isolated" => "no way out",
            _ => "libvirt's forwarding",
        }
    )
}

/// Every libvirt network's name, forward mode and bridge (no state asked).
pub fn all_networks(conn: &Conn) -> Result<Vec<NetworkObs>> {
    conn.networks()?
        .iter()
        .map(|n| {
            let def = parse_network(&n.xml()?)?;
            Ok(NetworkObs {
                name: n.name()?,
                forward_mode: def.forward_mode,
                bridge: def.bridge,
                ..NetworkObs::default()
            })
        })
        .collect()
}

/// What a command that puts VMs on `bridge` says about who owns it: the warning when a
/// libvirt network does, one line when libvirt's network driver is missing (nothing can be
/// checked then), nothing otherwise.
pub fn bridge_owner_notes(conn: &Conn, bridge: &str) -> Vec<String> {
    match all_networks(conn) {
        Ok(nets) => bridge_owner(&nets, bridge)
            .map(|owner| owned_bridge_warning(owner, bridge))
            .into_iter()
            .collect(),
        Err(e) if crate::libvirt::is_network_driver_unavailable(&e) => vec![format!(
            "{}: whether a libvirt network owns {bridge} was not checked, and NICs of type='network' cannot start; {}",
            e.message,
            e.hint.unwrap_or_default()
        )],
        // Anything else is not this command's business: it fails on its own calls.
        Err(_) => Vec::new(),
    }
}

/// Whether NICs can be put on the libvirt network `name`: one not defined is an error
/// (refused before anything changes), one not started a warning (a running VM cannot join
/// it now). Asked of libvirt, so it holds over a remote URI too.
pub fn network_warnings(conn: &Conn, name: &str) -> Result<Vec<String>> {
    let Some(net) = conn.network(name)? else {
        return Err(Error::not_found(format!(
            "libvirt has no network {name} (on {}): NICs cannot be put on it",
            conn.uri()
        ))
        .with_hint(format!(
            "define it first (`vbridge net-define {} --bridge BR`), or pick one of `virsh net-list --all`",
            crate::shell::quote(name)
        )));
    };
    if net.is_active()? {
        return Ok(Vec::new());
    }
    Ok(vec![format!(
        "network {name} is not active: a running VM cannot join it, and VMs on it fail to start; start it with `virsh net-start {}`",
        crate::shell::quote(name)
    )])
}

/// Host-side check of the bridge a network names: libvirt reports such a network active
/// even when the bridge is missing and fails only when a VM starts.
pub fn bridge_warnings(bridge: &str) -> Vec<String> {
    if !sysfs::exists(bridge) {
        vec![format!(
            "bridge {bridge} does not exist on this host: VMs on this network will fail to start (\"Cannot get interface MTU on '{bridge}'\"); create it with `vbridge host-bridge NIC --bridge {} ...`", crate::shell::quote(bridge)
        )]
    } else if !sysfs::is_bridge(bridge) {
        vec![format!(
            "{bridge} exists but is not a bridge (a NIC?): VMs cannot be attached to it; name the bridge the NIC is a port of, or create one with `vbridge host-bridge {} --bridge br0 ...`", crate::shell::quote(bridge)
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_the_host_bridge_of_a_nic() {
        let net = |mode: Option<&str>, br: Option<&str>| NetworkObs {
            name: "n".into(),
            forward_mode: mode.map(Into::into),
            bridge: br.map(Into::into),
            ..NetworkObs::default()
        };
        let hb = |b: &str, lan| {
            Some(HostBridge {
                bridge: b.into(),
                lan,
            })
        };
        assert_eq!(
            nic_host_bridge("bridge", Some("br0"), None),
            hb("br0", true)
        );
        assert_eq!(nic_host_bridge("bridge", Some(""), None), None);
        let bridged = net(Some("bridge"), Some("br0"));
        // Shut off: only the network names the bridge.
        assert_eq!(
            nic_host_bridge("network", None, Some(&bridged)),
            hb("br0", true)
        );
        let nat = net(Some("nat"), Some("virbr0"));
        assert_eq!(
            nic_host_bridge("network", Some("virbr0"), Some(&nat)),
            hb("virbr0", false)
        );
        let isolated = net(None, Some("virbr1"));
        assert_eq!(
            nic_host_bridge("network", None, Some(&isolated)),
            hb("virbr1", false)
        );
        // macvtap bridge mode: no host bridge at all.
        let macvtap = net(Some("bridge"), None);
        assert_eq!(nic_host_bridge("network", None, Some(&macvtap)), None);
        assert_eq!(nic_host_bridge("network", Some("br0"), None), None);
        assert_eq!(nic_host_bridge("direct", None, None), None);
        assert_eq!(nic_host_bridge("user", None, None), None);
    }

    #[test]
    fn libvirt_owns_the_bridges_of_its_nat_routed_and_isolated_networks() {
        let net = |name: &str, mode: Option<&str>, br: &str| NetworkObs {
            name: name.into(),
            forward_mode: mode.map(Into::into),
            bridge: Some(br.into()),
            ..NetworkObs::default()
        };
        let nets = [
            net("lan", Some("bridge"), "br0"),
            net("default", Some("nat"), "virbr0"),
            net("iso", None, "virbr1"),
            net("r", Some("route"), "virbr2"),
        ];
        assert_eq!(bridge_owner(&nets, "br0"), None);
        assert_eq!(bridge_owner(&nets, "br9"), None);
        assert_eq!(bridge_owner(&nets, "virbr0").unwrap().name, "default");
        let w = owned_bridge_warning(bridge_owner(&nets, "virbr1").unwrap(), "virbr1");
        assert!(
            w.contains("network iso (forward mode isolated)") && w.contains("not on the LAN"),
            "{w}"
        );
        let w = owned_bridge_warning(bridge_owner(&nets, "virbr0").unwrap(), "virbr0");
        assert!(
            w.contains("forward mode nat") && w.contains("behind the host (NAT)"),
            "{w}"
        );
        assert_eq!(bridge_owner(&nets, "virbr2").unwrap().name, "r");
    }
}
