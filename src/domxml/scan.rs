//! A light element tree over the document: names, attributes and byte ranges, so edits can
//! splice the original text instead of serialising a model of it.

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

/// Parse the document into its root element. Reader positions give each event's bytes.
pub(crate) fn parse(doc: &str) -> Result<Element> {
    // Reader positions count from after a byte-order mark; spans count from the file start.
    let base = if doc.starts_with('\u{feff}') { 3 } else { 0 };
    let mut reader = Reader::from_str(&doc[base..]);
    // Whitespace, comments and everything else stay in the text between spans.
    reader.config_mut().check_comments = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut pos = base;
    loop {
        let start = pos;
        let event = reader
            .read_event()
            .map_err(|e| malformed(doc, base + reader.error_position() as usize, e))?;
        pos = base + reader.buffer_position() as usize;
        match event {
            Event::Start(_) | Event::Empty(_) => {
                let self_closing = matches!(event, Event::Empty(_));
                if stack.is_empty() && root.is_some() {
                    return Err(malformed(doc, start, "a second root element"));
                }
                let (name, attrs) = parse_start_tag(doc, start..pos)?;
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
                el.span.end = pos;
                el.end_tag_start = start;
                close(&mut stack, &mut root, el);
            }
            Event::Text(_) if stack.is_empty() && !doc[start..pos].trim().is_empty() => {
                return Err(malformed(doc, start, "text outside the root element"));
            }
            Event::Eof => break,
            _ => {}
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
    root.ok_or_else(|| Error::invalid("the domain XML is empty: it has no root element"))
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Split `<name a='1' b="2">` into its name and attributes, keeping where each value is.
fn parse_start_tag(doc: &str, tag: Range<usize>) -> Result<(String, Vec<Attr>)> {
    let b = doc.as_bytes();
    let end = if b[tag.end - 2] == b'/' {
        tag.end - 2
    } else {
        tag.end - 1
    };
    let mut i = tag.start + 1;
    let name_start = i;
    while i < end && !b[i].is_ascii_whitespace() {
        i += 1;
    }
    let name = doc[name_start..i].to_string();
    let mut attrs = Vec::new();
    loop {
        while i < end && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= end {
            break;
        }
        let an_start = i;
        while i < end && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let an = &doc[an_start..i];
        while i < end && b[i].is_ascii_whitespace() {
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
        while i < end && b[i].is_ascii_whitespace() {
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
        if raw.contains('<') {
            return Err(malformed(
                doc,
                v_start,
                format!("'<' in the value of {an:?}"),
            ));
        }
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
