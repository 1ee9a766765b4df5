//! A unix-socket proxy that delays every chunk by a fixed time each way, in front of the
//! lab's libvirtd socket: a slow link without netem (not in this kernel). Chunks keep their
//! order and overlap in flight, as on a real link: latency, not a throughput cap.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The proxy; dropping it stops accepting (open connections end with their clients).
pub struct DelayProxy {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    /// Listen on `path`, forwarding each connection to `target` with `delay` each way.
    pub fn start(path: &Path, target: &Path, delay: Duration) -> DelayProxy {
        let listener = UnixListener::bind(path).expect("proxy socket");
        let stop = Arc::new(AtomicBool::new(false));
        let (target, flag) = (target.to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = UnixStream::connect(&target) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(client, server, delay);
                pipe(s2, c2, delay);
            }
        });
        DelayProxy {
            path: path.to_path_buf(),
            stop,
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copy `from` to `to`, each chunk written `delay` after it was read.
fn pipe(mut from: UnixStream, mut to: UnixStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}
