//! Time for the worker runner, injected: [`SystemClock`] in the process,
//! [`ManualClock`] in tests, so that back-off and tranquility are tested
//! without real sleeps.
//!
//! Owns: the runner's notion of "now" and its stoppable sleeps, and the
//! [`Stop`] signal that ends them.
//!
//! May not: know about workers or the filesystem.
//!
//! Invariants: a sleep ends at its deadline or as soon as its [`Stop`] is
//! raised, whichever comes first; once raised, a `Stop` stays raised.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The runner's clock.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Instant;

    /// Blocks until `deadline` or until `stop` is raised, whichever comes
    /// first. Returns true when it ended because of `stop`.
    fn sleep_until(&self, deadline: Instant, stop: &Stop) -> bool;
}

/// A raise-once signal that asks workers to stop and ends their sleeps.
/// Clones share the signal.
#[derive(Clone, Default)]
pub struct Stop {
    /// The flag and the condvar that wakes the sleepers when it is raised.
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl Stop {
    /// A signal not yet raised.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Raises the signal: every sleep on it ends, and it stays raised.
    pub fn raise(&self) {
        let (flag, cv) = &*self.inner;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// Has it been raised?
    pub fn is_raised(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the signal at most `timeout` of real time; true if raised.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let (flag, cv) = &*self.inner;
        let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |raised| !*raised)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

/// The real clock: `Instant::now` and condvar waits.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant, stop: &Stop) -> bool {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return stop.is_raised();
            }
            // A spurious or early wake-up just goes round again.
            if stop.wait_timeout(deadline - now) {
                return true;
            }
        }
    }
}

/// How long [`ManualClock::expect_sleep`] waits (real time) for a sleeper
/// before it reports that none came: a runner thread that never sleeps is
/// a failed test, not a hung one.
const EXPECT_SLEEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a sleeper on a [`ManualClock`] looks at its [`Stop`] (the
/// clock's condvar is not the signal's, so the raise is polled).
const MANUAL_STOP_POLL: Duration = Duration::from_millis(5);

/// A test clock: time moves only when the test moves it. Sleepers block
/// until the clock is advanced past their deadline (or they are stopped);
/// every sleep asked for is logged.
pub struct ManualClock {
    /// The instant the clock started from (Instants cannot be made from
    /// nothing, so "now" is this plus the time advanced).
    base: Instant,
    /// The advanced time, the deadlines of threads asleep now, and the
    /// lengths of all sleeps asked for, in order.
    state: Mutex<ManualState>,
    /// Wakes sleepers when time moves, and the test when a sleeper comes.
    cv: Condvar,
}

/// [`ManualClock`]'s state under its mutex.
#[derive(Default)]
struct ManualState {
    /// Time advanced since `base`.
    elapsed: Duration,
    /// The threads asleep now: a ticket of each sleep and its deadline.
    /// `expect_sleep` takes the entry it wakes, so the next call waits for
    /// a new sleep, not for the thread it just woke.
    sleeping: Vec<(u64, Instant)>,
    /// The next sleep's ticket.
    next_ticket: u64,
    /// Every sleep asked for (deadline − now at the call), in order.
    asked: Vec<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl ManualClock {
    /// A clock at an arbitrary start, with nobody asleep.
    pub fn new() -> ManualClock {
        ManualClock {
            base: Instant::now(),
            state: Mutex::new(ManualState::default()),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves time forward by `d` (a worker's step "takes" `d`), waking the
    /// sleepers whose deadline passed.
    pub fn advance(&self, d: Duration) {
        self.lock().elapsed += d;
        self.cv.notify_all();
    }

    /// Waits (real time, bounded) until a thread is asleep on this clock,
    /// and returns how long the earliest sleeper has left, without waking
    /// it. None when no thread went to sleep.
    pub fn asleep(&self) -> Option<Duration> {
        let st = self.wait_for_sleeper()?;
        let now = self.base + st.elapsed;
        st.sleeping
            .iter()
            .map(|(_, d)| d.saturating_duration_since(now))
            .min()
    }

    /// Waits (real time, bounded) until a thread is asleep on this clock,
    /// moves time to the earliest sleeper's deadline, and returns how long
    /// that sleeper had left. None when no thread went to sleep.
    pub fn expect_sleep(&self) -> Option<Duration> {
        let mut st = self.wait_for_sleeper()?;
        let i = (0..st.sleeping.len()).min_by_key(|&i| st.sleeping[i].1)?;
        let (_, deadline) = st.sleeping.swap_remove(i);
        let slept = deadline.saturating_duration_since(self.base + st.elapsed);
        st.elapsed += slept;
        drop(st);
        self.cv.notify_all();
        Some(slept)
    }

    /// The state, once at least one thread is asleep (None after
    /// [`EXPECT_SLEEP_TIMEOUT`] without one).
    fn wait_for_sleeper(&self) -> Option<std::sync::MutexGuard<'_, ManualState>> {
        let give_up = Instant::now() + EXPECT_SLEEP_TIMEOUT;
        let mut st = self.lock();
        while st.sleeping.is_empty() {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Some(st)
    }

    /// Every sleep asked for so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.lock().asked.clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.lock().elapsed
    }

    fn sleep_until(&self, deadline: Instant, stop: &Stop) -> bool {
        let mut st = self.lock();
        let asked = deadline.saturating_duration_since(self.base + st.elapsed);
        st.asked.push(asked);
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.sleeping.push((ticket, deadline));
        // The test waiting in `expect_sleep` learns of this sleeper.
        self.cv.notify_all();
        let stopped = loop {
            if stop.is_raised() {
                break true;
            }
            if self.base + st.elapsed >= deadline {
                break false;
            }
            st = self
                .cv
                .wait_timeout(st, MANUAL_STOP_POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        if let Some(i) = st.sleeping.iter().position(|(t, _)| *t == ticket) {
            st.sleeping.swap_remove(i);
        }
        stopped
    }
}
