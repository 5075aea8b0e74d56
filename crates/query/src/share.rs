//! Questions' share of the cores while ingest has a backlog.
//!
//! Ingest (JetStream delivery, decoding, the ledger's appends, the engine's writer) is a
//! pipeline about [`INGEST_CORES`] threads wide. While JetStream holds a backlog for it, the
//! reports asked meanwhile are computed within a budget of CPU time: the cores beyond those
//! ingest can use, and at least [`SHARE_MIN`] of the machine. Each answer's CPU time (its own
//! thread's clock: the engine's work and the JSON, not HTTP's) is charged to a bucket refilled
//! at that rate; a report asked while the bucket is overdrawn waits, first come first served,
//! until the bucket is full again, and the reports waiting then run back to back, on caches the
//! first of them warmed. With no backlog nothing waits, and questions take every core ingest
//! leaves idle.
//!
//! Why a budget and not priorities: 32 clients asking as fast as they are answered keep the
//! question threads runnable, so a priority sets only the odds of each contest. At nice 2
//! ingest kept 0.60–0.89× of its quiet rate over eight runs (funnel p99 24–35 ms); at nice 5 an
//! answer waited behind whole time slices of ingest's threads (p99 48–81 ms). Admitting reports
//! one at a time as the budget refilled cost each 3× the CPU (cold caches: p99 65 ms at a
//! sixteenth); in bursts an answer costs what it does when questions come continuously.
//!
//! Why a sixteenth: the budget buys answers at what an answer costs. While counts over the
//! runs a backlog leaves pending read their points one by one and ranked them by binary
//! search on cold memory, a sixteenth left funnel p99 at 65–72 ms and an eighth was needed
//! (ingest then kept 0.73–0.86× of its quiet rate); since runs index their time spans, a
//! sixteenth answers 1,700–3,000 funnel questions a second with p99 30–45 ms, and ingest
//! keeps 0.82–1.05× (seven runs; ARCHITECTURE.md has them).
//!
//! Lead lookups and health checks never wait here (they are charged, and cheap).

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use funnel_engine::Metrics;

use crate::{ApiError, WaitingLine};

/// Threads ingest keeps busy when it has a backlog: the engine's writer, the appender, and
/// JetStream delivery with decoding between them.
pub const INGEST_CORES: f64 = 2.0;

/// The least share of the machine's cores questions get while ingest has a backlog.
pub const SHARE_MIN: f64 = 1.0 / 16.0;

/// CPU time a full bucket holds: the reports waiting for it are answered in bursts of about
/// this much work (every BURST ÷ rate: 16 ms on 2 cores).
const BURST: Duration = Duration::from_millis(2);

/// How long after ingest's last batch a backlog still counts: a consumer that stopped
/// receiving (NATS gone) leaves its last `pending` figure behind.
const BACKLOG_FRESH: Duration = Duration::from_secs(1);

/// Reports that may wait for the budget; one more is answered 503 `busy` at once.
pub const SHARE_WAITING_MAX: usize = 1024;

/// The budget and its first-come queue.
pub struct Share {
    /// CPU nanoseconds granted per second while ingest has a backlog.
    rate: f64,
    bucket: Mutex<Bucket>,
    /// Held by the report at the head of the queue while it waits for the bucket.
    turn: tokio::sync::Mutex<()>,
    waiting: WaitingLine,
    /// Ingest's batch count when last seen, and when it last changed.
    ingest: Mutex<(u64, Instant)>,
}

struct Bucket {
    /// CPU nanoseconds available; below zero after answers that cost more than was there.
    tokens: f64,
    at: Instant,
}

impl Share {
    /// The budget of a machine with `cores` cores.
    pub fn new(cores: usize) -> Share {
        let cores = cores.max(1) as f64;
        let now = Instant::now();
        Share {
            rate: (cores - INGEST_CORES).max(cores * SHARE_MIN) * 1e9,
            bucket: Mutex::new(Bucket {
                tokens: BURST.as_nanos() as f64,
                at: now,
            }),
            turn: tokio::sync::Mutex::new(()),
            waiting: WaitingLine::new(
                "reports (for their share of the cores while events arrive)",
                SHARE_WAITING_MAX,
            ),
            ingest: Mutex::new((0, now)),
        }
    }

    /// The budget of this machine.
    pub fn of_this_machine() -> Share {
        Share::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// Charges an answer's CPU time.
    pub fn spend(&self, cpu: Duration) {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut bucket);
        bucket.tokens -= cpu.as_nanos() as f64;
    }

    /// Returns when a report may be computed: at once unless ingest has a backlog and the
    /// bucket is empty; then in turn, once the bucket has refilled. `busy` if too many wait.
    pub async fn admit(&self, metrics: &Metrics) -> Result<(), ApiError> {
        if !self.backlogged(metrics) || self.tokens() > 0.0 && self.waiting.is_empty() {
            return Ok(());
        }
        let _place = self.waiting.join()?;
        let started = Instant::now();
        let _turn = self.turn.lock().await;
        loop {
            let tokens = self.tokens();
            if tokens > 0.0 || !self.backlogged(metrics) {
                metrics.share_waits.fetch_add(1, Ordering::Relaxed);
                let waited = started.elapsed().as_micros() as u64;
                metrics.share_wait_micros.fetch_add(waited, Ordering::Relaxed);
                return Ok(());
            }
            // Until the bucket is full again: the reports waiting then run back to back, on
            // caches the first of them warmed, instead of one each time a little has refilled.
            tokio::time::sleep(Duration::from_secs_f64((BURST.as_nanos() as f64 - tokens) / self.rate)).await;
        }
    }

    /// CPU nanoseconds in the bucket (below zero: overdrawn).
    fn tokens(&self) -> f64 {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut bucket);
        bucket.tokens
    }

    fn refill(&self, bucket: &mut Bucket) {
        let now = Instant::now();
        let earned = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        // Room for two bursts, so that a waiter woken late loses none of what it waited for.
        bucket.tokens = (bucket.tokens + earned).min(2.0 * BURST.as_nanos() as f64);
        bucket.at = now;
    }

    /// Whether JetStream holds messages for ingest (as of its last delivery) and ingest is
    /// receiving them.
    fn backlogged(&self, metrics: &Metrics) -> bool {
        if metrics.consumer_pending.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let batches = metrics.ingest_batches.load(Ordering::Relaxed);
        let mut seen = self.ingest.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0 != batches {
            *seen = (batches, Instant::now());
        }
        seen.1.elapsed() < BACKLOG_FRESH
    }
}

/// CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the calling thread's CPU clock into `ts`, which lives for
    // the call; an error leaves it zero.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    }

    /// Ingest with messages waiting for it, a batch just taken.
    fn backlogged() -> Metrics {
        let metrics = Metrics::default();
        metrics.consumer_pending.store(40_000, Ordering::Relaxed);
        metrics.ingest_batches.store(7, Ordering::Relaxed);
        metrics
    }

    /// The cores beyond ingest's two, and never less than a sixteenth of the machine.
    #[test]
    fn questions_get_the_cores_ingest_cannot_use_and_at_least_a_sixteenth() {
        let cores_of = |share: Share| share.rate / 1e9;
        assert!((cores_of(Share::new(2)) - 1.0 / 8.0).abs() < 1e-9);
        assert!((cores_of(Share::new(1)) - 1.0 / 16.0).abs() < 1e-9);
        assert!((cores_of(Share::new(12)) - 10.0).abs() < 1e-9);
        assert!((cores_of(Share::new(3)) - 1.0).abs() < 1e-9);
        assert!((cores_of(Share::new(16)) - 14.0).abs() < 1e-9);
        assert_eq!(Share::new(0).rate, Share::new(1).rate);
    }

    /// On 2 cores the budget is an eighth of a second of CPU a second: after answers that cost
    /// 40 ms with 2 ms in the bucket, a report waits until it holds 2 ms again, 40 ms of CPU
    /// later: 40 ms × 8 = 320 ms.
    #[test]
    fn a_report_asked_past_the_budget_waits_until_the_bucket_has_refilled() {
        let share = Share::new(2);
        let metrics = backlogged();
        share.spend(Duration::from_millis(40));
        let started = Instant::now();
        runtime().block_on(share.admit(&metrics)).expect("admitted");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(315), "waited {waited:?}");
        assert!(waited < Duration::from_millis(2_000), "waited {waited:?}");
        assert_eq!(metrics.share_waits.load(Ordering::Relaxed), 1);
        let counted = metrics.share_wait_micros.load(Ordering::Relaxed);
        assert!(
            (315_000..=waited.as_micros() as u64).contains(&counted),
            "counted {counted} µs"
        );
        // Refilled and not overdrawn: the next is admitted at once.
        let started = Instant::now();
        runtime().block_on(share.admit(&metrics)).expect("admitted");
        assert!(started.elapsed() < Duration::from_millis(20));
        assert_eq!(metrics.share_waits.load(Ordering::Relaxed), 1, "the next did not wait");
    }

    /// Without a backlog the bucket is not consulted: an overdrawn budget delays nothing.
    #[test]
    fn without_a_backlog_nothing_waits() {
        let share = Share::new(2);
        share.spend(Duration::from_secs(60));
        let metrics = backlogged();
        metrics.consumer_pending.store(0, Ordering::Relaxed);
        let started = Instant::now();
        runtime().block_on(share.admit(&metrics)).expect("admitted");
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    /// A backlog figure left behind by a consumer that stopped receiving counts for
    /// [`BACKLOG_FRESH`] after its last batch, then no more.
    #[test]
    fn a_stale_backlog_stops_counting() {
        let share = Share::new(2);
        let metrics = backlogged();
        assert!(share.backlogged(&metrics));
        std::thread::sleep(BACKLOG_FRESH + Duration::from_millis(50));
        assert!(!share.backlogged(&metrics));
        metrics.ingest_batches.fetch_add(1, Ordering::Relaxed);
        assert!(share.backlogged(&metrics));
    }

    /// Past [`SHARE_WAITING_MAX`] waiting reports, the next is answered `busy` at once.
    #[test]
    fn a_full_queue_answers_busy() {
        let share = Share::new(2);
        let metrics = backlogged();
        share.spend(Duration::from_secs(60));
        let places: Vec<_> = (0..SHARE_WAITING_MAX)
            .map(|_| share.waiting.join().expect("a place"))
            .collect();
        let refused = runtime().block_on(share.admit(&metrics)).expect_err("busy");
        assert_eq!(refused.code, "busy");
        drop(places);
        assert!(share.waiting.is_empty(), "places given back");
    }

    /// The thread's own CPU clock moves with work done on it, not with time slept.
    #[test]
    fn the_thread_clock_counts_work_not_sleep() {
        let before = thread_cpu();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu() - before;
        assert!(slept < Duration::from_millis(10), "slept {slept:?}");
        let (mut x, started) = (0u64, Instant::now());
        while thread_cpu() - before < Duration::from_millis(20) && started.elapsed() < Duration::from_secs(10) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(
            thread_cpu() - before >= Duration::from_millis(20),
            "10 s of work and the clock did not move"
        );
    }
}
