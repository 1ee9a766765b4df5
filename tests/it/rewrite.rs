//! Golden tests of the lossless NIC rewrite: tests/data/rewrite/<case>/in.xml, an optional
//! `args` file (selection and bridge), and the expected out.xml (on success) and
//! result.txt (what changed, or the error). `VBRIDGE_BLESS=1 cargo test` rewrites the
//! expected files instead of comparing; review the diff before committing it.

use crate::common;
use std::fs;
use std::path::{Path, PathBuf};
use vbridge::domxml::{self, NicOptions, Rewritten, Selection, Target};
use vbridge::validate::{BridgeName, DirectMode, Mac, Mtu, Queues};
use vbridge::Result;

/// The rewrite with the bridge name checked first, as every caller checks it on entry.
fn rewrite(xml: &str, bridge: &str, selection: &Selection) -> Result<Rewritten> {
    domxml::rewrite_to_bridge(xml, &BridgeName::parse(bridge)?, selection)
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rewrite")
}

/// What a case asks beyond the selection and the bridge: a macvtap target, NIC options.
#[derive(Default)]
struct Extra {
    direct: Option<(String, String)>,
    network: Option<String>,
    options: NicOptions,
}

/// `args`: lines `select auto|all|index N|mac M`, `bridge NAME` (default: auto, br0), and
/// `direct DEV MODE`, `mtu N`, `queues N` for the target and options of issue 9.
fn args(dir: &Path) -> (Selection, String, Extra) {
    let mut selection = Selection::Auto;
    let mut bridge = "br0".to_string();
    let mut extra = Extra::default();
    let text = fs::read_to_string(dir.join("args")).unwrap_or_default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["select", "auto"] => selection = Selection::Auto,
            ["select", "all"] => selection = Selection::All,
            ["select", "index", n] => selection = Selection::Index(n.parse().unwrap()),
            ["select", "mac", m] => selection = Selection::Mac(Mac::parse(m).unwrap()),
            ["bridge", b] => bridge = b.to_string(),
            ["direct", dev, mode] => extra.direct = Some((dev.to_string(), mode.to_string())),
            ["network", n] => extra.network = Some(n.to_string()),
            ["mtu", n] => extra.options.mtu = Some(Mtu::parse(n).unwrap()),
            ["queues", n] => extra.options.queues = Some(Queues::parse(n).unwrap()),
            _ => panic!("{}: bad args line {line:?}", dir.display()),
        }
    }
    (selection, bridge, extra)
}

/// The target of a case: the bridge, or the macvtap `direct` names.
fn target(bridge: &str, extra: &Extra) -> Result<Target> {
    Ok(match (&extra.direct, &extra.network) {
        (Some((dev, mode)), _) => Target::Direct {
            dev: BridgeName::parse(dev)?,
            mode: DirectMode::parse(mode)?,
        },
        (None, Some(n)) => Target::Network(n.clone()),
        (None, None) => Target::Bridge(BridgeName::parse(bridge)?),
    })
}

/// Holds for every successful rewrite: text outside the changed interfaces is
/// byte-identical, every MAC is kept, and every changed NIC is on the target.
fn check_invariants(case: &str, input: &str, target: &Target, r: &Rewritten) {
    common::assert_same_outside_changes(case, input, r);
    common::assert_children_kept(case, input, r);
    let before = domxml::nics(input).unwrap();
    let after = domxml::nics(&r.xml).unwrap();
    assert_eq!(before.len(), after.len(), "{case}");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.mac, a.mac, "{case}: MAC of interface {}", b.index);
    }
    for c in &r.changes {
        assert_eq!(
            c.after,
            after[c.index - 1],
            "{case}: `after` of {}",
            c.index
        );
        assert_eq!(
            c.before,
            before[c.index - 1],
            "{case}: `before` of {}",
            c.index
        );
        assert!(target.holds(&c.after), "{case}: interface {}", c.index);
        if !c.changed {
            assert_eq!(&input[c.before.span.clone()], &r.xml[c.after.span.clone()]);
        } else {
            let attrs = match target {
                Target::Bridge(_) => 1,
                Target::Direct { .. } => 2,
                // The network, and a portgroup of that same network when it stays.
                Target::Network(_) => c.after.source.len().clamp(1, 2),
            };
            assert_eq!(
                c.after.source.len(),
                attrs,
                "{case}: stale source {:?}",
                c.after.source
            );
            common::assert_no_blank_line_gained(case, input, r, c);
        }
    }
    if !r.changed() {
        assert_eq!(input, r.xml, "{case}: no change, yet the text differs");
    }
}

/// What a reviewer reads next to out.xml.
fn summary(r: &Rewritten) -> String {
    let mut s = String::new();
    if r.changes.is_empty() {
        s.push_str("no interface selected\n");
    }
    for c in &r.changes {
        let src = |n: &domxml::Nic| {
            n.source
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        s.push_str(&format!(
            "interface {} {}: {} [{}] model={} -> {} [{}] model={}{}\n",
            c.index,
            c.mac.as_deref().unwrap_or("-"),
            c.before.kind,
            src(&c.before),
            c.before.model.as_deref().unwrap_or("-"),
            c.after.kind,
            src(&c.after),
            c.after.model.as_deref().unwrap_or("-"),
            if c.changed { "" } else { " (unchanged)" }
        ));
        for n in &c.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
    }
    s
}

pub fn golden(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if let Err(e) = common::golden::check(path, actual) {
        failures.push(e);
    }
}

#[test]
fn golden_cases() {
    let mut cases: Vec<PathBuf> = fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("in.xml").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "only {} golden cases found", cases.len());
    let mut failures = Vec::new();
    for dir in &cases {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let input = fs::read_to_string(dir.join("in.xml")).unwrap();
        let (selection, bridge, extra) = args(dir);
        let out_path = dir.join("out.xml");
        // Cases of issue 9 go through the rewrite with a target and options; it equals the
        // bridge rewrite when neither is asked (`rewrite_nics_is_the_bridge_rewrite_...`).
        let rewritten = if extra.direct.is_none()
            && extra.network.is_none()
            && extra.options == NicOptions::default()
        {
            rewrite(&input, &bridge, &selection)
        } else {
            target(&bridge, &extra)
                .and_then(|t| domxml::rewrite_nics(&input, &t, &selection, &extra.options))
        };
        match rewritten {
            Ok(r) => {
                let t = target(&bridge, &extra).unwrap();
                check_invariants(&case, &input, &t, &r);
                golden(&out_path, &r.xml, &mut failures);
                golden(&dir.join("result.txt"), &summary(&r), &mut failures);
            }
            Err(e) => {
                if common::golden::bless() {
                    let _ = fs::remove_file(&out_path);
                }
                assert!(
                    !out_path.exists(),
                    "{case}: refused, yet out.xml exists: {e}"
                );
                let text = format!("error {:?}: {e}\n", e.kind);
                golden(&dir.join("result.txt"), &text, &mut failures);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Without a macvtap target or options, the rewrite of issue 9 is the bridge rewrite, byte
/// for byte, on every golden case.
#[test]
fn rewrite_nics_is_the_bridge_rewrite_without_options() {
    for e in fs::read_dir(cases_dir()).unwrap() {
        let dir = e.unwrap().path();
        let Ok(input) = fs::read_to_string(dir.join("in.xml")) else {
            continue;
        };
        let (selection, bridge, _) = args(&dir);
        let Ok(b) = BridgeName::parse(&bridge) else {
            continue;
        };
        let plain = domxml::rewrite_to_bridge(&input, &b, &selection);
        let nics = domxml::rewrite_nics(
            &input,
            &Target::Bridge(b),
            &selection,
            &NicOptions::default(),
        );
        match (plain, nics) {
            (Ok(p), Ok(n)) => {
                assert_eq!(p.xml, n.xml, "{}", dir.display());
                let flags = |r: &Rewritten| {
                    r.changes
                        .iter()
                        .map(|c| (c.index, c.changed))
                        .collect::<Vec<_>>()
                };
                assert_eq!(flags(&p), flags(&n), "{}", dir.display());
            }
            (Err(p), Err(n)) => assert_eq!(p.message, n.message, "{}", dir.display()),
            (p, n) => panic!(
                "{}: {:?} vs {:?}",
                dir.display(),
                p.map(|r| r.xml),
                n.map(|r| r.xml)
            ),
        }
    }
}

#[test]
fn refusals_are_all_or_nothing() {
    let xml = fs::read_to_string(cases_dir().join("all-with-hostdev/in.xml")).unwrap();
    let err = rewrite(&xml, "br0", &Selection::All).unwrap_err();
    assert_eq!(err.kind, vbridge::ErrorKind::Unsupported);
    assert!(err.message.contains("interface 2"), "{err}");
    // The other NIC alone is fine.
    let r = rewrite(&xml, "br0", &Selection::Index(1)).unwrap();
    assert!(r.changed());
}

#[test]
fn bad_bridge_names_are_refused_before_anything_else() {
    let xml = fs::read_to_string(cases_dir().join("network-portgroup/in.xml")).unwrap();
    for bad in ["", "br 0", "a-very-long-bridge-name"] {
        let err = rewrite(&xml, bad, &Selection::All).unwrap_err();
        assert_eq!(err.kind, vbridge::ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn rewriting_twice_changes_nothing_more() {
    for case in ["user-full", "crlf", "tabs", "self-closing-user"] {
        let xml = fs::read_to_string(cases_dir().join(case).join("in.xml")).unwrap();
        let once = rewrite(&xml, "br0", &Selection::All).unwrap();
        let twice = rewrite(&once.xml, "br0", &Selection::All).unwrap();
        assert!(!twice.changed(), "{case}");
        assert_eq!(once.xml, twice.xml, "{case}");
    }
}

/// What a rewrite drops reaches the person running `attach --xml`: in JSON, and on stderr
/// beside the document in text mode.
#[test]
fn xml_mode_reports_what_was_dropped() {
    let input = cases_dir().join("floor-dropped/in.xml");
    let bin = common::vbridge_bin();
    let out = std::process::Command::new(&bin)
        .args(["-o", "json", "attach", "--xml"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = j["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 1, "{j}");
    assert!(notes[0].as_str().unwrap().contains("floor='200'"), "{j}");
    let out = std::process::Command::new(&bin)
        .args(["attach", "--xml"])
        .arg(&input)
        .output()
        .unwrap();
    let expected = fs::read_to_string(cases_dir().join("floor-dropped/out.xml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("vbridge: note: interface 1"), "{err}");
    // A rewrite that drops nothing has no notes at all.
    let r = rewrite(
        &fs::read_to_string(cases_dir().join("crlf/in.xml")).unwrap(),
        "br0",
        &Selection::All,
    )
    .unwrap();
    assert!(r.notes().is_empty());
    let r = rewrite(&fs::read_to_string(&input).unwrap(), "br0", &Selection::All).unwrap();
    assert_eq!(r.notes(), r.changes[0].notes);
}
