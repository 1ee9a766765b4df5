//! `vbridge attach --hotplug` and `vbridge detach`: add or remove a virtio NIC on the bridge
//! (or a libvirt network), in the running VM and its persistent config (`virsh attach-interface --config --live`).
//! Each observes the domain, plans [`DomainStep`]s (pure), applies them, reports.

use crate::backup::StateDir;
use crate::domxml::{self, DomainFacts, Nic, NicOptions, Target};
use crate::edit::{DomainApplier, DomainStep};
use crate::error::{Error, Result};
use crate::libvirt::{Conn, Dom};
use crate::plan::{self, Plan};
use crate::progress::Sink;
use crate::report::{AttachReport, DomainResult, NicResult};
use crate::template;
use crate::validate::{BridgeName, Mac};
use std::collections::BTreeMap;

/// The MAC vbridge gives a hot-plugged NIC when none is given: stable for a (domain UUID,
/// bridge) pair, so the live and persistent NIC agree and a second run finds it. FNV-1a is
/// written out here because std's hasher is not guaranteed stable across releases.
pub fn derive_mac(uuid: &str, bridge: &BridgeName) -> Mac {
    derive_mac_for(uuid, bridge.as_str())
}

/// [`derive_mac`] for a place by its name: a bridge, or a libvirt network.
pub fn derive_mac_for(uuid: &str, place: &str) -> Mac {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uuid
        .to_ascii_lowercase()
        .bytes()
        .chain(std::iter::once(0))
        .chain(place.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // 52:54:00 is QEMU's locally administered unicast prefix.
    Mac::from_bytes(&[0x52, 0x54, 0x00, b[5], b[6], b[7]])
}

/// Where a hot-plugged NIC goes: `type` and the `<source>` attribute naming the place.
fn place(target: &Target) -> (&'static str, &str) {
    match target {
        Target::Network(n) => ("network", n.as_str()),
        Target::Bridge(b) | Target::Direct { dev: b, .. } => ("bridge", b.as_str()),
    }
}

fn new_nic(mac: &Mac, target: &Target) -> Nic {
    let (kind, name) = place(target);
    Nic {
        index: 0,
        kind: kind.into(),
        mac: Some(mac.to_string()),
        source: BTreeMap::from([(kind.to_string(), name.to_string())]),
        model: Some("virtio".into()),
        target_dev: None,
        mtu: None,
        queues: None,
        span: 0..0,
    }
}

/// A NIC with one MAC as it stands in a domain's definitions, and what hotplug and detach
/// need to know about the domain. Each definition is read and parsed once.
struct MacView {
    /// The domain's own name (it may have been named by UUID).
    name: String,
    mac: Mac,
    running: bool,
    /// Transient domains have no config of their own: their "persistent" XML is the live one.
    persistent: bool,
    /// The NIC and its element text in the persistent config, in the live definition.
    config: Option<(Nic, String)>,
    live: Option<(Nic, String)>,
    /// Facts of the definition a live change goes to (live when running).
    facts: DomainFacts,
    /// Why the bridge (or network) cannot take a NIC now, when it was looked at (hotplug only).
    bridge_warning: Option<String>,
}

impl MacView {
    /// The NIC as it stands, config first.
    fn before(&self) -> Option<Nic> {
        self.config
            .as_ref()
            .or(self.live.as_ref())
            .map(|(n, _)| n.clone())
    }
}

fn observe_mac(conn: &Conn, name: &str, mac: impl FnOnce(&str) -> Mac) -> Result<(Dom, MacView)> {
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
    let view = MacView {
        name: dom.name().to_string(),
        mac,
        running,
        persistent,
        config,
        live,
        facts,
        bridge_warning: None,
    };
    Ok((dom, view))
}

/// The plan of a hotplug from what was observed. Pure. Refuses a MAC already used by a NIC
/// that is not on the bridge, and a live plug the domain or the bridge cannot take.
/// `asked` is the domain as the caller named it, for messages.
fn plan_hotplug(
    v: &MacView,
    asked: &str,
    target: &Target,
    options: &NicOptions,
) -> Result<(DomainResult, Plan<DomainStep>)> {
    let (name, mac) = (asked, &v.mac);
    let (kind, place) = place(target);
    for (nic, _) in v.config.iter().chain(v.live.iter()) {
        if !target.holds(nic) {
            let on = match target {
                Target::Network(n) => format!("network {n}"),
                _ => place.to_string(),
            };
            return Err(Error::conflict(format!(
                "{name} already has a NIC with MAC {mac} (type '{}') that is not a virtio NIC on {on}",
                nic.kind
            ))
            .with_hint(format!(
                "move it with `{}`, or pick another --mac",
                crate::shell::join(["vbridge", "attach", name, "--mac", mac.as_str(), &format!("--{kind}"), place])
            )));
        }
    }
    let add_config = v.persistent && v.config.is_none();
    let add_live = v.running && v.live.is_none();
    let changed = add_config || add_live;
    let mut after = new_nic(mac, target);
    after.mtu = options.mtu.map(|m| m.get());
    after.queues = options.queues.map(|q| q.get());
    let mut result = DomainResult::new(
        &v.name,
        changed,
        vec![NicResult {
            mac: Some(mac.to_string()),
            changed,
            before: v.before(),
            after: Some(after),
        }],
    );
    if !changed {
        return Ok((result, Plan::default()));
    }
    options.check_against(&v.facts)?;
    if add_live {
        if let Some(err) = v.facts.hotplug_blocker() {
            return Err(err);
        }
        if let Some(w) = &v.bridge_warning {
            return Err(Error::not_found(w.clone()));
        }
    }
    let template = match target {
        Target::Network(_) => template::INTERFACE_NETWORK,
        _ => template::INTERFACE_BRIDGE,
    };
    let device = template::render(template, &[("mac", mac.as_str()), (kind, place)])?;
    let device = domxml::with_options(&device, options)?;
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
    let step = DomainStep::AttachDevice {
        domain: v.name.clone(),
        xml: device,
        config: add_config,
        live: add_live,
    };
    Ok((result, Plan::new(vec![step])))
}

/// The plan of a detach from what was observed. Pure. libvirt matches the device by MAC;
/// the element is passed as it stands in each definition.
fn plan_detach(v: &MacView) -> (DomainResult, Plan<DomainStep>) {
    let changed = v.config.is_some() || v.live.is_some();
    let result = DomainResult::new(
        &v.name,
        changed,
        vec![NicResult {
            mac: Some(v.mac.to_string()),
            changed,
            before: v.before(),
            after: None,
        }],
    );
    let step = |xml: &str, config, live| DomainStep::DetachDevice {
        domain: v.name.clone(),
        xml: xml.to_string(),
        config,
        live,
    };
    let steps = match (&v.config, &v.live) {
        (Some((_, c)), Some((_, l))) if c == l => vec![step(c, true, true)],
        (config, live) => live
            .iter()
            .map(|(_, l)| step(l, false, true))
            .chain(config.iter().map(|(_, c)| step(c, true, false)))
            .collect(),
    };
    (result, Plan::new(steps))
}

/// Run a domain's plan, stopping at the first failing step. A change whose reply was lost
/// gives the result `unknown` instead of an error.
fn apply(
    conn: &Conn,
    dom: &Dom,
    p: &Plan<DomainStep>,
    result: DomainResult,
) -> Result<DomainResult> {
    let mut by = DomainApplier::new(conn, Some(dom), None);
    match plan::apply(&p.steps, &mut by) {
        Ok(()) => Ok(result),
        Err(stopped) if by.outcome_unknown() => {
            Ok(DomainResult::unknown(&result.domain, stopped.error, None))
        }
        Err(stopped) => Err(stopped.error),
    }
}

/// Hold the domain's lock in the state dir from observing it to changing it, so two vbridge
/// processes plugging the same VM do not both find it without the NIC and both add one.
fn lock(conn: &Conn, name: &str, state: &StateDir) -> Result<crate::backup::DomainLock> {
    state.lock_domain(&conn.domain(name)?.uuid()?)
}

/// `vbridge attach VM --hotplug`: add a virtio NIC on `bridge` to the running VM and its
/// config (config only when shut off). Idempotent: a NIC with that MAC already on the
/// bridge is left alone. Without `mac`, the NIC gets [`derive_mac`]'s.
pub fn hotplug(
    conn: &Conn,
    name: &str,
    bridge: &BridgeName,
    mac: Option<&Mac>,
    dry_run: bool,
    state: &StateDir,
) -> Result<DomainResult> {
    let target = Target::Bridge(bridge.clone());
    hotplug_with(
        conn,
        name,
        &target,
        mac,
        &NicOptions::default(),
        dry_run,
        state,
    )
}

/// [`hotplug`] onto a bridge or a libvirt network (`--network`; macvtap is not hot-plugged),
/// of a NIC with an MTU or several queues (`--mtu`, `--queues`); a VM with fewer vCPUs than
/// queues, or a network libvirt does not have, is refused before anything changes.
pub fn hotplug_with(
    conn: &Conn,
    name: &str,
    target: &Target,
    mac: Option<&Mac>,
    options: &NicOptions,
    dry_run: bool,
    state: &StateDir,
) -> Result<DomainResult> {
    if let Target::Direct { .. } = target {
        return Err(Error::unsupported(
            "a macvtap NIC is not hot-plugged: use --direct without --hotplug",
        ));
    }
    // Two vbridge processes on one VM: the second finds the first's NIC, not a gap.
    let _lock = (!dry_run).then(|| lock(conn, name, state)).transpose()?;
    let (_, place) = place(target);
    // A network must exist whether or not the VM runs: libvirt would take the NIC into the
    // definition and fail only at the next start.
    let network_warning = match target {
        Target::Network(n) => crate::topology::network_warnings(conn, n)?,
        _ => Vec::new(),
    };
    let (dom, mut v) = observe_mac(conn, name, |uuid| {
        mac.cloned().unwrap_or_else(|| derive_mac_for(uuid, place))
    })?;
    if v.running && v.live.is_none() {
        v.bridge_warning = match target {
            Target::Network(_) => network_warning.into_iter().next(),
            _ if conn.shares_host() => crate::topology::bridge_warnings(place).into_iter().next(),
            _ => None,
        };
    }
    let (mut result, p) = plan_hotplug(&v, name, target, options)?;
    if dry_run {
        result.diff = p.steps.first().and_then(DomainStep::diff);
        return Ok(result);
    }
    apply(conn, &dom, &p, result)
}

/// `attach --hotplug` over several VMs on one connection: each gets its own result, and a
/// failure in one does not stop the others.
pub fn hotplug_many(
    conn: &Conn,
    domains: &[String],
    bridge: &BridgeName,
    mac: Option<&Mac>,
    dry_run: bool,
    state: &StateDir,
) -> AttachReport {
    let (options, quiet) = (NicOptions::default(), Sink::default());
    let target = Target::Bridge(bridge.clone());
    let nic = NewNic {
        target: &target,
        mac,
        options: &options,
    };
    hotplug_many_with(conn, domains, &nic, dry_run, &quiet, state)
}

/// The NIC `attach --hotplug` adds: where it goes, its MAC (None: derived), its options.
pub struct NewNic<'a> {
    pub target: &'a Target,
    pub mac: Option<&'a Mac>,
    pub options: &'a NicOptions,
}

/// [`hotplug_many`] with NIC options, telling `progress` as each VM is finished.
pub fn hotplug_many_with(
    conn: &Conn,
    domains: &[String],
    nic: &NewNic,
    dry_run: bool,
    progress: &Sink,
    state: &StateDir,
) -> AttachReport {
    let NewNic {
        target,
        mac,
        options,
    } = *nic;
    // Whether a libvirt network owns the bridge: asked once for the whole call.
    let owner = match target {
        Target::Bridge(b) => crate::topology::bridge_owner_notes(conn, b.as_str()),
        _ => Vec::new(),
    };
    progress.begin("hot-plugging NICs", domains.len());
    let domains = domains
        .iter()
        .map(
            |d| match hotplug_with(conn, d, target, mac, options, dry_run, state) {
                Ok(mut r) => {
                    if r.changed {
                        r.notes.extend(owner.iter().cloned());
                    }
                    r
                }
                Err(e) => DomainResult::failed(d, e),
            },
        )
        .inspect(|r| progress.done(&r.domain))
        .collect();
    AttachReport { dry_run, domains }
}

/// `vbridge detach VM --mac MAC`: remove the NIC from the running VM and its config.
/// Idempotent: no NIC with that MAC is success with no change.
pub fn detach(
    conn: &Conn,
    name: &str,
    mac: &Mac,
    dry_run: bool,
    state: &StateDir,
) -> Result<DomainResult> {
    let _lock = (!dry_run).then(|| lock(conn, name, state)).transpose()?;
    let (dom, v) = observe_mac(conn, name, |_| mac.clone())?;
    let (result, p) = plan_detach(&v);
    if dry_run {
        return Ok(result);
    }
    apply(conn, &dom, &p, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_stable_and_local() {
        let br = |b: &str| BridgeName::parse(b).unwrap();
        let a = derive_mac("6f1b2c3d-0000-4000-8000-000000000001", &br("br0"));
        assert_eq!(
            a,
            derive_mac("6F1B2C3D-0000-4000-8000-000000000001", &br("br0"))
        );
        assert_ne!(
            a,
            derive_mac("6f1b2c3d-0000-4000-8000-000000000001", &br("br1"))
        );
        assert!(a.as_str().starts_with("52:54:00:"));
        crate::validate::mac(a.as_str()).unwrap();
    }
}
