//! Which network stack manages a NIC, read from the files under a root: netplan files that
//! name it, a `.network` file matching it, an ifupdown stanza, a NetworkManager profile
//! (counted only while NM runs). One stack is the answer; none or several are refused.

use super::{ifupdown, list_dir, networkd, nm, under, Backend, MARK};
use crate::error::{Error, Result};
use crate::plan::Plan;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One file that claims the NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub backend: Backend,
    pub file: PathBuf,
    /// The bridge or bond the file makes the NIC a port of (not one of vbridge's).
    pub port_of: Option<String>,
}

impl Finding {
    fn text(&self) -> String {
        format!("{} ({})", self.backend, self.file.display())
    }
}

/// netplan's YAML files that name the NIC as a key, or list it as a bridge/bond port.
fn netplan(root: &Path, nic: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let names = [nic.to_string(), format!("\"{nic}\""), format!("'{nic}'")];
    for d in ["/etc/netplan", "/run/netplan", "/lib/netplan"] {
        for p in list_dir(&under(root, d)) {
            if p.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let ours = text.contains(MARK);
            let mut key = false;
            let mut port = None;
            let mut list_indent: Option<usize> = None;
            let mut parents: Vec<(usize, String)> = Vec::new();
            for line in text.lines() {
                let t = line.trim_start();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                let ind = line.len() - t.len();
                if let Some(li) = list_indent {
                    if ind > li && t.starts_with('-') {
                        let item = t[1..].trim();
                        if names.iter().any(|n| n == item) {
                            port = port.or_else(|| owner(&parents, li));
                        }
                        continue;
                    }
                    list_indent = None;
                }
                parents.retain(|(i, _)| *i < ind);
                if let Some((k, rest)) = t.split_once(':') {
                    parents.push((ind, k.trim().trim_matches(['"', '\'']).to_string()));
                    if names.iter().any(|n| n == k.trim()) {
                        key = true;
                    }
                    if k.trim() == "interfaces" {
                        let rest = rest.trim();
                        if rest.is_empty() {
                            list_indent = Some(ind);
                        } else if rest
                            .trim_matches(['[', ']'])
                            .split(',')
                            .any(|i| names.iter().any(|n| n == i.trim()))
                        {
                            port = port.or_else(|| owner(&parents, ind));
                        }
                    }
                }
            }
            if key || port.is_some() {
                out.push(Finding {
                    backend: Backend::Netplan,
                    file: p,
                    port_of: port.filter(|_| !ours),
                });
            }
        }
    }
    out
}

/// The key above an `interfaces:` key at indent `ind`: the bridge or bond it belongs to.
fn owner(parents: &[(usize, String)], ind: usize) -> Option<String> {
    parents
        .iter()
        .rev()
        .find(|(i, _)| *i < ind)
        .map(|(_, k)| k.clone())
}

/// The `.network` file networkd would apply to the NIC (netplan's generated ones excluded:
/// they are netplan's).
fn networkd(root: &Path, nic: &str) -> Vec<Finding> {
    let files: Vec<_> = networkd::network_files(root)
        .into_iter()
        .filter(|f| !f.name.starts_with("10-netplan-"))
        .collect();
    networkd::first_match(&files, nic)
        .map(|f| Finding {
            backend: Backend::Networkd,
            file: f.path.clone(),
            port_of: f.master().filter(|_| !f.ours()),
        })
        .into_iter()
        .collect()
}

/// The ifupdown files with an `iface NIC` stanza or a stanza making it a port.
fn ifupdown(root: &Path, nic: &str) -> Result<Vec<Finding>> {
    if !under(root, ifupdown::INTERFACES).exists() {
        return Ok(vec![]);
    }
    let docs = ifupdown::documents(root, &Plan::default())?;
    let mut out = Vec::new();
    if let Some((master, file)) = ifupdown::port_of(&docs, nic) {
        let ours = docs.iter().any(|d| d.path == file && d.ours());
        out.push(Finding {
            backend: Backend::Ifupdown,
            file,
            port_of: (!ours).then_some(master),
        });
    }
    for d in &docs {
        if d.ifaces(nic).next().is_some() && !out.iter().any(|f| f.file == d.path) {
            out.push(Finding {
                backend: Backend::Ifupdown,
                file: d.path.clone(),
                port_of: None,
            });
        }
    }
    Ok(out)
}

/// NetworkManager profiles for the NIC (netplan's generated ones excluded).
fn nm(root: &Path, nic: &str) -> Vec<Finding> {
    nm::profiles(root)
        .into_iter()
        .filter(|p| {
            !p.path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("netplan-"))
        })
        .filter(|p| p.is_for(nic, None))
        .map(|p| Finding {
            backend: Backend::Nm,
            port_of: p.master.clone().filter(|_| !p.ours),
            file: p.path,
        })
        .collect()
}

/// Every file under `root` that claims `nic`, by stack. NM profiles count only when
/// `nm_running`: without the daemon nothing applies them.
pub fn findings(root: &Path, nic: &str, nm_running: bool) -> Result<Vec<Finding>> {
    let mut out = netplan(root, nic);
    out.extend(networkd(root, nic));
    out.extend(ifupdown(root, nic)?);
    if nm_running {
        out.extend(nm(root, nic));
    }
    Ok(out)
}

/// The one stack that manages `nic`; refused, naming what was found, when the NIC is a
/// port already, or when no stack or more than one claims it.
pub fn detect(root: &Path, nic: &str, nm_running: bool) -> Result<Backend> {
    let found = findings(root, nic, nm_running)?;
    if let Some(f) = found.iter().find(|f| f.port_of.is_some()) {
        return Err(Error::conflict(format!(
            "{nic} is already a port of {} ({})",
            f.port_of.as_deref().unwrap_or("?"),
            f.file.display()
        ))
        .with_hint("a NIC can be the port of one bridge or bond only: remove it there first"));
    }
    let mut stacks: Vec<Backend> = found.iter().map(|f| f.backend).collect();
    stacks.dedup();
    match stacks.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::not_found(format!(
            "no network stack manages {nic}: {}",
            if nm_running {
                "no netplan file, networkd .network file, ifupdown stanza or NetworkManager profile names it"
            } else {
                "no netplan file, networkd .network file or ifupdown stanza names it (NetworkManager profiles count only while NetworkManager runs)"
            }
        ))
        .with_hint("choose the stack with --backend netplan|networkd|ifupdown|nm")),
        _ => Err(Error::conflict(format!(
            "{nic} is managed by more than one network stack: {}",
            found.iter().map(Finding::text).collect::<Vec<_>>().join(", ")
        ))
        .with_hint("leave the NIC to one stack, or choose one with --backend")),
    }
}
