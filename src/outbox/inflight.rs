//! Adaptive in-flight limits, one per provider config: how many requests a worker may have
//! outstanding to it at once. A pure controller ([`Limit`]), table-tested; the worker keeps one
//! per config and asks it before claiming.
//!
//! AIMD with slow start, as TCP does with its congestion window:
//! - **Grow on success.** Below the slow-start threshold each answered request adds one (the
//!   window doubles per round trip); above it each adds `1/limit` (one per round trip). Only a
//!   request during which at least half the window was in use counts: an idle config does not grow
//!   a window it never tried. Never above `max`.
//! - **Shrink on overload** (429, 408, 5xx, a timeout, a connection error — what the worker
//!   retries): the window halves, never below `min`, and the threshold follows it. Once per
//!   window: answers to requests sent before the last decrease are already accounted for (a burst
//!   of 100 failures halves the window once, not a hundred times).
//! - **Honour `Retry-After`.** An overload answer with `Retry-After` pauses the config: nothing is
//!   sent to it until then (capped by the caller), besides the halving.

use std::time::{Duration, Instant};

/// The configured bounds of a window (`delivery.in_flight_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min: usize,
    pub initial: usize,
    pub max: usize,
}

/// What an answered (or failed) request says about the provider's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Answered without overload (success, or a refusal of the event or the credentials: the
    /// provider is up and answering).
    Answered,
    /// Overloaded or unreachable; `retry_after` when the provider said how long to wait.
    Overloaded { retry_after: Option<Duration> },
}

/// A request's place in its window: which window it was sent in, and whether the window was in
/// use enough for its answer to grow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    /// The number of the start that made it.
    started: u64,
}

/// One config's window.
#[derive(Clone, Debug)]
pub struct Limit {
    bounds: Bounds,
    window: usize,
    threshold: usize,
    /// Answers counted towards the next step of congestion avoidance (one per `window`).
    acked: usize,
    in_flight: usize,
    /// Counts decreases; a ticket from an older epoch cannot decrease again.
    epoch: u64,
    /// Counts starts.
    starts: u64,
    /// The last start that found at least half the window in use.
    last_busy: Option<u64>,
    paused_until: Option<Instant>,
}

impl Limit {
    pub fn new(bounds: Bounds) -> Self {
        let min = bounds.min.max(1);
        let max = bounds.max.max(min);
        let bounds = Bounds { min, max, initial: bounds.initial.clamp(min, max) };
        Limit {
            bounds,
            window: bounds.initial,
            threshold: max,
            acked: 0,
            in_flight: 0,
            epoch: 0,
            starts: 0,
            last_busy: None,
            paused_until: None,
        }
    }

    /// The current window (requests in flight allowed).
    pub fn window(&self) -> usize {
        self.window
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Until when nothing may be sent (a `Retry-After`), if that is after `now`.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|at| *at > now)
    }

    /// Requests that may start at `now`: none while paused.
    pub fn free(&self, now: Instant) -> usize {
        if self.paused_until(now).is_some() {
            return 0;
        }
        self.window().saturating_sub(self.in_flight)
    }

    /// A request starts (or a slot is reserved for one).
    pub fn start(&mut self) -> Ticket {
        self.in_flight += 1;
        self.starts += 1;
        if 2 * self.in_flight >= self.window {
            self.last_busy = Some(self.starts);
        }
        Ticket { epoch: self.epoch, started: self.starts }
    }

    /// A slot reserved with [`start`](Self::start) was not used: no answer to learn from.
    pub fn cancel(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The request of `ticket` ended at `now` with `signal`. `max_pause` caps a `Retry-After`.
    pub fn finish(&mut self, ticket: Ticket, signal: Signal, now: Instant, max_pause: Duration) {
        // At least half the window was in use at some time while it was in flight.
        let busy = self.last_busy.is_some_and(|at| at >= ticket.started) || 2 * self.in_flight >= self.window;
        self.in_flight = self.in_flight.saturating_sub(1);
        match signal {
            Signal::Answered if busy && self.window < self.threshold => {
                self.window = (self.window + 1).min(self.bounds.max);
            }
            Signal::Answered if busy => {
                self.acked += 1;
                if self.acked >= self.window {
                    self.acked = 0;
                    self.window = (self.window + 1).min(self.bounds.max);
                }
            }
            Signal::Answered => {}
            Signal::Overloaded { retry_after } => {
                if ticket.epoch == self.epoch {
                    self.epoch += 1;
                    self.window = (self.window / 2).max(self.bounds.min);
                    self.threshold = self.window;
                    self.acked = 0;
                }
                if let Some(wait) = retry_after {
                    let until = now + wait.min(max_pause);
                    self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds { min: 1, initial: 4, max: 64 };
    const CAP: Duration = Duration::from_secs(60);
    const OVER: Signal = Signal::Overloaded { retry_after: None };

    /// Fills the window, answers every request with `signal`; returns the window after.
    fn round_trip(l: &mut Limit, signal: Signal, now: Instant) -> usize {
        let tickets: Vec<Ticket> = (0..l.free(now)).map(|_| l.start()).collect();
        for t in tickets {
            l.finish(t, signal, now, CAP);
        }
        l.window()
    }

    #[test]
    fn the_window_doubles_per_round_trip_in_slow_start_up_to_the_max() {
        let now = Instant::now();
        let mut l = Limit::new(B);
        let windows: Vec<usize> = (0..6).map(|_| round_trip(&mut l, Signal::Answered, now)).collect();
        assert_eq!(windows, [8, 16, 32, 64, 64, 64]);
    }

    #[test]
    fn overload_halves_the_window_once_per_round_trip_then_it_grows_by_one() {
        let now = Instant::now();
        let mut l = Limit::new(B);
        for _ in 0..3 {
            round_trip(&mut l, Signal::Answered, now);
        }
        assert_eq!(l.window(), 32);
        // A whole window of failures: one halving, not 32.
        assert_eq!(round_trip(&mut l, OVER, now), 16);
        // Congestion avoidance: about one more per round trip.
        let after: Vec<usize> = (0..3).map(|_| round_trip(&mut l, Signal::Answered, now)).collect();
        assert_eq!(after, [17, 18, 19]);
    }

    #[test]
    fn overload_in_the_next_window_halves_again_down_to_the_min() {
        let now = Instant::now();
        let mut l = Limit::new(B);
        let windows: Vec<usize> = (0..5).map(|_| round_trip(&mut l, OVER, now)).collect();
        assert_eq!(windows, [2, 1, 1, 1, 1]);
    }

    #[test]
    fn an_idle_config_does_not_grow_its_window() {
        let now = Instant::now();
        let mut l = Limit::new(Bounds { min: 1, initial: 8, max: 64 });
        for _ in 0..20 {
            let t = l.start(); // one request at a time: 1 of 8 in use
            l.finish(t, Signal::Answered, now, CAP);
        }
        assert_eq!(l.window(), 8);
    }

    #[test]
    fn retry_after_pauses_the_config_capped() {
        let now = Instant::now();
        let mut l = Limit::new(B);
        let t = l.start();
        l.finish(t, Signal::Overloaded { retry_after: Some(Duration::from_secs(2)) }, now, CAP);
        assert_eq!(l.free(now), 0, "paused");
        assert_eq!(l.free(now + Duration::from_millis(1999)), 0);
        assert_eq!(l.free(now + Duration::from_secs(2)), 2, "then the halved window");
        // A later, shorter Retry-After does not shorten the pause; the cap bounds a long one.
        let t = l.start();
        l.finish(t, Signal::Overloaded { retry_after: Some(Duration::from_secs(3600)) }, now, CAP);
        assert_eq!(l.paused_until(now), Some(now + CAP));
    }

    #[test]
    fn free_slots_count_reservations_and_cancelled_ones_come_back() {
        let now = Instant::now();
        let mut l = Limit::new(B);
        let _a = l.start();
        let _b = l.start();
        assert_eq!((l.in_flight(), l.free(now)), (2, 2));
        l.cancel();
        assert_eq!((l.in_flight(), l.free(now)), (1, 3));
    }

    #[test]
    fn bounds_are_made_consistent() {
        let l = Limit::new(Bounds { min: 0, initial: 500, max: 16 });
        assert_eq!(l.window(), 16);
        let l = Limit::new(Bounds { min: 8, initial: 2, max: 4 });
        assert_eq!(l.window(), 8, "max below min is raised to min");
    }
}
