//! `vbridge attach --live`: move a running VM's NIC onto the bridge now, without a
//! power-off. The persistent rewrite is planned as always; this adds the running NIC's move
//! (`virDomainUpdateDeviceFlags(LIVE)`: same MAC, alias and PCI address, new source), a link
//! flap so the guest asks DHCP again, and after it a check that a LAN address answers. When
//! none does in time, the plan's inverses put the NIC back where it was and the definition
//! back as it was: a VM is never left stranded off its network.

use crate::domxml::{self, Link, NicOptions, Rewritten, Target};
use crate::edit::{DomainApplier, DomainStep};
use crate::error::{Error, Result};
use crate::libvirt::Dom;
use crate::plan::{Applier, Step};
use crate::report::{DomainResult, LiveMove, LiveReport, VerifiedNic};
use crate::validate::Mac;
use std::time::{Duration, Instant};

/// How long a moved NIC's link is held down by default: long enough for any DHCP client
/// that watches the carrier (NetworkManager, systemd-networkd, dhclient) to see it go.
pub const DEFAULT_FLAP: Duration = Duration::from_millis(1000);
/// How long a moved NIC gets by default to show a LAN address that answers.
pub const DEFAULT_VERIFY_WITHIN: Duration = Duration::from_secs(20);
/// Domains moved at once: the work is mostly waiting (link held down, guest asked for an
/// address), so many can overlap on one connection.
pub const MOVERS: usize = 32;

/// What `--live` adds to an attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveOptions {
    /// How long a moved NIC's link stays down; zero moves it without a flap.
    pub flap: Duration,
    /// How long a moved NIC has to show a LAN address that answers before everything is
    /// put back; None moves without checking (`--no-verify`).
    pub verify_within: Option<Duration>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            flap: DEFAULT_FLAP,
            verify_within: Some(DEFAULT_VERIFY_WITHIN),
        }
    }
}

/// What tells whether a moved NIC reaches the LAN: given the domain, the NIC's MAC and the
/// time allowed, the LAN address that answered, or in plain words why none did. `verify`
/// is a command of its own, so the caller (the CLI, or a program using the library) hands
/// its check in: commands do not import each other.
pub type Confirm<'a> =
    &'a (dyn Fn(&str, &Mac, Duration) -> std::result::Result<String, String> + Sync);

/// The running VM's part of an attach: the steps after the persistent rewrite, the NICs to
/// verify once they ran, and what the report says.
#[derive(Debug, Default)]
pub(super) struct LivePlan {
    pub steps: Vec<DomainStep>,
    pub verify: Vec<Mac>,
    pub report: LiveReport,
    pub notes: Vec<String>,
}

/// Plan the live move of the NICs the persistent rewrite selected, from the live XML. Pure.
/// Refuses, before anything changes, a NIC libvirt cannot move while the VM runs.
pub(super) fn plan(
    domain: &str,
    live_xml: &str,
    rewritten: &Rewritten,
    target: &Target,
    options: &NicOptions,
    live: &LiveOptions,
) -> Result<LivePlan> {
    let mut p = LivePlan {
        report: LiveReport {
            flap_ms: live.flap.as_millis() as u64,
            ..LiveReport::default()
        },
        ..LivePlan::default()
    };
    let mut downs = Vec::new();
    let mut ups = Vec::new();
    for c in &rewritten.changes {
        let Some(mac) = c.mac.as_deref() else {
            continue;
        };
        let Some((now, element)) = domxml::element_by_mac(live_xml, mac)? else {
            if c.changed {
                p.notes.push(format!(
                    "NIC {mac} is in {domain}'s definition but not in the running VM: the change takes effect at its next start"
                ));
            }
            continue;
        };
        let (kind, attr, place) = match target {
            Target::Bridge(b) => ("bridge", "bridge", b.as_str()),
            Target::Network(n) => ("network", "network", n.as_str()),
            Target::Direct { dev, mode } => {
                let there = now.kind == "direct"
                    && now.source.get("dev").map(String::as_str) == Some(dev.as_str())
                    && now.source.get("mode").map_or("vepa", String::as_str) == mode.as_str();
                if there {
                    continue;
                }
                return Err(Error::unsupported(format!(
                    "{domain}'s NIC {mac} is {} in the running VM: libvirt cannot turn a running NIC into a macvtap NIC",
                    domxml::describe_source(&now)
                ))
                .with_hint(format!(
                    "run `vbridge attach {domain} --direct {dev}` without --live, then power-cycle the VM (virsh shutdown, then start)"
                )));
            }
        };
        if c.after.model != now.model {
            p.notes.push(format!(
                "NIC {mac} stays model {} in the running VM: {} takes effect after a full power-off (libvirt cannot change a running NIC's model)",
                now.model.as_deref().unwrap_or("default"),
                c.after.model.as_deref().unwrap_or("the default")
            ));
        }
        let unchangeable = [
            (options.mtu.map(|m| m.get()), now.mtu, "MTU"),
            (options.queues.map(|q| q.get()), now.queues, "queue count"),
        ];
        for (asked, have, what) in unchangeable {
            if let Some(asked) = asked.filter(|a| Some(*a) != have) {
                p.notes.push(format!(
                    "NIC {mac} keeps its {what} ({}) in the running VM: {asked} takes effect after a full power-off (libvirt cannot change a running NIC's {what})",
                    have.map_or("default".to_string(), |h| h.to_string())
                ));
            }
        }
        // Already there live: idempotent. (A NIC of a bridge-mode network shows in the live
        // XML as type='bridge' naming the network: the network is what counts.)
        let there = match target {
            Target::Network(_) => now.source.get("network").map(String::as_str) == Some(place),
            _ => now.kind == kind && now.source.get(attr).map(String::as_str) == Some(place),
        };
        if there {
            continue;
        }
        if !matches!(now.kind.as_str(), "network" | "bridge") {
            let (what, add) = match target {
                Target::Network(_) => ("a libvirt network", format!(" --network {place}")),
                _ => ("another bridge", String::new()),
            };
            return Err(Error::unsupported(format!(
                "{domain}'s NIC {mac} is type '{}' in the running VM: libvirt can move only a network or bridge NIC to {what} while the VM runs",
                now.kind
            ))
            .with_hint(format!(
                "add a NIC on {place} now with `vbridge attach {domain} --hotplug{add}`, or run `vbridge attach {domain}` without --live and power-cycle the VM"
            )));
        }
        let before = domxml::live_restore(&element)?;
        let flap = !live.flap.is_zero();
        let moved = domxml::live_move_to(&element, target, flap.then_some(Link::Down))?;
        if flap {
            ups.push(DomainStep::UpdateDevice {
                domain: domain.to_string(),
                before: moved.clone(),
                after: domxml::live_link(&moved, Link::Up)?,
            });
        }
        downs.push(DomainStep::UpdateDevice {
            domain: domain.to_string(),
            before,
            after: moved,
        });
        p.report.moved.push(LiveMove {
            mac: mac.to_string(),
            from: domxml::describe_source(&now),
            to: target.describe(),
        });
        if live.verify_within.is_some() {
            p.verify.push(Mac::parse(mac)?);
        }
    }
    p.steps.extend(downs);
    if !ups.is_empty() {
        // One pause for all of the domain's NICs: their links are down together.
        p.steps.push(DomainStep::Wait {
            domain: domain.to_string(),
            ms: p.report.flap_ms,
        });
        p.steps.extend(ups);
    }
    Ok(p)
}

/// After the plan ran: ask `confirm` for each moved NIC; when one has no LAN address that
/// answers within `within`, run the plan's inverses (the moves back, with a flap, and the
/// old definition) and fail the domain saying why. `defined` is the definition libvirt
/// holds after the plan, so the way back checks nobody else edited it meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) fn confirm_or_revert(
    dom: &Dom,
    by: &mut DomainApplier,
    steps: &[DomainStep],
    verify: &[Mac],
    within: Duration,
    confirm: Confirm,
    started: Instant,
    mut result: DomainResult,
) -> DomainResult {
    let defined = dom.persistent_xml().ok();
    let answers: Vec<std::result::Result<String, String>> = std::thread::scope(|s| {
        let asks: Vec<_> = verify
            .iter()
            .map(|mac| s.spawn(move || confirm(dom.name(), mac, within)))
            .collect();
        asks.into_iter()
            .map(|a| {
                a.join()
                    .unwrap_or_else(|_| Err("the check panicked".into()))
            })
            .collect()
    });
    let mut failed = Vec::new();
    let live = result.live.get_or_insert_with(LiveReport::default);
    for (mac, answer) in verify.iter().zip(answers) {
        match answer {
            Ok(ip) => live.verified.push(VerifiedNic {
                mac: mac.to_string(),
                ip,
            }),
            Err(why) => failed.push(format!("NIC {mac}: {why}")),
        }
    }
    if failed.is_empty() {
        live.seconds = Some(started.elapsed().as_secs_f64());
        return result;
    }
    // The way back: every inverse, last first; the definition's check compares with what
    // libvirt made of ours, not with our text.
    let undo: Vec<DomainStep> = steps
        .iter()
        .rev()
        .filter_map(Step::inverse)
        .map(|s| match s {
            DomainStep::Define {
                domain,
                before: Some(_),
                after,
                keep,
            } if defined.is_some() => DomainStep::Define {
                domain,
                before: defined.clone(),
                after,
                keep,
            },
            s => s,
        })
        .collect();
    let problems: Vec<String> = undo
        .iter()
        .filter_map(|s| by.apply_step(s).err().map(|e| e.message))
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let name = dom.name().to_string();
    let back: Vec<String> = live
        .moved
        .iter()
        .map(|m| format!("{} back on {}", m.mac, m.from))
        .collect();
    let mut e = Error::conflict(format!(
        "no LAN address answered within {:.0} s ({}); ",
        within.as_secs_f64(),
        failed.join("; ")
    ));
    if problems.is_empty() {
        by.discard_backup();
        e.message.push_str(&format!(
            "moved back: {}, and the definition restored",
            back.join(", ")
        ));
        e = e.with_hint(format!(
            "find the broken link with `vbridge doctor {name}` (bridge uplink, the LAN's DHCP), then retry; --verify-within S waits longer, --no-verify keeps the move unchecked"
        ));
    } else {
        e.message.push_str(&format!(
            "putting it back did not fully work: {}",
            problems.join("; ")
        ));
        e = e.with_hint(format!(
            "check {name} with `virsh domiflist {name}` and `vbridge doctor {name}`; `vbridge undo {name}` restores the definition"
        ));
    }
    let mut failed = DomainResult::failed(&result.domain, e);
    let mut live = result.live.take().unwrap_or_default();
    live.reverted = problems.is_empty();
    live.seconds = Some(seconds);
    failed.interfaces = result.interfaces;
    failed.notes = result.notes;
    failed.live = Some(live);
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domxml::Selection;
    use crate::validate::{BridgeName, DirectMode, Mtu};

    const PERSISTENT: &str = "<domain type='kvm'>\n  <name>web</name>\n  <vcpu>2</vcpu>\n  <devices>\n    <interface type='network'>\n      <mac address='52:54:00:00:00:01'/>\n      <source network='default'/>\n      <model type='virtio'/>\n    </interface>\n    <interface type='user'>\n      <mac address='52:54:00:00:00:02'/>\n      <model type='e1000'/>\n    </interface>\n  </devices>\n</domain>\n";
    const LIVE: &str = "<domain type='kvm' id='3'>\n  <name>web</name>\n  <devices>\n    <interface type='network'>\n      <mac address='52:54:00:00:00:01'/>\n      <source network='default' portid='11' bridge='virbr0'/>\n      <target dev='vnet0'/>\n      <model type='virtio'/>\n      <alias name='net0'/>\n    </interface>\n    <interface type='user'>\n      <mac address='52:54:00:00:00:02'/>\n      <model type='e1000'/>\n      <alias name='net1'/>\n    </interface>\n  </devices>\n</domain>\n";

    fn br0() -> Target {
        Target::Bridge(BridgeName::parse("br0").unwrap())
    }

    fn planned(xml: &str, live_xml: &str, sel: Selection, opts: LiveOptions) -> Result<LivePlan> {
        let rw = domxml::rewrite_nics(xml, &br0(), &sel, &NicOptions::default())?;
        plan("web", live_xml, &rw, &br0(), &NicOptions::default(), &opts)
    }

    #[test]
    fn a_network_nic_moves_with_a_flap_and_is_verified() {
        let p = planned(
            PERSISTENT,
            LIVE,
            Selection::Index(1),
            LiveOptions::default(),
        )
        .unwrap();
        let d: Vec<String> = p.steps.iter().map(Step::describe).collect();
        assert_eq!(
            d,
            [
                "move web's NIC 52:54:00:00:00:01 from network default to bridge br0, link down (live)",
                "hold web's NIC link down for 1000 ms",
                "set web's NIC 52:54:00:00:00:01 link up (live)",
            ]
        );
        // The way back names the network only: libvirt gives it a new port.
        let DomainStep::UpdateDevice { before, .. } = &p.steps[0] else {
            panic!()
        };
        assert!(before.contains("<source network='default'/>"), "{before}");
        assert!(before.contains("<alias name='net0'/>"));
        assert_eq!(p.verify, [Mac::parse("52:54:00:00:00:01").unwrap()]);
        assert_eq!(p.report.moved[0].from, "network default");
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }

    #[test]
    fn without_a_flap_or_a_check_it_is_one_update() {
        let opts = LiveOptions {
            flap: Duration::ZERO,
            verify_within: None,
        };
        let p = planned(PERSISTENT, LIVE, Selection::Index(1), opts).unwrap();
        assert_eq!(p.steps.len(), 1);
        assert!(p.verify.is_empty());
        let DomainStep::UpdateDevice { after, .. } = &p.steps[0] else {
            panic!()
        };
        assert!(!after.contains("<link"), "{after}");
    }

    #[test]
    fn a_user_nic_is_refused_before_anything_changes() {
        let e = planned(
            PERSISTENT,
            LIVE,
            Selection::Index(2),
            LiveOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Unsupported);
        assert!(
            e.message.contains("type 'user' in the running VM"),
            "{}",
            e.message
        );
        assert!(e.hint.unwrap().contains("--hotplug"));
    }

    #[test]
    fn a_nic_already_on_the_bridge_live_stays() {
        let live = LIVE.replace(
            "type='network'>\n      <mac address='52:54:00:00:00:01'/>\n      <source network='default' portid='11' bridge='virbr0'/>",
            "type='bridge'>\n      <mac address='52:54:00:00:00:01'/>\n      <source bridge='br0'/>",
        );
        let p = planned(
            PERSISTENT,
            &live,
            Selection::Index(1),
            LiveOptions::default(),
        )
        .unwrap();
        assert!(p.steps.is_empty() && p.report.moved.is_empty() && p.verify.is_empty());
    }

    #[test]
    fn what_libvirt_cannot_change_live_is_a_note() {
        let xml = PERSISTENT.replace(
            "<model type='virtio'/>\n    </interface>\n    <interface type='user'>",
            "<model type='e1000'/>\n    </interface>\n    <interface type='user'>",
        );
        let live = LIVE.replace(
            "<model type='virtio'/>\n      <alias name='net0'/>",
            "<model type='e1000'/>\n      <alias name='net0'/>",
        );
        let o = NicOptions {
            mtu: Some(Mtu::new(9000).unwrap()),
            queues: None,
        };
        let rw = domxml::rewrite_nics(&xml, &br0(), &Selection::Index(1), &o).unwrap();
        let p = plan("web", &live, &rw, &br0(), &o, &LiveOptions::default()).unwrap();
        assert_eq!(p.report.moved.len(), 1);
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        assert!(p.notes[0].contains("stays model e1000"), "{:?}", p.notes);
        assert!(
            p.notes[1].contains("9000 takes effect after a full power-off"),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn a_nic_only_in_the_definition_waits_for_the_next_start() {
        let live = LIVE.replace("52:54:00:00:00:01", "52:54:00:00:00:09");
        let p = planned(
            PERSISTENT,
            &live,
            Selection::Index(1),
            LiveOptions::default(),
        )
        .unwrap();
        assert!(p.steps.is_empty());
        assert!(
            p.notes[0].contains("not in the running VM"),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn a_running_nic_cannot_become_macvtap() {
        let t = Target::Direct {
            dev: BridgeName::parse("eth1").unwrap(),
            mode: DirectMode::Bridge,
        };
        let rw = domxml::rewrite_nics(PERSISTENT, &t, &Selection::Index(1), &NicOptions::default())
            .unwrap();
        let e = plan(
            "web",
            LIVE,
            &rw,
            &t,
            &NicOptions::default(),
            &LiveOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("cannot turn a running NIC into a macvtap"),
            "{}",
            e.message
        );
    }

    #[test]
    fn several_nics_share_one_pause() {
        let two = PERSISTENT.replace(
            "<interface type='user'>\n      <mac address='52:54:00:00:00:02'/>\n      <model type='e1000'/>",
            "<interface type='network'>\n      <mac address='52:54:00:00:00:02'/>\n      <source network='default'/>\n      <model type='virtio'/>",
        );
        let live = LIVE.replace(
            "<interface type='user'>\n      <mac address='52:54:00:00:00:02'/>\n      <model type='e1000'/>",
            "<interface type='network'>\n      <mac address='52:54:00:00:00:02'/>\n      <source network='default'/>\n      <model type='virtio'/>",
        );
        let p = planned(&two, &live, Selection::All, LiveOptions::default()).unwrap();
        let kinds: Vec<&str> = p
            .steps
            .iter()
            .map(|s| match s {
                DomainStep::Wait { .. } => "wait",
                _ => "update",
            })
            .collect();
        assert_eq!(kinds, ["update", "update", "wait", "update", "update"]);
        assert_eq!(p.verify.len(), 2);
    }
}
