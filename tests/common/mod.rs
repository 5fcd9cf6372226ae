//! Helpers shared by the integration tests. Each test file uses only some of them.
#![allow(dead_code)]

pub mod e2e;
pub mod fake_server;
pub mod idle;
pub mod lines;
pub mod play;
pub mod proxy;
pub mod rng;
pub mod serve;
pub mod testrom;
pub mod wait;

use std::future::Future;
use std::time::Duration;

/// How long one end-to-end step (a change reaching a player, a game starting, a
/// reconnect) may take before the test fails. Generous: with every test in parallel on
/// a loaded 2-core machine a step can take seconds, and a passing run never waits for
/// the deadline, only for the step.
pub const TIMEOUT: Duration = lines::DEADLINE;

/// Whether the tests that need openMSX can run. False (skip, with a note on stderr)
/// only when `openmsx` is not on PATH and `MSXSYNC_REQUIRE_OPENMSX` is unset; panics
/// when the variable is set and openMSX is missing, so CI never skips silently.
pub fn require_openmsx() -> bool {
    require_program("openmsx")
}

/// Like [`require_openmsx`] for any program (e.g. pasmo).
pub fn require_program(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var_os("MSXSYNC_REQUIRE_OPENMSX").is_some() {
        panic!("{program} is not on PATH but MSXSYNC_REQUIRE_OPENMSX is set");
    }
    eprintln!("skipping: {program} is not on PATH (set MSXSYNC_REQUIRE_OPENMSX to make this fail)");
    false
}

/// Runs `fut` to completion on this thread, or panics when it takes longer than
/// `limit` (a hang in a test then fails it instead of stalling the run).
pub fn run_within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    smol::block_on(smol::future::or(fut, async {
        smol::Timer::after(limit).await;
        panic!("test did not finish within {limit:?}");
    }))
}

/// A shared region from `start` to `end` (inclusive) without a description.
pub fn region(start: u16, end: u16) -> msxsync::protocol::RegionInfo {
    msxsync::protocol::RegionInfo::bytes(start, end, "")
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait::poll(what, timeout, || {
        let next = check();
        async move { Ok(next.await) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until `check` is true, or panics naming `what` after [`TIMEOUT`].
pub async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

/// A player name no other call gave: for clients that join only to look (names are
/// unique within a room, and the server may not have seen the last look-alike leave
/// when the next one joins).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n}")
}

/// Sends one batch of changes and waits for the server's update for it (skipping other
/// players' updates and players coming and going); returns its sequence number.
pub async fn change(
    c: &mut msxsync::client::Client,
    batch: u32,
    changes: Vec<msxsync::delta::Change>,
) -> u64 {
    use msxsync::protocol::ServerMsg;
    c.send_changes(batch, changes).await.unwrap();
    loop {
        match c.recv().await.expect("receives") {
            ServerMsg::Update { seq, batch: b, .. } if b == batch => return seq,
            ServerMsg::Update { .. } | ServerMsg::PlayerJoined(_) | ServerMsg::PlayerLeft(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
