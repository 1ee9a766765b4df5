//! Fuzz target for the domain-XML reader and rewriter: whatever the input, no panic; a
//! rewrite that succeeds gives a document that reads back, with the same interfaces, text
//! outside the changed interfaces byte-identical, every changed NIC on the bridge, and a
//! second rewrite that changes nothing. Run by hand: `scripts/fuzz [SECONDS]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vbridge::domxml::{self, Rewritten, Selection};
use vbridge::validate::BridgeName;

/// The text with the given spans cut out.
fn without(text: &str, spans: &[std::ops::Range<usize>]) -> String {
    let mut out = String::new();
    let mut cursor = 0;
    for s in spans {
        out.push_str(&text[cursor..s.start]);
        cursor = s.end;
    }
    out.push_str(&text[cursor..]);
    out
}

fn check(input: &str, r: &Rewritten, selection: &Selection) {
    let before = domxml::nics(input).expect("a rewritten input reads");
    let after = domxml::nics(&r.xml).expect("the rewrite reads back");
    assert_eq!(before.len(), after.len(), "interface count changed");
    let changed: Vec<_> = r.changes.iter().filter(|c| c.changed).collect();
    let old: Vec<_> = changed.iter().map(|c| c.before.span.clone()).collect();
    let new: Vec<_> = changed.iter().map(|c| c.after.span.clone()).collect();
    assert_eq!(without(input, &old), without(&r.xml, &new), "not lossless");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.mac, a.mac, "a MAC changed");
    }
    for c in &r.changes {
        assert!(c.after.is_on_bridge("br0"), "interface {} not on br0", c.index);
    }
    if !r.changed() {
        assert_eq!(input, r.xml, "no change, yet the text differs");
    }
    let again = domxml::rewrite_to_bridge(&r.xml, &BridgeName::parse("br0").unwrap(), selection)
        .expect("the rewrite of a rewrite succeeds");
    assert!(!again.changed(), "a second rewrite changed more");
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let _ = domxml::facts(input);
    let Ok(nics) = domxml::nics(input) else {
        // What the reader refuses, the rewriter refuses too.
        let bridge = BridgeName::parse("br0").unwrap();
        assert!(domxml::rewrite_to_bridge(input, &bridge, &Selection::All).is_err());
        return;
    };
    let bridge = BridgeName::parse("br0").unwrap();
    let mut selections = vec![Selection::All, Selection::Auto, Selection::Index(1)];
    if let Some(mac) = nics.iter().find_map(|n| n.mac.as_deref()) {
        if let Ok(m) = vbridge::validate::Mac::parse(mac) {
            selections.push(Selection::Mac(m));
        }
    }
    for s in selections {
        if let Ok(r) = domxml::rewrite_to_bridge(input, &bridge, &s) {
            check(input, &r, &s);
        }
    }
});
