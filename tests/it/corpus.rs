//! Rewrites every domain of virt-manager's test corpus (../shared/corpus/virt-manager) and
//! checks the result: lossless outside the changed interfaces, MACs kept, each changed NIC
//! a virtio NIC on br0, and libvirt's test driver accepts the document.

use crate::common;
use std::path::{Path, PathBuf};
use vbridge::domxml::{self, Nic, Rewritten, Selection};
use vbridge::validate::BridgeName;
use vbridge::ErrorKind;

const BRIDGE: &str = "br0";

fn corpus_dir() -> PathBuf {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/corpus/virt-manager"
    ));
    assert!(
        dir.is_dir(),
        "the domain XML corpus is missing: expected {} (CI checks out shared/ beside the \
         repository; locally, put the shared folder next to the checkout)",
        dir.display()
    );
    dir.to_path_buf()
}

fn convertible(nic: &Nic) -> bool {
    matches!(
        nic.kind.as_str(),
        "network" | "bridge" | "user" | "direct" | "ethernet"
    )
}

/// Lossless outside the changed spans, every MAC kept, every changed NIC on the bridge.
fn check(file: &str, input: &str, r: &Rewritten) {
    let before = domxml::nics(input).unwrap();
    let after = domxml::nics(&r.xml).unwrap_or_else(|e| panic!("{file}: output unreadable: {e}"));
    assert_eq!(before.len(), after.len(), "{file}: NIC count changed");
    common::assert_same_outside_changes(file, input, r);
    common::assert_children_kept(file, input, r);
    let changed: Vec<_> = r.changes.iter().filter(|c| c.changed).collect();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.mac, a.mac, "{file}: MAC of interface {} changed", b.index);
    }
    for c in &changed {
        let a = &after[c.index - 1];
        assert_eq!(
            a, &c.after,
            "{file}: reported `after` differs from the document"
        );
        assert_eq!(a.kind, "bridge", "{file}: interface {}", c.index);
        assert_eq!(
            a.source.len(),
            1,
            "{file}: stale source attributes {:?}",
            a.source
        );
        common::assert_no_blank_line_gained(file, input, r, c);
        assert!(
            a.is_on_bridge(BRIDGE),
            "{file}: interface {} not on {BRIDGE}",
            c.index
        );
    }
}

struct Libvirt(virt::connect::Connect);

impl Libvirt {
    fn open() -> Libvirt {
        virt::error::clear_error_callback();
        Libvirt(
            virt::connect::Connect::open(Some("test:///default")).expect("open test:///default"),
        )
    }

    /// A test driver of its own (an empty node file gives fresh state per connection), so
    /// two tests defining the same corpus names at once cannot collide.
    fn private() -> Libvirt {
        virt::error::clear_error_callback();
        let node = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(node.path(), "<node/>").unwrap();
        let uri = format!("test://{}", node.path().display());
        Libvirt(virt::connect::Connect::open(Some(&uri)).expect("open a private test driver"))
    }

    fn define(&self, xml: &str) -> Result<(), String> {
        let dom = self.0.define_domain_xml(xml).map_err(|e| e.to_string())?;
        // Several corpus files share a domain name.
        dom.undefine().map_err(|e| e.to_string())
    }
}

#[test]
fn corpus_rewrites_are_lossless_and_accepted_by_libvirt() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .xml files in {}", dir.display());
    let lv = Libvirt::open();
    let bridge = BridgeName::parse(BRIDGE).unwrap();
    let (mut rewritten_files, mut nics_rewritten, mut refused, mut no_nics) = (0, 0, 0, 0);
    let mut rejected = Vec::new();
    let mut originals_rejected = 0;
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let input = std::fs::read_to_string(path).unwrap();
        let nics = domxml::nics(&input).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut outputs = Vec::new();
        match domxml::rewrite_to_bridge(&input, &bridge, &Selection::All) {
            Ok(r) => {
                assert!(
                    nics.iter().all(convertible),
                    "{file}: --all rewrote a document with an unconvertible NIC"
                );
                check(&file, &input, &r);
                nics_rewritten += r.changes.iter().filter(|c| c.changed).count();
                outputs.push(r.xml);
            }
            Err(e) if e.kind == ErrorKind::NotFound && nics.is_empty() => no_nics += 1,
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Unsupported, "{file}: {e}");
                assert!(nics.iter().any(|n| !convertible(n)), "{file}: refused: {e}");
                refused += 1;
                for n in nics.iter().filter(|n| convertible(n)) {
                    let r = domxml::rewrite_to_bridge(&input, &bridge, &Selection::Index(n.index))
                        .unwrap_or_else(|e| panic!("{file}: interface {}: {e}", n.index));
                    check(&file, &input, &r);
                    nics_rewritten += r.changes.iter().filter(|c| c.changed).count();
                    outputs.push(r.xml);
                }
            }
        }
        if !outputs.is_empty() {
            rewritten_files += 1;
        }
        // A rejection only counts against the rewrite when libvirt took the original.
        let original = lv.define(&input);
        if original.is_err() {
            originals_rejected += 1;
        }
        for out in outputs {
            if let (Ok(()), Err(e)) = (&original, lv.define(&out)) {
                rejected.push(format!("{file}: {e}"));
            }
        }
    }
    println!(
        "corpus: {} files, {rewritten_files} rewritten, {nics_rewritten} NICs rewritten, \
         {refused} refused as a whole, {no_nics} without NICs, \
         {originals_rejected} not accepted by the test driver even before the rewrite",
        files.len()
    );
    assert!(nics_rewritten > 0, "the corpus produced no rewrites");
    assert!(
        originals_rejected * 10 < files.len(),
        "the test driver refused {originals_rejected} of {} originals: the check proves little",
        files.len()
    );
    assert!(
        rejected.is_empty(),
        "libvirt rejected:\n{}",
        rejected.join("\n")
    );
}

/// The libvirt check above means something: the test driver does refuse a broken NIC.
#[test]
fn test_driver_checks_interfaces() {
    let lv = Libvirt::open();
    let ok = "<domain type='test'><name>vbridge-corpus-probe</name><memory>1024</memory>\
              <os><type>hvm</type></os><devices><interface type='bridge'>\
              <source bridge='br0'/><model type='virtio'/></interface></devices></domain>";
    lv.define(ok).unwrap();
    let bad = ok.replace("<source bridge='br0'/>", "");
    assert!(
        lv.define(&bad).is_err(),
        "a bridge NIC without a source was accepted"
    );
}

/// Issue 9's rewrites over the same corpus: every convertible NIC made a macvtap NIC with
/// an MTU, and every NIC put on the bridge with an MTU: lossless outside the changed
/// interfaces, MACs kept, each changed NIC on its target with the MTU, and libvirt's test
/// driver takes the result wherever it took the original.
#[test]
fn corpus_macvtap_and_mtu_rewrites_are_lossless_and_accepted_by_libvirt() {
    use vbridge::domxml::{NicOptions, Target};
    use vbridge::validate::{DirectMode, Mtu};
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    let lv = Libvirt::private();
    let options = NicOptions {
        mtu: Some(Mtu::new(9000).unwrap()),
        queues: None,
    };
    let targets = [
        Target::Direct {
            dev: BridgeName::parse("eth1").unwrap(),
            mode: DirectMode::Bridge,
        },
        Target::Bridge(BridgeName::parse(BRIDGE).unwrap()),
    ];
    let (mut rewritten, mut rejected) = (0, Vec::new());
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let input = std::fs::read_to_string(path).unwrap();
        let nics = domxml::nics(&input).unwrap();
        let original_ok = lv.define(&input).is_ok();
        for target in &targets {
            for n in nics.iter().filter(|n| convertible(n)) {
                let r = domxml::rewrite_nics(&input, target, &Selection::Index(n.index), &options)
                    .unwrap_or_else(|e| panic!("{file}: interface {}: {e}", n.index));
                common::assert_same_outside_changes(&file, &input, &r);
                let after = domxml::nics(&r.xml).unwrap();
                assert_eq!(after.len(), nics.len(), "{file}");
                for (b, a) in nics.iter().zip(&after) {
                    assert_eq!(b.mac, a.mac, "{file}: MAC of interface {}", b.index);
                }
                let c = &r.changes[0];
                assert!(target.holds(&c.after), "{file}: {:?}", c.after);
                assert_eq!(c.after.mtu, Some(9000), "{file}: {:?}", c.after);
                if c.changed {
                    common::assert_no_blank_line_gained(&file, &input, &r, c);
                }
                rewritten += 1;
                if original_ok {
                    if let Err(e) = lv.define(&r.xml) {
                        rejected.push(format!("{file} ({}): {e}", target.describe()));
                    }
                }
            }
        }
    }
    println!("corpus: {rewritten} macvtap/bridge NIC rewrites with an MTU");
    assert!(rewritten > 0);
    assert!(
        rejected.is_empty(),
        "libvirt rejected:\n{}",
        rejected.join("\n")
    );
}
