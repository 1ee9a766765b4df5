//! The second libvirt the lab runs against: 11.3 (QEMU 10.0) from Debian's bookworm-backports,
//! in a debootstrap chroot that `scripts/lab-chroot` builds once and caches under /var/tmp
//! (keyed by series and recipe hash, built under a lock, renamed into place).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which libvirtd a lab runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Libvirt {
    /// The machine's own (Debian 12: 9.0).
    System,
    /// 11.3 from bookworm-backports, run chrooted.
    Backports,
}

/// The built chroot.
#[derive(Debug)]
pub struct Chroot {
    pub root: PathBuf,
    /// libvirtd's own `--version` number, e.g. "11.3.0".
    pub version: String,
    /// How long this process waited for `scripts/lab-chroot` (a build, or ~10 ms cached).
    pub ready_in: Duration,
}

/// The chroot, built on first use. Panics with the script's reason when it cannot be built:
/// a lab test that needs it fails, it never skips.
pub fn chroot() -> &'static Chroot {
    static CHROOT: OnceLock<Chroot> = OnceLock::new();
    CHROOT.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lab-chroot");
        let t = Instant::now();
        let out = Command::new(script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        let ready_in = t.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script} could not build the libvirt 11.3 chroot: {stderr}"
        );
        // "building ...", "built in N s": straight to stderr, past libtest's capture.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), stderr.as_bytes());
        let root = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{script} printed no path"));
        let version = std::fs::read_to_string(root.join("LIBVIRT_VERSION"))
            .unwrap_or_else(|e| panic!("{}/LIBVIRT_VERSION: {e}", root.display()))
            .trim()
            .to_string();
        Chroot {
            root,
            version,
            ready_in,
        }
    })
}
