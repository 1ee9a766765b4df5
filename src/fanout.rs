//! Fan per-domain work out over a few threads that share one libvirt connection: libvirt
//! connections are thread-safe and libvirtd serves one connection's calls with several
//! workers, so the round trips of many domains overlap instead of queueing.

/// Calls in flight at once on the one connection.
pub const WORKERS: usize = 4;

/// Map `f` over `items` on up to [`WORKERS`] threads, keeping the order.
pub fn parallel<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    parallel_with(items, WORKERS, f)
}

/// [`parallel`] on up to `workers` threads: for work that mostly waits (a NIC's link held
/// down, a guest asked for an address), where more in flight costs libvirtd nothing.
pub fn parallel_with<T: Send, R: Send>(
    items: Vec<T>,
    workers: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if items.len() <= 1 || workers <= 1 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let out = std::sync::Mutex::new((0..n).map(|_| None).collect::<Vec<Option<R>>>());
    std::thread::scope(|s| {
        for _ in 0..workers.min(n) {
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
        assert_eq!(
            parallel(v.clone(), |x| x * 2),
            v.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        assert_eq!(parallel(Vec::<u32>::new(), |x| x), Vec::<u32>::new());
    }
}
