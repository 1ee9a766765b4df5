//! Progress of long work, told to whoever wants to show it. The library never prints: a
//! caller that shows progress (the binary's progress line on a terminal) gives an options
//! struct a [`Sink`]; the default sink tells nobody.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What long work tells as it goes. Every method does nothing by default. Calls come from
/// the threads the work runs on (several VMs at once), so an implementation is thread-safe
/// and cheap: it only records or redraws, it never blocks the work.
pub trait Progress: Send + Sync {
    /// A stage of `total` items begins (`stage`: "reading domains", "defining domains",
    /// "applying"); the next [`done`](Progress::done) calls count against it.
    fn begin(&self, _stage: &str, _total: usize) {}
    /// One item of the stage (a VM) is finished, whether it succeeded or not.
    fn done(&self, _item: &str) {}
    /// `item` (a VM) is waiting for a LAN address that answers, `left` before giving up.
    fn waiting(&self, _item: &str, _left: Duration) {}
}

/// The handle an options struct carries: cheap to clone and to share between threads;
/// `Sink::default()` tells nobody.
#[derive(Clone, Default)]
pub struct Sink(Option<Arc<dyn Progress>>);

impl Sink {
    pub fn new(to: Arc<dyn Progress>) -> Sink {
        Sink(Some(to))
    }

    pub fn begin(&self, stage: &str, total: usize) {
        if let Some(p) = &self.0 {
            p.begin(stage, total);
        }
    }

    pub fn done(&self, item: &str) {
        if let Some(p) = &self.0 {
            p.done(item);
        }
    }

    pub fn waiting(&self, item: &str, left: Duration) {
        if let Some(p) = &self.0 {
            p.waiting(item, left);
        }
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Sink(..)"
        } else {
            "Sink(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Progress for Log {
        fn begin(&self, stage: &str, total: usize) {
            self.0.lock().unwrap().push(format!("{stage} {total}"));
        }
        fn done(&self, item: &str) {
            self.0.lock().unwrap().push(format!("done {item}"));
        }
    }

    #[test]
    fn default_tells_nobody_and_a_sink_forwards() {
        let quiet = Sink::default();
        quiet.begin("x", 1);
        quiet.waiting("web", Duration::from_secs(1));
        let log = Arc::new(Log::default());
        let sink = Sink::new(log.clone());
        sink.clone().begin("reading domains", 2);
        sink.done("web");
        // A method the implementation leaves out is its no-op default.
        sink.waiting("web", Duration::from_secs(3));
        assert_eq!(
            *log.0.lock().unwrap(),
            vec!["reading domains 2".to_string(), "done web".to_string()]
        );
        assert_eq!(format!("{quiet:?}"), "Sink(none)");
    }
}
