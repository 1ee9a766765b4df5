//! netplan through the plan shape: vbridge's YAML from the existing renderer
//! (`host::netplan`) as a file step, validated by the real `netplan generate --root-dir`.

use super::{backup_path, delete_ours, planned, read, Config, FileStep, MARK};
use crate::error::Result;
use crate::host::netplan as render;
use crate::plan::Plan;
use std::path::Path;

/// vbridge's netplan file: created, or, when another one is at that name, edited with a
/// backup. A backup that is an older file of vbridge's is replaced (removed first, so the
/// undo puts it back); one that is not vbridge's is refused rather than overwritten.
pub fn plan(root: &Path, cfg: &Config) -> Result<Plan<FileStep>> {
    let yaml = render::render(cfg)?;
    let path = render::file_path(root, &cfg.bridge);
    let old = match std::fs::read_to_string(&path) {
        Ok(old) if old == yaml => return Ok(Plan::default()),
        Ok(old) => old,
        Err(_) => {
            return Ok(Plan::new(vec![FileStep::Create {
                path,
                content: yaml,
                mode: 0o600,
            }]))
        }
    };
    let backup = backup_path(&path, &cfg.bridge);
    let mut steps: Vec<FileStep> = delete_ours(&backup)
        .map_err(|e| e.context("an earlier backup is in the way"))?
        .into_iter()
        .collect();
    steps.push(FileStep::Edit {
        path,
        backup,
        before: old,
        after: yaml,
    });
    Ok(Plan::new(steps))
}

/// `netplan generate --root-dir` on a staged copy with the planned file.
pub fn validate(root: &Path, cfg: &Config, plan: &Plan<FileStep>) -> Result<()> {
    let path = render::file_path(root, &cfg.bridge);
    let yaml = match planned(plan, &path) {
        Some(Some(t)) => t.to_string(),
        Some(None) => return Ok(()),
        None => read(&path)?,
    };
    render::validate(root, cfg, &yaml).map(|_| ())
}

/// vbridge's file removed with any backup of an older file of vbridge's; a backup of a file
/// that was not vbridge's is put back instead.
pub fn remove(root: &Path, bridge: &str) -> Result<Plan<FileStep>> {
    let path = render::file_path(root, bridge);
    let backup = backup_path(&path, bridge);
    if backup.exists() {
        let before = read(&backup)?;
        if !before.contains(MARK) {
            return Ok(Plan::new(vec![FileStep::Restore {
                before,
                after: read(&path)?,
                path,
                backup,
            }]));
        }
    }
    let mut steps: Vec<FileStep> = delete_ours(&path)?.into_iter().collect();
    steps.extend(delete_ours(&backup)?);
    Ok(Plan::new(steps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::backends::FileApplier;
    use crate::host::netplan::file_path;
    use crate::host::netplan::tests::{dhcp, fixed, netplan_or_skip, user_file};
    use std::path::PathBuf;

    /// What writing vbridge's netplan file did, as `host-bridge --netplan` reports it.
    #[derive(Debug)]
    struct WriteOutcome {
        path: PathBuf,
        changed: bool,
        backup: Option<PathBuf>,
    }

    /// The command's way: plan, validate with netplan, apply the file steps.
    fn write(root: &Path, cfg: &Config, _dry_run: bool) -> Result<(WriteOutcome, String)> {
        let p = plan(root, cfg)?;
        if !p.is_empty() {
            validate(root, cfg, &p)?;
        }
        crate::plan::apply(&p.steps, &mut FileApplier).map_err(|s| s.error)?;
        let backup = p.steps.iter().find_map(|s| match s {
            FileStep::Edit { backup, .. } => Some(backup.clone()),
            _ => None,
        });
        let w = WriteOutcome {
            path: file_path(root, &cfg.bridge),
            changed: !p.is_empty(),
            backup,
        };
        Ok((w, render::render(cfg)?))
    }

    #[test]
    fn a_user_file_that_addresses_the_nic_is_refused() {
        if !netplan_or_skip() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let text = "network:\n  version: 2\n  ethernets:\n    enp3s0:\n      addresses: [192.168.1.10/24]\n      routes:\n        - to: default\n          via: 192.168.1.1\n";
        let user = user_file(root.path(), text);
        let e = write(root.path(), &fixed(), false).unwrap_err();
        assert!(e.message.contains("50-cloud-init.yaml"), "{}", e.message);
        assert!(e.message.contains("Address="), "{}", e.message);
        assert!(e.hint.as_deref().unwrap().contains("back up"));
        assert!(!file_path(root.path(), "br0").exists(), "written anyway");
        assert_eq!(std::fs::read_to_string(&user).unwrap(), text);
    }

    #[test]
    fn write_is_idempotent_and_backs_up() {
        if !netplan_or_skip() {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let user_text = "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n";
        let user = user_file(root.path(), user_text);
        let (w, _) = write(root.path(), &dhcp(), false).unwrap();
        assert!(w.changed && w.backup.is_none());
        let mode = std::fs::metadata(&w.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (w2, _) = write(root.path(), &dhcp(), false).unwrap();
        assert!(!w2.changed);
        let (w3, _) = write(root.path(), &fixed(), false).unwrap();
        assert!(w3.changed);
        let b = w3.backup.unwrap();
        assert_eq!(
            std::fs::read_to_string(b).unwrap(),
            render::render(&dhcp()).unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(&user).unwrap(),
            user_text,
            "the user's file changed"
        );
        // A file of the user's that netplan rejects stops the write: nothing is written.
        std::fs::write(&user, "network:\n  version: 3\n").unwrap();
        let before = std::fs::read_to_string(&w3.path).unwrap();
        assert!(write(root.path(), &dhcp(), false).is_err());
        assert_eq!(std::fs::read_to_string(&w3.path).unwrap(), before);
    }
}
