//! net-define, attach, undo and hotplug against a real libvirtd + QEMU in the lab.

use std::time::{Duration, Instant};

use crate::common;
use crate::lab::{self, GuestSpec, Lab, Nic};
use vbridge::domxml;

fn live(lab: &Lab, dom: &str) -> String {
    lab.virsh_ok(&["dumpxml", dom]).trim_end().to_string()
}

#[test]
fn lab_net_define_twice_and_attach_with_backup_and_undo() {
    if !common::require_root("lab_net_define_twice_and_attach_with_backup_and_undo") {
        return;
    }
    let lab = Lab::start("core");
    let state = tempfile::tempdir().unwrap();

    let (out, first) = lab.vbridge_json(state.path(), &["net-define"]);
    assert!(out.status.success(), "{first}");
    assert_eq!(first["changed"], true);
    assert_eq!(first["active"], true);
    assert_eq!(first["autostart"], true);
    assert_eq!(
        first["warnings"].as_array().unwrap().len(),
        0,
        "br0 exists in the lab: {first}"
    );
    let (_, second) = lab.vbridge_json(state.path(), &["net-define"]);
    assert_eq!(second["changed"], false, "{second}");
    assert_eq!(second["actions"].as_array().unwrap().len(), 0);
    let xml = lab.virsh_ok(&["net-dumpxml", "br0-network"]);
    assert!(
        xml.contains("<forward mode='bridge'/>") && xml.contains("<bridge name='br0'/>"),
        "{xml}"
    );

    // A bridge-mode network on a bridge that does not exist: libvirt says active, vbridge warns.
    let (_, ghost) = lab.vbridge_json(
        state.path(),
        &["net-define", "--name", "ghost-net", "--bridge", "nobr0"],
    );
    assert_eq!(ghost["active"], true);
    let w = ghost["warnings"].to_string();
    assert!(w.contains("nobr0 does not exist"), "{ghost}");
    // A NIC given instead of a bridge: said so, with the fix.
    let (_, nic) = lab.vbridge_json(
        state.path(),
        &[
            "net-define",
            "--name",
            "nic-net",
            "--bridge",
            "uplink0",
            "-n",
        ],
    );
    assert!(
        nic["warnings"]
            .to_string()
            .contains("uplink0 exists but is not a bridge"),
        "{nic}"
    );

    // A shut-off VM on a user-mode NIC (the e1000 an installer picks).
    let nic = "    <interface type='user'>\n      <mac address='52:54:00:77:00:01'/>\n      <model type='e1000'/>\n    </interface>\n";
    let dom = lab.define_guest(GuestSpec {
        running: false,
        ..GuestSpec::new("off", vec![Nic::Xml(nic.into())])
    });
    let original = lab.inactive_xml(&dom);
    let (out, r) = lab.vbridge_json(state.path(), &["attach", &dom]);
    assert!(out.status.success(), "{r}");
    let d = &r["domains"][0];
    assert_eq!(d["changed"], true, "{r}");
    let backup = d["backup"].as_str().expect("backup path");
    assert_eq!(
        std::fs::read_to_string(backup).unwrap().trim_end(),
        original
    );
    let now = lab.inactive_xml(&dom);
    let nics = domxml::nics(&now).unwrap();
    assert_eq!(nics.len(), 1, "{now}");
    assert!(nics[0].is_on_bridge("br0"), "{now}");
    assert_eq!(nics[0].mac.as_deref(), Some("52:54:00:77:00:01"));

    // Second run: unchanged. Undo: the exact definition from before.
    let (_, again) = lab.vbridge_json(state.path(), &["attach", &dom]);
    assert_eq!(again["domains"][0]["changed"], false, "{again}");
    let (out, u) = lab.vbridge_json(state.path(), &["undo", &dom]);
    assert!(out.status.success(), "{u}");
    assert_eq!(lab.inactive_xml(&dom), original);

    // The VM now starts on br0 for real once attached again.
    lab.vbridge_json(state.path(), &["attach", &dom]);
    lab.virsh_ok(&["start", &dom]);
    let ip = lab.wait_console(&dom, "LEASE ip=", Duration::from_secs(60));
    assert!(
        ip.is_some(),
        "no lease after attach; console:\n{}",
        lab.console(&dom)
    );
    lab::finish(lab, "core");
}

#[test]
fn lab_hotplug_into_running_vm_live_and_config_once() {
    if !common::require_root("lab_hotplug_into_running_vm_live_and_config_once") {
        return;
    }
    let lab = Lab::start("hot");
    let state = tempfile::tempdir().unwrap();
    let dom = lab.define_guest(GuestSpec::new("hp", vec![]));
    // The guest is up when its /init waits for eth0.
    let t = Instant::now();
    let (out, r) = lab.vbridge_json(state.path(), &["attach", &dom, "--hotplug"]);
    let call = t.elapsed();
    assert!(out.status.success(), "{r}");
    let mac = r["domains"][0]["interfaces"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(mac.starts_with("52:54:00:"));

    let live_nics = domxml::nics(&live(&lab, &dom)).unwrap();
    let conf_nics = domxml::nics(&lab.inactive_xml(&dom)).unwrap();
    assert_eq!(live_nics.len(), 1);
    assert_eq!(conf_nics.len(), 1);
    assert_eq!(live_nics[0].mac.as_deref(), Some(mac.as_str()));
    assert_eq!(conf_nics[0].mac.as_deref(), Some(mac.as_str()));
    assert!(live_nics[0].is_on_bridge("br0") && conf_nics[0].is_on_bridge("br0"));
    let tap = live_nics[0]
        .target_dev
        .clone()
        .expect("a tap in the live XML");
    assert!(
        lab.bridge_ports().contains(&tap),
        "{tap} not on br0: {:?}",
        lab.bridge_ports()
    );

    let ip = lab.wait_console(&dom, "LEASE ip=", Duration::from_secs(30));
    eprintln!(
        "hotplug: call {call:?}, lease {:?} after the call ({ip:?})",
        t.elapsed()
    );
    assert!(
        ip.is_some(),
        "no lease on the hot-plugged NIC; console:\n{}",
        lab.console(&dom)
    );

    // A second run adds nothing.
    let (_, again) = lab.vbridge_json(state.path(), &["attach", &dom, "--hotplug"]);
    assert_eq!(again["domains"][0]["changed"], false, "{again}");
    assert_eq!(domxml::nics(&live(&lab, &dom)).unwrap().len(), 1);
    assert_eq!(domxml::nics(&lab.inactive_xml(&dom)).unwrap().len(), 1);

    // detach takes it out of the config at once (the live unplug needs the guest's ACPI ack).
    let (out, d) = lab.vbridge_json(state.path(), &["detach", &dom, "--mac", &mac]);
    assert!(out.status.success(), "{d}");
    assert_eq!(domxml::nics(&lab.inactive_xml(&dom)).unwrap().len(), 0);
    lab::finish(lab, "core");
}

#[test]
fn lab_hotplug_refused_without_acpi_changes_nothing() {
    if !common::require_root("lab_hotplug_refused_without_acpi_changes_nothing") {
        return;
    }
    let lab = Lab::start("noacpi");
    let state = tempfile::tempdir().unwrap();
    let dom = lab.define_guest(GuestSpec {
        acpi: false,
        ..GuestSpec::new("na", vec![])
    });
    let (before_live, before_conf) = (live(&lab, &dom), lab.inactive_xml(&dom));
    let (out, r) = lab.vbridge_json(state.path(), &["attach", &dom, "--hotplug"]);
    assert_eq!(out.status.code(), Some(1), "{r}");
    let msg = r["domains"][0]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(msg.contains("without <acpi/>"), "{r}");
    assert_eq!(live(&lab, &dom), before_live);
    assert_eq!(lab.inactive_xml(&dom), before_conf);

    // Shut off, the same command adds the NIC to the config only.
    lab.virsh_ok(&["destroy", &dom]);
    let (out, r) = lab.vbridge_json(state.path(), &["attach", &dom, "--hotplug"]);
    assert!(out.status.success(), "{r}");
    let conf = domxml::nics(&lab.inactive_xml(&dom)).unwrap();
    assert_eq!(conf.len(), 1);
    assert!(conf[0].is_on_bridge("br0"));
    lab::finish(lab, "core");
}

/// q35: a hot-plugged NIC needs a free pcie-root-port. The first NIC takes the free one,
/// the second is refused before libvirt is called, and nothing changes.
#[test]
fn lab_hotplug_on_q35_until_no_root_port_is_free() {
    if !common::require_root("lab_hotplug_on_q35_until_no_root_port_is_free") {
        return;
    }
    let lab = Lab::start("q35");
    let state = tempfile::tempdir().unwrap();
    let dom = lab.define_guest(GuestSpec {
        machine: "q35".into(),
        ..GuestSpec::new("q", vec![])
    });
    let free = domxml::facts(&live(&lab, &dom))
        .unwrap()
        .free_pcie_root_ports;
    assert!(free >= 1, "the test needs one free root port");
    for i in 0..free {
        let mac = format!("52:54:00:35:00:{i:02x}");
        let (out, r) =
            lab.vbridge_json(state.path(), &["attach", &dom, "--hotplug", "--mac", &mac]);
        assert!(out.status.success(), "{r}");
    }
    assert_eq!(
        domxml::facts(&live(&lab, &dom))
            .unwrap()
            .free_pcie_root_ports,
        0
    );
    let before = (live(&lab, &dom), lab.inactive_xml(&dom));
    let (out, r) = lab.vbridge_json(
        state.path(),
        &["attach", &dom, "--hotplug", "--mac", "52:54:00:35:01:00"],
    );
    assert_eq!(out.status.code(), Some(1), "{r}");
    let msg = r["domains"][0]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(msg.contains("pcie-root-port"), "{r}");
    assert_eq!((live(&lab, &dom), lab.inactive_xml(&dom)), before);
    lab::finish(lab, "core");
}
