//! The latency benchmark (issue 11, "latency hiding"), run by hand, never timed in CI:
//!
//! `cargo test --release --test it bench_latency -- --ignored --nocapture`
//!
//! Through a proxy that delays each chunk 10 ms each way in front of the lab's libvirtd (100
//! and 500 shut-off VMs) and locally (200): the python3-libvirt floor (lookup + XMLDesc +
//! defineXML per VM) sequential, with 8 and with 32 threads, against `vbridge attach` of all
//! VMs and `vbridge plan` (reads only) of a file naming them all.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::bench::{all_on_bridge, domain_xml, reset};
use crate::common;
use crate::lab::delay_proxy::DelayProxy;
use crate::lab::Lab;
use vbridge::libvirt::Conn;

#[test]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
fn bench_latency() {
    if !common::require_root("bench_latency") {
        return;
    }
    let lab = Lab::start("lat");
    vbridge::libvirt::init();
    let conn = Conn::open(Some(lab.uri())).unwrap();
    let socket = lab.uri().split_once("socket=").unwrap().1.to_string();
    let proxy = DelayProxy::start(
        &lab.dir().join("p.sock"),
        std::path::Path::new(&socket),
        Duration::from_millis(10),
    );
    let slow = format!("qemu:///system?socket={}", proxy.path.display());
    let root = env!("CARGO_MANIFEST_DIR");
    let state = tempfile::tempdir().unwrap();
    let bin = common::vbridge_bin();
    println!(
        "\n{:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}",
        "VMs",
        "link",
        "seq s",
        "8thr s",
        "32thr s",
        "vbridge",
        "plan s",
        "vb/32thr",
        "seq/vb",
        "vb/8thr"
    );
    for (n, uri, link) in [
        (100usize, &slow, "proxy"),
        (500, &slow, "proxy"),
        (200, &lab.uri().to_string(), "local"),
    ] {
        let originals: Vec<(String, String)> = (0..n)
            .map(|i| {
                let name = format!("{}-l{n}-{i}", lab.id);
                let xml = domain_xml(&name, i);
                (name, xml)
            })
            .collect();
        reset(&conn, &originals);
        let originals: Vec<(String, String)> = originals
            .iter()
            .map(|(n, _)| (n.clone(), conn.domain(n).unwrap().persistent_xml().unwrap()))
            .collect();
        let names: Vec<&str> = originals.iter().map(|(n, _)| n.as_str()).collect();
        let timed = |cmd: &mut Command, check: bool| -> f64 {
            reset(&conn, &originals);
            let t = Instant::now();
            let out = cmd.output().unwrap();
            let d = t.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            if check {
                assert!(all_on_bridge(&conn, &originals));
            }
            d
        };
        let floor = |threads: usize| {
            timed(
                Command::new("/usr/bin/python3")
                    .arg(format!("{root}/bench/floor_threads.py"))
                    .arg(threads.to_string())
                    .args([uri.as_str(), "br0"])
                    .args(&names),
                true,
            )
        };
        let seq = timed(
            Command::new("/usr/bin/python3")
                .arg(format!("{root}/bench/floor.py"))
                .args([uri.as_str(), "br0"])
                .args(&names),
            true,
        );
        let (t8, t32) = (floor(8), floor(32));
        let vb = timed(
            Command::new(&bin)
                .args(["-c", uri.as_str(), "-q", "attach"])
                .args(&names)
                .env("VBRIDGE_STATE_DIR", state.path()),
            true,
        );
        let file = state.path().join(format!("plan{n}.yml"));
        let mut yaml = "hosts:\n  - vms:\n".to_string();
        for (i, name) in names.iter().enumerate() {
            yaml.push_str(&format!(
                "      {name}:\n        nics: [{{mac: \"52:54:00:be:{:02x}:{:02x}\", bridge: br0, mode: persistent}}]\n",
                i / 256,
                i % 256
            ));
        }
        std::fs::write(&file, yaml).unwrap();
        let plan = timed(
            Command::new(&bin)
                .args(["-c", uri.as_str(), "-q", "plan"])
                .arg(&file),
            false,
        );
        println!(
            "{n:>5} {link:>6} {seq:>9.3} {t8:>9.3} {t32:>9.3} {vb:>9.3} {plan:>9.3} {:>10.2} {:>10.1} {:>9.2}",
            vb / t32,
            seq / vb,
            vb / t8
        );
        for (name, _) in &originals {
            let _ = lab.virsh(&["undefine", name]);
        }
    }
    drop(conn);
    drop(proxy);
    let trace = lab.trace();
    drop(lab);
    crate::lab::assert_nothing_left(&trace);
}
