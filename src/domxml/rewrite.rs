//! Rewriting selected `<interface>` elements to virtio NICs on a host bridge (or a libvirt
//! network), splicing new text into the original document so nothing else changes.

use super::dest::Dest;
use super::scan::Element;
use super::select::{describe, one_line, refuse_unconvertible, select};
use super::{eol_of, interfaces, nics_of, numbered, NicChange, Rewritten, Selection};
use crate::error::{Error, Result};
use crate::validate::BridgeName;
use crate::xml::escape;

pub(super) fn rewrite_to_bridge(
    xml: &str,
    bridge: &BridgeName,
    selection: &Selection,
) -> Result<Rewritten> {
    rewrite_to(xml, Dest::bridge(bridge.as_str()), selection)
}

pub(super) fn rewrite_to(xml: &str, dest: Dest, selection: &Selection) -> Result<Rewritten> {
    let root = super::domain_root(xml)?;
    let elements = interfaces(&root);
    let nics = numbered(&elements);

    let selected = select(&nics, dest, selection)?;
    refuse_unconvertible(&nics, &selected, selection)?;

    // Splice the new elements in, in document order.
    let layout = Layout::of(xml, &root);
    let mut out = String::with_capacity(xml.len() + 64 * selected.len());
    let mut cursor = 0;
    let mut to_change = selected
        .iter()
        .copied()
        .filter(|&i| !dest.holds(&nics[i]))
        .collect::<Vec<_>>();
    to_change.sort_unstable();
    let mut notes = vec![Vec::new(); nics.len()];
    for &i in &to_change {
        let el = elements[i];
        out.push_str(&xml[cursor..el.span.start]);
        let (text, dropped) = rewrite_interface(xml, el, dest, &layout);
        out.push_str(&text);
        notes[i] = dropped
            .into_iter()
            .map(|d| format!("{}: {d}", describe(&nics[i])))
            .collect();
        cursor = el.span.end;
    }
    out.push_str(&xml[cursor..]);

    // Read the result back: it proves the splice is well-formed and gives `after`.
    let new_root =
        super::domain_root(&out).map_err(|e| e.context("internal error: the rewritten XML"))?;
    let after = nics_of(&new_root);
    if after.len() != nics.len() {
        return Err(Error::invalid(
            "internal error: the rewrite changed the number of interfaces",
        ));
    }
    let changes = selected
        .iter()
        .map(|&i| NicChange {
            index: i + 1,
            mac: nics[i].mac.clone(),
            changed: to_change.contains(&i),
            before: nics[i].clone(),
            after: after[i].clone(),
            notes: std::mem::take(&mut notes[i]),
        })
        .collect();
    Ok(Rewritten { xml: out, changes })
}

/// How the document lays out its lines, for the elements the rewrite adds.
struct Layout {
    /// One indentation level, e.g. two spaces or a tab.
    unit: String,
    /// The document's line ending, for interfaces without one of their own.
    eol: &'static str,
}

impl Layout {
    fn of(doc: &str, root: &Element) -> Layout {
        let eol = eol_of(doc).unwrap_or("\n");
        // One level is what <devices> adds to its children's indentation.
        let unit = root
            .child("devices")
            .and_then(|d| {
                let outer = line_indent(doc, d.span.start)?;
                let inner = d
                    .children
                    .iter()
                    .find_map(|c| line_indent(doc, c.span.start))?;
                inner
                    .strip_prefix(outer)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "  ".to_string());
        Layout { unit, eol }
    }
}

/// The whitespace between the start of the line and `pos`, if only whitespace is there.
fn line_indent(doc: &str, pos: usize) -> Option<&str> {
    let start = doc[..pos].rfind('\n').map_or(0, |p| p + 1);
    let indent = &doc[start..pos];
    indent
        .chars()
        .all(|c| c == ' ' || c == '\t')
        .then_some(indent)
}

/// Where to cut the gap before a removed element: the trailing whitespace goes, from its
/// last line break on (so no blank line is left), or all of it when it has no line break.
fn cut_before_removed(gap: &str) -> usize {
    let ws_start = gap.trim_end().len();
    match gap[ws_start..].rfind('\n') {
        Some(p) => {
            let nl = ws_start + p;
            if nl > ws_start && gap.as_bytes()[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            }
        }
        None => ws_start,
    }
}

/// The end of the spaces and tabs after `pos` when only a line break follows them (they
/// belong to the line that ends there); `pos` otherwise.
fn line_rest(doc: &str, pos: usize, limit: usize) -> usize {
    let b = doc.as_bytes();
    let mut i = pos;
    while i < limit && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    if i < limit && (b[i] == b'\n' || b[i] == b'\r') {
        i
    } else {
        pos
    }
}

/// What becomes of one child element of a rewritten interface.
enum Action {
    Keep,
    Drop,
    Replace(String),
}

/// Generated TAP/macvtap names libvirt picks again when the domain starts.
fn generated_name(dev: &str) -> bool {
    ["vnet", "macvtap", "macvlan", "tap"].iter().any(|p| {
        dev.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Set (or add) attribute `name` of the element's start tag, keeping everything else.
fn set_attr(doc: &str, el: &Element, name: &str, value: &str, quote: char) -> String {
    let tag = &doc[el.start_tag.clone()];
    match el.attr_full(name) {
        Some(a) => {
            let (s, e) = (
                a.value_span.start - el.start_tag.start,
                a.value_span.end - el.start_tag.start,
            );
            format!("{}{value}{}", &tag[..s], &tag[e..])
        }
        None => {
            let close = if el.self_closing {
                tag.len() - 2
            } else {
                tag.len() - 1
            };
            let head = tag[..close].trim_end();
            format!("{head} {name}={quote}{value}{quote}{}", &tag[close..])
        }
    }
}

/// The new text of one interface element, and what was dropped from it that a person
/// should know about.
fn rewrite_interface(
    doc: &str,
    el: &Element,
    dest: Dest,
    layout: &Layout,
) -> (String, Vec<String>) {
    let kind = el.attr("type").unwrap_or_default();
    let quote = el.attr_full("type").map_or('\'', |a| a.quote as char);
    let text = &doc[el.span.clone()];
    let eol = eol_of(text).unwrap_or(layout.eol);
    let own_indent = line_indent(doc, el.span.start);
    // A portgroup is a part of one network: it stays while the NIC stays on that network
    // (a model change), and goes with the network it belonged to.
    let portgroup = el
        .child("source")
        .filter(|s| {
            kind == dest.kind && dest.kind == "network" && s.attr("network") == Some(dest.name)
        })
        .and_then(|s| s.attr("portgroup"))
        .map(|g| format!(" portgroup={quote}{}{quote}", escape(g)))
        .unwrap_or_default();
    let source_el = format!(
        "<source {}={quote}{}{quote}{portgroup}/>",
        dest.attr,
        escape(dest.name)
    );
    let model_el = format!("<model type={quote}virtio{quote}/>");
    let open = set_attr(doc, el, "type", dest.kind, quote);

    // Children are indented like their first indented sibling; a one-line interface
    // stays on one line; an empty one gets one level more than itself.
    let mut prev_end = el.start_tag.end;
    let mut child_indent = None;
    for c in &el.children {
        let gap = &doc[prev_end..c.span.start];
        if let Some(p) = gap.rfind('\n') {
            child_indent = Some(&gap[p + 1..]);
            break;
        }
        prev_end = c.span.end;
    }
    let sep = match (child_indent, own_indent) {
        (Some(ci), _) => format!("{eol}{ci}"),
        (None, _) if !el.children.is_empty() => String::new(),
        (None, Some(oi)) => format!("{eol}{oi}{}", layout.unit),
        (None, None) => String::new(),
    };

    if el.children.is_empty() {
        // <interface type='user'/> or <interface ...></interface>: give it children.
        let open = if el.self_closing {
            format!("{}>", open[..open.len() - 2].trim_end())
        } else {
            open
        };
        let inner = &doc[el.inner()];
        let tail = if inner.contains('\n') || sep.is_empty() {
            inner.to_string()
        } else {
            format!("{inner}{eol}{}", own_indent.unwrap_or_default())
        };
        let text = format!("{open}{sep}{source_el}{sep}{model_el}{tail}</{}>", el.name);
        return (text, Vec::new());
    }

    let host_side = matches!(kind, "user" | "ethernet");
    let has_source = el.child("source").is_some();
    let has_model = el.child("model").is_some();
    let mut seen_source = false;
    let mut notes = Vec::new();
    let mut out = open;
    if !has_source && el.child("mac").is_none() {
        out.push_str(&sep);
        out.push_str(&source_el);
        if !has_model {
            out.push_str(&sep);
            out.push_str(&model_el);
        }
    }
    let mut cursor = el.start_tag.end;
    for c in &el.children {
        let action = match c.name.as_str() {
            "source" if !seen_source => {
                seen_source = true;
                Action::Replace(source_el.clone())
            }
            "source" => Action::Drop,
            // The transitional variants are virtio already, chosen for the guest.
            "model" if c.attr("type").is_some_and(super::is_virtio_model) => Action::Keep,
            "model" => {
                // Only the start tag changes; `<model ...></model>` keeps its end tag.
                let mut m = set_attr(doc, c, "type", "virtio", quote);
                m.push_str(&doc[c.start_tag.end..c.span.end]);
                Action::Replace(m)
            }
            "target" => {
                if c.attr("managed") == Some("no") || c.attr("dev").is_some_and(generated_name) {
                    Action::Drop
                } else {
                    Action::Keep
                }
            }
            "script" | "downscript" => Action::Drop,
            "ip" | "route" | "backend" if host_side => Action::Drop,
            "portForward" if kind == "user" => Action::Drop,
            // A network fills in (or checks) a NIC's virtualport; a Linux bridge NIC takes
            // only the types that name a port of their own.
            "virtualport"
                if dest.kind == "bridge"
                    && !matches!(c.attr("type"), Some("openvswitch" | "midonet")) =>
            {
                notes.push(match c.attr("type") {
                    Some(t) => format!(
                        "dropped <virtualport type='{}'>: a NIC on a Linux bridge takes only openvswitch or midonet ports",
                        one_line(t)
                    ),
                    None => "dropped <virtualport> without a type: the network filled it in, and a NIC on a bridge must name its type".to_string(),
                });
                Action::Drop
            }
            // A floor reserves bandwidth in a libvirt network: only network NICs may have one.
            "bandwidth" if dest.kind == "bridge" => match without_floor(doc, c) {
                Some((new, note)) => {
                    notes.push(note);
                    if new.is_empty() {
                        Action::Drop
                    } else {
                        Action::Replace(new)
                    }
                }
                None => Action::Keep,
            },
            _ => Action::Keep,
        };
        let gap = &doc[cursor..c.span.start];
        cursor = c.span.end;
        match action {
            Action::Keep => {
                out.push_str(gap);
                out.push_str(&doc[c.span.clone()]);
            }
            Action::Drop => {
                out.push_str(&gap[..cut_before_removed(gap)]);
                // The removed element's trailing spaces would otherwise end the line above.
                cursor = line_rest(doc, cursor, el.end_tag_start);
            }
            Action::Replace(new) => {
                out.push_str(gap);
                out.push_str(&new);
            }
        }
        let is_anchor = c.name == "mac" && el.child("mac").is_some_and(|m| m.span == c.span);
        let after_source = (c.name == "source"
            && !has_model
            && el.child("source").is_some_and(|s| s.span == c.span))
            || (is_anchor && !has_source && !has_model);
        if (is_anchor && !has_source) || after_source {
            // Insert after the anchor's own trailing spaces, so they stay on its line.
            let end = line_rest(doc, cursor, el.end_tag_start);
            out.push_str(&doc[cursor..end]);
            cursor = end;
        }
        if is_anchor && !has_source {
            out.push_str(&sep);
            out.push_str(&source_el);
        }
        if after_source {
            out.push_str(&sep);
            out.push_str(&model_el);
        }
    }
    out.push_str(&doc[cursor..el.span.end]);
    (out, notes)
}

/// `<bandwidth>` without the `floor` of its `<inbound>` and a note saying so, or None when
/// it has none. An inbound left without an average says nothing libvirt accepts and goes; a
/// bandwidth left without children goes too (the empty string).
fn without_floor(doc: &str, bw: &Element) -> Option<(String, String)> {
    let floors: Vec<&Element> = bw
        .children_named("inbound")
        .filter(|i| i.attr("floor").is_some())
        .collect();
    let first = floors.first()?;
    let floor = one_line(first.attr("floor").unwrap_or_default());
    let why = "only a NIC on a libvirt network can reserve a floor";
    let note = if first.attr("average").is_some() {
        format!("dropped floor='{floor}' from <bandwidth><inbound> ({why}); its average, peak and burst stay")
    } else {
        format!("dropped <bandwidth><inbound floor='{floor}'> ({why}); it set no average to keep")
    };
    let mut out = doc[bw.start_tag.clone()].to_string();
    let mut cursor = bw.start_tag.end;
    let mut removed = 0;
    for inbound in floors {
        let gap = &doc[cursor..inbound.span.start];
        if inbound.attr("average").is_some() {
            out.push_str(gap);
            out.push_str(&remove_attr(doc, inbound, "floor"));
            out.push_str(&doc[inbound.start_tag.end..inbound.span.end]);
            cursor = inbound.span.end;
        } else {
            out.push_str(&gap[..cut_before_removed(gap)]);
            cursor = line_rest(doc, inbound.span.end, bw.end_tag_start);
            removed += 1;
        }
    }
    if removed == bw.children.len() {
        return Some((String::new(), note));
    }
    out.push_str(&doc[cursor..bw.span.end]);
    Some((out, note))
}

/// The element's start tag without attribute `name` (and the white space before it).
fn remove_attr(doc: &str, el: &Element, name: &str) -> String {
    let tag = &doc[el.start_tag.clone()];
    let Some(a) = el.attr_full(name) else {
        return tag.to_string();
    };
    let name_start = a.value_span.start - el.start_tag.start;
    // Back over `name = ` to the white space that separates it from what is before.
    let head = &tag[..name_start];
    let head = head.trim_end_matches(['\'', '"']).trim_end();
    let head = head.strip_suffix('=').unwrap_or(head).trim_end();
    let head = head.strip_suffix(name).unwrap_or(head).trim_end();
    let value_end = a.value_span.end - el.start_tag.start + 1;
    format!("{head}{}", &tag[value_end..])
}

#[cfg(test)]
mod tests {
    use super::super::scan;
    use super::*;

    #[test]
    fn cut_keeps_comments_and_blank_lines() {
        assert_eq!(cut_before_removed("\n    "), 0);
        assert_eq!(cut_before_removed("\r\n\t"), 0);
        assert_eq!(cut_before_removed("\n    <!-- c -->\n    "), 15);
        assert_eq!(cut_before_removed("<!-- c --> "), 10);
        assert_eq!(cut_before_removed("\n\n  "), 1);
        assert_eq!(cut_before_removed(""), 0);
    }

    #[test]
    fn line_rest_stops_at_line_breaks_only() {
        let doc = "<a/>  \t\r\n<b/> <c/>";
        assert_eq!(line_rest(doc, 4, doc.len()), 7);
        assert_eq!(line_rest(doc, 13, doc.len()), 13);
    }

    #[test]
    fn generated_names() {
        for yes in ["vnet0", "vnet12", "macvtap3", "macvlan0", "tap7"] {
            assert!(generated_name(yes), "{yes}");
        }
        for no in ["vnet", "mytap", "tapx", "web0"] {
            assert!(!generated_name(no), "{no}");
        }
    }

    #[test]
    fn line_indents() {
        let doc = "<a>\n\t\t<b/> <c/>\n</a>";
        assert_eq!(line_indent(doc, 6), Some("\t\t"));
        assert_eq!(line_indent(doc, 11), None);
    }

    #[test]
    fn layout_unit_from_devices() {
        let doc = "<domain>\n\t<devices>\n\t\t<interface type='user'/>\n\t</devices>\n</domain>";
        let root = scan::parse(doc).unwrap();
        let l = Layout::of(doc, &root);
        assert_eq!(l.unit, "\t");
        assert_eq!(l.eol, "\n");
    }

    #[test]
    fn set_attr_keeps_quotes_and_adds_missing() {
        let doc = r#"<model  type="e1000" x='1'/>"#;
        let el = scan::parse(doc).unwrap();
        assert_eq!(
            set_attr(doc, &el, "type", "virtio", '\''),
            r#"<model  type="virtio" x='1'/>"#
        );
        let doc = "<model x='1' />";
        let el = scan::parse(doc).unwrap();
        assert_eq!(
            set_attr(doc, &el, "type", "virtio", '"'),
            "<model x='1' type=\"virtio\"/>"
        );
    }
}
