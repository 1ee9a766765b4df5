//! ifupdown / ifupdown2: vbridge's stanza file in /etc/network/interfaces.d/ and the NIC's
//! own stanza turned to `manual` in the user's file, edited line by line so everything else
//! stays byte-identical, with a backup that `remove` puts back.

use super::{
    backup_path, create, delete_ours, glob_match, list_dir, planned, read, under, Config, FileStep,
    MARK,
};
use crate::error::{Error, Result};
use crate::plan::Plan;
use std::path::{Path, PathBuf};

/// The user's main file.
pub const INTERFACES: &str = "/etc/network/interfaces";
/// The directory vbridge's stanza goes to; `interfaces` must source it.
pub const DIR: &str = "/etc/network/interfaces.d";
/// Prefix of an option line vbridge disabled in the NIC's stanza.
pub const DISABLED: &str = "#vbridge# ";

/// Options that give an interface addresses or routes: a bridge port must carry none.
const ADDRESSING: &[&str] = &[
    "address",
    "netmask",
    "broadcast",
    "network",
    "gateway",
    "pointopoint",
    "metric",
    "dns-nameservers",
    "dns-search",
    "dns-domain",
    "scope",
];

/// The name of vbridge's stanza file (no dot: ifupdown's `source-directory` skips names
/// with one).
pub fn file_path(root: &Path, bridge: &str) -> PathBuf {
    under(root, DIR).join(format!("vbridge-{bridge}"))
}

/// One stanza of an interfaces file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// `iface`, `mapping`, `auto`, `allow-hotplug`, `source`, ...
    pub kind: String,
    pub args: Vec<String>,
    /// Index of the header line.
    pub line: usize,
    /// (line index, option key, value) of the stanza's option lines.
    pub options: Vec<(usize, String, String)>,
}

/// A parsed interfaces file, with its lines kept byte for byte (line ends included).
#[derive(Debug, Clone)]
pub struct Doc {
    pub path: PathBuf,
    pub lines: Vec<String>,
    pub stanzas: Vec<Stanza>,
}

fn is_header(word: &str) -> bool {
    matches!(
        word,
        "iface"
            | "mapping"
            | "auto"
            | "source"
            | "source-directory"
            | "rename"
            | "no-auto-down"
            | "no-scripts"
    ) || word.starts_with("allow-")
}

/// Parse an interfaces(5) file; a line that is neither a stanza header, an option of an
/// `iface`/`mapping` stanza, a comment nor blank is refused with its place.
pub fn parse(path: &Path, text: &str) -> Result<Doc> {
    let lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    let mut stanzas: Vec<Stanza> = Vec::new();
    let mut in_block = false;
    let bad = |i: usize, why: &str| {
        Error::invalid(format!(
            "cannot parse {} line {}: {why}",
            path.display(),
            i + 1
        ))
        .with_hint(
            "fix the file (ifquery -a shows what ifupdown makes of it), then run vbridge again",
        )
    };
    for (i, raw) in lines.iter().enumerate() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.ends_with('\\') {
            return Err(bad(i, "vbridge does not edit continued lines"));
        }
        let words: Vec<String> = l.split_whitespace().map(str::to_string).collect();
        if is_header(&words[0]) {
            if words[0] == "iface" && !(words.len() == 2 || words.len() >= 4) {
                return Err(bad(i, "`iface` needs NAME [FAMILY METHOD]"));
            }
            if words.len() < 2 && words[0] != "no-auto-down" && words[0] != "no-scripts" {
                return Err(bad(i, &format!("`{}` needs an argument", words[0])));
            }
            in_block = words[0] == "iface" || words[0] == "mapping";
            stanzas.push(Stanza {
                kind: words[0].clone(),
                args: words[1..].to_vec(),
                line: i,
                options: vec![],
            });
        } else if in_block {
            let s = stanzas.last_mut().expect("a block has a header");
            s.options.push((i, words[0].clone(), words[1..].join(" ")));
        } else {
            return Err(bad(i, &format!("{l:?} is outside any stanza")));
        }
    }
    Ok(Doc {
        path: path.to_path_buf(),
        lines,
        stanzas,
    })
}

impl Doc {
    /// The `iface NAME ...` stanzas.
    pub fn ifaces<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Stanza> + 'a {
        self.stanzas
            .iter()
            .filter(move |s| s.kind == "iface" && s.args.first().map(String::as_str) == Some(name))
    }

    /// Whether this file is one vbridge wrote.
    pub fn ours(&self) -> bool {
        self.lines.first().is_some_and(|l| l.contains(MARK))
    }
}

/// The absolute patterns (under the real /) a file's source lines include.
fn source_patterns(doc: &Doc) -> Vec<(String, bool)> {
    doc.stanzas
        .iter()
        .filter(|s| s.kind == "source" || s.kind == "source-directory")
        .map(|s| {
            let arg = &s.args[0];
            let abs = if arg.starts_with('/') {
                arg.clone()
            } else {
                format!("/etc/network/{arg}")
            };
            (abs, s.kind == "source-directory")
        })
        .collect()
}

/// Whether `abs` (a path under the real /) is read through the pattern.
fn sourced_by(pattern: &(String, bool), abs: &str) -> bool {
    let (pat, dir) = pattern;
    if *dir {
        let (parent, name) = abs.rsplit_once('/').unwrap_or(("", abs));
        parent == pat.trim_end_matches('/')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    } else {
        glob_match(pat, abs)
    }
}

/// The files a pattern includes, under `root`, sorted.
fn expand(root: &Path, pattern: &(String, bool)) -> Vec<PathBuf> {
    let dir = if pattern.1 {
        pattern.0.clone()
    } else {
        pattern
            .0
            .rsplit_once('/')
            .map(|(d, _)| d)
            .unwrap_or("/")
            .to_string()
    };
    list_dir(&under(root, &dir))
        .into_iter()
        .filter(|p| {
            let abs = format!("/{}", p.strip_prefix(root).unwrap_or(p).display());
            sourced_by(pattern, &abs)
        })
        .collect()
}

/// `interfaces` and every file it sources, in the order ifupdown reads them, parsed; the
/// text of a file comes from `plan` when the plan changes it.
pub fn documents(root: &Path, plan: &Plan<FileStep>) -> Result<Vec<Doc>> {
    fn walk(
        root: &Path,
        path: &Path,
        plan: &Plan<FileStep>,
        depth: usize,
        out: &mut Vec<Doc>,
    ) -> Result<()> {
        if depth > 8 || out.iter().any(|d| d.path == path) {
            return Ok(());
        }
        let text = match planned(plan, path) {
            Some(Some(t)) => t.to_string(),
            Some(None) => return Ok(()),
            None => read(path)?,
        };
        let doc = parse(path, &text)?;
        let pats = source_patterns(&doc);
        out.push(doc);
        for p in pats {
            let mut files = expand(root, &p);
            // A file the plan creates is read too.
            for s in &plan.steps {
                if let FileStep::Create { path, .. } = s {
                    let abs = format!("/{}", path.strip_prefix(root).unwrap_or(path).display());
                    if sourced_by(&p, &abs) && !files.contains(path) {
                        files.push(path.clone());
                    }
                }
            }
            files.sort();
            for f in files {
                walk(root, &f, plan, depth + 1, out)?;
            }
        }
        Ok(())
    }
    let main = under(root, INTERFACES);
    if !main.exists() {
        return Err(Error::not_found(format!(
            "{} does not exist: ifupdown is not set up on this host",
            main.display()
        )));
    }
    let mut out = Vec::new();
    walk(root, &main, plan, 0, &mut out)?;
    Ok(out)
}

/// Which stanza makes `nic` a port of another device, if any: (master, file).
pub fn port_of(docs: &[Doc], nic: &str) -> Option<(String, PathBuf)> {
    for d in docs {
        for s in &d.stanzas {
            for (_, k, v) in &s.options {
                let listed = v.split_whitespace().any(|w| w == nic);
                let master = s.args.first().cloned().unwrap_or_default();
                match k.replace('_', "-").as_str() {
                    "bridge-ports" | "bond-slaves" | "bridge-ifaces" if listed => {
                        return Some((master, d.path.clone()))
                    }
                    "bond-master" | "bridge" if s.args.first().map(String::as_str) == Some(nic) => {
                        return Some((v.clone(), d.path.clone()))
                    }
                    _ => {}
                }
            }
        }
    }
    None
}

/// The NIC's stanzas turned to `manual` with their addressing disabled, and with `mtu` their
/// own `mtu` lines too (vbridge's stanza sets it; ifupdown2 would take whichever it read
/// first): the new text, or None when nothing needs to change.
pub fn edit_nic(doc: &Doc, nic: &str, mtu: bool) -> Option<String> {
    let mut lines = doc.lines.clone();
    let mut changed = false;
    for s in doc.ifaces(nic) {
        let header = &doc.lines[s.line];
        let words: Vec<&str> = header.split_whitespace().collect();
        let new_header = if words.len() == 2 {
            // ifupdown2's `iface NIC` (method from its options): make it explicit.
            let end = header.trim_end().len();
            Some(format!("{} inet manual{}", &header[..end], &header[end..]))
        } else if words[3] != "manual" {
            // Replace the METHOD word in place, keeping the spacing around it.
            let start = nth_word_start(header, 3);
            let len = words[3].len();
            Some(format!(
                "{}manual{}",
                &header[..start],
                &header[start + len..]
            ))
        } else {
            None
        };
        if let Some(h) = new_header {
            lines[s.line] = h;
            changed = true;
        }
        for (i, k, _) in &s.options {
            if ADDRESSING.contains(&k.as_str()) || (mtu && k == "mtu") {
                lines[*i] = format!("{DISABLED}{}", doc.lines[*i]);
                changed = true;
            }
        }
    }
    changed.then(|| lines.concat())
}

fn nth_word_start(line: &str, n: usize) -> usize {
    let mut count = 0;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        let space = c.is_whitespace();
        if prev_space && !space {
            if count == n {
                return i;
            }
            count += 1;
        }
        prev_space = space;
    }
    line.len()
}

/// vbridge's stanza file (pure; golden-tested).
pub fn render(cfg: &Config) -> Result<String> {
    let mac = super::super::netplan::check(cfg)?;
    let family = match cfg.address {
        Some((std::net::IpAddr::V6(_), _)) => "inet6",
        _ => "inet",
    };
    let method = if cfg.dhcp { "dhcp" } else { "static" };
    let mut s = format!(
        "# {MARK}: bridge {br} with {nic} as its port.\n# vbridge owns this file; `vbridge host-bridge --remove --bridge {br}` removes it.\nauto {br}\niface {br} {family} {method}\n",
        br = cfg.bridge,
        nic = cfg.nic
    );
    s.push_str(&format!("    bridge-ports {}\n", cfg.nic));
    s.push_str("    bridge-stp off\n    bridge-fd 0\n");
    s.push_str(&format!("    hwaddress ether {mac}\n"));
    // ifupdown2 sets a bridge without `mtu` back to 1500, whatever its port has (measured;
    // its `ifup -s` calls the line needless all the same).
    if let Some(m) = cfg.mtu {
        s.push_str(&format!("    mtu {m}\n"));
    }
    if let Some((ip, len)) = cfg.address {
        s.push_str(&format!("    address {ip}/{len}\n"));
    }
    if let Some(g) = cfg.gateway {
        s.push_str(&format!("    gateway {g}\n"));
    }
    if !cfg.dns.is_empty() {
        let d: Vec<String> = cfg.dns.iter().map(ToString::to_string).collect();
        s.push_str(&format!("    dns-nameservers {}\n", d.join(" ")));
    }
    if let Some(m) = cfg.mtu {
        // ifupdown2 also sets a NIC without `mtu` back to 1500: the port gets a stanza of
        // its own, which ifupdown2 merges with any other stanza of the NIC.
        s.push_str(&format!(
            "\n# The port's MTU, merged by ifupdown2 with the NIC's own stanza.\niface {nic} inet manual\n    mtu {m}\n",
            nic = cfg.nic
        ));
    }
    Ok(s)
}

/// The files: vbridge's stanza, and each user file holding the NIC's stanza edited.
pub fn plan(root: &Path, cfg: &Config) -> Result<Plan<FileStep>> {
    let content = render(cfg)?;
    let ours = file_path(root, &cfg.bridge);
    let main = under(root, INTERFACES);
    let docs = documents(root, &Plan::default())?;
    let abs_ours = format!("{DIR}/vbridge-{}", cfg.bridge);
    if !source_patterns(&docs[0])
        .iter()
        .any(|p| sourced_by(p, &abs_ours))
    {
        return Err(Error::unsupported(format!(
            "{} does not read {DIR}: a stanza file there would be ignored",
            main.display()
        ))
        .with_hint(format!(
            "add the line `source {DIR}/*` to {INTERFACES}, then run vbridge again"
        )));
    }
    let user: Vec<&Doc> = docs.iter().filter(|d| !d.ours()).collect();
    if let Some((master, file)) = port_of(&docs, &cfg.nic).filter(|(_, f)| *f != ours) {
        return Err(Error::conflict(format!(
            "{} is already a port of {master} ({})",
            cfg.nic,
            file.display()
        ))
        .with_hint("a NIC can be the port of one bridge or bond only: remove it there first"));
    }
    if let Some(d) = user.iter().find(|d| d.ifaces(&cfg.bridge).next().is_some()) {
        return Err(Error::conflict(format!(
            "{} already has a stanza for {}",
            d.path.display(),
            cfg.bridge
        ))
        .with_hint("choose another bridge name, or remove that stanza"));
    }
    let mut steps: Vec<FileStep> = create(ours, content, 0o600)?.into_iter().collect();
    for d in user {
        if let Some(after) = edit_nic(d, &cfg.nic, cfg.mtu.is_some()) {
            steps.push(FileStep::Edit {
                path: d.path.clone(),
                backup: backup_path(&d.path, &cfg.bridge),
                before: d.lines.concat(),
                after,
            });
        }
    }
    Ok(Plan::new(steps))
}

/// `interfaces` with every sourced file inlined, as the plan leaves them: one file that
/// `ifquery -i` reads without touching the real /etc.
pub fn flatten(root: &Path, plan: &Plan<FileStep>) -> Result<String> {
    let docs = documents(root, plan)?;
    let mut out = String::new();
    for d in &docs {
        let skip: Vec<usize> = d
            .stanzas
            .iter()
            .filter(|s| s.kind == "source" || s.kind == "source-directory")
            .map(|s| s.line)
            .collect();
        for (i, l) in d.lines.iter().enumerate() {
            if !skip.contains(&i) {
                out.push_str(l);
            }
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// `ifquery -i FLAT -a` on the configuration as the plan leaves it: ifupdown's own parser
/// must accept it and show the bridge with the NIC as its port.
pub fn validate(root: &Path, cfg: &Config, plan: &Plan<FileStep>) -> Result<()> {
    let flat = flatten(root, plan)?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create a staging directory", e))?;
    let f = dir.path().join("interfaces");
    std::fs::write(&f, &flat).map_err(|e| Error::io("cannot stage the interfaces file", e))?;
    let file = f.to_string_lossy();
    let out = crate::host::program_output("ifquery", &["-i", &file, "-a"])
        .map_err(|e| e.with_hint("install ifupdown2 (its ifquery checks the stanzas)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&*file, "interfaces");
    // ifquery reports a bad stanza with an "error:" line, with or without a failing exit.
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error"))
        .or_else(|| (!out.status.success()).then(|| stderr.lines().next().unwrap_or("")));
    if let Some(l) = error {
        return Err(Error::invalid(format!(
            "ifquery refused the configuration: {}",
            l.trim()
        )));
    }
    let port = format!("bridge-ports {}", cfg.nic);
    if !stdout.contains(&format!("iface {}", cfg.bridge)) || !stdout.contains(&port) {
        return Err(Error::host(format!(
            "ifquery did not show {} with {} as its port",
            cfg.bridge, cfg.nic
        )));
    }
    if let Some(m) = cfg.mtu.filter(|m| !stdout.contains(&format!("mtu {m}"))) {
        return Err(Error::host(format!("ifquery did not show mtu {m}")));
    }
    Ok(())
}

/// vbridge's stanza removed and every user file edited for `bridge` put back, when the file
/// still holds exactly what vbridge made of the backup.
pub fn remove(root: &Path, bridge: &str) -> Result<Plan<FileStep>> {
    let mut steps: Vec<FileStep> = delete_ours(&file_path(root, bridge))?.into_iter().collect();
    let suffix = format!(".vbridge-bak-{bridge}");
    for dir in ["/etc/network", DIR] {
        for b in list_dir(&under(root, dir)) {
            let name = b.to_string_lossy().into_owned();
            let Some(orig) = name.strip_suffix(&suffix) else {
                continue;
            };
            let path = PathBuf::from(orig);
            let before = read(&b)?;
            let after = read(&path)?;
            steps.push(FileStep::Restore {
                path,
                backup: b,
                before,
                after,
            });
        }
    }
    check_restorable(&steps, bridge)?;
    Ok(Plan::new(steps))
}

/// Refuse to restore a backup over a file the user changed after vbridge edited it.
fn check_restorable(steps: &[FileStep], _bridge: &str) -> Result<()> {
    for s in steps {
        if let FileStep::Restore {
            path,
            before,
            after,
            backup,
        } = s
        {
            let doc = parse(path, before)?;
            let nics: Vec<String> = doc
                .stanzas
                .iter()
                .filter(|s| s.kind == "iface")
                .filter_map(|s| s.args.first().cloned())
                .collect();
            // The edit as made with or without `--mtu` (which the removal is not told).
            let ok = nics.iter().any(|n| {
                [false, true]
                    .iter()
                    .any(|&mtu| edit_nic(&doc, n, mtu).as_deref() == Some(after.as_str()))
            });
            if !ok && before != after {
                return Err(Error::conflict(format!(
                    "{} was changed after vbridge edited it",
                    path.display()
                ))
                .with_hint(format!(
                    "compare it with {} and merge by hand; vbridge does not overwrite your changes",
                    backup.display()
                )));
            }
        }
    }
    Ok(())
}
