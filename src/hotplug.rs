//! `vbridge attach --hotplug` and `vbridge detach`: add or remove a virtio NIC on the bridge,
//! in the running VM and its persistent config (`virsh attach-interface --config --live`).

use crate::attach::{DomainResult, NicResult};
use crate::domxml::{self, DomainFacts, Nic};
use crate::error::{Error, Result};
use crate::libvirt::Conn;
use crate::{template, validate};
use std::collections::BTreeMap;

/// The MAC vbridge gives a hot-plugged NIC when none is given: stable for a (domain UUID,
/// bridge) pair, so the live and persistent NIC agree and a second run finds it. FNV-1a is
/// written out here because std's hasher is not guaranteed stable across releases.
pub fn derive_mac(uuid: &str, bridge: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uuid
        .to_ascii_lowercase()
        .bytes()
        .chain(std::iter::once(0))
        .chain(bridge.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    validate::format_mac(&[0x52, 0x54, 0x00, b[5], b[6], b[7]])
}

/// Why a running VM cannot take a hot-plugged PCI NIC, if it cannot. Pure.
pub fn hotplug_blocker(f: &DomainFacts) -> Option<Error> {
    let is_x86_qemu = matches!(f.hypervisor.as_deref(), Some("kvm" | "qemu"))
        && f.arch
            .as_deref()
            .is_none_or(|a| a == "x86_64" || a == "i686");
    if !is_x86_qemu {
        return None;
    }
    let name = f.name.as_deref().unwrap_or("the VM");
    if f.is_q35() {
        if f.free_pcie_root_ports == 0 {
            return Some(
                Error::unsupported(format!(
                    "{name} is a q35 machine with no free pcie-root-port ({} in use): a hot-plugged NIC has nowhere to go",
                    f.pcie_root_ports
                ))
                .with_hint("add a spare <controller type='pci' model='pcie-root-port'/> and power-cycle the VM, or attach while it is shut off"),
            );
        }
    } else if !f.acpi {
        return Some(
            Error::unsupported(format!(
                "{name} is an i440fx machine without <acpi/>: QEMU cannot hot-plug a NIC into it (\"Bus 'pci.0' does not support hotplugging\")"
            ))
            .with_hint("add <acpi/> under <features> and power-cycle the VM, or shut it off and run the same command (the NIC is then added to its config)"),
        );
    }
    None
}

fn new_nic(mac: &str, bridge: &str) -> Nic {
    Nic {
        index: 0,
        kind: "bridge".into(),
        mac: Some(mac.to_string()),
        source: BTreeMap::from([("bridge".to_string(), bridge.to_string())]),
        model: Some("virtio".into()),
        target_dev: None,
        span: 0..0,
    }
}

/// `vbridge attach VM --hotplug`: add a virtio NIC on `bridge` to the running VM and its
/// config (config only when shut off). Idempotent: a NIC with that MAC already on the
/// bridge is left alone.
pub fn hotplug(
    conn: &Conn,
    name: &str,
    bridge: &str,
    mac: Option<&str>,
    dry_run: bool,
) -> Result<DomainResult> {
    validate::interface_name(bridge)?;
    let mac = mac.map(validate::mac).transpose()?;
    let dom = conn.domain(name)?;
    let running = dom.is_active()?;
    let config_xml = dom.persistent_xml()?;
    let live_xml = if running { Some(dom.live_xml()?) } else { None };
    let mac = match mac {
        Some(m) => m,
        None => derive_mac(&dom.uuid()?, bridge),
    };

    let find = |xml: &str| -> Result<Option<Nic>> {
        Ok(domxml::nics(xml)?
            .into_iter()
            .find(|n| n.mac.as_deref() == Some(mac.as_str())))
    };
    // A transient VM has no config to add to: its "persistent" XML is the live one.
    let persistent = dom.is_persistent()?;
    let in_config = if persistent { find(&config_xml)? } else { None };
    let in_live = live_xml.as_deref().map(find).transpose()?.flatten();
    for nic in in_config.iter().chain(in_live.iter()) {
        if !nic.is_on_bridge(bridge) {
            return Err(Error::conflict(format!(
                "{name} already has a NIC with MAC {mac} (type '{}') that is not a virtio NIC on {bridge}",
                nic.kind
            ))
            .with_hint(format!("move it with `vbridge attach {name} --mac {mac} --bridge {bridge}`, or pick another --mac")));
        }
    }
    let add_config = persistent && in_config.is_none();
    let add_live = running && in_live.is_none();

    let mut result = DomainResult {
        domain: dom.name().to_string(),
        changed: add_config || add_live,
        interfaces: vec![NicResult {
            mac: Some(mac.clone()),
            changed: add_config || add_live,
            before: in_config.clone().or(in_live.clone()),
            after: Some(new_nic(&mac, bridge)),
        }],
        error: None,
        backup: None,
        notes: Vec::new(),
        diff: None,
    };
    if !result.changed {
        return Ok(result);
    }
    if add_live {
        if let Some(err) =
            hotplug_blocker(&domxml::facts(live_xml.as_deref().unwrap_or(&config_xml))?)
        {
            return Err(err);
        }
        if conn.shares_host() {
            if let Some(w) = crate::network::bridge_warnings(bridge).into_iter().next() {
                return Err(Error::not_found(w));
            }
        }
    }
    let device = template::render(
        template::INTERFACE_BRIDGE,
        &[("mac", &mac), ("bridge", bridge)],
    )?;
    if !persistent {
        result.notes.push(format!(
            "{name} is transient: the NIC was added to the running VM only and goes away when it stops"
        ));
    }
    if !running {
        result.notes.push(format!(
            "{name} is shut off: the NIC was added to its config and appears at the next start"
        ));
    }
    if dry_run {
        result.diff = Some(device);
        return Ok(result);
    }
    dom.attach_device(&device, add_config, add_live)?;
    Ok(result)
}

/// `vbridge detach VM --mac MAC`: remove the NIC from the running VM and its config.
/// Idempotent: no NIC with that MAC is success with no change.
pub fn detach(conn: &Conn, name: &str, mac: &str, dry_run: bool) -> Result<DomainResult> {
    let mac = validate::mac(mac)?;
    let dom = conn.domain(name)?;
    let running = dom.is_active()?;
    let config_xml = dom.persistent_xml()?;
    let live_xml = if running { Some(dom.live_xml()?) } else { None };
    let find = |xml: &str| -> Result<Option<(Nic, String)>> {
        Ok(domxml::nics(xml)?
            .into_iter()
            .find(|n| n.mac.as_deref() == Some(mac.as_str()))
            .map(|n| {
                let text = xml[n.span.clone()].to_string();
                (n, text)
            }))
    };
    let in_config = if dom.is_persistent()? {
        find(&config_xml)?
    } else {
        None
    };
    let in_live = live_xml.as_deref().map(find).transpose()?.flatten();
    let changed = in_config.is_some() || in_live.is_some();
    let result = DomainResult {
        domain: dom.name().to_string(),
        changed,
        interfaces: vec![NicResult {
            mac: Some(mac.clone()),
            changed,
            before: in_config
                .as_ref()
                .or(in_live.as_ref())
                .map(|(n, _)| n.clone()),
            after: None,
        }],
        error: None,
        backup: None,
        notes: Vec::new(),
        diff: None,
    };
    if dry_run || !changed {
        return Ok(result);
    }
    // libvirt matches the device by MAC; pass the element as it stands in each definition.
    match (&in_config, &in_live) {
        (Some((_, c)), Some((_, l))) if c == l => dom.detach_device(c, true, true)?,
        _ => {
            if let Some((_, l)) = &in_live {
                dom.detach_device(l, false, true)?;
            }
            if let Some((_, c)) = &in_config {
                dom.detach_device(c, true, false)?;
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_stable_and_local() {
        let a = derive_mac("6f1b2c3d-0000-4000-8000-000000000001", "br0");
        assert_eq!(a, derive_mac("6F1B2C3D-0000-4000-8000-000000000001", "br0"));
        assert_ne!(a, derive_mac("6f1b2c3d-0000-4000-8000-000000000001", "br1"));
        assert!(a.starts_with("52:54:00:"));
        validate::mac(&a).unwrap();
    }

    #[test]
    fn blockers() {
        let base = DomainFacts {
            name: Some("vm".into()),
            hypervisor: Some("kvm".into()),
            machine: Some("pc-i440fx-7.2".into()),
            arch: Some("x86_64".into()),
            acpi: true,
            ..DomainFacts::default()
        };
        assert!(hotplug_blocker(&base).is_none());
        let no_acpi = DomainFacts {
            acpi: false,
            ..base.clone()
        };
        assert!(hotplug_blocker(&no_acpi)
            .unwrap()
            .message
            .contains("without <acpi/>"));
        let q35 = DomainFacts {
            machine: Some("pc-q35-7.2".into()),
            pcie_root_ports: 4,
            free_pcie_root_ports: 0,
            ..base.clone()
        };
        assert!(hotplug_blocker(&q35)
            .unwrap()
            .message
            .contains("pcie-root-port"));
        let q35_free = DomainFacts {
            free_pcie_root_ports: 1,
            ..q35
        };
        assert!(hotplug_blocker(&q35_free).is_none());
        let test = DomainFacts {
            hypervisor: Some("test".into()),
            acpi: false,
            ..base
        };
        assert!(hotplug_blocker(&test).is_none());
    }
}
