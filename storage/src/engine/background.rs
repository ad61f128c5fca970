//! The engine's two background threads: maintenance (flushes when the memtable
//! or WAL grows past its limit, then compaction while there is work) and the
//! WAL writer of [`crate::wal::commit`].

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::compaction::choose;

use super::state::{lock, Shared};

/// Starts the maintenance and WAL writer threads of `shared` into `threads`.
pub(super) fn start(shared: &Arc<Shared>, threads: &mut Vec<JoinHandle<()>>) {
    let s = Arc::clone(shared);
    threads.push(
        std::thread::Builder::new()
            .name("tally-maintenance".into())
            .spawn(move || s.maintenance_loop())
            .unwrap_or_else(|e| panic!("cannot start a thread: {e}")),
    );
    let commit = Arc::clone(&shared.commit);
    commit.expect_writer();
    threads.push(
        std::thread::Builder::new()
            .name("tally-wal".into())
            .spawn(move || commit.run_writer())
            .unwrap_or_else(|e| panic!("cannot start a thread: {e}")),
    );
}

impl Shared {
    fn shutting_down(&self) -> bool {
        *lock(&self.shutdown)
    }

    /// Background flushes and compactions until shutdown. Failures are retried
    /// with a growing pause, except once the engine is poisoned.
    fn maintenance_loop(&self) {
        let mut backoff = Duration::from_millis(250);
        loop {
            {
                let stop = lock(&self.shutdown);
                if *stop {
                    return;
                }
                let (stop, _) = self
                    .bg_cond
                    .wait_timeout(stop, backoff)
                    .unwrap_or_else(|e| e.into_inner());
                if *stop {
                    return;
                }
            }
            if self.poisoned().is_some() {
                continue;
            }
            let mut failed = false;
            if self.needs_flush() {
                if let Err(e) = self.flush() {
                    tracing::error!(error = %e, "background flush failed; will retry");
                    failed = true;
                }
            }
            while !failed && !self.shutting_down() && !self.needs_flush() {
                let next = |metas: &_, now| {
                    choose(metas, &self.opts.retention, &self.opts.compaction, now)
                };
                match self.compact_once(next) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "background compaction failed; will retry");
                        failed = true;
                    }
                }
            }
            backoff = if failed {
                (backoff * 2).min(Duration::from_secs(10))
            } else {
                Duration::from_millis(250)
            };
        }
    }
}
