//! Poll with a deadline: the one waiting loop of the tests, the benchmarks
//! (`benches/sync`) and the demo (`examples/demo.rs`), which include this file by path.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long to wait between two checks.
const INTERVAL: Duration = Duration::from_millis(5);

/// Calls `check` every few milliseconds until it gives `Some`, or fails naming `what`
/// after `timeout`; an error from `check` ends the wait at once.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        smol::Timer::after(INTERVAL).await;
    }
}
