//! Background workers started with the app. Each watches the shutdown token and returns when it
//! fires, after finishing the unit of work it is in.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;

pub fn spawn(state: &AppState, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
    let _ = (state, shutdown);
    // The delivery outbox registers its workers here.
    Vec::new()
}
