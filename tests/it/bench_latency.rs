//! The latency benchmark (issue 11, "latency hiding"), run by hand, never timed in CI:
//!
//! `cargo test --release --test it bench_latency -- --ignored --nocapture`
//!
//! Through a proxy that delays each chunk 10 ms each way in front of the lab's libvirtd (100
//! and 500 shut-off VMs) and locally (200): the python3-libvirt floor (lookup + XMLDesc +
//! defineXML per VM) sequential, with 8 and with 32 threads, against `vbridge attach` of all
//! VMs; and the read floor (one listAllDomains, then every VM's XML with 32 threads) against
//! `vbridge plan` (reads only) of a file naming them all. Through the proxy it also counts
//! the libvirt calls each made, per VM (connecting included).

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
        "\n{:>5} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} | {:>7} {:>7} {:>8} | {:>6} {:>6} {:>6}",
        "VMs",
        "link",
        "seq s",
        "8thr s",
        "32thr s",
        "vb s",
        "vb/32thr",
        "seq/vb",
        "vb/8thr",
        "read32",
        "plan s",
        "plan/rd",
        "c/VM 32",
        "vb",
        "plan"
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
        // Seconds, and libvirt calls per VM through the proxy.
        let timed = |cmd: &mut Command, check: bool| -> (f64, f64) {
            reset(&conn, &originals);
            let calls = proxy.calls();
            let t = Instant::now();
            let out = cmd.output().unwrap();
            let d = t.elapsed().as_secs_f64();
            let calls = (proxy.calls() - calls) as f64 / n as f64;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            if check {
                assert!(all_on_bridge(&conn, &originals));
            }
            (d, calls)
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
        let (seq, _) = timed(
            Command::new("/usr/bin/python3")
                .arg(format!("{root}/bench/floor.py"))
                .args([uri.as_str(), "br0"])
                .args(&names),
            true,
        );
        let ((t8, _), (t32, c32)) = (floor(8), floor(32));
        let (vb, cvb) = timed(
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
        let (read32, _) = timed(
            Command::new("/usr/bin/python3")
                .arg(format!("{root}/bench/floor_read.py"))
                .args(["32", uri.as_str()])
                .args(&names),
            false,
        );
        let (plan, cplan) = timed(
            Command::new(&bin)
                .args(["-c", uri.as_str(), "-q", "plan"])
                .arg(&file),
            false,
        );
        let calls = |c: f64| {
            if link == "proxy" {
                format!("{c:.2}")
            } else {
                "-".into()
            }
        };
        println!(
            "{n:>5} {link:>6} {seq:>7.3} {t8:>7.3} {t32:>7.3} {vb:>7.3} {:>8.2} {:>7.1} {:>7.2} | {read32:>7.3} {plan:>7.3} {:>8.2} | {:>6} {:>6} {:>6}",
            vb / t32,
            seq / vb,
            vb / t8,
            plan / read32,
            calls(c32),
            calls(cvb),
            calls(cplan)
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
