//! `vbridge attach --hotplug` and `vbridge detach`: add or remove a virtio NIC on the bridge,
//! in the running VM and its persistent config (`virsh attach-interface --config --live`).

use crate::domxml::{self, DomainFacts, Nic};
use crate::error::{Error, Result};
use crate::libvirt::Conn;
use crate::report::{AttachReport, DomainResult, NicResult};
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

/// A NIC with one MAC as it stands in a domain's definitions, and what hotplug and detach
/// need to know about the domain. Each definition is read and parsed once.
struct MacView {
    dom: crate::libvirt::Dom,
    running: bool,
    /// Transient domains have no config of their own: their "persistent" XML is the live one.
    persistent: bool,
    /// The NIC and its element text in the persistent config, in the live definition.
    config: Option<(Nic, String)>,
    live: Option<(Nic, String)>,
    /// Facts of the definition a live change goes to (live when running).
    facts: DomainFacts,
}

fn observe_mac(
    conn: &Conn,
    name: &str,
    mac: impl FnOnce(&str) -> String,
) -> Result<(MacView, String)> {
    let dom = conn.domain(name)?;
    let running = dom.is_active()?;
    let persistent = dom.is_persistent()?;
    let mac = mac(&dom.uuid()?);
    let find = |xml: &str| -> Result<(Option<(Nic, String)>, DomainFacts)> {
        let (nics, facts) = domxml::nics_and_facts(xml)?;
        let nic = nics
            .into_iter()
            .find(|n| n.mac.as_deref() == Some(mac.as_str()))
            .map(|n| {
                let text = xml[n.span.clone()].to_string();
                (n, text)
            });
        Ok((nic, facts))
    };
    let (config, config_facts) = find(&dom.persistent_xml()?)?;
    let (live, facts) = if running {
        find(&dom.live_xml()?)?
    } else {
        (None, config_facts)
    };
    let config = if persistent { config } else { None };
    Ok((
        MacView {
            dom,
            running,
            persistent,
            config,
            live,
            facts,
        },
        mac,
    ))
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
    let given = mac.map(validate::mac).transpose()?;
    let (v, mac) = observe_mac(conn, name, |uuid| {
        given.unwrap_or_else(|| derive_mac(uuid, bridge))
    })?;
    for (nic, _) in v.config.iter().chain(v.live.iter()) {
        if !nic.is_on_bridge(bridge) {
            return Err(Error::conflict(format!(
                "{name} already has a NIC with MAC {mac} (type '{}') that is not a virtio NIC on {bridge}",
                nic.kind
            ))
            .with_hint(format!("move it with `vbridge attach {name} --mac {mac} --bridge {bridge}`, or pick another --mac")));
        }
    }
    let add_config = v.persistent && v.config.is_none();
    let add_live = v.running && v.live.is_none();

    let mut result = DomainResult {
        domain: v.dom.name().to_string(),
        changed: add_config || add_live,
        interfaces: vec![NicResult {
            mac: Some(mac.clone()),
            changed: add_config || add_live,
            before: v
                .config
                .as_ref()
                .or(v.live.as_ref())
                .map(|(n, _)| n.clone()),
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
        if let Some(err) = v.facts.hotplug_blocker() {
            return Err(err);
        }
        if conn.shares_host() {
            if let Some(w) = crate::topology::bridge_warnings(bridge).into_iter().next() {
                return Err(Error::not_found(w));
            }
        }
    }
    let device = template::render(
        template::INTERFACE_BRIDGE,
        &[("mac", &mac), ("bridge", bridge)],
    )?;
    if !v.persistent {
        result.notes.push(format!(
            "{name} is transient: the NIC was added to the running VM only and goes away when it stops"
        ));
    }
    if !v.running {
        result.notes.push(format!(
            "{name} is shut off: the NIC was added to its config and appears at the next start"
        ));
    }
    if dry_run {
        result.diff = Some(device);
        return Ok(result);
    }
    v.dom.attach_device(&device, add_config, add_live)?;
    Ok(result)
}

/// `attach --hotplug` over several VMs on one connection: each gets its own result, and a
/// failure in one does not stop the others.
pub fn hotplug_many(
    conn: &Conn,
    domains: &[String],
    bridge: &str,
    mac: Option<&str>,
    dry_run: bool,
) -> AttachReport {
    let domains = domains
        .iter()
        .map(|d| {
            hotplug(conn, d, bridge, mac, dry_run).unwrap_or_else(|e| DomainResult::failed(d, e))
        })
        .collect();
    AttachReport { dry_run, domains }
}

/// `vbridge detach VM --mac MAC`: remove the NIC from the running VM and its config.
/// Idempotent: no NIC with that MAC is success with no change.
pub fn detach(conn: &Conn, name: &str, mac: &str, dry_run: bool) -> Result<DomainResult> {
    let mac = validate::mac(mac)?;
    let (v, mac) = observe_mac(conn, name, |_| mac)?;
    let changed = v.config.is_some() || v.live.is_some();
    let result = DomainResult {
        domain: v.dom.name().to_string(),
        changed,
        interfaces: vec![NicResult {
            mac: Some(mac.clone()),
            changed,
            before: v
                .config
                .as_ref()
                .or(v.live.as_ref())
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
    match (&v.config, &v.live) {
        (Some((_, c)), Some((_, l))) if c == l => v.dom.detach_device(c, true, true)?,
        _ => {
            if let Some((_, l)) = &v.live {
                v.dom.detach_device(l, false, true)?;
            }
            if let Some((_, c)) = &v.config {
                v.dom.detach_device(c, true, false)?;
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
}
