//! A light element tree over the document: names, attributes and byte ranges, so edits can
//! splice the original text instead of serialising a model of it.

use super::wellformed as wf;
use crate::error::{Error, Result};
use quick_xml::events::Event;
use quick_xml::Reader;
use std::ops::Range;

/// One attribute as written: its value unescaped, and where the raw value sits.
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub name: String,
    pub value: String,
    /// Raw value, without the quotes.
    pub value_span: Range<usize>,
    /// `b'\''` or `b'"'`.
    pub quote: u8,
}

/// One element: where it is, its attributes and its child elements. Text, comments, CDATA
/// and processing instructions are not stored; they are the bytes between the spans.
#[derive(Debug, Clone)]
pub(crate) struct Element {
    /// The qualified name as written (`interface`, `qemu:commandline`).
    pub name: String,
    /// The whole element, `<name` through `</name>` or `/>`.
    pub span: Range<usize>,
    /// The start tag (`<name ...>` or `<name .../>`).
    pub start_tag: Range<usize>,
    pub self_closing: bool,
    /// Where the end tag starts (the start tag's end for `<name/>`).
    pub end_tag_start: usize,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attr_full(name).map(|a| a.value.as_str())
    }

    pub fn attr_full(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The bytes between the start tag and the end tag.
    pub fn inner(&self) -> Range<usize> {
        self.start_tag.end..self.end_tag_start
    }

    /// Text content of a leaf element, unescaped and trimmed (`<name>web</name>`).
    pub fn text(&self, doc: &str) -> String {
        let raw = &doc[self.inner()];
        let raw = raw
            .trim()
            .trim_start_matches("<![CDATA[")
            .trim_end_matches("]]>");
        unescape_or_raw(raw).trim().to_string()
    }

    /// This element and everything below it, depth first.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Element)) {
        f(self);
        for c in &self.children {
            c.walk(f);
        }
    }
}

fn unescape_or_raw(raw: &str) -> String {
    quick_xml::escape::unescape(raw)
        .map(|s| s.into_owned())
        .unwrap_or_else(|_| raw.to_string())
}

/// "line 3, column 7 (byte 41)" for a byte offset.
pub(crate) fn where_is(doc: &str, offset: usize) -> String {
    let offset = offset.min(doc.len());
    let before = &doc.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = offset - line_start + 1;
    format!("line {line}, column {column} (byte {offset})")
}

fn malformed(doc: &str, offset: usize, what: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "the domain XML is not well-formed at {}: {what}",
        where_is(doc, offset)
    ))
    .with_hint("check the document with `xmllint --noout FILE`")
}

/// Parse the document into its root element, refusing what is not well-formed XML 1.0 (as
/// libvirt would) with the line and column of the first offence. Reader positions give each
/// event's bytes.
pub(crate) fn parse(doc: &str) -> Result<Element> {
    parse_with(doc, &[], 0)
}

/// How deep entity values may refer to other entities (libxml2 refuses loops; vbridge
/// refuses depth, which bounds the work too).
const ENTITY_DEPTH: usize = 8;

/// Check the entities referenced at `at`: their replacement text must be well-formed content
/// (or, in an attribute value, hold no `<` and no external entity).
fn check_entity_uses(
    doc: &str,
    at: usize,
    used: &[(usize, &wf::Entity)],
    entities: &[wf::Entity],
    in_attr: bool,
    depth: usize,
) -> Result<()> {
    for (off, e) in used {
        let here = at + off;
        let fail = |why: String| malformed(doc, here, format!("entity &{};: {why}", e.name));
        if depth >= ENTITY_DEPTH {
            return Err(fail("entity references nest too deep".into()));
        }
        match (&e.value, in_attr) {
            (None, true) => return Err(fail("an external entity in an attribute value".into())),
            (None, false) => {}
            (Some(v), true) => {
                if v.contains('<') {
                    return Err(fail("its text puts '<' in an attribute value".into()));
                }
                let inner = wf::check_refs(v, entities).map_err(|(_, why)| fail(why))?;
                check_entity_uses(doc, here - off, &inner, entities, true, depth + 1)
                    .map_err(|e| fail(e.message))?;
            }
            (Some(v), false) => {
                parse_with(&format!("<x>{v}</x>"), entities, depth + 1).map_err(|err| {
                    fail(format!(
                        "its text is not well-formed content ({})",
                        err.message
                    ))
                })?;
            }
        }
    }
    Ok(())
}

/// [`parse`], with the entities of an enclosing document when `doc` is an entity's text.
fn parse_with(doc: &str, inherited: &[wf::Entity], depth: usize) -> Result<Element> {
    // Reader positions count from after a byte-order mark; spans count from the file start.
    let base = if doc.starts_with('\u{feff}') { 3 } else { 0 };
    wf::check_chars(&doc[base..]).map_err(|(at, why)| malformed(doc, base + at, why))?;
    // A second U+FEFF is a character before the root (libxml2 refuses it); quick-xml would
    // skip it as another byte-order mark and shift every position.
    if doc[base..].starts_with('\u{feff}') {
        return Err(malformed(doc, base, "text outside the root element"));
    }
    let mut reader = Reader::from_str(&doc[base..]);
    // Whitespace, comments and everything else stay in the text between spans.
    reader.config_mut().check_comments = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut entities: Vec<wf::Entity> = inherited.to_vec();
    let mut seen_doctype = false;
    let mut pos = base;
    loop {
        let start = pos;
        let event = reader
            .read_event()
            .map_err(|e| malformed(doc, base + reader.error_position() as usize, e))?;
        pos = base + reader.buffer_position() as usize;
        let raw = &doc[start..pos];
        let at = |(off, why): wf::Offence| malformed(doc, start + off, why);
        let outside = stack.is_empty();
        match event {
            Event::Start(_) | Event::Empty(_) => {
                let self_closing = matches!(event, Event::Empty(_));
                if outside && root.is_some() {
                    return Err(malformed(doc, start, "a second root element"));
                }
                let (name, attrs) =
                    parse_start_tag(doc, start..pos, self_closing, &entities, depth)?;
                let el = Element {
                    name,
                    span: start..pos,
                    start_tag: start..pos,
                    self_closing,
                    end_tag_start: pos,
                    attrs,
                    children: Vec::new(),
                };
                if self_closing {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                // check_end_names (on by default) already matched the name.
                let Some(mut el) = stack.pop() else {
                    return Err(malformed(doc, start, "an end tag without a start tag"));
                };
                wf::check_end_tag(raw).map_err(at)?;
                el.span.end = pos;
                el.end_tag_start = start;
                close(&mut stack, &mut root, el);
            }
            Event::Text(_) | Event::GeneralRef(_) if outside => {
                if let Some(p) = raw.bytes().position(|b| !wf::is_space(b)) {
                    return Err(malformed(doc, start + p, "text outside the root element"));
                }
            }
            Event::Text(_) | Event::GeneralRef(_) => {
                let used = wf::check_char_data(raw, &entities).map_err(at)?;
                check_entity_uses(doc, start, &used, &entities, false, depth)?;
            }
            Event::Comment(_) => wf::check_comment(raw).map_err(at)?,
            Event::PI(_) => wf::check_pi(raw).map_err(at)?,
            Event::Decl(_) => {
                if start != base {
                    return Err(malformed(
                        doc,
                        start,
                        "the XML declaration is allowed only at the start of the document",
                    ));
                }
                wf::check_decl(raw).map_err(at)?;
            }
            Event::DocType(_) => {
                if seen_doctype || root.is_some() || !outside {
                    return Err(malformed(doc, start, "a DOCTYPE out of place"));
                }
                seen_doctype = true;
                entities = wf::check_doctype(raw).map_err(at)?;
            }
            Event::Eof => break,
            Event::CData(_) if outside => {
                return Err(malformed(doc, start, "CDATA outside the root element"));
            }
            Event::CData(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(malformed(
            doc,
            doc.len(),
            format!(
                "<{}> opened at {} is never closed",
                open.name,
                where_is(doc, open.span.start)
            ),
        ));
    }
    root.ok_or_else(|| malformed(doc, doc.len(), "it has no root element"))
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Split `<name a='1' b="2">` into its name and attributes, keeping where each value is.
/// Names must be XML names, attributes apart from each other and the name by white space,
/// values quoted, without `<`, and with only references to known entities.
fn parse_start_tag(
    doc: &str,
    tag: Range<usize>,
    self_closing: bool,
    entities: &[wf::Entity],
    depth: usize,
) -> Result<(String, Vec<Attr>)> {
    let b = doc.as_bytes();
    let end = if self_closing {
        tag.end - 2
    } else {
        tag.end - 1
    };
    let mut i = tag.start + 1;
    let name_start = i;
    while i < end && !wf::is_space(b[i]) {
        i += 1;
    }
    let name = doc[name_start..i].to_string();
    if !wf::is_name(&name) {
        return Err(malformed(
            doc,
            name_start,
            format!("{name:?} is not a valid element name"),
        ));
    }
    let mut attrs = Vec::new();
    loop {
        let gap = i;
        while i < end && wf::is_space(b[i]) {
            i += 1;
        }
        if i >= end {
            break;
        }
        if i == gap {
            return Err(malformed(
                doc,
                i,
                "attributes must be separated by white space",
            ));
        }
        let an_start = i;
        while i < end && b[i] != b'=' && !wf::is_space(b[i]) {
            i += 1;
        }
        let an = &doc[an_start..i];
        if !wf::is_name(an) {
            return Err(malformed(
                doc,
                an_start,
                format!("{an:?} is not a valid attribute name"),
            ));
        }
        while i < end && wf::is_space(b[i]) {
            i += 1;
        }
        if i >= end || b[i] != b'=' {
            return Err(malformed(
                doc,
                an_start,
                format!("attribute {an:?} has no value"),
            ));
        }
        i += 1;
        while i < end && wf::is_space(b[i]) {
            i += 1;
        }
        if i >= end || (b[i] != b'\'' && b[i] != b'"') {
            return Err(malformed(
                doc,
                i,
                format!("the value of {an:?} is not quoted"),
            ));
        }
        let quote = b[i];
        i += 1;
        let v_start = i;
        while i < end && b[i] != quote {
            i += 1;
        }
        if i >= end {
            return Err(malformed(
                doc,
                v_start,
                format!("the value of {an:?} is not closed"),
            ));
        }
        let raw = &doc[v_start..i];
        if let Some(p) = raw.find('<') {
            return Err(malformed(
                doc,
                v_start + p,
                format!("'<' in the value of {an:?}"),
            ));
        }
        let used = wf::check_refs(raw, entities).map_err(|(p, why)| {
            malformed(doc, v_start + p, format!("in the value of {an:?}: {why}"))
        })?;
        check_entity_uses(doc, v_start, &used, entities, true, depth)?;
        if attrs.iter().any(|a: &Attr| a.name == an) {
            return Err(malformed(
                doc,
                an_start,
                format!("duplicate attribute {an:?}"),
            ));
        }
        attrs.push(Attr {
            name: an.to_string(),
            value: unescape_or_raw(raw),
            value_span: v_start..i,
            quote,
        });
        i += 1;
    }
    Ok((name, attrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_elements_and_attributes() {
        let doc = "<?xml version='1.0'?>\n<a x='1' y=\"&apos;2\">\n <!-- c --><b/>\r\n <c k = 'v'>t</c></a>\n";
        let root = parse(doc).unwrap();
        assert_eq!(&doc[root.span.clone()], &doc[22..doc.len() - 1]);
        assert_eq!(root.attr("y"), Some("'2"));
        assert_eq!(root.attr_full("y").unwrap().quote, b'"');
        assert_eq!(
            &doc[root.attr_full("y").unwrap().value_span.clone()],
            "&apos;2"
        );
        let b = root.child("b").unwrap();
        assert_eq!(&doc[b.span.clone()], "<b/>");
        assert!(b.self_closing);
        let c = root.child("c").unwrap();
        assert_eq!(&doc[c.span.clone()], "<c k = 'v'>t</c>");
        assert_eq!(&doc[c.inner()], "t");
        assert_eq!(c.text(doc), "t");
        assert_eq!(c.attr("k"), Some("v"));
    }

    #[test]
    fn malformed_documents_say_where() {
        for (doc, needle) in [
            ("<a>\n<b></a>", "line 2"),
            ("<a>\n<b>", "never closed"),
            ("<a x=1/>", "not quoted"),
            ("<a/><b/>", "second root"),
            ("<a x='1' x='2'/>", "duplicate"),
            ("", "no root"),
        ] {
            let err = parse(doc).unwrap_err();
            assert!(err.message.contains(needle), "{doc:?}: {}", err.message);
        }
    }

    /// What libvirt (libxml2) refuses, refused here with the line and column of the offence.
    #[test]
    fn not_well_formed_is_refused_where_it_is() {
        let doc =
            |inner: &str| format!("<domain>\n  <devices>\n    {inner}\n  </devices>\n</domain>\n");
        for (inner, column, needle) in [
            ("<a>&bogus;</a>", 8, "&bogus; is not defined"),
            ("<a x='&bogus;'/>", 11, "&bogus; is not defined"),
            ("<a>&#0;</a>", 8, "does not allow"),
            ("<a>&#xD800;</a>", 8, "does not allow"),
            ("<a x='&#xDFFF;'/>", 11, "does not allow"),
            ("<<model/>", 6, "not a valid element name"),
            ("<model ty\u{1}pe='x'/>", 14, "U+0001"),
            ("<model a='1'b='2'/>", 17, "separated by white space"),
            ("<a>x ]]> y</a>", 10, "']]>'"),
            ("<a>R&D</a>", 9, "reference"),
            ("<!-- a--b -->", 11, "--"),
            ("<?xml version='1.0'?>", 5, "only at the start"),
            ("<?XML x?>", 5, "only at the start"),
            ("<a></a >", 8, ""),
            ("<1x/>", 6, "not a valid element name"),
            ("<a 1='x'/>", 8, "not a valid attribute name"),
        ] {
            let d = doc(inner);
            match parse(&d) {
                Err(err) if !needle.is_empty() => {
                    assert!(err.message.contains(needle), "{inner}: {}", err.message);
                    let at = format!("line 3, column {column} ");
                    assert!(err.message.contains(&at), "{inner}: {}", err.message);
                }
                Err(err) => panic!("{inner}: refused: {}", err.message),
                Ok(_) if needle.is_empty() => {}
                Ok(_) => panic!("{inner}: accepted"),
            }
        }
    }

    #[test]
    fn only_white_space_and_markup_outside_the_root() {
        for (doc, ok) in [
            ("<?xml version='1.0'?>\n<!-- c --><a/>\n<?pi x?>\n", true),
            ("<a/>x", false),
            ("x<a/>", false),
            ("<a/>&amp;", false),
            ("<![CDATA[x]]><a/>", false),
            ("<a/><![CDATA[x]]>", false),
            ("<a><![CDATA[<x>]]></a>", true),
            ("<a/>\n<!DOCTYPE a>", false),
            ("\u{feff}\u{feff}<?xml version='1.0'?><a/>", false),
            ("\u{feff}\u{feff}<?xml* x?><a/>", false),
            ("\u{feff}<a>\u{feff}</a>", true),
            ("<!DOCTYPE a><!DOCTYPE a><a/>", false),
            (" <?xml version='1.0'?><a/>", false),
            ("<?xml version='2.0'?><a/>", false),
        ] {
            assert_eq!(parse(doc).is_ok(), ok, "{doc:?}");
        }
        let err = parse("<a/>\n  x").unwrap_err();
        assert!(
            err.message.contains("text outside the root element")
                && err.message.contains("line 2, column 3"),
            "{}",
            err.message
        );
    }

    /// Each refusal of a start tag says the column of what is wrong.
    #[test]
    fn start_tag_offences_say_their_column() {
        for (tag, column) in [
            ("<a x=1/>", 6),
            ("<a x='1' y='a<b'/>", 14),
            ("<a x='1' x='2'/>", 10),
            ("<a x/>", 4),
            ("<a x ='1'y='2'/>", 10),
            ("<a  x = \"&bogus;\"/>", 10),
            ("<a\n  1='x'/>", 3),
        ] {
            let err = parse(tag).unwrap_err();
            let at = if tag.contains('\n') {
                format!("line 2, column {column} ")
            } else {
                format!("line 1, column {column} ")
            };
            assert!(err.message.contains(&at), "{tag}: {}", err.message);
        }
        // An entity whose text breaks a rule is blamed where it is used.
        let d = "<!DOCTYPE d [<!ENTITY e '<b>'>]><d>ok &e;</d>";
        assert!(parse(d).unwrap_err().message.contains("column 39 "), "{d}");
        let d = "<!DOCTYPE d [<!ENTITY e '<b/>'>]><d><x y=' &e;'/></d>";
        assert!(parse(d).unwrap_err().message.contains("column 44 "), "{d}");
    }

    /// An entity's text is checked where it is used, as libxml2 checks it.
    #[test]
    fn entities_are_checked_where_they_are_used() {
        let doc = |decl: &str, body: &str| format!("<!DOCTYPE d [{decl}]><d>{body}</d>");
        for (decl, body, ok) in [
            ("<!ENTITY e 'd<!-- a--b -->x'>", "", true),
            ("<!ENTITY e 'd<!-- a--b -->x'>", "&e;", false),
            ("<!ENTITY e '<b>t</b>'>", "&e;", true),
            ("<!ENTITY e '<b>t'>", "&e;", false),
            ("<!ENTITY e '&#60;b>'>", "&e;", false),
            ("<!ENTITY e '<b>t</b>'>", "<a x='&e;'/>", false),
            ("<!ENTITY e 'plain'>", "<a x='&e;'/>", true),
            ("<!ENTITY e SYSTEM 'e.xml'>", "&e;", true),
            ("<!ENTITY e SYSTEM 'e.xml'>", "<a x='&e;'/>", false),
            ("<!ENTITY a 'x&b;'><!ENTITY b 'y'>", "&a;", true),
            ("<!ENTITY a 'x&b;'>", "", true),
            ("<!ENTITY a 'x&b;'>", "&a;", false),
            ("<!ENTITY a '&b;'><!ENTITY b '&a;'>", "&a;", false),
        ] {
            let d = doc(decl, body);
            assert_eq!(parse(&d).is_ok(), ok, "{d}");
        }
    }

    #[test]
    fn bom_doctype_and_custom_entities() {
        let doc = "\u{feff}<?xml version='1.0'?>\n<!DOCTYPE domain [\n<!ENTITY br 'br0'>\n]>\n<domain><name>&br;</name><x v='&br;'/></domain>\r\n";
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "domain");
        assert_eq!(root.child("x").unwrap().attr("v"), Some("&br;"));
        assert!(doc[root.span.clone()].starts_with("<domain>"));
    }

    #[test]
    fn where_is_counts_lines_and_columns() {
        assert_eq!(where_is("ab\ncd", 4), "line 2, column 2 (byte 4)");
    }
}
