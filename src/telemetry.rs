//! Logging (`tracing`, human or JSON) and Prometheus metrics.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG` overrides `log.level`. Logs go to stderr, so that
/// CLI output on stdout (a token printed once) stays machine-readable.
pub fn init_logging(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        // Colour codes only on a terminal: in a file or journald they are noise.
        LogFormat::Human => {
            registry.with(fmt::layer().with_ansi(stderr_is_terminal()).with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    // Already installed (several apps in one test process): keep the first.
    let _ = result;
}

fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; then our handle renders nothing, which
        // is visible on /metrics rather than fatal.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Makes sure the recorder is installed before the first metric is recorded.
pub fn init_metrics() {
    handle();
}

pub fn render_metrics() -> String {
    handle().render()
}

/// At most one log line per `every` for one recurring condition (the database unreachable, seen
/// by every request and every worker round): an outage is one line every few seconds with a
/// count of what was folded into it, not one line per request.
pub struct LogThrottle {
    every: std::time::Duration,
    state: std::sync::Mutex<ThrottleState>,
}

#[derive(Default)]
struct ThrottleState {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub const fn new(every: std::time::Duration) -> Self {
        LogThrottle { every, state: std::sync::Mutex::new(ThrottleState { last: None, suppressed: 0 }) }
    }

    /// `Some(n)` when a line should be written now, `n` being how many occurrences were
    /// suppressed since the previous line; `None` to stay quiet.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(std::time::Instant::now())
    }

    fn allow_at(&self, now: std::time::Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_throttle_writes_one_line_per_period_and_counts_the_rest() {
        let t = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // (time, expected): a request every 100 ms for 25 s gives three lines, not 250.
        let lines: Vec<(u64, u64)> =
            (0..250).filter_map(|i| t.allow_at(at(i * 100)).map(|suppressed| (i * 100, suppressed))).collect();
        assert_eq!(lines, vec![(0, 0), (10_000, 99), (20_000, 99)]);
    }
}
