//! The runner with scripted workers on a manual clock: back-off,
//! tranquility and idle waits are checked as the sleeps the runner asks
//! for, without sleeping; the exit deadline in real time (it is one).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::runner::{SpawnError, backoff};
use super::*;

/// One scripted step: its result, and how long it "takes".
type Scripted = (Result<WorkerState, ()>, Duration);

/// A worker that plays a script, then says it is done.
struct Script {
    name: &'static str,
    steps: VecDeque<Scripted>,
    clock: Arc<ManualClock>,
    idle_wait: Duration,
    /// Set when the worker is dropped (the runner drops it as its thread
    /// ends).
    dropped: Arc<AtomicBool>,
}

impl Script {
    fn new(clock: &Arc<ManualClock>, steps: Vec<Scripted>) -> Script {
        Script {
            name: "script",
            steps: steps.into(),
            clock: clock.clone(),
            idle_wait: Duration::from_secs(30),
            dropped: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Worker for Script {
    fn name(&self) -> String {
        self.name.into()
    }

    fn status(&self) -> WorkerProgress {
        WorkerProgress {
            queue_length: Some(self.steps.len() as u64),
            counters: Vec::new(),
        }
    }

    fn work(&mut self, _stop: &Stop) -> Result<WorkerState, WorkerError> {
        let Some((result, takes)) = self.steps.pop_front() else {
            return Ok(WorkerState::Done);
        };
        self.clock.advance(takes);
        result.map_err(|()| WorkerError::Store(crate::store::StoreError::Corrupt("scripted")))
    }

    fn wait_for_work(&mut self) -> Duration {
        self.idle_wait
    }
}

const FAIL: Scripted = (Err(()), Duration::ZERO);
const BUSY: Scripted = (Ok(WorkerState::Busy), Duration::ZERO);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Waits (bounded, real time) until `f` holds for the only row of the
/// table.
fn wait_for_row(runner: &Runner, f: impl Fn(&WorkerStatus) -> bool) -> WorkerStatus {
    let give_up = Instant::now() + secs(10);
    loop {
        let table = runner.status();
        assert_eq!(table.len(), 1);
        if f(&table[0]) {
            return table[0].clone();
        }
        assert!(Instant::now() < give_up, "row never matched: {table:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn backoff_doubles_from_one_second_and_is_capped_at_a_minute() {
    let expected = [1, 2, 4, 8, 16, 32, 60, 60].map(secs);
    for (n, want) in (1..).zip(expected) {
        assert_eq!(backoff(n), want, "after {n} failures");
    }
    assert_eq!(backoff(u32::MAX), ERROR_BACKOFF_MAX);
}

#[test]
fn runner_errors_back_off_doubling_and_a_success_resets_the_back_off() {
    let clock = Arc::new(ManualClock::new());
    let runner = Runner::new(clock.clone());
    let mut steps = vec![FAIL; 8];
    steps.extend([BUSY, FAIL]);
    runner
        .spawn(Box::new(Script::new(&clock, steps)), 0)
        .unwrap();
    for (n, want) in (1u32..).zip([1, 2, 4, 8, 16, 32, 60, 60].map(secs)) {
        // Asleep: the table shows the back-off and the failures so far.
        assert_eq!(clock.asleep(), Some(want), "back-off after failure {n}");
        let row = &runner.status()[0];
        assert_eq!(row.state, RunState::Throttled { retry_in: want });
        assert_eq!(row.consecutive_failures, n);
        assert_eq!(row.errors, u64::from(n));
        assert!(row.last_error.as_deref().unwrap().contains("scripted"));
        assert_eq!(clock.expect_sleep(), Some(want));
    }
    // The busy step succeeded (no pause at tranquility 0), so the next
    // failure starts again from one second: the worker did not stop.
    assert_eq!(clock.asleep(), Some(secs(1)));
    assert_eq!(runner.status()[0].consecutive_failures, 1);
    assert_eq!(clock.expect_sleep(), Some(secs(1)));
    let row = wait_for_row(&runner, |r| r.state == RunState::Done);
    assert_eq!(row.errors, 9);
    assert_eq!(row.consecutive_failures, 0);
    assert_eq!(row.progress.queue_length, Some(0));
    assert_eq!(clock.sleeps().len(), 9, "{:?}", clock.sleeps());
    assert!(runner.shutdown(secs(5)).is_empty());
}

#[test]
fn runner_tranquility_pauses_a_multiple_of_each_busy_step() {
    let clock = Arc::new(ManualClock::new());
    let runner = Runner::new(clock.clone());
    let step = (Ok(WorkerState::Busy), Duration::from_millis(100));
    let longer = (Ok(WorkerState::Busy), Duration::from_millis(250));
    runner
        .spawn(Box::new(Script::new(&clock, vec![step, longer, step])), 2)
        .unwrap();
    assert_eq!(runner.status()[0].tranquility, 2);
    for want in [200, 500, 200].map(Duration::from_millis) {
        assert_eq!(clock.expect_sleep(), Some(want));
    }
    wait_for_row(&runner, |r| r.state == RunState::Done);
    assert_eq!(clock.sleeps().len(), 3, "the done step pauses no more");
    // At tranquility 0 the same steps run back to back.
    let clock = Arc::new(ManualClock::new());
    let runner = Runner::new(clock.clone());
    runner
        .spawn(Box::new(Script::new(&clock, vec![step, longer, step])), 0)
        .unwrap();
    wait_for_row(&runner, |r| r.state == RunState::Done);
    assert!(clock.sleeps().is_empty(), "{:?}", clock.sleeps());
}

#[test]
fn runner_an_idle_worker_waits_as_long_as_it_asks() {
    let clock = Arc::new(ManualClock::new());
    let runner = Runner::new(clock.clone());
    let idle = (Ok(WorkerState::Idle), Duration::ZERO);
    runner
        .spawn(Box::new(Script::new(&clock, vec![idle, BUSY, idle])), 1)
        .unwrap();
    assert_eq!(clock.asleep(), Some(secs(30)));
    assert_eq!(runner.status()[0].state, RunState::Idle);
    assert_eq!(clock.expect_sleep(), Some(secs(30)));
    // The busy step took no time: no pause even at tranquility 1.
    assert_eq!(clock.expect_sleep(), Some(secs(30)));
    wait_for_row(&runner, |r| r.state == RunState::Done);
    assert_eq!(clock.sleeps(), vec![secs(30), secs(30)]);
}

#[test]
fn runner_shutdown_ends_sleeps_at_once_and_drops_the_workers() {
    // The real clock: an hour-long idle wait and a back-off, both cut short.
    let runner = Runner::new(Arc::new(SystemClock));
    let manual = Arc::new(ManualClock::new());
    let mut idle = Script::new(&manual, vec![(Ok(WorkerState::Idle), Duration::ZERO)]);
    idle.idle_wait = secs(3600);
    let mut failing = Script::new(&manual, vec![FAIL]);
    failing.name = "failing";
    let dropped = [idle.dropped.clone(), failing.dropped.clone()];
    runner.spawn(Box::new(idle), 0).unwrap();
    runner.spawn(Box::new(failing), 0).unwrap();
    let give_up = Instant::now() + secs(10);
    while !runner
        .status()
        .iter()
        .all(|r| matches!(r.state, RunState::Idle | RunState::Throttled { .. }))
    {
        assert!(Instant::now() < give_up, "{:?}", runner.status());
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = Instant::now();
    assert!(runner.shutdown(secs(5)).is_empty());
    assert!(t.elapsed() < secs(1), "took {:?}", t.elapsed());
    assert!(dropped.iter().all(|d| d.load(Ordering::SeqCst)));
    assert!(runner.status().is_empty());
    // A stopped runner starts nothing more.
    let late = Script::new(&manual, vec![]);
    assert!(matches!(
        runner.spawn(Box::new(late), 0),
        Err(SpawnError::Stopping { .. })
    ));
}

/// A worker whose step blocks until the test lets it go, ignoring the
/// stop signal.
struct Stubborn {
    /// Told when the step has started.
    entered: mpsc::Sender<()>,
    /// What the step waits for.
    release: Mutex<mpsc::Receiver<()>>,
}

impl Worker for Stubborn {
    fn name(&self) -> String {
        "stubborn".into()
    }

    fn work(&mut self, _stop: &Stop) -> Result<WorkerState, WorkerError> {
        let _ = self.entered.send(());
        let _ = self
            .release
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recv();
        Ok(WorkerState::Done)
    }

    fn wait_for_work(&mut self) -> Duration {
        Duration::ZERO
    }
}

#[test]
fn runner_shutdown_reports_a_worker_that_ignores_stop_after_the_deadline() {
    let clock = Arc::new(ManualClock::new());
    let runner = Runner::new(clock.clone());
    let (tx, rx) = mpsc::channel();
    let (entered_tx, entered) = mpsc::channel();
    runner
        .spawn(
            Box::new(Stubborn {
                entered: entered_tx,
                release: Mutex::new(rx),
            }),
            0,
        )
        .unwrap();
    // Inside its step (a stop raised before it would end it at once).
    entered.recv_timeout(secs(10)).unwrap();
    let mut idle = Script::new(&clock, vec![(Ok(WorkerState::Idle), Duration::ZERO)]);
    idle.name = "polite";
    runner.spawn(Box::new(idle), 0).unwrap();
    let deadline = Duration::from_millis(200);
    let t = Instant::now();
    let stuck = runner.shutdown(deadline);
    assert!(
        t.elapsed() >= deadline,
        "returned before the deadline: {:?} {stuck:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < secs(5), "waited far past the deadline");
    assert_eq!(stuck, vec!["stubborn".to_string()]);
    // Let it end (its thread was left running, not killed).
    tx.send(()).unwrap();
}
