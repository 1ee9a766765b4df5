//! A private libvirtd for one lab: in the lab's host network namespace and in a private mount
//! namespace of its own, so it coexists with the system's libvirtd and with other labs.
//!
//! The mount namespace is made in the forked child before exec (`unshare(CLONE_NEWNS)` and
//! `mount(2)` with paths generated here), so no shell runs on the host. Inside it a tmpfs
//! covers /run/libvirt and the lab's own directories are bind-mounted over /etc/libvirt,
//! /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt. Then
//! `ip netns exec HOST tini -s -- libvirtd -f CONF -p PIDFILE` runs: `ip netns exec` enters
//! the network namespace and remounts /sys for it; tini is a child subreaper, so QEMU
//! processes libvirtd daemonizes are reaped at once (destroy takes 0.2 s, not 2 s) and stay
//! in our process tree, where teardown finds them by pid.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{alive, descendants, stop_child};
use crate::common::{run_status, Netns};

/// Where a warm QEMU capabilities cache is kept between runs, under the lab cache.
const CAPS_CACHE: &str = "qemu-capabilities";
/// The system's capabilities cache, reused when present.
const SYSTEM_CAPS: &str = "/var/cache/libvirt/qemu/capabilities";

pub struct Daemon {
    /// tini, whose child is libvirtd.
    child: Option<Child>,
    pub uri: String,
    pub run_dir: PathBuf,
    cache_dir: PathBuf,
    caps_store: PathBuf,
}

impl Daemon {
    /// Start libvirtd in `host` with its state under `dir`, and wait until its socket answers.
    /// `caps_store` is a directory with QEMU capabilities XML to seed its cache from.
    pub fn start(host: &Netns, dir: &Path, caps_root: &Path) -> Daemon {
        Daemon::start_with(host, dir, caps_root, &[])
    }

    /// As [`Daemon::start`], but libvirtd loads its connection drivers from a directory that
    /// lacks those named in `without` (e.g. `["network"]`): libvirt's own LIBVIRT_DRIVER_DIR
    /// points it there, so it runs as a host where that driver is not installed.
    pub fn start_with(host: &Netns, dir: &Path, caps_root: &Path, without: &[&str]) -> Daemon {
        ensure_qemu_accounts();
        let run_dir = dir.join("run");
        let etc = dir.join("etc");
        let lib = dir.join("lib");
        let cache = dir.join("cache");
        let log = dir.join("log");
        let caps = cache.join("qemu/capabilities");
        for d in [&run_dir, &etc, &lib, &log, &caps] {
            fs::create_dir_all(d).unwrap();
        }
        let caps_store = caps_root.join(CAPS_CACHE);
        for src in [Path::new(SYSTEM_CAPS), &caps_store] {
            copy_xml(src, &caps);
        }

        let conf = write_confs(dir, &run_dir, &etc, "");

        let binds = [
            (&etc, "/etc/libvirt"),
            (&lib, "/var/lib/libvirt"),
            (&cache, "/var/cache/libvirt"),
            (&log, "/var/log/libvirt"),
        ];
        let mut pairs = Vec::new();
        for (src, dst) in binds {
            // The mount points must exist on the host; empty package directories are harmless.
            fs::create_dir_all(dst).unwrap();
            pairs.push((cstr(src.as_os_str().as_bytes()), cstr(dst.as_bytes())));
        }
        fs::create_dir_all("/run/libvirt").unwrap();
        let setup = MountSetup {
            root: cstr(b"/"),
            tmpfs: cstr(b"tmpfs"),
            run_libvirt: cstr(b"/run/libvirt"),
            tmpfs_opts: cstr(b"mode=0755"),
            binds: pairs,
        };

        let pid_file = run_dir.join("libvirtd.pid");
        let out = fs::File::create(dir.join("libvirtd.out")).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.name, "tini", "-s", "--", "libvirtd"])
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // SAFETY: the closure runs in the forked child before exec and only makes raw
        // unshare/mount system calls on C strings prepared before the fork: no allocation,
        // no locks, nothing that is unsafe after fork in a multi-threaded process.
        unsafe {
            cmd.pre_exec(move || setup.apply());
        }
        if !without.is_empty() {
            cmd.env("LIBVIRT_DRIVER_DIR", driver_dir(dir, without));
        }
        let child = cmd
            .spawn()
            .expect("cannot start ip netns exec ... tini libvirtd");
        let mut d = Daemon {
            child: Some(child),
            uri: format!(
                "qemu:///system?socket={}",
                run_dir.join("libvirt-sock").display()
            ),
            run_dir,
            cache_dir: cache,
            caps_store,
        };
        d.wait_ready(dir);
        d
    }

    /// Start the chroot's libvirtd (`root`, see `chroot.rs`) in `host`, state under `dir`.
    ///
    /// In the forked child, before exec: enter `host`'s network namespace, unshare a mount
    /// namespace, and mount into the chroot a fresh sysfs (so the daemon sees the lab's
    /// interfaces), proc, /dev (rbind), a tmpfs on /run, the lab's state directories over the
    /// chroot's libvirt directories, and the temp dir (sockets, consoles) and the asset cache
    /// (kernel, initramfs) at their own paths; then chroot. None of it is visible outside.
    pub fn start_chroot(host: &Netns, dir: &Path, root: &Path, caps_store: &Path) -> Daemon {
        let run_dir = dir.join("run");
        let (etc, lib, cache, log) = (
            dir.join("etc"),
            dir.join("lib"),
            dir.join("cache"),
            dir.join("log"),
        );
        let caps = cache.join("qemu/capabilities");
        for d in [&run_dir, &etc, &lib, &log, &caps] {
            fs::create_dir_all(d).unwrap();
        }
        // Only this libvirt's own cache: QEMU 7.2's would be thrown away, and overwritten.
        copy_xml(caps_store, &caps);
        // As for the system daemon, plus no private /dev per guest: measured to be what
        // keeps QEMU from starting when libvirtd runs chrooted.
        let conf = write_confs(dir, &run_dir, &etc, "namespaces = [ ]\n");

        let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        let tmp = std::env::temp_dir();
        let assets = super::assets::cache_dir();
        let mut mounts = vec![
            Mount::fs("sysfs", &inside(Path::new("/sys"))),
            Mount::fs("proc", &inside(Path::new("/proc"))),
            Mount::bind(Path::new("/dev"), &inside(Path::new("/dev")), true),
            Mount::fs("tmpfs", &inside(Path::new("/run"))),
        ];
        for (src, dst) in [
            (&etc, "/etc/libvirt"),
            (&lib, "/var/lib/libvirt"),
            (&cache, "/var/cache/libvirt"),
            (&log, "/var/log/libvirt"),
        ] {
            mounts.push(Mount::bind(src, &inside(Path::new(dst)), false));
        }
        for p in [&tmp, &assets] {
            mounts.push(Mount::bind(p, &inside(p), false));
        }
        for m in &mounts {
            // Mount points in the cached chroot; empty directories are harmless there.
            fs::create_dir_all(std::ffi::OsStr::from_bytes(m.dst.as_bytes())).unwrap();
        }
        let netns = fs::File::open(Path::new("/run/netns").join(&host.name))
            .unwrap_or_else(|e| panic!("netns {}: {e}", host.name));
        let setup = ChrootSetup {
            netns: std::os::fd::AsRawFd::as_raw_fd(&netns),
            root: cstr(b"/"),
            new_root: cstr(root.as_os_str().as_bytes()),
            mounts,
        };

        let pid_file = run_dir.join("libvirtd.pid");
        let out = fs::File::create(dir.join("libvirtd.out")).unwrap();
        let mut cmd = Command::new("/usr/bin/tini");
        cmd.args(["-s", "--", "/usr/sbin/libvirtd", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(&pid_file)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // SAFETY: as for `start`: raw setns/unshare/mount/chroot calls on values prepared
        // before the fork, nothing that allocates or locks.
        unsafe {
            cmd.pre_exec(move || setup.apply());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the chroot's tini libvirtd: {e}"));
        drop(netns);
        let mut d = Daemon {
            child: Some(child),
            uri: format!(
                "qemu:///system?socket={}",
                run_dir.join("libvirt-sock").display()
            ),
            run_dir,
            cache_dir: cache,
            caps_store: caps_store.to_path_buf(),
        };
        d.wait_ready(dir);
        d
    }

    /// Wait (bounded) until `virsh uri` answers on the socket.
    fn wait_ready(&mut self, dir: &Path) {
        let sock = self.run_dir.join("libvirt-sock");
        let t0 = Instant::now();
        // First start on a machine without a capabilities cache probes QEMU: ~8 s measured.
        let limit = Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "libvirtd exited at start-up ({st}): {}\n{}",
                    tail(&dir.join("libvirtd.out")),
                    tail(&self.run_dir.join("libvirtd.log"))
                );
            }
            if sock.exists()
                && run_status("virsh", &["-q", "-c", &self.uri, "uri"])
                    .status
                    .success()
            {
                return;
            }
            if t0.elapsed() > limit {
                panic!(
                    "libvirtd did not answer on {} within {limit:?}: {}\n{}",
                    sock.display(),
                    tail(&dir.join("libvirtd.out")),
                    tail(&self.run_dir.join("libvirtd.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// tini's pid (libvirtd is its child) while the daemon runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every process under tini: libvirtd and the QEMU processes it started.
    pub fn processes(&self) -> Vec<u32> {
        self.pid().map(descendants).unwrap_or_default()
    }

    /// libvirtd's own pid (tini's child), while it runs.
    pub fn libvirtd_pid(&self) -> Option<u32> {
        self.processes().into_iter().find(|&p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "libvirtd")
        })
    }

    /// Stop libvirtd (SIGTERM to tini, which forwards it), wait, and kill by pid whatever of
    /// its process tree is left. Keeps the warm capabilities cache for the next lab.
    pub fn stop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let tree = descendants(child.id());
        stop_child(child, "libvirtd", Duration::from_secs(15));
        for pid in tree {
            if alive(pid) {
                // SAFETY: kill(2) on a pid from our own process tree, just snapshotted.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        save_caps(&self.cache_dir.join("qemu/capabilities"), &self.caps_store);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A directory with links to the system's libvirt connection drivers, except `without`.
fn driver_dir(dir: &Path, without: &[&str]) -> PathBuf {
    let system = fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("libvirt/connection-driver")))
        .find(|p| p.is_dir())
        .expect("no libvirt connection-driver directory under /usr/lib/*/");
    let out = dir.join("drivers");
    fs::create_dir_all(&out).unwrap();
    let skip: Vec<String> = without
        .iter()
        .map(|d| format!("libvirt_driver_{d}.so"))
        .collect();
    for e in fs::read_dir(&system).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if !skip.iter().any(|s| name.as_bytes() == s.as_bytes()) {
            std::os::unix::fs::symlink(e.path(), out.join(&name)).unwrap();
        }
    }
    assert!(
        skip.iter().all(|s| system.join(s).exists()),
        "{} lacks one of {skip:?}: nothing would be left out",
        system.display()
    );
    out
}

/// What the child does between fork and exec; every string is prepared beforehand.
struct MountSetup {
    root: CString,
    tmpfs: CString,
    run_libvirt: CString,
    tmpfs_opts: CString,
    binds: Vec<(CString, CString)>,
}

impl MountSetup {
    fn apply(&self) -> io::Result<()> {
        let null = std::ptr::null();
        // SAFETY: plain system calls with valid NUL-terminated strings or null pointers.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted here may propagate back to the host.
            check(libc::mount(
                null,
                self.root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                self.tmpfs.as_ptr(),
                self.run_libvirt.as_ptr(),
                self.tmpfs.as_ptr(),
                0,
                self.tmpfs_opts.as_ptr().cast(),
            ))?;
            for (src, dst) in &self.binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
        }
        Ok(())
    }
}

/// One mount for the chroot, prepared before the fork.
struct Mount {
    src: CString,
    dst: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
}

impl Mount {
    /// A fresh filesystem of `kind` (sysfs, proc, tmpfs) on `dst`.
    fn fs(kind: &str, dst: &Path) -> Mount {
        Mount {
            src: cstr(kind.as_bytes()),
            dst: cstr(dst.as_os_str().as_bytes()),
            fstype: Some(cstr(kind.as_bytes())),
            flags: 0,
        }
    }

    /// `src` bound on `dst`, with its submounts when `rec` (/dev/pts, /dev/shm...).
    fn bind(src: &Path, dst: &Path, rec: bool) -> Mount {
        Mount {
            src: cstr(src.as_os_str().as_bytes()),
            dst: cstr(dst.as_os_str().as_bytes()),
            fstype: None,
            flags: libc::MS_BIND | if rec { libc::MS_REC } else { 0 },
        }
    }
}

/// What the chroot daemon's child does between fork and exec.
struct ChrootSetup {
    netns: libc::c_int,
    root: CString,
    new_root: CString,
    mounts: Vec<Mount>,
}

impl ChrootSetup {
    fn apply(&self) -> io::Result<()> {
        let null = std::ptr::null();
        // SAFETY: plain system calls with a valid fd and NUL-terminated strings or nulls.
        unsafe {
            check(libc::setns(self.netns, libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                null,
                self.root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for m in &self.mounts {
                check(libc::mount(
                    m.src.as_ptr(),
                    m.dst.as_ptr(),
                    m.fstype.as_ref().map_or(null, |f| f.as_ptr()),
                    m.flags,
                    std::ptr::null(),
                ))?;
            }
            check(libc::chroot(self.new_root.as_ptr()))?;
            check(libc::chdir(self.root.as_ptr()))?;
        }
        Ok(())
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn cstr(b: &[u8]) -> CString {
    CString::new(b).expect("path without NUL")
}

/// The QEMU driver refuses to initialise without a `libvirt-qemu` user and a `kvm` group,
/// even when qemu.conf says root. Create them once if this machine lacks them.
fn ensure_qemu_accounts() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if !run_status("getent", &["group", "kvm"]).status.success() {
            let o = run_status("groupadd", &["--system", "kvm"]);
            // Another process may have created it meanwhile (exit 9: name in use).
            assert!(
                o.status.success() || o.status.code() == Some(9),
                "groupadd --system kvm failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        if !run_status("getent", &["passwd", "libvirt-qemu"])
            .status
            .success()
        {
            let o = run_status("useradd", &["--system", "libvirt-qemu"]);
            assert!(
                o.status.success() || o.status.code() == Some(9),
                "useradd --system libvirt-qemu failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    });
}

/// Copy every *.xml in `from` (if it exists) into `to`.
fn copy_xml(from: &Path, to: &Path) {
    let Ok(rd) = fs::read_dir(from) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "xml") {
            let _ = fs::copy(&p, to.join(e.file_name()));
        }
    }
}

/// Publish the daemon's capabilities cache for later labs (atomic rename per file).
fn save_caps(from: &Path, store: &Path) {
    if fs::create_dir_all(store).is_err() {
        return;
    }
    let Ok(rd) = fs::read_dir(from) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "xml") {
            continue;
        }
        let tmp = store.join(format!(
            ".{}.{}",
            std::process::id(),
            e.file_name().to_string_lossy()
        ));
        if fs::copy(&p, &tmp).is_ok() {
            let _ = fs::rename(&tmp, store.join(e.file_name()));
        }
        let _ = fs::remove_file(&tmp);
    }
}

/// The last lines of a log file, for failure messages.
fn tail(p: &Path) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(20);
    format!("--- {} ---\n{}", p.display(), lines[from..].join("\n"))
}

/// libvirtd.conf (its socket and log in `run_dir`, no auth) in `dir`, and qemu.conf in `etc`:
/// root, no cgroups, no security driver, no virtlogd (the least a lab needs), then `qemu_extra`.
/// Returns libvirtd.conf's path.
fn write_confs(dir: &Path, run_dir: &Path, etc: &Path, qemu_extra: &str) -> std::path::PathBuf {
    let conf = dir.join("libvirtd.conf");
    fs::write(
        &conf,
        format!(
            "unix_sock_dir = \"{run}\"\nauth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\n\
             log_outputs = \"3:file:{run}/libvirtd.log\"\n",
            run = run_dir.display()
        ),
    )
    .unwrap();
    fs::write(
        etc.join("qemu.conf"),
        format!(
            "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\n\
             security_driver = \"none\"\ncgroup_controllers = [ ]\nstdio_handler = \"file\"\n{qemu_extra}"
        ),
    )
    .unwrap();
    conf
}
