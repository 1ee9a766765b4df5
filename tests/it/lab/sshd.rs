//! An sshd inside the lab's host namespace acting as a remote hypervisor: key auth with a key
//! made here, listening on br0's address, so a client in the LAN namespace reaches the lab's
//! libvirtd with `qemu+ssh://root@ADDR:PORT/system?socket=...`.

use super::Lab;
use crate::common::run;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The running sshd; dropping it stops it (by pid) and waits for it.
pub struct Sshd {
    child: Child,
    pub addr: String,
    pub port: u16,
    pub key: PathBuf,
    socket: String,
}

impl Sshd {
    pub fn start(lab: &Lab) -> Sshd {
        let dir = lab.dir().join("sshd");
        fs::create_dir_all(&dir).unwrap();
        // sshd's privilege separation directory (a fixed path it insists on).
        fs::create_dir_all("/run/sshd").unwrap();
        let host_key = dir.join("host_key");
        let key = dir.join("client_key");
        for k in [&host_key, &key] {
            run(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-f", k.to_str().unwrap()],
            );
        }
        fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let addr = lab.addr(2);
        // A port of our own per lab: labs run side by side.
        let port = 22000 + u16::from(lab.subnet);
        let conf = dir.join("sshd_config");
        fs::write(
            &conf,
            format!(
                "Port {port}\nListenAddress {addr}\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPidFile none\nLogLevel ERROR\n",
                host_key.display(),
                dir.join("authorized_keys").display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("sshd.log")).unwrap();
        // `ip netns exec` execs sshd: the child's pid is sshd's.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.host.name,
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
            ])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        let socket = lab
            .uri()
            .split_once("socket=")
            .map(|(_, s)| s.to_string())
            .expect("the lab URI names its socket");
        let sshd = Sshd {
            child,
            addr,
            port,
            key,
            socket,
        };
        sshd.wait_listening(lab);
        sshd
    }

    /// `ss` in the host namespace shows the listening socket.
    fn wait_listening(&self, lab: &Lab) {
        let t0 = Instant::now();
        let want = format!("{}:{}", self.addr, self.port);
        while t0.elapsed() < Duration::from_secs(10) {
            let out = lab.host.exec("ss", &["-ltnH"]);
            if String::from_utf8_lossy(&out.stdout).contains(&want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "sshd is not listening on {want}: {}",
            fs::read_to_string(lab.dir().join("sshd/sshd.log")).unwrap_or_default()
        );
    }

    /// The client URI: the lab's libvirtd through ssh.
    pub fn uri(&self) -> String {
        format!(
            "qemu+ssh://root@{}:{}/system?socket={}&keyfile={}&no_verify=1",
            self.addr,
            self.port,
            self.socket,
            self.key.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child this process spawned and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
