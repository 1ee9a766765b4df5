//! The difference between a desired host and what was observed on it, by meaning: a NIC is
//! compared on its type, source, model, MTU and queues only, so what libvirt adds on its own
//! (target dev, alias, PCI address, ...) is no difference. Pure: no libvirt, no I/O.

use super::{Host, Mode, NicWant, Target};
use crate::domxml::{self, Nic};
use crate::error::{Error, Result};
use crate::topology::NetworkObs;
use crate::validate::Mac;
use crate::verify::VerifyReport;
use serde::Serialize;
use std::collections::BTreeMap;

/// A NIC as observed, with its MTU and queues at hand for the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSeen {
    pub nic: Nic,
    pub mtu: Option<u32>,
    pub queues: Option<u32>,
}

/// One VM as observed: its persistent definition's NICs and, when it runs, the live ones.
#[derive(Debug, Clone)]
pub struct ObservedVm {
    pub name: String,
    pub uuid: String,
    pub running: bool,
    /// False for a transient VM (`virsh create`): a persistent change would make it
    /// persistent, which apply does not do behind the user's back.
    pub persistent: bool,
    pub config: Vec<NicSeen>,
    pub live: Option<Vec<NicSeen>>,
}

impl ObservedVm {
    /// From the persistent XML and, for a running VM, the live XML.
    pub fn from_xml(config_xml: &str, live_xml: Option<&str>) -> Result<ObservedVm> {
        let facts = domxml::facts(config_xml)?;
        Ok(ObservedVm {
            name: facts.name.unwrap_or_default(),
            uuid: facts.uuid.unwrap_or_default(),
            running: live_xml.is_some(),
            persistent: true,
            config: seen(config_xml)?,
            live: live_xml.map(seen).transpose()?,
        })
    }
}

/// The NICs of a domain document with their MTU and queues.
pub fn seen(xml: &str) -> Result<Vec<NicSeen>> {
    Ok(domxml::nics(xml)?
        .into_iter()
        .map(|nic| NicSeen {
            mtu: nic.mtu,
            queues: nic.queues,
            nic,
        })
        .collect())
}

/// Everything observed on one host that the diff reads.
#[derive(Debug, Clone, Default)]
pub struct ObservedHost {
    /// Each desired network's state; None: not defined.
    pub networks: BTreeMap<String, Option<NetworkObs>>,
    /// Each desired VM, or why it could not be read.
    pub vms: BTreeMap<String, std::result::Result<ObservedVm, Error>>,
    /// vbridge runs on this host (host-side checks were made and are in `notes`).
    pub local: bool,
    /// Host-side findings (a missing bridge), or why there are none (a remote host).
    pub notes: Vec<String>,
}

/// What `net-define` would do to one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetAction {
    Define,
    Start,
    Autostart,
}

/// The plan (and, after apply, the outcome) of one network.
#[derive(Debug, Clone, Serialize)]
pub struct NetPlan {
    pub name: String,
    pub bridge: String,
    pub actions: Vec<NetAction>,
    pub error: Option<Error>,
}

/// Which definition of a VM a NIC change touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Definition {
    Config,
    Live,
}

/// One key of a NIC that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `type`, `source`, `model`, `mtu` or `queues`.
    pub key: String,
    pub have: Option<String>,
    pub want: Option<String>,
}

/// Where a NIC change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Planned, not applied (plan; apply before it ran).
    Pending,
    Applied,
    Failed,
    /// Not tried: another change of the same VM could not be made.
    Skipped,
}

/// One NIC that must change.
#[derive(Debug, Clone, Serialize)]
pub struct NicPlan {
    /// The MAC of the NIC concerned, when known (given, derived, or found).
    pub mac: Option<String>,
    pub mode: Mode,
    /// `add`: no such NIC yet; `update`: it exists and differs.
    pub action: NicAction,
    pub target: Target,
    /// The definitions that change.
    pub definitions: Vec<Definition>,
    /// For `update`: what differs.
    pub differences: Vec<Difference>,
    pub status: Status,
    #[serde(skip)]
    pub want: NicWant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicAction {
    Add,
    Update,
}

/// The plan (and, after apply, the outcome) of one VM.
#[derive(Debug, Clone, Serialize)]
pub struct VmPlan {
    pub name: String,
    pub changes: Vec<NicPlan>,
    /// The verify timeout asked for (seconds); verification is no change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<f64>,
    /// After apply: the verification's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<VerifyReport>,
    pub error: Option<Error>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip)]
    pub running: bool,
}

/// One host's plan: networks first, then VMs.
#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    pub networks: Vec<NetPlan>,
    pub vms: Vec<VmPlan>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl HostPlan {
    /// Anything to do (or, after apply, anything done).
    pub fn changes(&self) -> usize {
        self.networks.iter().map(|n| n.actions.len()).sum::<usize>()
            + self
                .vms
                .iter()
                .flat_map(|v| &v.changes)
                .filter(|c| matches!(c.status, Status::Pending | Status::Applied))
                .count()
    }

    pub fn ok(&self) -> bool {
        self.networks.iter().all(|n| n.error.is_none())
            && self
                .vms
                .iter()
                .all(|v| v.error.is_none() && v.verified.as_ref().is_none_or(|r| r.ok()))
    }
}

/// The MAC a NIC wanted without one is matched by, when the mode fixes one: hotplug's
/// derived MAC. Persistent and live NICs without a MAC are found by their place instead.
pub type DeriveMac<'a> = &'a dyn Fn(&str, &str) -> Mac;

/// Compare one desired host with what was observed on it.
pub fn diff(want: &Host, seen: &ObservedHost, derive_mac: DeriveMac) -> HostPlan {
    let networks = want
        .networks
        .iter()
        .map(|n| {
            let (actions, error) =
                match network_actions(n, seen.networks.get(&n.name).cloned().flatten()) {
                    Ok(a) => (a, None),
                    Err(e) => (Vec::new(), Some(e)),
                };
            NetPlan {
                name: n.name.clone(),
                bridge: n.bridge.clone(),
                actions,
                error,
            }
        })
        .collect();
    let vms = want
        .vms
        .iter()
        .map(|(name, vm)| {
            let mut plan = VmPlan {
                name: name.clone(),
                changes: Vec::new(),
                verify: vm.verify.as_ref().map(|v| v.timeout),
                verified: None,
                error: None,
                notes: Vec::new(),
                running: false,
            };
            match seen.vms.get(name) {
                Some(Ok(obs)) => {
                    plan.running = obs.running;
                    for nic in &vm.nics {
                        match nic_plan(nic, obs, derive_mac) {
                            Ok(Some(p)) => plan.changes.push(p),
                            Ok(None) => {}
                            Err(e) => {
                                plan.error = Some(e);
                                break;
                            }
                        }
                    }
                    if !obs.persistent && plan.changes.iter().any(|c| c.mode == Mode::Persistent) {
                        // The same refusal attach gives: say it in the plan, not only at apply.
                        plan.error = crate::domain::persistent_rewrite(name, false, false).err();
                    }
                    if obs.running && plan.changes.iter().any(|c| c.mode == Mode::Persistent) {
                        plan.notes.push(format!("{name} is running: persistent changes take effect after a full power-off"));
                    }
                }
                Some(Err(e)) => plan.error = Some(e.clone()),
                None => plan.error = Some(Error::not_found(format!("{name} was not observed"))),
            }
            plan
        })
        .collect();
    HostPlan {
        networks,
        vms,
        notes: seen.notes.clone(),
    }
}

/// What `net-define` would do, or why it must not (a different network of that name).
fn network_actions(want: &super::Network, seen: Option<NetworkObs>) -> Result<Vec<NetAction>> {
    let Some(s) = seen else {
        return Ok(vec![
            NetAction::Define,
            NetAction::Start,
            NetAction::Autostart,
        ]);
    };
    if s.forward_mode.as_deref() != Some("bridge") || s.bridge.as_deref() != Some(&want.bridge) {
        return Err(Error::conflict(format!(
            "network {:?} exists and differs: forward mode {}, bridge {}; wanted forward mode 'bridge' on {}",
            want.name,
            s.forward_mode.as_deref().unwrap_or("none"),
            s.bridge.as_deref().unwrap_or("none"),
            want.bridge
        ))
        .with_hint("a plan never redefines a network: rename it in the file, or `vbridge net-define --force`"));
    }
    let mut a = Vec::new();
    if !s.active {
        a.push(NetAction::Start);
    }
    if !s.autostart {
        a.push(NetAction::Autostart);
    }
    Ok(a)
}

/// The differences of one observed NIC from the wanted one (empty: it is as wanted).
pub fn differences(want: &NicWant, have: &NicSeen) -> Vec<Difference> {
    let (kind, key, name) = match &want.target {
        Target::Bridge(b) => ("bridge", "bridge", b.as_str()),
        Target::Network(n) => ("network", "network", n.as_str()),
    };
    let mut d = Vec::new();
    let mut push = |key: &str, have: Option<String>, want: Option<String>| {
        if have != want {
            d.push(Difference {
                key: key.into(),
                have,
                want,
            });
        }
    };
    // libvirt shows a running NIC of a bridge-mode network as type='bridge' naming both the
    // network and its bridge: by meaning, that NIC is on the network.
    let have_kind = match &want.target {
        Target::Network(_) if have.nic.source.contains_key("network") => "network".to_string(),
        _ => have.nic.kind.clone(),
    };
    push("type", Some(have_kind), Some(kind.into()));
    let have_source = have
        .nic
        .source
        .get(key)
        .map(|v| format!("{key}={v}"))
        .or_else(|| {
            // Show what it is plugged into, whatever the key.
            have.nic
                .source
                .iter()
                .next()
                .map(|(k, v)| format!("{k}={v}"))
        });
    push("source", have_source, Some(format!("{key}={name}")));
    push("model", have.nic.model.clone(), Some(want.model().into()));
    if want.mtu.is_some() {
        push(
            "mtu",
            have.mtu.map(|v| v.to_string()),
            want.mtu.map(|v| v.to_string()),
        );
    }
    if want.queues.is_some() {
        push(
            "queues",
            have.queues.map(|v| v.to_string()),
            want.queues.map(|v| v.to_string()),
        );
    }
    d
}

/// A new NIC's keys, as differences from nothing.
fn wanted(want: &NicWant) -> Vec<Difference> {
    let nothing = NicSeen {
        nic: Nic {
            index: 0,
            kind: String::new(),
            mac: None,
            source: BTreeMap::new(),
            model: None,
            target_dev: None,
            span: 0..0,
            mtu: None,
            queues: None,
        },
        mtu: None,
        queues: None,
    };
    differences(want, &nothing)
        .into_iter()
        .map(|d| Difference { have: None, ..d })
        .collect()
}

/// The NIC in `nics` the wanted one means: by MAC; else the one already as wanted; else
/// the single one not as wanted (what `attach` picks). Ok(None): no such NIC.
fn find<'a>(want: &NicWant, mac: Option<&str>, nics: &'a [NicSeen]) -> Result<Option<&'a NicSeen>> {
    if let Some(m) = mac {
        return Ok(nics.iter().find(|n| n.nic.mac.as_deref() == Some(m)));
    }
    if let Some(n) = nics.iter().find(|n| differences(want, n).is_empty()) {
        return Ok(Some(n));
    }
    let mut others = nics.iter().filter(|n| !differences(want, n).is_empty());
    match (others.next(), others.next()) {
        (Some(n), None) => Ok(Some(n)),
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(Error::conflict(format!(
            "several NICs could be the one meant by `{}`: give its `mac`",
            match &want.target {
                Target::Bridge(b) => format!("bridge: {b}"),
                Target::Network(n) => format!("network: {n}"),
            }
        ))),
    }
}

fn nic_plan(want: &NicWant, vm: &ObservedVm, derive_mac: DeriveMac) -> Result<Option<NicPlan>> {
    let mac = match (&want.mac, want.mode, &want.target) {
        (Some(m), _, _) => Some(m.to_string()),
        (None, Mode::Hotplug, Target::Bridge(b)) => {
            Some(derive_mac(&vm.uuid, b.as_str()).into_string())
        }
        (None, Mode::Hotplug, Target::Network(n)) => Some(derive_mac(&vm.uuid, n).into_string()),
        _ => None,
    };
    // The definitions this mode must bring in line.
    let mut views: Vec<(Definition, &[NicSeen])> = vec![(Definition::Config, &vm.config)];
    if want.mode != Mode::Persistent {
        if let Some(live) = &vm.live {
            views.push((Definition::Live, live));
        }
    }
    let mut definitions = Vec::new();
    let mut differences_seen = Vec::new();
    let mut action = NicAction::Update;
    let mut found_mac = None;
    for (def, nics) in views {
        match find(want, mac.as_deref(), nics)? {
            Some(n) => {
                let d = differences(want, n);
                if !d.is_empty() {
                    definitions.push(def);
                    if differences_seen.is_empty() {
                        differences_seen = d;
                    }
                }
                found_mac = found_mac.or_else(|| n.nic.mac.clone());
            }
            None => {
                if want.mode == Mode::Live {
                    return Err(Error::not_found(format!(
                        "{} has no NIC {} to move in place (mode live moves an existing NIC)",
                        vm.name,
                        mac.as_deref().unwrap_or("(any)")
                    ))
                    .with_hint("use mode hotplug to add a new NIC"));
                }
                definitions.push(def);
                action = NicAction::Add;
            }
        }
    }
    if definitions.is_empty() {
        return Ok(None);
    }
    Ok(Some(NicPlan {
        mac: mac.or(found_mac),
        mode: want.mode,
        action,
        target: want.target.clone(),
        definitions,
        // For a new NIC: every key it will have.
        differences: if action == NicAction::Add {
            wanted(want)
        } else {
            differences_seen
        },
        status: Status::Pending,
        want: want.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_and_queues_are_read_from_the_interface_only() {
        let doc = "<domain><devices><interface type='bridge'><mtu size='9000'/><driver name='vhost' queues='4'><host csum='off'/></driver><rom><mtu size='1'/></rom></interface><interface type='user'/></devices></domain>";
        let nics = seen(doc).unwrap();
        assert_eq!((nics[0].mtu, nics[0].queues), (Some(9000), Some(4)));
        assert_eq!((nics[1].mtu, nics[1].queues), (None, None));
    }
}
