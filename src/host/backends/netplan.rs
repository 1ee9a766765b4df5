//! netplan through the plan shape: vbridge's YAML from the existing renderer
//! (`host::netplan`) as a file step, validated by the real `netplan generate --root-dir`.

use super::{backup_path, delete_ours, planned, read, Config, FileStep};
use crate::error::Result;
use crate::host::netplan as render;
use crate::plan::Plan;
use std::path::Path;

/// vbridge's netplan file: created, or, when an older one of vbridge's is there, edited
/// with a backup (the renderer's file carries no mark of its own beyond its name).
pub fn plan(root: &Path, cfg: &Config) -> Result<Plan<FileStep>> {
    let yaml = render::render(cfg)?;
    let path = render::file_path(root, &cfg.bridge);
    let steps = match std::fs::read_to_string(&path) {
        Ok(old) if old == yaml => vec![],
        Ok(old) => vec![FileStep::Edit {
            backup: backup_path(&path, &cfg.bridge),
            path,
            before: old,
            after: yaml,
        }],
        Err(_) => vec![FileStep::Create {
            path,
            content: yaml,
            mode: 0o600,
        }],
    };
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

/// vbridge's file removed, or the older file put back when vbridge replaced one.
pub fn remove(root: &Path, bridge: &str) -> Result<Plan<FileStep>> {
    let path = render::file_path(root, bridge);
    let backup = backup_path(&path, bridge);
    if backup.exists() {
        return Ok(Plan::new(vec![FileStep::Restore {
            before: read(&backup)?,
            after: read(&path)?,
            path,
            backup,
        }]));
    }
    Ok(Plan::new(delete_ours(&path)?.into_iter().collect()))
}
