//! A unix-socket proxy that delays every chunk by a fixed time each way, in front of the
//! lab's libvirtd socket: a slow link without netem (not in this kernel). Chunks keep their
//! order and overlap in flight, as on a real link: latency, not a throughput cap. It counts
//! the libvirt RPC messages clients send, so a benchmark can report calls per VM.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The proxy; dropping it stops accepting (open connections end with their clients).
pub struct DelayProxy {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl DelayProxy {
    /// Listen on `path`, forwarding each connection to `target` with `delay` each way.
    pub fn start(path: &Path, target: &Path, delay: Duration) -> DelayProxy {
        let listener = UnixListener::bind(path).expect("proxy socket");
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let (target, flag, counter) = (target.to_path_buf(), stop.clone(), calls.clone());
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
                pipe(client, server, delay, Some(counter.clone()));
                pipe(s2, c2, delay, None);
            }
        });
        DelayProxy {
            path: path.to_path_buf(),
            stop,
            calls,
        }
    }

    /// Messages clients sent through the proxy so far (calls, plus the odd keepalive).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Counts libvirt RPC messages in a byte stream: each starts with its length as 4 bytes,
/// big-endian, the length field included.
#[derive(Default)]
struct Frames {
    header: Vec<u8>,
    left: usize,
}

impl Frames {
    fn feed(&mut self, mut bytes: &[u8], counter: &AtomicUsize) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = self.left.min(bytes.len());
                self.left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (4 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 4 {
                let len = u32::from_be_bytes(self.header[..].try_into().unwrap()) as usize;
                self.left = len.saturating_sub(4);
                self.header.clear();
                counter.fetch_add(1, Ordering::SeqCst);
            }
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

/// Copy `from` to `to`, each chunk written `delay` after it was read; count the messages
/// into `counter` when given.
fn pipe(
    mut from: UnixStream,
    mut to: UnixStream,
    delay: Duration,
    counter: Option<Arc<AtomicUsize>>,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut frames = Frames::default();
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(c) = &counter {
                        frames.feed(&buf[..n], c);
                    }
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
