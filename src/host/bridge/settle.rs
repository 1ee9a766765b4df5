//! Waiting for a network stack to finish with the NIC and the bridge. A stack's reload
//! returns before the stack acts (`networkctl reload` answers, then networkd reconfigures),
//! and a stack acts again on what vbridge changes (networkd configures a NIC anew when its
//! bridge goes): what is observed, restored or compared in between is half done.

use super::{differences_on, Net, State};
use crate::error::Result;
use std::time::{Duration, Instant};

/// How long the devices must stay unchanged to count as settled: far more than a stack
/// takes between two steps of one configuration (milliseconds), even on a loaded host.
pub const QUIET: Duration = Duration::from_secs(1);
/// The longest wait for a stack that keeps changing the devices; then the caller goes on
/// with the last observation (and its comparison says what is still not as expected).
pub const SETTLE_MAX: Duration = Duration::from_secs(15);

/// Observe until `devs` have not changed for `quiet` and `busy` (the stack's own word that
/// it is about to act on them) says no, or until `within` has passed; the last observation.
pub fn settle(
    net: &mut dyn Net,
    devs: &[&str],
    busy: &mut dyn FnMut(&State) -> bool,
    quiet: Duration,
    within: Duration,
) -> Result<State> {
    let poll = (quiet / 5).clamp(Duration::from_millis(1), Duration::from_millis(100));
    let t0 = Instant::now();
    let mut last = net.observe()?;
    let mut since = Instant::now();
    loop {
        if (since.elapsed() >= quiet && !busy(&last)) || t0.elapsed() >= within {
            return Ok(last);
        }
        std::thread::sleep(poll);
        let now = net.observe()?;
        if !unchanged(&last, &now, devs) {
            since = Instant::now();
        }
        last = now;
    }
}

/// The devices look the same in both: what [`differences_on`] compares, and the link's
/// index (deleted and made again) and MTU.
fn unchanged(a: &State, b: &State, devs: &[&str]) -> bool {
    let id = |s: &State, d: &str| s.link(d).map(|l| (l.index, l.mtu));
    differences_on(a, b, devs).is_empty() && devs.iter().all(|d| id(a, d) == id(b, d))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::host::netlink::NlError;

    /// A stack still at work: each observation until `changes` runs out adds an address.
    struct Busy {
        state: State,
        changes: usize,
        observed: usize,
    }

    impl Net for Busy {
        fn observe(&mut self) -> Result<State> {
            self.observed += 1;
            if self.changes > 0 {
                self.changes -= 1;
                let n = self.observed as u8;
                self.state
                    .addrs
                    .push(addr("eth1", &format!("10.9.9.{n}"), 24));
            }
            Ok(self.state.clone())
        }
        fn apply_step(&mut self, _: &super::super::Step) -> std::result::Result<(), NlError> {
            Ok(())
        }
    }

    fn busy_net(changes: usize) -> Busy {
        Busy {
            state: host(),
            changes,
            observed: 0,
        }
    }

    #[test]
    fn settles_once_the_devices_stop_changing() {
        let mut net = busy_net(4);
        let quiet = Duration::from_millis(50);
        let t = Instant::now();
        let s = settle(&mut net, &["eth1"], &mut |_| false, quiet, SETTLE_MAX).unwrap();
        // Every change seen, then at least one more look and a whole quiet spell (how many
        // polls fit in it depends on how the machine schedules the sleeps: not asserted).
        assert_eq!(net.changes, 0);
        assert_eq!(
            s.addrs_of("eth1").count(),
            host().addrs_of("eth1").count() + 4
        );
        assert!(net.observed > 4, "{}", net.observed);
        assert!(t.elapsed() >= quiet);
    }

    #[test]
    fn other_devices_do_not_count_and_busy_holds_it() {
        // Changes on eth1 only: settling on br0 does not wait for them.
        let mut net = busy_net(1000);
        let quiet = Duration::from_millis(30);
        let t = Instant::now();
        settle(&mut net, &["br0"], &mut |_| false, quiet, SETTLE_MAX).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        // The stack says it is about to act: quiet is not enough.
        let mut net = busy_net(0);
        let mut asked = 0;
        let mut busy = |_: &State| {
            asked += 1;
            asked < 3
        };
        settle(&mut net, &["eth1"], &mut busy, quiet, SETTLE_MAX).unwrap();
        assert_eq!(asked, 3);
    }

    #[test]
    fn gives_up_after_within() {
        let mut net = busy_net(usize::MAX);
        let t = Instant::now();
        let within = Duration::from_millis(200);
        settle(
            &mut net,
            &["eth1"],
            &mut |_| false,
            Duration::from_secs(5),
            within,
        )
        .unwrap();
        let took = t.elapsed();
        assert!(took >= within && took < Duration::from_secs(3), "{took:?}");
    }
}
