//! What a NIC can be asked for beyond "virtio on this bridge": a libvirt network
//! (`type='network'`) or macvtap (`type='direct'`) as the target, `<mtu size>`, `<driver queues>`, and the element a live move hands libvirt
//! (new source, `<link state>`). Every edit splices into the element's own text, as the
//! bridge rewrite does, so what is not asked for stays byte-identical.

use super::dest::Dest;
use super::rewrite::rewrite_to;
use super::scan::{self, Element};
use super::{eol_of, interfaces, nic_from, numbered, Nic, NicChange, Rewritten, Selection};
use crate::error::{Error, Result};
use crate::validate::{BridgeName, DirectMode, Mtu, Queues};
use crate::xml::escape;
use std::ops::Range;

/// Where a NIC goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A virtio NIC on a host bridge (`type='bridge'`).
    Bridge(BridgeName),
    /// A virtio macvtap NIC on a host NIC (`type='direct'`, `<source dev mode>`).
    Direct { dev: BridgeName, mode: DirectMode },
    /// A virtio NIC on a libvirt network (`type='network'`, `<source network>`); the name
    /// was checked with `validate::object_name` where it entered.
    Network(String),
}

impl Target {
    /// The NIC is already what this target makes of it (a virtio NIC there).
    pub fn holds(&self, nic: &Nic) -> bool {
        match self {
            Target::Bridge(b) => nic.is_on_bridge(b.as_str()),
            Target::Network(n) => Dest::network(n).holds(nic),
            Target::Direct { dev, mode } => {
                nic.kind == "direct"
                    && nic.source.get("dev").map(String::as_str) == Some(dev.as_str())
                    && nic.source.get("mode").map_or("vepa", String::as_str) == mode.as_str()
                    && nic.model.as_deref().is_some_and(super::is_virtio_model)
            }
        }
    }

    /// "bridge br0", "macvtap on eth1 (bridge mode)".
    pub fn describe(&self) -> String {
        match self {
            Target::Bridge(b) => format!("bridge {b}"),
            Target::Direct { dev, mode } => format!("macvtap on {dev} ({mode} mode)"),
            Target::Network(n) => format!("network {n}"),
        }
    }
}

/// Options a rewritten or added NIC gets, checked where they entered (the types).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NicOptions {
    pub mtu: Option<Mtu>,
    pub queues: Option<Queues>,
}

impl NicOptions {
    pub fn is_empty(&self) -> bool {
        self.mtu.is_none() && self.queues.is_none()
    }

    /// Refuse more queues than the VM has vCPUs: the extra queues would never be used.
    pub fn check_against(&self, facts: &super::DomainFacts) -> Result<()> {
        if let (Some(q), Some(v)) = (self.queues, facts.vcpus) {
            if q.get() > v {
                let name = facts.name.as_deref().unwrap_or("the VM");
                return Err(Error::invalid(format!(
                    "--queues {q} is more than {name}'s {v} vCPU(s): a queue pair is served by one vCPU, so the extra queues would sit idle"
                ))
                .with_hint(format!("use --queues {v} or fewer, or give the VM more vCPUs first")));
            }
        }
        Ok(())
    }
}

/// Rewrite the selected interfaces onto `target` with `options`, changing nothing else.
/// A NIC already on the target changes only if an option asks for something it lacks.
/// More queues than the domain has vCPUs are refused.
pub fn rewrite_nics(
    xml: &str,
    target: &Target,
    selection: &Selection,
    options: &NicOptions,
) -> Result<Rewritten> {
    options.check_against(&super::facts(xml)?)?;
    // macvtap is the bridge rewrite with another source: it keeps every rule of that
    // rewrite (what is dropped, what is kept, the layout) and only swaps the source.
    let base = match target {
        Target::Bridge(b) => rewrite_to(xml, Dest::bridge(b.as_str()), selection)?,
        Target::Network(n) => rewrite_to(xml, Dest::network(n), selection)?,
        Target::Direct { dev, .. } => {
            let selection = direct_selection(xml, target, selection)?;
            rewrite_to(xml, Dest::bridge(dev.as_str()), &selection)?
        }
    };
    let mut changes = base.changes;
    changes.sort_by_key(|c| c.index);
    let mut out = String::with_capacity(base.xml.len() + 64);
    let mut cursor = 0;
    for c in &changes {
        let original = &xml[c.before.span.clone()];
        let rewritten = &base.xml[c.after.span.clone()];
        let mut text = match target {
            Target::Direct { .. } if target.holds(&c.before) => original.to_string(),
            Target::Direct { dev, mode } => to_direct(rewritten, dev, *mode)?,
            Target::Bridge(_) | Target::Network(_) => rewritten.to_string(),
        };
        text = with_options(&text, options)?;
        out.push_str(&base.xml[cursor..c.after.span.start]);
        out.push_str(&text);
        cursor = c.after.span.end;
    }
    out.push_str(&base.xml[cursor..]);

    let root =
        super::domain_root(&out).map_err(|e| e.context("internal error: the rewritten XML"))?;
    let after = numbered(&interfaces(&root));
    let changes = changes
        .into_iter()
        .map(|c| {
            let a = after[c.index - 1].clone();
            let changed = out[a.span.clone()] != xml[c.before.span.clone()];
            NicChange {
                changed,
                after: a,
                ..c
            }
        })
        .collect();
    Ok(Rewritten { xml: out, changes })
}

/// `--direct` without a NIC named: the one NIC not yet on the macvtap target. The bridge
/// rewrite's own choice would count a NIC already on that macvtap as a candidate.
fn direct_selection(xml: &str, target: &Target, selection: &Selection) -> Result<Selection> {
    if *selection != Selection::Auto {
        return Ok(selection.clone());
    }
    let nics = super::nics(xml)?;
    let (on, off): (Vec<&Nic>, Vec<&Nic>) = nics.iter().partition(|n| target.holds(n));
    Ok(match (on.len(), off.len()) {
        (0, _) => Selection::Auto,
        (_, 0) => Selection::Index(on[0].index),
        (_, 1) => Selection::Index(off[0].index),
        _ => Selection::Auto,
    })
}

/// A bridge-rewritten element made a macvtap one: `type='direct'`, `<source dev mode>`.
fn to_direct(element: &str, dev: &BridgeName, mode: DirectMode) -> Result<String> {
    let el = parse_element(element)?;
    let q = quote_of(&el);
    let mut edits = Edits::default();
    edits.set_attr(element, &el, "type", "direct", q);
    let source = format!(
        "<source dev={q}{}{q} mode={q}{mode}{q}/>",
        escape(dev.as_str())
    );
    match el.child("source") {
        Some(s) => edits.replace(s.span.clone(), source),
        None => edits.append_child(element, &el, source, None),
    }
    Ok(edits.apply(element))
}

/// The element with `<mtu size>` and `<driver queues>` as `options` ask, others kept.
pub fn with_options(element: &str, options: &NicOptions) -> Result<String> {
    if options.is_empty() {
        return Ok(element.to_string());
    }
    let el = parse_element(element)?;
    let q = quote_of(&el);
    let mut edits = Edits::default();
    if let Some(queues) = options.queues {
        let n = queues.to_string();
        // One queue is virtio's default: libvirt drops `queues='1'` from what it stores,
        // so no <driver queues> at all already means 1.
        let default = queues.get() == 1;
        match el.child("driver") {
            Some(d) if d.attr("queues") == Some(n.as_str()) => {}
            Some(d) if default && d.attr("queues").is_none() => {}
            None if default => {}
            // Merged into the <driver> there is: its other attributes and children stay.
            Some(d) => edits.set_attr(element, d, "queues", &n, q),
            None => edits.append_child(
                element,
                &el,
                format!("<driver queues={q}{n}{q}/>"),
                el.child("model"),
            ),
        }
    }
    if let Some(mtu) = options.mtu {
        let size = mtu.to_string();
        match el.child("mtu") {
            Some(m) if m.attr("size") == Some(size.as_str()) => {}
            Some(m) => edits.set_attr(element, m, "size", &size, q),
            None => edits.append_child(element, &el, format!("<mtu size={q}{size}{q}/>"), None),
        }
    }
    Ok(edits.apply(element))
}

/// The state of a NIC's link in the guest (`<link state>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Up,
    Down,
}

impl Link {
    fn as_str(self) -> &'static str {
        match self {
            Link::Up => "up",
            Link::Down => "down",
        }
    }
}

/// The live `<interface>` of a running VM moved to `bridge`, for `virDomainUpdateDeviceFlags`:
/// the type and source change, and the link state if asked; the MAC, model, tap, alias and
/// PCI address stay, which is what lets libvirt reconnect the running NIC instead of
/// refusing the change.
pub fn live_move(element: &str, bridge: &BridgeName, link: Option<Link>) -> Result<String> {
    live_move_to(element, &Target::Bridge(bridge.clone()), link)
}

/// [`live_move`] onto a bridge or a libvirt network (`type='network'`, `<source network>`:
/// libvirt allocates the network's port itself). A macvtap target cannot be reached live.
pub fn live_move_to(element: &str, target: &Target, link: Option<Link>) -> Result<String> {
    let (kind, attr, name) = match target {
        Target::Bridge(b) => ("bridge", "bridge", b.as_str()),
        Target::Network(n) => ("network", "network", n.as_str()),
        Target::Direct { .. } => {
            return Err(Error::unsupported(
                "internal error: a running NIC cannot be moved onto macvtap",
            ))
        }
    };
    let el = parse_element(element)?;
    let q = quote_of(&el);
    let mut edits = Edits::default();
    edits.set_attr(element, &el, "type", kind, q);
    let source = format!("<source {attr}={q}{}{q}/>", escape(name));
    let mut sources = el.children_named("source");
    match sources.next() {
        Some(s) => edits.replace(s.span.clone(), source),
        None => edits.append_child(element, &el, source, el.child("mac")),
    }
    for extra in sources {
        edits.replace(extra.span.clone(), String::new());
    }
    if let Some(link) = link {
        edits.link(element, &el, link, q);
    }
    Ok(edits.apply(element))
}

/// The live element with only its link state set.
pub fn live_link(element: &str, link: Link) -> Result<String> {
    let el = parse_element(element)?;
    let mut edits = Edits::default();
    edits.link(element, &el, link, quote_of(&el));
    Ok(edits.apply(element))
}

/// The live element as libvirt takes it back when a NIC returns to where it was: a
/// network NIC's source names the network only, for libvirt to allocate a new port
/// (the `portid` and `bridge` it printed belonged to the port released by the move).
///
/// libvirt shows a running NIC of a bridge-mode network as `type='bridge'` naming both the
/// network and its bridge: that NIC goes back onto its network too, not onto the bare bridge.
pub fn live_restore(element: &str) -> Result<String> {
    let el = parse_element(element)?;
    let Some(s) = el.child("source") else {
        return Ok(element.to_string());
    };
    let on_network = match el.attr("type") {
        Some("network") => true,
        Some("bridge") => s.attr("network").is_some(),
        _ => false,
    };
    if !on_network {
        return Ok(element.to_string());
    }
    let q = quote_of(&el);
    let keep: String = s
        .attrs
        .iter()
        .filter(|a| a.name == "network" || a.name == "portgroup")
        .map(|a| format!(" {}={q}{}{q}", a.name, escape(&a.value)))
        .collect();
    let mut edits = Edits::default();
    edits.set_attr(element, &el, "type", "network", q);
    edits.replace(s.span.clone(), format!("<source{keep}/>"));
    Ok(edits.apply(element))
}

/// The `<link state>` of a lone `<interface>` element, if it says one.
pub fn link_of(element: &str) -> Option<String> {
    let el = parse_element(element).ok()?;
    el.child("link")?.attr("state").map(str::to_string)
}

/// Where a NIC is, in words: "bridge br0", "network default", "macvtap on eth1", "user".
pub fn describe_source(nic: &Nic) -> String {
    let src = |k: &str| nic.source.get(k).map(String::as_str).unwrap_or("?");
    match nic.kind.as_str() {
        "bridge" => format!("bridge {}", src("bridge")),
        "network" => format!("network {}", src("network")),
        "direct" => format!("macvtap on {}", src("dev")),
        other => other.to_string(),
    }
}

/// A lone `<interface>` element read as a [`Nic`] (index 0, span within the element).
pub fn nic_of_element(element: &str) -> Result<Nic> {
    let el = parse_element(element)?;
    Ok(nic_from(&el, 0))
}

/// The live `<interface>` with this MAC in a domain document, as its text.
pub fn element_by_mac(xml: &str, mac: &str) -> Result<Option<(Nic, String)>> {
    Ok(super::nics(xml)?
        .into_iter()
        .find(|n| n.mac.as_deref() == Some(mac))
        .map(|n| {
            let text = xml[n.span.clone()].to_string();
            (n, text)
        }))
}

fn parse_element(element: &str) -> Result<Element> {
    let el = scan::parse(element)?;
    if el.name != "interface" {
        return Err(Error::invalid(format!(
            "internal error: <{}> is not an <interface>",
            el.name
        )));
    }
    Ok(el)
}

/// The quote the element's `type` attribute uses, for the attributes added to it.
fn quote_of(el: &Element) -> char {
    el.attr_full("type").map_or('\'', |a| a.quote as char)
}

/// Replacements within one element's text, applied at once.
#[derive(Default)]
struct Edits(Vec<(Range<usize>, String)>);

impl Edits {
    fn replace(&mut self, at: Range<usize>, text: String) {
        self.0.push((at, text));
    }

    /// Set (or add) attribute `name` of `el`'s start tag.
    fn set_attr(&mut self, doc: &str, el: &Element, name: &str, value: &str, q: char) {
        let value = escape(value);
        match el.attr_full(name) {
            Some(a) => self.replace(a.value_span.clone(), value),
            None => {
                let tag = &doc[el.start_tag.clone()];
                let close = el.start_tag.start + tag.len() - if el.self_closing { 2 } else { 1 };
                let head_end = el.start_tag.start + doc[el.start_tag.start..close].trim_end().len();
                self.replace(head_end..head_end, format!(" {name}={q}{value}{q}"));
            }
        }
    }

    /// Set `<link state>`, adding the element when there is none.
    fn link(&mut self, doc: &str, el: &Element, link: Link, q: char) {
        match el.child("link") {
            Some(l) => self.set_attr(doc, l, "state", link.as_str(), q),
            None => self.append_child(
                doc,
                el,
                format!("<link state={q}{}{q}/>", link.as_str()),
                None,
            ),
        }
    }

    /// Add a child after `after` (or after the last child), on its own line indented like
    /// its siblings when they have lines of their own.
    fn append_child(&mut self, doc: &str, el: &Element, child: String, after: Option<&Element>) {
        let sep = child_separator(doc, el);
        match after.or(el.children.last()) {
            Some(prev) => self.replace(prev.span.end..prev.span.end, format!("{sep}{child}")),
            None if el.self_closing => {
                // `<interface .../>` opens up: `<interface ...>CHILD</interface>`.
                let tag = &doc[el.start_tag.clone()];
                let head = tag[..tag.len() - 2].trim_end();
                self.replace(
                    el.start_tag.clone(),
                    format!("{head}>{sep}{child}</{}>", el.name),
                );
            }
            None => {
                let at = el.start_tag.end;
                self.replace(at..at, format!("{sep}{child}"));
            }
        }
    }

    fn apply(mut self, doc: &str) -> String {
        self.0.sort_by_key(|(r, _)| (r.start, r.end));
        let mut out = String::with_capacity(doc.len() + 64);
        let mut cursor = 0;
        for (r, text) in self.0 {
            out.push_str(&doc[cursor..r.start]);
            out.push_str(&text);
            cursor = r.end;
        }
        out.push_str(&doc[cursor..]);
        out
    }
}

/// What goes before a new child: a line break and the indentation of the first child on a
/// line of its own, or nothing when the element is written on one line.
fn child_separator(doc: &str, el: &Element) -> String {
    let mut prev_end = el.start_tag.end;
    for c in &el.children {
        let gap = &doc[prev_end..c.span.start];
        if let Some(p) = gap.rfind('\n') {
            let eol = eol_of(doc).unwrap_or("\n");
            return format!("{eol}{}", &gap[p + 1..]);
        }
        prev_end = c.span.end;
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAT: &str = "<interface type='network'>\n      <mac address='52:54:00:3a:10:01'/>\n      <source network='default' portid='a6f0' bridge='virbr0'/>\n      <target dev='vnet3'/>\n      <model type='e1000'/>\n      <alias name='net0'/>\n      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>\n    </interface>";

    fn br(b: &str) -> BridgeName {
        BridgeName::parse(b).unwrap()
    }

    #[test]
    fn a_live_move_changes_type_source_and_link_only() {
        let moved = live_move(NAT, &br("br0"), Some(Link::Down)).unwrap();
        assert_eq!(
            moved,
            "<interface type='bridge'>\n      <mac address='52:54:00:3a:10:01'/>\n      <source bridge='br0'/>\n      <target dev='vnet3'/>\n      <model type='e1000'/>\n      <alias name='net0'/>\n      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>\n      <link state='down'/>\n    </interface>"
        );
        let up = live_link(&moved, Link::Up).unwrap();
        assert_eq!(up, moved.replace("'down'", "'up'"));
        assert_eq!(
            live_move(NAT, &br("br0"), None).unwrap(),
            moved.replace("\n      <link state='down'/>", "")
        );
        let n = nic_of_element(&up).unwrap();
        assert_eq!(
            (n.kind.as_str(), n.source.get("bridge").map(String::as_str)),
            ("bridge", Some("br0"))
        );
        assert_eq!(n.model.as_deref(), Some("e1000"));
    }

    #[test]
    fn a_restored_network_nic_names_only_its_network() {
        let back = live_restore(NAT).unwrap();
        assert!(back.contains("<source network='default'/>"), "{back}");
        assert_eq!(
            back.replace("<source network='default'/>", ""),
            NAT.replace(
                "<source network='default' portid='a6f0' bridge='virbr0'/>",
                ""
            )
        );
        let bridge = "<interface type=\"bridge\"><source bridge=\"br1\"/></interface>";
        assert_eq!(live_restore(bridge).unwrap(), bridge);
    }

    #[test]
    fn a_bridge_mode_network_nic_goes_back_onto_its_network() {
        let live = "<interface type='bridge'>\n  <source network='br0-network' portid='7' bridge='br0'/>\n  <model type='virtio'/>\n</interface>";
        assert_eq!(
            live_restore(live).unwrap(),
            "<interface type='network'>\n  <source network='br0-network'/>\n  <model type='virtio'/>\n</interface>"
        );
    }

    #[test]
    fn a_live_move_onto_a_network_names_the_network_only() {
        let moved = live_move_to(NAT, &Target::Network("br0-network".into()), None).unwrap();
        assert_eq!(
            moved,
            NAT.replace(
                "<source network='default' portid='a6f0' bridge='virbr0'/>",
                "<source network='br0-network'/>"
            )
        );
        let direct = Target::Direct {
            dev: br("eth1"),
            mode: DirectMode::Bridge,
        };
        assert!(live_move_to(NAT, &direct, None).is_err());
    }

    #[test]
    fn a_network_target_keeps_what_the_bridge_rewrite_keeps() {
        let xml = "<domain><devices>\n  <interface type='bridge'>\n    <mac address='52:54:00:00:00:01'/>\n    <source bridge='br0'/>\n    <model type='e1000'/>\n    <target dev='vnet4'/>\n    <bandwidth><inbound average='1000' floor='200'/></bandwidth>\n  </interface>\n</devices></domain>";
        let t = Target::Network("lan".into());
        let r = rewrite_nics(xml, &t, &Selection::Auto, &NicOptions::default()).unwrap();
        assert_eq!(r.xml, "<domain><devices>\n  <interface type='network'>\n    <mac address='52:54:00:00:00:01'/>\n    <source network='lan'/>\n    <model type='virtio'/>\n    <bandwidth><inbound average='1000' floor='200'/></bandwidth>\n  </interface>\n</devices></domain>");
        assert!(t.holds(&r.changes[0].after));
        let again = rewrite_nics(&r.xml, &t, &Selection::Auto, &NicOptions::default()).unwrap();
        assert!(!again.changed());
        // The same network with another model: its portgroup stays; another network's goes.
        let pg = "<domain><devices>\n  <interface type='network'>\n    <source network='lan' portgroup='eng'/>\n    <model type='e1000'/>\n  </interface>\n</devices></domain>";
        let same = rewrite_nics(pg, &t, &Selection::Auto, &NicOptions::default()).unwrap();
        assert!(
            same.xml.contains("<source network='lan' portgroup='eng'/>"),
            "{}",
            same.xml
        );
        let other = Target::Network("wan".into());
        let moved = rewrite_nics(pg, &other, &Selection::Auto, &NicOptions::default()).unwrap();
        assert!(
            moved.xml.contains("<source network='wan'/>"),
            "{}",
            moved.xml
        );
    }

    #[test]
    fn options_merge_into_what_is_there() {
        let el = "<interface type='bridge'>\n  <source bridge='br0'/>\n  <model type='virtio'/>\n  <driver name='qemu' txmode='iothread'>\n    <host csum='off'/>\n  </driver>\n</interface>";
        let o = NicOptions {
            mtu: Some(Mtu::new(9000).unwrap()),
            queues: Some(Queues::new(4).unwrap()),
        };
        let out = with_options(el, &o).unwrap();
        assert_eq!(out, "<interface type='bridge'>\n  <source bridge='br0'/>\n  <model type='virtio'/>\n  <driver name='qemu' txmode='iothread' queues='4'>\n    <host csum='off'/>\n  </driver>\n  <mtu size='9000'/>\n</interface>");
        assert_eq!(with_options(&out, &o).unwrap(), out, "twice is once");
        let one_line = "<interface type=\"bridge\"><source bridge=\"br0\"/><model type=\"virtio\"/><mtu size=\"1500\"/></interface>";
        assert_eq!(
            with_options(one_line, &o).unwrap(),
            "<interface type=\"bridge\"><source bridge=\"br0\"/><model type=\"virtio\"/><driver queues=\"4\"/><mtu size=\"9000\"/></interface>"
        );
        assert_eq!(
            with_options(one_line, &NicOptions::default()).unwrap(),
            one_line
        );
        let one = NicOptions {
            mtu: None,
            queues: Some(Queues::new(1).unwrap()),
        };
        assert_eq!(
            with_options(one_line, &one).unwrap(),
            one_line,
            "1 is the default"
        );
        assert!(with_options(&out, &one).unwrap().contains("queues='1'"));
    }

    #[test]
    fn macvtap_swaps_the_source() {
        let xml = "<domain><devices>\n  <interface type='network'>\n    <mac address='52:54:00:00:00:01'/>\n    <source network='default'/>\n  </interface>\n</devices></domain>";
        let t = Target::Direct {
            dev: br("eth1"),
            mode: DirectMode::Bridge,
        };
        let r = rewrite_nics(xml, &t, &Selection::Auto, &NicOptions::default()).unwrap();
        assert_eq!(r.xml, "<domain><devices>\n  <interface type='direct'>\n    <mac address='52:54:00:00:00:01'/>\n    <source dev='eth1' mode='bridge'/>\n    <model type='virtio'/>\n  </interface>\n</devices></domain>");
        assert!(r.changed() && t.holds(&r.changes[0].after));
        let again = rewrite_nics(&r.xml, &t, &Selection::Auto, &NicOptions::default()).unwrap();
        assert!(!again.changed());
        assert_eq!(again.xml, r.xml);
        // Another mode is a change.
        let vepa = Target::Direct {
            dev: br("eth1"),
            mode: DirectMode::Vepa,
        };
        let r2 = rewrite_nics(&r.xml, &vepa, &Selection::Auto, &NicOptions::default()).unwrap();
        assert!(
            r2.xml.contains("<source dev='eth1' mode='vepa'/>"),
            "{}",
            r2.xml
        );
    }

    #[test]
    fn an_option_alone_changes_a_nic_already_on_the_bridge() {
        let xml = "<domain><devices>\n  <interface type='bridge'>\n    <source bridge='br0'/>\n    <model type='virtio'/>\n  </interface>\n</devices></domain>";
        let t = Target::Bridge(br("br0"));
        let plain = rewrite_nics(xml, &t, &Selection::Auto, &NicOptions::default()).unwrap();
        assert!(!plain.changed());
        let o = NicOptions {
            mtu: Some(Mtu::new(9000).unwrap()),
            queues: None,
        };
        let r = rewrite_nics(xml, &t, &Selection::Auto, &o).unwrap();
        assert!(r.changed());
        assert_eq!(r.changes[0].after.mtu, Some(9000));
        assert!(
            r.xml
                .contains("    <model type='virtio'/>\n    <mtu size='9000'/>\n  </interface>"),
            "{}",
            r.xml
        );
    }

    #[test]
    fn queues_above_the_vcpus_are_refused() {
        let facts = super::super::facts(
            "<domain><name>vm</name><vcpu placement='static'>2</vcpu></domain>",
        )
        .unwrap();
        assert_eq!(facts.vcpus, Some(2));
        let o = |n| NicOptions {
            mtu: None,
            queues: Some(Queues::new(n).unwrap()),
        };
        o(2).check_against(&facts).unwrap();
        let e = o(3).check_against(&facts).unwrap_err();
        assert!(e.message.contains("vm's 2 vCPU"), "{}", e.message);
    }
}
