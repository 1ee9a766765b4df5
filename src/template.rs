//! The XML templates under `xml-templates/`, compiled into the binary, and their rendering
//! with every value escaped.

use crate::error::{Error, Result};
use crate::xml::escape;

/// `<network>` with `<forward mode='bridge'/>` on a host bridge.
pub const NETWORK_BRIDGE: &str = include_str!("../xml-templates/network-bridge.xml");
/// A virtio `<interface type='bridge'>` for hotplug.
pub const INTERFACE_BRIDGE: &str = include_str!("../xml-templates/interface-bridge.xml");
/// A virtio `<interface type='network'>` for hotplug onto a libvirt network.
pub const INTERFACE_NETWORK: &str = include_str!("../xml-templates/interface-network.xml");

/// Replace each `{{key}}` with its escaped value. Every placeholder must have a value and
/// every value must be used, so a template and its caller cannot drift apart silently.
pub fn render(template: &str, values: &[(&str, &str)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut used = vec![false; values.len()];
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| Error::invalid("template has an unterminated {{ placeholder"))?;
        let key = after[..end].trim();
        let idx = values.iter().position(|(k, _)| *k == key).ok_or_else(|| {
            Error::invalid(format!("template placeholder {{{{{key}}}}} has no value"))
        })?;
        used[idx] = true;
        out.push_str(&escape(values[idx].1));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(Error::invalid(format!(
            "template has no placeholder for {:?}",
            values[i].0
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_escapes() {
        let xml = render(NETWORK_BRIDGE, &[("name", "a<b>&'\""), ("bridge", "br0")]).unwrap();
        assert!(xml.contains("<name>a&lt;b&gt;&amp;&apos;&quot;</name>"));
        assert!(xml.contains("<bridge name='br0'/>"));
    }

    #[test]
    fn missing_or_extra_values_are_errors() {
        assert!(render(NETWORK_BRIDGE, &[("name", "x")]).is_err());
        assert!(render(
            NETWORK_BRIDGE,
            &[("name", "x"), ("bridge", "b"), ("z", "1")]
        )
        .is_err());
    }
}
