//! The desired-state file of `vbridge plan` / `vbridge apply`: per host the bridge networks
//! and, per VM, the NICs wanted. Read from YAML or JSON; unknown keys are refused and every
//! error points into the file (line and column). Documented key by key in the README ("Desired state").

pub mod apply;
pub mod diff;
pub mod observe;
pub mod run;

use crate::error::{Error, Result};
use crate::validate::{self, BridgeName, Mac};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    pub hosts: Vec<Host>,
}

/// One hypervisor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// libvirt URI; None: the one given with `-c`, else libvirt's default.
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub networks: Vec<Network>,
    #[serde(default)]
    pub vms: BTreeMap<String, Vm>,
}

/// A libvirt network with `<forward mode='bridge'/>` on a host bridge (what `net-define`
/// makes: defined, started, autostarted).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, try_from = "RawNetwork")]
pub struct Network {
    pub name: String,
    pub bridge: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: String,
    bridge: String,
}

impl TryFrom<RawNetwork> for Network {
    type Error = String;
    fn try_from(r: RawNetwork) -> std::result::Result<Self, String> {
        validate::object_name("network", &r.name).map_err(|e| e.message)?;
        validate::interface_name(&r.bridge).map_err(|e| e.message)?;
        Ok(Network {
            name: r.name,
            bridge: r.bridge,
        })
    }
}

/// One VM (by libvirt name or UUID).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    #[serde(default)]
    pub nics: Vec<NicWant>,
    #[serde(default)]
    pub verify: Option<Verify>,
}

/// After apply: the VM's bridged NICs must have a LAN address that answers within `timeout`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// Seconds.
    pub timeout: f64,
}

impl Eq for Verify {}

/// How a NIC is put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The persistent definition only (`vbridge attach`): effective at the next cold start.
    Persistent,
    /// The running VM's NIC moved in place (`update-device --live`).
    Live,
    /// A new NIC added to the running VM and its definition (`vbridge attach --hotplug`).
    Hotplug,
}

/// Where a NIC is plugged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// `type='bridge'`, `<source bridge>`.
    Bridge(BridgeName),
    /// `type='network'`, `<source network>`.
    Network(String),
}

/// One NIC wanted on a VM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RawNic")]
pub struct NicWant {
    /// Lower-cased; None: the NIC vbridge would pick (the single one not yet on the
    /// bridge for `persistent`, a MAC derived from the VM's UUID and the bridge for `hotplug`).
    pub mac: Option<Mac>,
    pub target: Target,
    pub mode: Mode,
    /// `<model type>`; None means virtio, what vbridge writes.
    pub model: Option<String>,
    pub mtu: Option<u32>,
    pub queues: Option<u32>,
}

impl NicWant {
    /// The model the NIC must have: the one asked for, else virtio (what attach writes).
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or("virtio")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNic {
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    network: Option<String>,
    mode: Mode,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    queues: Option<u32>,
}

impl TryFrom<RawNic> for NicWant {
    type Error = String;
    fn try_from(r: RawNic) -> std::result::Result<Self, String> {
        let msg = |e: Error| e.message;
        let target = match (r.bridge, r.network) {
            (Some(b), None) => Target::Bridge(BridgeName::parse(&b).map_err(msg)?),
            (None, Some(n)) => {
                validate::object_name("network", &n).map_err(msg)?;
                Target::Network(n)
            }
            (Some(_), Some(_)) => return Err("a NIC takes `bridge` or `network`, not both".into()),
            (None, None) => return Err("a NIC needs `bridge: NAME` or `network: NAME`".into()),
        };
        let mac = r.mac.as_deref().map(Mac::parse).transpose().map_err(msg)?;
        if let Some(m) = &r.model {
            if m.is_empty()
                || !m
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(format!(
                    "model {m:?} is not a NIC model name (virtio, e1000, ...)"
                ));
            }
        }
        if let Some(mtu) = r.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(format!("mtu {mtu} is outside 68..65535"));
            }
        }
        if r.queues == Some(0) {
            return Err("queues counts from 1".into());
        }
        Ok(NicWant {
            mac,
            target,
            mode: r.mode,
            model: r.model,
            mtu: r.mtu,
            queues: r.queues,
        })
    }
}

/// The file's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Yaml,
    Json,
}

/// Parse a desired-state document. `origin` names it in errors (`FILE:LINE:COL: ...`).
pub fn parse(text: &str, syntax: Syntax, origin: &str) -> Result<Desired> {
    let located = |line: usize, col: usize, msg: String| {
        Error::invalid(format!("{origin}:{line}:{col}: {msg}"))
            .with_hint("the README's \"Desired state\" section lists every key the file takes")
    };
    let desired: Desired = match syntax {
        Syntax::Json => serde_json::from_str(text).map_err(|e| {
            // serde_json appends " at line L column C" itself: keep only the message.
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            located(e.line(), e.column(), msg)
        })?,
        Syntax::Yaml => serde_saphyr::from_str(text).map_err(|e| {
            // serde-saphyr's text is "error: line L column C: MESSAGE" and a source snippet:
            // keep only the message; the location goes in front, as for JSON.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let msg = match first.split_once(": ") {
                Some((_, rest)) if first.starts_with("error: line ") => {
                    rest.split_once(": ").map_or(rest, |(_, m)| m)
                }
                _ => first.strip_prefix("error: ").unwrap_or(first),
            }
            .to_string();
            match e.location() {
                Some(l) => located(l.line() as usize, l.column() as usize, msg),
                None => Error::invalid(format!("{origin}: {msg}")),
            }
        })?,
    };
    check(&desired, origin)?;
    Ok(desired)
}

/// Read and parse a desired-state file; `.json` files (or text starting with `{`) are JSON.
pub fn load(path: &Path) -> Result<Desired> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let json = path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let syntax = if json { Syntax::Json } else { Syntax::Yaml };
    parse(&text, syntax, &path.display().to_string())
}

/// What serde cannot see: the same host twice, the same MAC twice on one VM.
fn check(d: &Desired, origin: &str) -> Result<()> {
    let mut uris = std::collections::HashSet::new();
    for h in &d.hosts {
        if !uris.insert(h.uri.as_deref()) {
            return Err(Error::invalid(format!(
                "{origin}: host {} is listed twice",
                h.uri.as_deref().unwrap_or("(default URI)")
            )));
        }
        for (name, vm) in &h.vms {
            let mut macs = std::collections::HashSet::new();
            for n in &vm.nics {
                if let Some(m) = &n.mac {
                    if !macs.insert(m) {
                        return Err(Error::invalid(format!(
                            "{origin}: VM {name} lists MAC {m} twice"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
hosts:
  - uri: qemu:///system            # optional; default: libvirt's default
    networks:
      - {name: br0-network, bridge: br0}
    vms:
      web:
        nics:
          - {mac: "52:54:00:3a:10:01", bridge: br0, mode: persistent}   # or network: NAME
      db:
        nics:
          - {bridge: br0, mode: hotplug, mtu: 9000, queues: 2}
        verify: {timeout: 30}
"#;

    #[test]
    fn the_issue_example_parses() {
        let d = parse(ISSUE_EXAMPLE, Syntax::Yaml, "f.yml").unwrap();
        let h = &d.hosts[0];
        assert_eq!(h.uri.as_deref(), Some("qemu:///system"));
        assert_eq!(h.networks[0].bridge, "br0");
        let db = &h.vms["db"];
        assert_eq!(db.nics[0].mtu, Some(9000));
        assert_eq!(db.nics[0].mode, Mode::Hotplug);
        assert_eq!(db.verify.as_ref().unwrap().timeout, 30.0);
        assert_eq!(
            h.vms["web"].nics[0].target,
            Target::Bridge(BridgeName::parse("br0").unwrap())
        );
    }

    #[test]
    fn json_is_accepted_too() {
        let d = parse(
            r#"{"hosts": [{"vms": {"web": {"nics": [{"network": "n1", "mode": "live"}]}}}]}"#,
            Syntax::Json,
            "f.json",
        )
        .unwrap();
        assert_eq!(
            d.hosts[0].vms["web"].nics[0].target,
            Target::Network("n1".into())
        );
    }

    #[test]
    fn errors_point_into_the_file() {
        let yaml = "hosts:\n  - uri: test:///default\n    vms:\n      web:\n        nics:\n          - {bridge: br0, mode: persistent, colour: red}\n";
        let e = parse(yaml, Syntax::Yaml, "f.yml").unwrap_err();
        assert!(e.message.starts_with("f.yml:6:"), "{}", e.message);
        assert!(e.message.contains("colour"), "{}", e.message);

        let e = parse("hosts:\n  - urk: x\n", Syntax::Yaml, "f.yml").unwrap_err();
        assert!(
            e.message
                .starts_with("f.yml:2:5: unknown field `urk`, expected one of uri, networks, vms"),
            "{}",
            e.message
        );

        let json = "{\"hosts\": [\n  {\"vms\": {\"web\": {\"nics\": [{\"bridge\": \"br0\", \"mode\": \"sideways\"}]}}}]}";
        let e = parse(json, Syntax::Json, "f.json").unwrap_err();
        assert!(e.message.starts_with("f.json:2:"), "{}", e.message);
        assert!(e.message.contains("sideways"), "{}", e.message);

        for (bad, says) in [
            ("{bridge: br0, network: n, mode: live}", "not both"),
            ("{mode: live}", "needs `bridge"),
            ("{bridge: br0, mode: live, mac: zz}", "MAC"),
            ("{bridge: br0, mode: live, mtu: 10}", "mtu"),
            ("{bridge: br0, mode: live, queues: 0}", "queues"),
        ] {
            let yaml = format!("hosts:\n  - vms:\n      web:\n        nics:\n          - {bad}\n");
            let e = parse(&yaml, Syntax::Yaml, "f.yml").unwrap_err();
            assert!(e.message.starts_with("f.yml:5:"), "{bad}: {}", e.message);
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let e = parse("hosts: [{}, {}]", Syntax::Yaml, "f").unwrap_err();
        assert!(e.message.contains("twice"), "{}", e.message);
    }
}
