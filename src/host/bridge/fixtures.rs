//! Test fixtures of the host bridge: a small host, a request, and a [`Net`] that records.

use super::{LiveRequest, Net, State, Step};
use crate::error::{Error, Result};
use crate::host::netlink::NlError;
use crate::host::{Addr, Link, Route};

pub fn link(index: u32, name: &str, kind: Option<&str>, master: Option<u32>) -> Link {
    Link {
        index,
        name: name.into(),
        mac: Some(format!("52:54:00:00:00:{index:02x}")),
        mtu: 1500,
        up: true,
        master,
        kind: kind.map(String::from),
        arptype: 1,
    }
}

pub fn addr(dev: &str, ip: &str, prefix: u8) -> Addr {
    Addr {
        dev: dev.into(),
        ip: ip.parse().unwrap(),
        prefix,
        peer: None,
        broadcast: None,
        scope: 0,
        flags: 0x80,
        label: None,
        valid_until_ms: None,
        preferred_until_ms: None,
    }
}

pub fn route(dev: &str, dst: Option<(&str, u8)>, gw: Option<&str>, proto: u8) -> Route {
    Route {
        dev: dev.into(),
        family: libc::AF_INET as u8,
        dst: dst.map(|d| d.0.parse().unwrap()),
        dst_len: dst.map(|d| d.1).unwrap_or(0),
        gateway: gw.map(|g| g.parse().unwrap()),
        table: 254,
        protocol: proto,
        scope: if gw.is_some() { 0 } else { 253 },
        kind: 1,
        metric: None,
        prefsrc: None,
    }
}

pub fn host() -> State {
    State {
        links: vec![
            {
                let mut lo = link(1, "lo", None, None);
                lo.arptype = 772;
                lo.mac = Some("00:00:00:00:00:00".into());
                lo
            },
            link(2, "eth1", Some("veth"), None),
        ],
        addrs: vec![addr("eth1", "10.88.1.2", 24), {
            let mut a = addr("eth1", "fe80::1", 64);
            a.scope = 253;
            a
        }],
        routes: vec![
            route("eth1", Some(("10.88.1.0", 24)), None, 2),
            route("eth1", None, Some("10.88.1.1"), 4),
            route("eth1", Some(("10.99.0.0", 16)), Some("10.88.1.254"), 4),
        ],
        wireless: vec![],
    }
}

pub fn req() -> LiveRequest {
    LiveRequest {
        nic: "eth1".into(),
        bridge: "br0".into(),
        address: None,
        gateway: None,
        mtu: None,
    }
}

/// eth1 with a primary, a secondary, a labelled secondary and a leased address of
/// another subnet, and a v6 pair.
pub fn multi() -> State {
    let mut s = host();
    let mut sec = addr("eth1", "10.88.1.3", 24);
    sec.flags |= 0x01;
    let mut lab = addr("eth1", "10.88.1.4", 24);
    lab.flags |= 0x01;
    lab.label = Some("eth1:lab".into());
    let mut dynamic = addr("eth1", "10.87.1.5", 24);
    dynamic.flags = 0;
    dynamic.valid_until_ms = Some(3_000_000);
    dynamic.preferred_until_ms = Some(2_000_000);
    s.addrs.insert(1, sec);
    s.addrs.insert(2, lab);
    s.addrs.insert(3, dynamic);
    s.addrs.push(addr("eth1", "fd88::2", 64));
    s.addrs.push(addr("eth1", "fd88::3", 64));
    s
}

/// A fake that records steps and fails the n-th one.
pub struct Recorder {
    pub state: State,
    pub done: Vec<Step>,
    pub fail_at: Option<usize>,
}

impl Recorder {
    /// A recorder of the host from `host()`, failing the step at `fail_at` if given.
    pub fn new(fail_at: Option<usize>) -> Recorder {
        Recorder {
            state: host(),
            done: vec![],
            fail_at,
        }
    }
}

impl Net for Recorder {
    fn observe(&mut self) -> Result<State> {
        Ok(self.state.clone())
    }
    fn apply_step(&mut self, step: &Step) -> std::result::Result<(), NlError> {
        if self.fail_at == Some(self.done.len()) {
            self.fail_at = None;
            return Err(NlError {
                errno: libc::EINVAL,
                error: Error::host("boom"),
            });
        }
        self.done.push(step.clone());
        Ok(())
    }
}
