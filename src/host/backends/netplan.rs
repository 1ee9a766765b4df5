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
