//! The supervisor: every piece of work that talks to a provider (redeem, card start,
//! watch and cancel, refund send and resend, recovery lookups, compensation) is a job
//! owned here, never by the HTTP request that asked for it. At most one job is live
//! per payment or refund; a request that goes away leaves its job running; shutdown
//! stops jobs at their next wait and waits for calls in flight (their write-ahead
//! records are resumed at the next start).
//!
//! On a store shared by several daemons, a job runs only under a lease on its key
//! ([`Leases`]): taken before the work starts (a job whose key another daemon holds ends
//! at once, doing nothing), renewed while it runs, given up when it ends. A lost lease
//! stops the job at its next wait, and every commit the job makes names the lease
//! ([`current_lease`]), so the store refuses it once another daemon took the work over.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::model::{PaymentId, RefundId};
use crate::store::Store;

tokio::task_local! {
    /// The lease the running job holds (its key), for the commits it makes.
    static LEASE: String;
}

/// The lease the current job holds, if it runs under one: its commits carry it.
pub fn current_lease() -> Option<String> {
    LEASE.try_with(Clone::clone).ok()
}

/// Leases on a shared store: who runs which payment's or refund's work.
#[derive(Clone)]
pub struct Leases {
    pub store: Store,
    /// How long a lease lasts unless renewed: a crashed daemon's work waits this long
    /// before another daemon takes it over (`[store] lease`).
    pub ttl: Duration,
}

impl Leases {
    /// Runs `work` while holding the lease on `key`, renewing it every third of its
    /// time; `stop` is cancelled when it is lost. Nothing runs when another daemon holds it.
    async fn run(&self, key: String, stop: CancellationToken, work: impl Future<Output = ()>) {
        match self.store.try_lease(&key, self.ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(work = %key, "another daemon runs this work");
                return;
            }
            Err(error) => {
                tracing::warn!(work = %key, %error, "cannot take the lease; the work is left for later");
                return;
            }
        }
        let finished = CancellationToken::new();
        let lost = std::sync::atomic::AtomicBool::new(false);
        let renewing = async {
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = finished.cancelled() => return,
                    _ = tokio::time::sleep(self.ttl / 3) => {}
                }
                match self.store.renew_lease(&key, self.ttl).await {
                    Ok(true) => renewed = tokio::time::Instant::now(),
                    // The database did not answer: try again while the lease may still
                    // run; past its time another daemon may hold it.
                    Err(error) if renewed.elapsed() < self.ttl => {
                        tracing::warn!(work = %key, %error, "cannot renew the lease; trying again");
                    }
                    _ => {
                        tracing::warn!(work = %key, "lost the lease on this work; stopping it (another daemon may take it over)");
                        lost.store(true, std::sync::atomic::Ordering::SeqCst);
                        stop.cancel();
                        return;
                    }
                }
            }
        };
        let working = LEASE.scope(key.clone(), async {
            work.await;
            finished.cancel();
        });
        tokio::join!(working, renewing);
        // Given back when the work ended here (done, or stopped by a shutdown: another
        // daemon may go on at once), never when another daemon may hold it already.
        if !lost.load(std::sync::atomic::Ordering::SeqCst) {
            if let Err(error) = self.store.release_lease(&key).await {
                tracing::warn!(work = %key, %error, "cannot give up the lease; it expires by itself");
            }
        }
    }
}

/// What a job is about: one live job per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobKey {
    Payment(PaymentId),
    Refund(RefundId),
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobKey::Payment(id) => write!(f, "{id}"),
            JobKey::Refund(id) => write!(f, "{id}"),
        }
    }
}

#[derive(Clone)]
struct LiveJob {
    generation: u64,
    done: watch::Receiver<bool>,
    cancel: CancellationToken,
}

/// A live job, for those who wait on it or ask it to stop what it does.
#[derive(Clone)]
pub struct JobHandle {
    done: watch::Receiver<bool>,
    cancel: CancellationToken,
}

impl JobHandle {
    /// Resolves when the job has ended.
    pub async fn finished(mut self) {
        let _ = self.done.wait_for(|done| *done).await;
    }

    /// Asks the job to cancel its work at the provider (a POS cancel of a waiting card).
    pub fn request_cancel(&self) {
        self.cancel.cancel();
    }
}

/// What a running job is given: its cancel request and the daemon's shutdown.
pub struct JobControl {
    cancel: CancellationToken,
    stop: CancellationToken,
}

impl JobControl {
    /// The POS asked to cancel.
    pub fn cancel_requested(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The daemon is shutting down: end at the next wait, the store holds the rest.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Waits `delay`, cut short by a cancel request made meanwhile (once the cancel is
    /// known, later pauses last their full delay, so a job acting on it is paced, not
    /// spun); `false` when shutting down.
    pub async fn pause(&self, delay: Duration) -> bool {
        if self.cancel.is_cancelled() {
            return tokio::select! {
                _ = tokio::time::sleep(delay) => true,
                _ = self.stop.cancelled() => false,
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.cancel.cancelled() => true,
            _ = self.stop.cancelled() => false,
        }
    }
}

/// Owns every job.
#[derive(Default)]
pub struct Supervisor {
    tracker: TaskTracker,
    stop: CancellationToken,
    live: Mutex<(u64, HashMap<JobKey, LiveJob>)>,
    /// Set on a shared store: every job runs under its key's lease.
    leases: Option<Leases>,
}

impl Supervisor {
    /// A supervisor whose jobs run under leases (a store shared with other daemons).
    pub fn leased(leases: Leases) -> Supervisor {
        Supervisor { leases: Some(leases), ..Supervisor::default() }
    }

    /// How long leases last, on a shared store.
    pub fn lease_ttl(&self) -> Option<Duration> {
        self.leases.as_ref().map(|leases| leases.ttl)
    }

    /// Starts `work` as the job for `key`, unless one is live: then answers that one's
    /// handle as the error (the caller decides whether to wait, signal or refuse).
    pub fn start<F, Fut>(self: &Arc<Self>, key: JobKey, work: F) -> Result<JobHandle, JobHandle>
    where
        F: FnOnce(JobControl) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut live = self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(job) = live.1.get(&key) {
            return Err(JobHandle { done: job.done.clone(), cancel: job.cancel.clone() });
        }
        if self.stop.is_cancelled() {
            // Shutting down: the work stays in the store for the next start.
            let (_, done) = watch::channel(true);
            return Ok(JobHandle { done, cancel: CancellationToken::new() });
        }
        live.0 += 1;
        let generation = live.0;
        let (finished, done) = watch::channel(false);
        let cancel = CancellationToken::new();
        live.1.insert(key.clone(), LiveJob { generation, done: done.clone(), cancel: cancel.clone() });
        drop(live);
        let stop = self.stop.child_token();
        let future = work(JobControl { cancel: cancel.clone(), stop: stop.clone() });
        let supervisor = Arc::downgrade(self);
        // The job's log lines carry the span (request id) of whoever started it.
        let span = tracing::Span::current();
        let leases = self.leases.clone();
        let lease_key = key.to_string();
        let job = async move {
            match leases {
                Some(leases) => leases.run(lease_key, stop, future).await,
                None => future.await,
            }
            if let Some(supervisor) = supervisor.upgrade() {
                let mut live = supervisor.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if live.1.get(&key).is_some_and(|job| job.generation == generation) {
                    live.1.remove(&key);
                }
            }
            finished.send_replace(true);
        };
        self.tracker.spawn(tracing::Instrument::instrument(job, span));
        Ok(JobHandle { done, cancel })
    }

    /// The live job for `key`, if any.
    pub fn live(&self, key: &JobKey) -> Option<JobHandle> {
        let live = self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        live.1.get(key).map(|job| JobHandle { done: job.done.clone(), cancel: job.cancel.clone() })
    }

    /// How many jobs are live.
    pub fn live_count(&self) -> usize {
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).1.len()
    }

    /// Stops every job at its next wait and waits up to `grace` for calls in flight.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

/// The one backoff of the engine: exponential from `first` to `most`, with jitter, for
/// as long as the job needs it (each job has its own end condition).
pub fn backoff(first: Duration, most: Duration) -> impl Iterator<Item = Duration> {
    let delays = backon::ExponentialBuilder::default().with_min_delay(first).with_max_delay(most).with_jitter().without_max_times().build();
    delays.map(move |delay| delay.min(most))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_live_job_per_key_and_the_key_frees_when_it_ends() {
        let supervisor = Arc::new(Supervisor::default());
        let key = JobKey::Payment(PaymentId::new(1, 1));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let first = supervisor.start(key.clone(), |_| async move {
            let _ = released.await;
        });
        let first = first.unwrap_or_else(|_| panic!("the first job starts"));
        assert!(supervisor.start(key.clone(), |_| async {}).is_err(), "a second job for the key is refused");
        assert_eq!(supervisor.live_count(), 1);
        release.send(()).unwrap();
        first.finished().await;
        assert!(supervisor.live(&key).is_none());
        assert!(supervisor.start(key, |_| async {}).is_ok());
    }

    #[tokio::test]
    async fn a_dropped_waiter_does_not_stop_the_job() {
        let supervisor = Arc::new(Supervisor::default());
        let (tell, told) = tokio::sync::oneshot::channel();
        let handle = supervisor
            .start(JobKey::Refund(RefundId::new(1, 1)), |_| async move {
                tokio::task::yield_now().await;
                let _ = tell.send("done");
            })
            .unwrap_or_else(|_| panic!("starts"));
        drop(handle);
        assert_eq!(told.await, Ok("done"));
    }

    #[tokio::test]
    async fn shutdown_ends_jobs_at_their_next_pause() {
        let supervisor = Arc::new(Supervisor::default());
        let (tell, told) = tokio::sync::oneshot::channel();
        let _ = supervisor.start(JobKey::Payment(PaymentId::new(2, 2)), |control| async move {
            let kept_waiting = control.pause(Duration::from_secs(3600)).await;
            let _ = tell.send(kept_waiting);
        });
        assert!(supervisor.shutdown(Duration::from_secs(30)).await, "the job ended within the grace time");
        assert_eq!(told.await, Ok(false));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let delays: Vec<Duration> = backoff(Duration::from_millis(100), Duration::from_secs(1)).take(20).collect();
        assert_eq!(delays.len(), 20, "it never runs out");
        assert!(delays.iter().all(|delay| *delay <= Duration::from_secs(1)));
        assert!(delays[19] > delays[0]);
    }
}
