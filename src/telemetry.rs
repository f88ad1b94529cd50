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
        LogFormat::Human => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    // Already installed (several apps in one test process): keep the first.
    let _ = result;
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
