//! How many libvirt calls in flight pay off, on one connection or several (issue 11, latency
//! hiding), run by hand, never timed in CI:
//!
//! `cargo test --release --test it bench_inflight -- --ignored --nocapture`
//!
//! 500 shut-off VMs; through the delay proxy (10 ms each way) and locally, with 1, 2 and 4
//! connections and 4 to 128 threads spread over them: the time to read every persistent XML
//! and to define every VM again. libvirtd's per-client limit (`max_client_requests`, 5 by
//! default) caps how many of one connection's calls it works on at once; the rest wait in
//! the socket, so over a slow link they still overlap on the wire.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::bench::{domain_xml, reset};
use crate::common;
use crate::lab::delay_proxy::DelayProxy;
use crate::lab::Lab;
use vbridge::libvirt::{Conn, Dom};

/// Run `f` on every VM index with `threads` threads; thread `t` uses connection `t % conns`.
fn fan(threads: usize, n: usize, f: impl Fn(usize, usize) + Sync) -> f64 {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for th in 0..threads {
            let (next, f) = (&next, &f);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                f(th, i);
            });
        }
    });
    t.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
fn bench_inflight() {
    if !common::require_root("bench_inflight") {
        return;
    }
    let lab = Lab::start("infl");
    vbridge::libvirt::init();
    let conn = Conn::open(Some(lab.uri())).unwrap();
    let socket = lab.uri().split_once("socket=").unwrap().1.to_string();
    let proxy = DelayProxy::start(
        &lab.dir().join("p.sock"),
        std::path::Path::new(&socket),
        Duration::from_millis(10),
    );
    let slow = format!("qemu:///system?socket={}", proxy.path.display());
    let n = 500;
    let originals: Vec<(String, String)> = (0..n)
        .map(|i| {
            let name = format!("{}-f{i}", lab.id);
            (name.clone(), domain_xml(&name, i))
        })
        .collect();
    reset(&conn, &originals);
    // Defined again with their UUIDs, as libvirt formats them.
    let originals: Vec<(String, String)> = originals
        .iter()
        .map(|(n, _)| (n.clone(), conn.domain(n).unwrap().persistent_xml().unwrap()))
        .collect();
    let widths = [4usize, 8, 16, 32, 64, 128];
    println!("\nseconds for {n} VMs: read = XMLDesc of each, define = defineXML of each");
    print!("{:>6} {:>6} {:>7}", "link", "conns", "call");
    for w in widths {
        print!(" {:>7}", format!("{w}thr"));
    }
    println!();
    for (uri, link) in [(slow.as_str(), "proxy"), (lab.uri(), "local")] {
        for conns in [1usize, 2, 4] {
            let opened: Vec<(Conn, Vec<Dom>)> = (0..conns)
                .map(|_| {
                    let c = Conn::open(Some(uri)).unwrap();
                    let mut doms: Vec<Dom> = c
                        .domains()
                        .unwrap()
                        .into_iter()
                        .filter(|d| d.name().starts_with(&format!("{}-f", lab.id)))
                        .collect();
                    doms.sort_by_key(|d| d.name()[lab.id.len() + 2..].parse::<usize>().unwrap());
                    (c, doms)
                })
                .collect();
            for call in ["read", "define"] {
                print!("{link:>6} {conns:>6} {call:>7}");
                for w in widths {
                    let secs = fan(w, n, |th, i| match call {
                        "read" => drop(opened[th % conns].1[i].persistent_xml().unwrap()),
                        _ => drop(opened[th % conns].0.define_domain(&originals[i].1).unwrap()),
                    });
                    print!(" {secs:>7.3}");
                }
                println!();
            }
        }
    }
    for (name, _) in &originals {
        let _ = lab.virsh(&["undefine", name]);
    }
    drop(conn);
    drop(proxy);
    let trace = lab.trace();
    drop(lab);
    crate::lab::assert_nothing_left(&trace);
}
