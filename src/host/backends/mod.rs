//! Persistent host bridges for every network stack (netplan, systemd-networkd, ifupdown,
//! NetworkManager): which stack manages a NIC, the files each one needs as a plan of typed
//! file changes with inverses, validation by the stack's own tool, and the removal plan.

pub mod detect;
pub mod ifupdown;
pub mod netplan;
pub mod networkd;
pub mod nm;

use crate::error::{Error, Result};
use crate::plan::{Applier, Plan, Step};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use super::netplan::Config;
pub use detect::detect;

/// The first line of every file vbridge writes: what `remove` looks for before deleting.
pub const MARK: &str = "Written by vbridge";

/// A network stack that can hold a bridge across reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Netplan,
    Networkd,
    Ifupdown,
    Nm,
}

impl Backend {
    pub const ALL: [Backend; 4] = [
        Backend::Netplan,
        Backend::Networkd,
        Backend::Ifupdown,
        Backend::Nm,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Netplan => "netplan",
            Backend::Networkd => "networkd",
            Backend::Ifupdown => "ifupdown",
            Backend::Nm => "nm",
        }
    }

    /// The files that make the bridge (pure apart from reading `root`).
    pub fn plan(self, root: &Path, cfg: &Config) -> Result<Plan<FileStep>> {
        match self {
            Backend::Netplan => netplan::plan(root, cfg),
            Backend::Networkd => networkd::plan(root, cfg),
            Backend::Ifupdown => ifupdown::plan(root, cfg),
            Backend::Nm => nm::plan(root, cfg),
        }
    }

    /// Check a plan with the stack's own tool (or parser) before anything is written.
    pub fn validate(self, root: &Path, cfg: &Config, plan: &Plan<FileStep>) -> Result<()> {
        match self {
            Backend::Netplan => netplan::validate(root, cfg, plan),
            Backend::Networkd => networkd::validate(root, cfg, plan),
            Backend::Ifupdown => ifupdown::validate(root, cfg, plan),
            Backend::Nm => nm::validate(plan),
        }
    }

    /// The inverse of what `plan` made for `bridge`, read back from the files under `root`:
    /// vbridge's files removed, the user's edited files restored. Empty when nothing is there.
    pub fn remove(self, root: &Path, bridge: &str) -> Result<Plan<FileStep>> {
        match self {
            Backend::Netplan => netplan::remove(root, bridge),
            Backend::Networkd => networkd::remove(root, bridge),
            Backend::Ifupdown => ifupdown::remove(root, bridge),
            Backend::Nm => nm::remove(root, bridge),
        }
    }

    /// The programs that make the running stack read the files again (argument vectors).
    pub fn reload_commands(self, cfg: &Config) -> Vec<Vec<String>> {
        self.reload_commands_for(&cfg.nic, &cfg.bridge)
    }

    /// [`Backend::reload_commands`] for the bridge `bridge` with the port `nic`.
    pub fn reload_commands_for(self, nic: &str, bridge: &str) -> Vec<Vec<String>> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Backend::Netplan => vec![v(&["netplan", "apply"])],
            // A link networkd once failed to configure (its bridge vanished) is left alone by
            // a reload: reconfigure names the NIC so it is configured anew either way.
            Backend::Networkd => vec![
                v(&["networkctl", "reload"]),
                v(&["networkctl", "reconfigure", nic]),
            ],
            Backend::Ifupdown => vec![v(&["ifreload", "-a"])],
            Backend::Nm => vec![
                v(&["nmcli", "connection", "reload"]),
                v(&["nmcli", "connection", "up", &nm::port_id_for(bridge, nic)]),
            ],
        }
    }
}

impl Backend {
    /// The programs that make the running stack forget vbridge's removed files and give
    /// `nic` (when known) its own configuration again.
    pub fn reload_commands_after_remove(self, nic: &str) -> Vec<Vec<String>> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut out = match self {
            Backend::Netplan => vec![v(&["netplan", "apply"])],
            Backend::Networkd => vec![v(&["networkctl", "reload"])],
            Backend::Ifupdown => vec![v(&["ifreload", "-a"])],
            Backend::Nm => vec![v(&["nmcli", "connection", "reload"])],
        };
        if self == Backend::Networkd && !nic.is_empty() {
            out.push(v(&["networkctl", "reconfigure", nic]));
        }
        out
    }
}

/// Whether these reload programs hand the files to networkd: its own `networkctl`, or
/// `netplan apply` (networkd renders netplan on servers).
pub fn tells_networkd(cmds: &[Vec<String>]) -> bool {
    cmds.iter().any(|c| {
        matches!(
            c.first().map(String::as_str),
            Some("networkctl" | "netplan")
        )
    })
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Backend> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                Error::invalid(format!("unknown network backend {s:?}"))
                    .with_hint("use auto, netplan, networkd, ifupdown or nm")
            })
    }
}

/// One change to one file. Every step carries the whole text it expects and leaves, so a
/// step is checked against the disk before it runs (a file changed meanwhile is refused,
/// never overwritten) and its inverse needs nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FileStep {
    /// Create a file vbridge owns; it must not exist yet.
    Create {
        path: PathBuf,
        content: String,
        mode: u32,
    },
    /// Remove a file vbridge wrote; it must still hold `content`.
    Delete {
        path: PathBuf,
        content: String,
        mode: u32,
    },
    /// Edit a user's file: `before` is saved to `backup` (same mode), then `after` written.
    Edit {
        path: PathBuf,
        backup: PathBuf,
        before: String,
        after: String,
    },
    /// Put a user's file back: it must hold `after`; `before` is written and the backup
    /// (holding `before`) removed.
    Restore {
        path: PathBuf,
        backup: PathBuf,
        before: String,
        after: String,
    },
}

impl FileStep {
    pub fn path(&self) -> &Path {
        match self {
            FileStep::Create { path, .. }
            | FileStep::Delete { path, .. }
            | FileStep::Edit { path, .. }
            | FileStep::Restore { path, .. } => path,
        }
    }

    /// The file's text before and after the step (None: no file).
    pub fn texts(&self) -> (Option<&str>, Option<&str>) {
        match self {
            FileStep::Create { content, .. } => (None, Some(content)),
            FileStep::Delete { content, .. } => (Some(content), None),
            FileStep::Edit { before, after, .. } => (Some(before), Some(after)),
            FileStep::Restore { before, after, .. } => (Some(after), Some(before)),
        }
    }

    /// The step as a unified diff, the way `diff -u` shows a created, removed or edited file.
    pub fn diff(&self) -> String {
        let (old, new) = self.texts();
        let p = self.path().display().to_string();
        let (from, to) = (
            if old.is_some() {
                p.clone()
            } else {
                "/dev/null".into()
            },
            if new.is_some() { p } else { "/dev/null".into() },
        );
        similar::TextDiff::from_lines(old.unwrap_or(""), new.unwrap_or(""))
            .unified_diff()
            .context_radius(3)
            .header(&from, &to)
            .to_string()
    }
}

impl Step for FileStep {
    fn describe(&self) -> String {
        match self {
            FileStep::Create { path, mode, .. } => {
                format!("write {} (mode {mode:04o})", path.display())
            }
            FileStep::Delete { path, .. } => format!("remove {}", path.display()),
            FileStep::Edit { path, backup, .. } => {
                format!("edit {} (backup {})", path.display(), backup.display())
            }
            FileStep::Restore { path, backup, .. } => {
                format!("restore {} from {}", path.display(), backup.display())
            }
        }
    }

    fn inverse(&self) -> Option<FileStep> {
        Some(match self.clone() {
            FileStep::Create {
                path,
                content,
                mode,
            } => FileStep::Delete {
                path,
                content,
                mode,
            },
            FileStep::Delete {
                path,
                content,
                mode,
            } => FileStep::Create {
                path,
                content,
                mode,
            },
            FileStep::Edit {
                path,
                backup,
                before,
                after,
            } => FileStep::Restore {
                path,
                backup,
                before,
                after,
            },
            FileStep::Restore {
                path,
                backup,
                before,
                after,
            } => FileStep::Edit {
                path,
                backup,
                before,
                after,
            },
        })
    }
}

/// The whole plan as unified diffs (what `--dry-run` shows).
pub fn diff(plan: &Plan<FileStep>) -> String {
    plan.steps.iter().map(FileStep::diff).collect()
}

/// Carries file steps out on the real file system.
#[derive(Debug, Default)]
pub struct FileApplier;

fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Refuse when the file does not hold what the step expects (changed since the plan).
fn expect(path: &Path, want: Option<&str>) -> Result<()> {
    let have = read_opt(path)?;
    if have.as_deref() == want {
        return Ok(());
    }
    let what = match (have.is_some(), want.is_some()) {
        (true, false) => "exists already",
        (false, true) => "is missing",
        _ => "was changed since the plan was made",
    };
    Err(
        Error::conflict(format!("{} {what}", path.display())).with_hint(
            "look at the file, then run the command again: vbridge does not overwrite a file it did not expect",
        ),
    )
}

/// Write `text` atomically (temp file in the same directory, then rename) with `mode`.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".vbridge-tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
    // The umask may have narrowed the mode; a replaced file keeps exactly the mode it had.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|_| f.write_all(text.as_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

fn mode_of(path: &Path) -> Result<u32> {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
}

fn remove_file(path: &Path) -> Result<()> {
    std::fs::remove_file(path)
        .map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))
}

impl Applier<FileStep> for FileApplier {
    fn apply_step(&mut self, step: &FileStep) -> Result<()> {
        match step {
            FileStep::Create {
                path,
                content,
                mode,
            } => {
                expect(path, None)?;
                write_file(path, content, *mode)
            }
            FileStep::Delete { path, content, .. } => {
                expect(path, Some(content))?;
                remove_file(path)
            }
            FileStep::Edit {
                path,
                backup,
                before,
                after,
            } => {
                expect(path, Some(before))?;
                expect(backup, None)?;
                let mode = mode_of(path)?;
                write_file(backup, before, mode)?;
                write_file(path, after, mode)
            }
            FileStep::Restore {
                path,
                backup,
                before,
                after,
            } => {
                expect(path, Some(after))?;
                expect(backup, Some(before))?;
                // rename keeps the backup's mode, which is the original file's.
                std::fs::rename(backup, path)
                    .map_err(|e| Error::io(format!("cannot restore {}", path.display()), e))
            }
        }
    }
}

/// A path under `root` ("/etc/x" -> ROOT/etc/x).
pub(crate) fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// The backup name of a user's file edited for `bridge`: fixed, so `remove` finds it.
pub(crate) fn backup_path(path: &Path, bridge: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".vbridge-bak-{bridge}"));
    PathBuf::from(s)
}

/// A step creating vbridge's file, or nothing when it already holds exactly `content`;
/// a different file of that name is refused (an edited file of ours, or not ours).
pub(crate) fn create(path: PathBuf, content: String, mode: u32) -> Result<Option<FileStep>> {
    match read_opt(&path)? {
        None => Ok(Some(FileStep::Create {
            path,
            content,
            mode,
        })),
        Some(t) if t == content => Ok(None),
        Some(t) if t.contains(MARK) => Err(Error::conflict(format!(
            "{} was written by vbridge for another configuration",
            path.display()
        ))
        .with_hint("remove the bridge first (vbridge host-bridge --remove), then create it again")),
        Some(_) => Err(Error::conflict(format!(
            "{} exists and was not written by vbridge",
            path.display()
        ))
        .with_hint("move it away or choose another bridge name")),
    }
}

/// A step removing vbridge's file `path`, when it is there and carries the mark.
pub(crate) fn delete_ours(path: &Path) -> Result<Option<FileStep>> {
    let Some(content) = read_opt(path)? else {
        return Ok(None);
    };
    if !content.contains(MARK) {
        return Err(
            Error::conflict(format!("{} was not written by vbridge", path.display()))
                .with_hint("vbridge removes only its own files: look at it and remove it yourself"),
        );
    }
    Ok(Some(FileStep::Delete {
        path: path.to_path_buf(),
        content,
        mode: mode_of(path)?,
    }))
}

/// Read a text file that must exist.
pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
}

/// The files of `dir` (sorted by name), none when it does not exist.
pub(crate) fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// The text a plan leaves at `path` (None: the plan does not touch it).
pub(crate) fn planned<'a>(plan: &'a Plan<FileStep>, path: &Path) -> Option<Option<&'a str>> {
    plan.steps
        .iter()
        .rev()
        .find(|s| s.path() == path)
        .map(|s| s.texts().1)
}

/// The `key=value` entries of an ini-style file (systemd units, NM keyfiles) with their
/// section, in order; comments and blank lines skipped.
pub(crate) fn ini_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// The value of `section.key` (the last one wins, as in systemd and NM).
pub(crate) fn ini_get<'a>(
    entries: &'a [(String, String, String)],
    section: &str,
    key: &str,
) -> Option<&'a str> {
    entries
        .iter()
        .rev()
        .find(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
}

/// Shell-style pattern match (`*`, `?`, `[...]`), as systemd's `Name=` and ifupdown's
/// `source` use it.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == ']').map(|i| i + 1) else {
                    return n.first() == Some(&'[') && m(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let set = &p[1..end];
                let (neg, set) = match set.first() {
                    Some('!') | Some('^') => (true, &set[1..]),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != neg && m(&p[end + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && m(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}
