//! Fan per-domain work out over threads that share one libvirt connection: libvirt
//! connections are thread-safe and a connection carries many calls at once, so the round
//! trips of many domains overlap instead of queueing.
//!
//! How many calls to keep in flight was measured (tests/it/bench_inflight.rs, 500 VMs):
//! through 10 ms each way, reading XML scales with the calls in flight up to 128 (0.34 s at
//! 32, 0.17 s at 64) and defining flattens from 64 on, where libvirtd itself is the limit.
//! libvirtd works on only `max_client_requests` (5 by default) of one connection's calls at
//! once and leaves the rest waiting in the socket, so more calls still overlap on the wire,
//! and several connections did no better than one. Over a local socket the daemon is the
//! limit from the start, and a whole attach of 200 VMs with 64 threads took ~45% longer than
//! with 8 (medians of 8 runs, 0.44 s and 0.30 s).

use std::time::Duration;

/// Calls in flight over a fast link: a few more than libvirtd works on at once per client.
pub const FAST_LINK: usize = 8;

/// Calls in flight over a slow link: enough to fill a round trip of tens of milliseconds.
pub const SLOW_LINK: usize = 64;

/// Opening a connection takes about four round trips (1 ms in all over a local socket,
/// 83 ms through 10 ms each way): longer than this, and the link is slow.
pub const SLOW_OPEN: Duration = Duration::from_millis(10);

/// Hosts of a desired-state file worked on at once, each over its own connection.
pub const HOSTS_AT_ONCE: usize = 4;

/// How many calls to keep in flight on a connection that took `opened_in` to open.
pub fn calls_in_flight(opened_in: Duration) -> usize {
    if opened_in > SLOW_OPEN {
        SLOW_LINK
    } else {
        FAST_LINK
    }
}

/// Map `f` over `items` on up to `width` threads, keeping the order.
pub fn parallel<T: Send, R: Send>(
    width: usize,
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if items.len() <= 1 || width <= 1 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let out = std::sync::Mutex::new((0..n).map(|_| None).collect::<Vec<Option<R>>>());
    std::thread::scope(|s| {
        for _ in 0..width.min(n) {
            s.spawn(|| loop {
                let next = queue.lock().expect("queue lock").next();
                let Some((i, item)) = next else { break };
                let r = f(item);
                out.lock().expect("result lock")[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .expect("result lock")
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_maps_everything() {
        let v: Vec<u32> = (0..100).collect();
        for width in [1, FAST_LINK, SLOW_LINK] {
            assert_eq!(
                parallel(width, v.clone(), |x| x * 2),
                v.iter().map(|x| x * 2).collect::<Vec<_>>()
            );
        }
        assert_eq!(parallel(8, Vec::<u32>::new(), |x| x), Vec::<u32>::new());
    }

    #[test]
    fn a_slow_link_gets_more_calls_in_flight() {
        assert_eq!(calls_in_flight(Duration::from_millis(1)), FAST_LINK);
        assert_eq!(calls_in_flight(Duration::from_millis(83)), SLOW_LINK);
    }
}
