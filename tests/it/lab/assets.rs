//! Guest boot assets: a Debian cloud kernel and a busybox initramfs, built once and cached.
//!
//! The cache lives in `$VBRIDGE_LAB_CACHE` (default /var/tmp/vbridge-lab):
//! `kernel-<package>/` holds the unpacked kernel package, `initramfs-<hash>.cpio` the
//! initramfs. Both are published by an atomic rename, so concurrent test processes never see
//! half a file; inside one process a `OnceLock` builds them once.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::run;

/// Modules to load, in dependency order (the package ships no modules.dep).
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// The meta package whose dependency names the kernel image package.
const KERNEL_META: &str = "linux-image-cloud-amd64";

/// Paths of the boot assets, valid for the life of the test process.
#[derive(Debug)]
pub struct Assets {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The cached assets, built on first use. Panics with the reason when they cannot be built.
pub fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(build)
}

/// Outside the checkout, so a fresh CI checkout still finds the kernel (keyed by its package
/// version) and the libvirt 11.3 chroot (`scripts/lab-chroot`) from earlier runs.
const DEFAULT_CACHE: &str = "/var/tmp/vbridge-lab";

/// The cache directory (created).
pub fn cache_dir() -> PathBuf {
    let dir = std::env::var_os("VBRIDGE_LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn build() -> Assets {
    let cache = cache_dir();
    let kdir = kernel_dir(&cache);
    let kernel = find_file(&kdir.join("boot"), "vmlinuz-")
        .unwrap_or_else(|| panic!("no vmlinuz-* in {}", kdir.join("boot").display()));
    let initrd = initramfs(&cache, &kdir);
    Assets { kernel, initrd }
}

/// The unpacked kernel package, downloaded with `apt-get download` when missing.
fn kernel_dir(cache: &Path) -> PathBuf {
    kernel_dir_try(cache, true)
}

fn kernel_dir_try(cache: &Path, may_refresh: bool) -> PathBuf {
    let pkg = kernel_package(cache);
    let dir = cache.join(format!("kernel-{pkg}"));
    if dir.join("boot").is_dir() {
        return dir;
    }
    let work = tempfile::Builder::new()
        .prefix(".kernel-")
        .tempdir_in(cache)
        .expect("temp dir in the lab cache");
    let out = Command::new("apt-get")
        .args(["download", &pkg])
        .current_dir(work.path())
        .output()
        .expect("cannot run apt-get");
    if !out.status.success() && may_refresh {
        // Stale package lists name a .deb the mirror no longer has (or an older kernel
        // than the meta package now wants): refresh once and start over.
        let _ = Command::new("apt-get").args(["update", "-qq"]).output();
        let _ = fs::remove_file(cache.join("kernel-package"));
        return kernel_dir_try(cache, false);
    }
    assert!(
        out.status.success(),
        "apt-get download {pkg} failed (the lab needs the Debian kernel package; is apt \
         configured and online?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = find_file(work.path(), &pkg).expect("downloaded .deb");
    let tree = work.path().join("tree");
    run(
        "dpkg-deb",
        &["-x", deb.to_str().unwrap(), tree.to_str().unwrap()],
    );
    // Another process may have won the race; its copy is as good as ours.
    if fs::rename(&tree, &dir).is_err() && !dir.join("boot").is_dir() {
        panic!("cannot publish {}", dir.display());
    }
    dir
}

/// `linux-image-<version>-cloud-amd64`, read from the meta package's dependency.
/// `apt-cache` takes ~1 s, so the answer is remembered in the cache until apt's package
/// lists change (`apt-get update`).
fn kernel_package(cache: &Path) -> String {
    if let Some(p) = std::env::var_os("VBRIDGE_LAB_KERNEL_PKG") {
        return p.to_string_lossy().into_owned();
    }
    let memo = cache.join("kernel-package");
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(m), Some(lists)) = (mtime(&memo), mtime(Path::new("/var/lib/apt/lists"))) {
        if m > lists {
            if let Ok(name) = fs::read_to_string(&memo) {
                if name.starts_with("linux-image-") {
                    return name.trim().to_string();
                }
            }
        }
    }
    let deps = run("apt-cache", &["depends", KERNEL_META]);
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .unwrap_or_else(|| panic!("apt-cache depends {KERNEL_META} names no linux-image-*"))
        .to_string();
    let tmp = cache.join(format!(".kernel-package.{}", std::process::id()));
    if fs::write(&tmp, &pkg).is_ok() {
        let _ = fs::rename(&tmp, &memo);
    }
    pkg
}

fn find_file(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    names.sort();
    names.pop()
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// A module's uncompressed bytes, or None when the kernel has it built in.
fn module_bytes(files: &[PathBuf], name: &str) -> Option<Vec<u8>> {
    for (ext, tool) in [
        ("ko", None),
        ("ko.xz", Some("xz")),
        ("ko.zst", Some("zstd")),
    ] {
        let file = format!("{name}.{ext}");
        let Some(p) = files
            .iter()
            .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(file.as_str()))
        else {
            continue;
        };
        return Some(match tool {
            None => fs::read(p).unwrap(),
            Some(tool) => {
                let out = Command::new(tool)
                    .args(["-dc", p.to_str().unwrap()])
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {tool} for {}: {e}", p.display()));
                assert!(out.status.success(), "{tool} -dc {} failed", p.display());
                out.stdout
            }
        });
    }
    None
}

/// The initramfs, rebuilt whenever one of its inputs changes (the name carries their hash).
fn initramfs(cache: &Path, kdir: &Path) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab-data");
    let init = fs::read(data.join("init")).expect("tests/lab-data/init");
    let hook = fs::read(data.join("udhcpc.script")).expect("tests/lab-data/udhcpc.script");
    // The key hashes the two guest scripts and the identity of the big inputs (busybox's
    // size and mtime, the kernel package, the module list): reading megabytes through an
    // unoptimised test build on every run would cost ~1 s.
    let bb_meta = fs::metadata("/bin/busybox")
        .expect("/bin/busybox missing: install busybox-static (a static busybox)");
    let mut h = Fnv::default();
    h.add(&init);
    h.add(&hook);
    h.add(&bb_meta.len().to_le_bytes());
    let mtime = bb_meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    h.add(&mtime.to_le_bytes());
    h.add(kdir.file_name().unwrap_or_default().as_encoded_bytes());
    h.add(MODULES.join(",").as_bytes());
    let path = cache.join(format!("initramfs-{:016x}.cpio", h.0));
    if path.is_file() {
        return path;
    }

    let busybox = fs::read("/bin/busybox").expect("/bin/busybox");
    let mut files = Vec::new();
    walk(&kdir.join("lib/modules"), &mut files);
    files.sort();
    let modules: Vec<(&str, Vec<u8>)> = MODULES
        .iter()
        .filter_map(|m| module_bytes(&files, m).map(|b| (*m, b)))
        .collect();
    assert!(
        modules.iter().any(|(m, _)| *m == "virtio_net"),
        "virtio_net.ko not found under {}",
        kdir.display()
    );

    let mut c = Cpio::default();
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "lib",
        "lib/modules",
        "var",
        "var/run",
    ] {
        c.dir(d);
    }
    c.node("dev/console", 0o020600, 5, 1);
    c.file("bin/busybox", 0o755, &busybox);
    let list = run("/bin/busybox", &["--list-full"]);
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // Never link busybox onto itself; every applet points at the one binary.
        if applet == "bin/busybox" {
            continue;
        }
        c.symlink(applet, "/bin/busybox");
    }
    c.file("init", 0o755, &init);
    c.file("etc/udhcpc.script", 0o755, &hook);
    for (m, b) in &modules {
        c.file(&format!("lib/modules/{m}.ko"), 0o644, b);
    }
    let bytes = c.finish();

    let mut tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .tempfile_in(cache)
        .expect("temp file in the lab cache");
    tmp.write_all(&bytes).unwrap();
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .unwrap();
    tmp.persist(&path)
        .unwrap_or_else(|e| panic!("cannot publish {}: {e}", path.display()));
    path
}

/// 64-bit FNV-1a, enough to tell inputs apart in a cache file name.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Separate parts, so ("ab","c") and ("a","bc") differ.
        self.0 = self.0.rotate_left(7) ^ bytes.len() as u64;
    }
}

/// A writer for the "newc" cpio format the kernel unpacks as initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the archive is reproducible
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    fn node(&mut self, name: &str, mode: u32, major: u32, minor: u32) {
        self.entry(name, mode, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_header_layout() {
        let mut c = Cpio::default();
        c.file("a", 0o644, b"xyz");
        let out = c.finish();
        assert_eq!(&out[..6], b"070701");
        // 110-byte header, "a\0" padded to 112, 3 data bytes padded to 116.
        assert_eq!(&out[110..112], b"a\0");
        assert_eq!(&out[112..115], b"xyz");
        assert_eq!(&out[116..122], b"070701");
        assert_eq!(out.len() % 4, 0);
    }
}
