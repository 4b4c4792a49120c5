//! A service's scheduled job: one step every interval, stopped gracefully.
//!
//! Every service that runs work on a schedule (the refund center's interface cycle and payout
//! dispatch, the business layer's recovery and notifications, clearing's recovery and sweep, the
//! payout cycle, the bank simulator's tick, scheduled reconciliation) runs it through [`every`].
//! A stop is looked at only *between* steps, so a step that has begun runs to its end (within
//! [`crate::server::DRAIN_TIME`]); only a step that overruns the drain time is cut, which every
//! step survives as it survives a crash (each is idempotent and resumes from the database).

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running scheduled job (see [`every`]).
#[derive(Debug)]
pub struct Job {
    name: &'static str,
    stop: oneshot::Sender<()>,
    join: JoinHandle<()>,
}

/// Runs `step` now and then every `interval` (a late tick is delayed, never bunched) until
/// [`Job::stop`].
pub fn every<F, Fut>(name: &'static str, interval: Duration, mut step: F) -> Job
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (stop, mut stopped) = oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            step().await;
        }
    });
    Job { name, stop, join }
}

impl Job {
    /// Lets the current step finish (at most `drain`), then ends the job; a step still running
    /// after `drain` is cut.
    pub async fn stop(mut self, drain: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(drain, &mut self.join).await.is_err() {
            tracing::warn!(
                job = self.name,
                ?drain,
                "job step overran the drain time; cut"
            );
            self.join.abort();
            let _ = self.join.await;
        }
    }
}

/// Stops `job` if there is one (a service without `job_interval` has none).
pub async fn stop(job: Option<Job>) {
    if let Some(job) = job {
        job.stop(crate::server::DRAIN_TIME).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_started_step_finishes_before_the_job_stops() {
        let (entered_tx, entered_rx) = oneshot::channel::<()>();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let done = Arc::new(AtomicUsize::new(0));
        let entered = std::sync::Mutex::new(Some((entered_tx, release_rx)));
        let counter = done.clone();
        let job = every("test", Duration::from_secs(3600), move || {
            let hooks = entered.lock().unwrap().take();
            let counter = counter.clone();
            async move {
                if let Some((entered, release)) = hooks {
                    let _ = entered.send(());
                    let _ = release.await;
                }
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        entered_rx.await.unwrap();
        // The stop is asked while the step is in the middle of its work.
        let stopping = tokio::spawn(job.stop(Duration::from_secs(60)));
        release_tx.send(()).unwrap();
        stopping.await.unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1, "the step ran to its end");
    }

    #[tokio::test]
    async fn a_step_that_overruns_the_drain_time_is_cut() {
        let (entered_tx, entered_rx) = oneshot::channel::<()>();
        let entered = std::sync::Mutex::new(Some(entered_tx));
        let finished = Arc::new(AtomicUsize::new(0));
        let counter = finished.clone();
        let job = every("test", Duration::from_secs(3600), move || {
            let entered = entered.lock().unwrap().take();
            let counter = counter.clone();
            async move {
                if let Some(entered) = entered {
                    let _ = entered.send(());
                }
                std::future::pending::<()>().await;
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        entered_rx.await.unwrap();
        job.stop(Duration::from_millis(1)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }
}
