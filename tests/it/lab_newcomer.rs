//! What a newcomer's host looks like, for real in the lab: a libvirtd whose network driver is
//! not installed (started with LIBVIRT_DRIVER_DIR pointing at the system's drivers minus
//! `libvirt_driver_network.so`, so every network call gets libvirt's own "this function is
//! not supported by the connection driver"). doctor reports it and goes on; net-define and
//! attach say it in one line.

use crate::common;
use crate::lab::{self, GuestSpec, Lab, Nic};

#[test]
fn lab_without_the_network_driver_doctor_goes_on_and_commands_say_why() {
    if !common::require_root("lab_without_the_network_driver_doctor_goes_on_and_commands_say_why") {
        return;
    }
    let lab = Lab::start_without("nonet", &["network"]);
    // The fault is libvirt's own, not a fake: virsh gets the same answer.
    let list = lab.virsh(&["net-list", "--all"]);
    let said = String::from_utf8_lossy(&list.stderr).into_owned();
    assert!(
        !list.status.success() && said.contains("not supported by the connection driver"),
        "the daemon still has a network driver: {said}"
    );
    let bridged = lab.define_guest(GuestSpec::new("b", vec![Nic::bridge(lab.bridge)]));
    let natted = lab.define_guest(GuestSpec {
        running: false,
        ..GuestSpec::new("n", vec![Nic::network("default")])
    });

    // doctor: the finding, an error (a VM has a type='network' NIC), and the domain and host
    // checks still ran: the running VM's path reaches its tap and br0's uplink.
    let state = tempfile::tempdir().unwrap();
    let (out, r) = lab.vbridge_json(state.path(), &["doctor"]);
    assert_eq!(out.status.code(), Some(1), "{r}");
    let findings = r["findings"].as_array().expect("findings, not an error");
    let f = findings
        .iter()
        .find(|f| f["id"] == "network-driver-unavailable")
        .unwrap_or_else(|| panic!("no network-driver-unavailable: {r}"));
    assert_eq!(f["severity"], "error", "{f}");
    assert!(
        f["message"].as_str().unwrap().contains(&natted)
            && f["fix"].as_str().unwrap().contains("virtnetworkd"),
        "{f}"
    );
    assert!(
        !findings.iter().any(|f| f["id"] == "network-missing"),
        "{r}"
    );
    let path = r["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["domain"] == bridged.as_str())
        .unwrap_or_else(|| panic!("no path of {bridged}: {r}"));
    let marks: Vec<(&str, &str)> = path["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["kind"].as_str().unwrap(), h["mark"].as_str().unwrap()))
        .collect();
    assert_eq!(
        &marks[..4],
        [
            ("nic", "ok"),
            ("tap", "ok"),
            ("bridge", "ok"),
            ("uplink", "ok")
        ],
        "{path}"
    );

    // net-define: one line saying what is missing, the fix as the hint.
    let out = lab.vbridge(&["net-define", "--name", "lan", "--bridge", lab.bridge]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.contains("network driver is not available"), "{err}");
    assert!(err.contains("libvirt-daemon-driver-network"), "{err}");

    // attach of the type='network' NIC onto br0: planned as usual, with the same one line.
    let (out, r) = lab.vbridge_json(state.path(), &["--dry-run", "attach", &natted]);
    assert!(out.status.success(), "{r}");
    let notes = r["domains"][0]["notes"].to_string();
    assert!(
        notes.contains("network driver is not available") && notes.contains("virtnetworkd"),
        "{r}"
    );
    let trace = lab.trace();
    drop(lab);
    lab::assert_nothing_left(&trace);
}
