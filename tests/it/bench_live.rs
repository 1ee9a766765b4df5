//! The live-move benchmark (issue 9: "a benchmark line for 20 running VMs moved in one
//! call"), run by hand, never timed in CI:
//!
//! `cargo test --release --test it bench_live_move -- --ignored --nocapture`
//!
//! It starts a lab, boots N small running VMs on a libvirt NAT network (firmware only, no
//! guest OS: a live move needs a running QEMU, not a guest that answers, so the check is
//! off) and times one `vbridge attach ... --live --no-verify` of all of them: with the 1 s
//! link flap, onto br0, then without a flap, onto a second bridge. A serial loop would hold
//! each link down in turn: N x the flap at least.

use std::time::{Duration, Instant};

use crate::common;
use crate::lab::Lab;
use vbridge::domxml;

fn domain_xml(name: &str, i: usize, network: &str, dtype: &str) -> String {
    format!(
        "<domain type='{dtype}'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <interface type='network'>
      <mac address='52:54:00:b1:{:02x}:{:02x}'/>
      <source network='{network}'/>
      <model type='virtio'/>
      <rom bar='off'/>
    </interface>
    <memballoon model='none'/>
  </devices>
</domain>
",
        i / 256,
        i % 256
    )
}

#[test]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
fn bench_live_move() {
    if !common::require_root("bench_live_move") {
        return;
    }
    let n: usize = std::env::var("VBRIDGE_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let lab = Lab::start("benchlive");
    let state = tempfile::tempdir().unwrap();
    let net = lab.define_nat_network("nat");
    lab.host.ip(&["link", "add", "br1", "type", "bridge"]);
    lab.host.ip(&["link", "set", "br1", "up"]);
    let names: Vec<String> = (0..n).map(|i| format!("{}-l{i}", lab.id)).collect();
    let t = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let file = lab.dir().join(format!("{name}.xml"));
        let dtype = crate::lab::guest::domain_type();
        std::fs::write(&file, domain_xml(name, i, &net, dtype)).unwrap();
        lab.virsh_ok(&["define", file.to_str().unwrap()]);
        lab.virsh_ok(&["start", name]);
    }
    eprintln!("{n} VMs defined and started in {:?}", t.elapsed());
    let bin = common::vbridge_bin();
    let on = |bridge: &str| {
        names.iter().all(|d| {
            let x = lab.virsh_ok(&["dumpxml", d]);
            let nic = &domxml::nics(&x).unwrap()[0];
            nic.kind == "bridge" && nic.source.get("bridge").map(String::as_str) == Some(bridge)
        })
    };
    let timed = |extra: &[&str]| -> Duration {
        let t = Instant::now();
        let out = lab.host.exec(
            "env",
            &[
                &format!("VBRIDGE_STATE_DIR={}", state.path().display()),
                bin.to_str().unwrap(),
                "-c",
                lab.uri(),
                "-q",
                "attach",
            ]
            .into_iter()
            .chain(names.iter().map(String::as_str))
            .chain(["--live", "--no-verify"])
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
        );
        let d = t.elapsed();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        d
    };
    let flap = timed(&[]);
    assert!(on("br0"), "not every VM is on br0");
    let plain = timed(&["--bridge", "br1", "--flap-ms", "0"]);
    assert!(on("br1"), "not every VM is on br1");
    println!(
        "\n{:>5} {:>22} {:>22} {:>24}",
        "VMs", "live move + 1 s flap", "live move, no flap", "serial flaps at least"
    );
    println!(
        "{n:>5} {:>20.3} s {:>20.3} s {:>22.1} s",
        flap.as_secs_f64(),
        plain.as_secs_f64(),
        n as f64
    );
    // A loop of virsh calls for comparison, without a flap: update-device per VM.
    let t = Instant::now();
    for d in &names {
        let x = lab.virsh_ok(&["dumpxml", d]);
        let n0 = domxml::nics(&x).unwrap().remove(0);
        let moved = domxml::live_move(
            &x[n0.span],
            &vbridge::validate::BridgeName::parse("br0").unwrap(),
            None,
        )
        .unwrap();
        let f = lab.dir().join("nic.xml");
        std::fs::write(&f, moved).unwrap();
        lab.virsh_ok(&["update-device", d, f.to_str().unwrap(), "--live"]);
    }
    println!(
        "virsh loop (dumpxml + update-device per VM, no flap): {:.3} s",
        t.elapsed().as_secs_f64()
    );
    let trace = lab.trace();
    drop(lab);
    crate::lab::assert_nothing_left(&trace);
}
