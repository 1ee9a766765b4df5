//! A seeded, bounded mutation test of the domain-XML reader and rewriter over the shared
//! corpus (../shared/corpus/virt-manager) and the golden inputs: thousands of mutated
//! documents, well under a minute. For each: no panic; a rewrite that succeeds gives a
//! document libxml2 (libvirt's parser) reads, lossless outside the changed NICs, every child
//! that should stay kept; a document libxml2 refuses is refused with its line and column;
//! and no document libxml2 reads is refused as not well-formed.
//!
//! The seed is printed; `VBRIDGE_MUTATION_SEED=N` replays a run, `VBRIDGE_MUTATION_CASES=N`
//! changes its size. A failing case is written to the temp dir, named in the message.

use crate::common;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vbridge::domxml::{self, Rewritten, Selection};
use vbridge::validate::BridgeName;

/// Cases per run unless `VBRIDGE_MUTATION_CASES` says otherwise.
const CASES: usize = 4000;
/// Stop early rather than slow CI down (the count run is printed).
const BUDGET: Duration = Duration::from_secs(45);

#[link(name = "xml2")]
extern "C" {
    fn xmlInitParser();
    fn xmlReadMemory(
        buffer: *const c_char,
        size: c_int,
        url: *const c_char,
        encoding: *const c_char,
        options: c_int,
    ) -> *mut c_void;
    fn xmlFreeDoc(doc: *mut c_void);
}

/// libxml2's options as libvirt passes them, without the error printing.
const XML_PARSE_NOERROR: c_int = 1 << 5;
const XML_PARSE_NOWARNING: c_int = 1 << 6;
const XML_PARSE_NONET: c_int = 1 << 11;

/// Whether libxml2, the parser libvirt uses, reads the document (libvirt refuses what it
/// does not). Namespace errors are not fatal there, as they are not for libvirt.
fn libxml2_reads(doc: &str) -> bool {
    static INIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: xmlInitParser has no preconditions; called once before any parse.
    INIT.call_once(|| unsafe { xmlInitParser() });
    let Ok(len) = c_int::try_from(doc.len()) else {
        return false;
    };
    let url = c"mutation.xml";
    // SAFETY: the buffer and its length come from a live &str; the URL is a C string
    // literal; the returned document is freed at once and never used after.
    unsafe {
        let d = xmlReadMemory(
            doc.as_ptr().cast(),
            len,
            url.as_ptr(),
            std::ptr::null(),
            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING,
        );
        if d.is_null() {
            return false;
        }
        xmlFreeDoc(d);
    }
    true
}

/// splitmix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Pieces of markup a mutation inserts: the constructs the defect classes were made of.
const TOKENS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "&",
    ";",
    "'",
    "\"",
    "=",
    " ",
    "\n",
    "\t",
    "\r\n",
    "\u{1}",
    "\u{FFFE}",
    "\u{FEFF}",
    "&bogus;",
    "&amp;",
    "&#0;",
    "&#xD800;",
    "&#x41;",
    "&#65;",
    "]]>",
    "<![CDATA[x]]>",
    "<!-- c -->",
    "<!-- a--b -->",
    "<?pi x?>",
    "<?xml version='1.0'?>",
    "<<model/>",
    "<model type='virtio'/>",
    "<model type='virtio-transitional'/>",
    "<model/>",
    "<source network='default'/>",
    "<source bridge='br0'/>",
    "<mac address='52:54:00:00:00:01'/>",
    "<target dev='vnet0'/>",
    "<virtualport/>",
    "<virtualport type='802.1Qbh'/>",
    "<bandwidth><inbound average='1' floor='2'/></bandwidth>",
    "<backend tap='/dev/net/tun'/>",
    "<interface type='network'>",
    "<interface type='user'/>",
    "<interface type='hostdev'>",
    "</interface>",
    "<devices>",
    "</devices>",
    " floor='5'",
    " a='1'b='2'",
    " xmlns='urn:x'",
    "<!DOCTYPE domain>",
    "x",
];

/// A char boundary of `s` at or before `i`.
fn boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One mutation of `doc`: delete, duplicate or move a span, insert a token, or put a
/// token in place of a span. Spans are short, and often a whole tag or attribute.
fn mutate(doc: &str, rng: &mut Rng) -> String {
    let at = boundary(doc, rng.below(doc.len() + 1));
    let len = match rng.below(3) {
        0 => 1,
        1 => rng.below(8),
        _ => rng.below(64),
    };
    let end = boundary(doc, at + len);
    let token = TOKENS[rng.below(TOKENS.len())];
    match rng.below(5) {
        0 => format!("{}{}", &doc[..at], &doc[end..]),
        1 => format!("{}{}{}", &doc[..end], &doc[at..end], &doc[end..]),
        2 => format!("{}{token}{}", &doc[..at], &doc[at..]),
        3 => format!("{}{token}{}", &doc[..at], &doc[end..]),
        _ => {
            let cut = format!("{}{}", &doc[..at], &doc[end..]);
            let to = boundary(&cut, rng.below(cut.len() + 1));
            format!("{}{}{}", &cut[..to], &doc[at..end], &cut[to..])
        }
    }
}

fn inputs() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("../shared/corpus/virt-manager");
    assert!(
        corpus.is_dir(),
        "the corpus is missing: {}",
        corpus.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    for e in std::fs::read_dir(root.join("tests/data/rewrite")).unwrap() {
        let p = e.unwrap().path().join("in.xml");
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            Some((p.display().to_string(), text))
        })
        .collect()
}

fn seed() -> u64 {
    match std::env::var("VBRIDGE_MUTATION_SEED") {
        Ok(s) => s.parse().expect("VBRIDGE_MUTATION_SEED is a number"),
        // A new seed each day: runs on one day repeat, days explore further.
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                / 86_400
        }
    }
}

/// What one case did, for the totals.
#[derive(Default)]
struct Tally {
    cases: usize,
    accepted: usize,
    refused_malformed: usize,
    refused_other: usize,
    libxml2_refused: usize,
}

/// The checks on one mutated document; Err says what broke.
fn check_case(
    doc: &str,
    bridge: &BridgeName,
    selection: &Selection,
    t: &mut Tally,
) -> Result<(), String> {
    let reads = libxml2_reads(doc);
    if !reads {
        t.libxml2_refused += 1;
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = domxml::facts(doc);
        let _ = domxml::nics(doc);
        domxml::rewrite_to_bridge(doc, bridge, selection)
    }))
    .map_err(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("panicked: {what}")
    })?;
    match result {
        Ok(r) => {
            t.accepted += 1;
            if !reads {
                return Err("accepted a document libxml2 (libvirt) refuses".into());
            }
            if !libxml2_reads(&r.xml) {
                return Err("the rewritten document is not well-formed".into());
            }
            catch_unwind(AssertUnwindSafe(|| check_rewrite(doc, &r))).map_err(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "a check on the rewrite failed".into())
            })
        }
        Err(e) if e.message.contains("not well-formed at line ") => {
            t.refused_malformed += 1;
            if reads {
                return Err(format!("refused a document libxml2 reads: {e}"));
            }
            Ok(())
        }
        Err(e) => {
            t.refused_other += 1;
            if !reads {
                return Err(format!(
                    "a malformed document refused without its position: {e}"
                ));
            }
            if e.message.is_empty() || e.message.contains('\n') {
                return Err(format!("refusal not one line: {e:?}"));
            }
            Ok(())
        }
    }
}

/// The invariants of a rewrite the golden and corpus tests check, on a mutated document.
fn check_rewrite(input: &str, r: &Rewritten) {
    common::assert_same_outside_changes("mutation", input, r);
    common::assert_children_kept("mutation", input, r);
    let before = domxml::nics(input).unwrap();
    let after = domxml::nics(&r.xml).unwrap();
    assert_eq!(before.len(), after.len(), "interface count changed");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.mac, a.mac, "a MAC changed");
    }
    for c in &r.changes {
        assert!(
            c.after.is_on_bridge("br0"),
            "interface {} not on br0",
            c.index
        );
    }
}

#[test]
fn mutated_documents_never_panic_and_never_pass_malformed() {
    let seed = seed();
    let cases: usize = std::env::var("VBRIDGE_MUTATION_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    let inputs = inputs();
    let bridge = BridgeName::parse("br0").unwrap();
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    let t0 = Instant::now();
    // A panic is caught and reported with its case; keep libtest's own output quiet.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failure = None;
    for case in 0..cases {
        if t0.elapsed() > BUDGET {
            break;
        }
        let (name, original) = &inputs[rng.below(inputs.len())];
        let mut doc = mutate(original, &mut rng);
        for _ in 0..rng.below(3) {
            doc = mutate(&doc, &mut rng);
        }
        let selection = match rng.below(3) {
            0 => Selection::Auto,
            1 => Selection::Index(1),
            _ => Selection::All,
        };
        t.cases += 1;
        if let Err(why) = check_case(&doc, &bridge, &selection, &mut t) {
            let file = std::env::temp_dir().join(format!("vbridge-mutation-{seed}-{case}.xml"));
            std::fs::write(&file, &doc).unwrap();
            failure = Some(format!(
                "seed {seed}, case {case} (from {name}, {selection:?}): {why}; the document is {}",
                file.display()
            ));
            break;
        }
    }
    std::panic::set_hook(hook);
    println!(
        "mutation: seed {seed}: {} cases in {:.1} s from {} inputs: {} rewritten, {} refused as \
         not well-formed (with a position), {} refused otherwise; libxml2 refused {}",
        t.cases,
        t0.elapsed().as_secs_f64(),
        inputs.len(),
        t.accepted,
        t.refused_malformed,
        t.refused_other,
        t.libxml2_refused
    );
    if let Some(f) = failure {
        panic!("{f}");
    }
    assert!(
        t.cases >= 1000,
        "only {} cases ran within {BUDGET:?}",
        t.cases
    );
    assert!(
        t.accepted > 0 && t.refused_malformed > 0,
        "the mutations reach both outcomes"
    );
}
