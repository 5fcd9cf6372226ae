//! End-to-end scaffolding: a real server on 127.0.0.1 port 0 serving the test
//! cartridge, and real players (headless openMSX, C-BIOS_MSX1) joining it.

use super::proxy::Proxy;
use super::testrom;
use msxsync::play::{PlayOptions, Player};
use msxsync::server::{self, ServerHandle};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A server with the test game, plus a ROM cache folder for its players.
pub struct World {
    pub server: ServerHandle,
    pub cache: tempfile::TempDir,
    pub games: PathBuf,
}

/// The test game's regions file.
pub fn testgame_regions() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/roms/testgame.regions")
}

impl World {
    /// Serves tests/roms/testgame.regions as the game "testgame".
    pub fn new() -> World {
        World::with_regions(&testgame_regions())
    }

    /// Serves the given regions file (its ROM next to it).
    pub fn with_regions(path: &Path) -> World {
        let game = msxsync::catalog::load_game(path).expect("test game loads");
        let server = server::start("127.0.0.1:0".parse().unwrap(), vec![game]).expect("server");
        World {
            server,
            cache: tempfile::tempdir().unwrap(),
            games: path.parent().unwrap().to_path_buf(),
        }
    }

    /// Options for a headless, unthrottled player of `game` called `name`.
    pub fn options(&self, game: &str, name: &str) -> PlayOptions {
        player_options(
            &self.server.addr().to_string(),
            game,
            name,
            self.cache.path(),
        )
    }

    /// Starts a player of the test game and waits until the game's start-up is done
    /// (before that, the game would clear a mailbox command with its variables).
    pub async fn player(&self, name: &str) -> Player {
        start_player(self.options("testgame", name)).await
    }

    /// Starts ann and bob, players of the test game, at the same time (as
    /// [`World::player`]).
    pub async fn ann_and_bob(&self) -> (Player, Player) {
        smol::future::zip(self.player("ann"), self.player("bob")).await
    }
}

/// Fills `dir` with the test game alone: a games folder for `msxsync serve`.
pub fn games_folder(dir: &Path) {
    std::fs::copy(testrom::rom_path(), dir.join("testgame.rom")).unwrap();
    std::fs::copy(testgame_regions(), dir.join("testgame.regions")).unwrap();
}

/// Starts player `name` of the test game through a proxy a test can cut or stall
/// (see [`Proxy`]), and waits until its game runs.
pub async fn player_behind_a_proxy(world: &World, name: &str) -> (Proxy, Player) {
    let proxy = Proxy::start(world.server.addr());
    let mut o = world.options("testgame", name);
    o.server = proxy.addr().to_string();
    let p = start_player(o).await;
    (proxy, p)
}

/// Options for a headless, unthrottled player of `game` on `server`.
pub fn player_options(server: &str, game: &str, name: &str, cache: &Path) -> PlayOptions {
    let mut o = PlayOptions::new(server, game);
    o.name = name.into();
    o.headless = true;
    o.fast = true;
    // RUST_LOG=msxsync=info (or =trace) shows what the players and servers do.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    o.cache_dir = Some(cache.to_path_buf());
    o
}

/// Starts a player and waits until the test game's start-up is done.
pub async fn start_player(o: PlayOptions) -> Player {
    let name = o.name.clone();
    let p = Player::start(o)
        .await
        .unwrap_or_else(|e| panic!("player {name} failed to start: {e:#}"));
    wait_ready(&p).await;
    p
}

/// Waits until the test game finished its start-up and runs its main loop.
pub async fn wait_ready(p: &Player) {
    super::poll("the game's start-up", Duration::from_secs(20), || async {
        (peek(p, testrom::READY).await == testrom::READY_VALUE).then_some(())
    })
    .await;
}

/// Reads one byte of a player's RAM.
pub async fn peek(p: &Player, addr: u16) -> u8 {
    let r = p
        .openmsx()
        .command(&testrom::peek(addr))
        .await
        .expect("peek");
    r.trim().parse().expect("peek reply is a number")
}

/// Makes a player's game perform a mailbox command with CPU writes, and waits until
/// the game acknowledged it.
pub async fn game_does(p: &Player, cmd: u8, addr: u16, value: u8) {
    let seq = post(p, cmd, addr, value).await;
    wait_ack(p, seq).await;
}

/// Posts a mailbox command without waiting; returns the sequence to wait for.
pub async fn post(p: &Player, cmd: u8, addr: u16, value: u8) -> u8 {
    // The game acts when the sequence differs from the last one it saw, which a
    // loadstate can take back in time: always use the next one.
    let seq = peek(p, testrom::LAST_SEQ).await.wrapping_add(1);
    p.openmsx()
        .command(&testrom::mailbox(seq, cmd, addr, value))
        .await
        .expect("mailbox");
    seq
}

/// Waits until the game acknowledged mailbox command `seq`.
pub async fn wait_ack(p: &Player, seq: u8) {
    super::poll(
        "the game to take the mailbox command",
        Duration::from_secs(20),
        || async { (peek(p, testrom::ACK).await == seq).then_some(()) },
    )
    .await;
}

/// The shared regions of a player's RAM.
pub async fn shared(p: &Player) -> Vec<Vec<u8>> {
    p.hooks().read_state().await.expect("read shared regions")
}

/// The server's current state, as a newly joining client receives it.
pub async fn server_state(world: &World, game: &str) -> Vec<Vec<u8>> {
    server_state_at(&world.server.addr().to_string(), game).await
}

/// The state of `game` on the server at `addr`, as a newly joining client receives it.
pub async fn server_state_at(addr: &str, game: &str) -> Vec<Vec<u8>> {
    let mut c = msxsync::client::connect(addr, "observer")
        .await
        .expect("observer connects");
    let j = c.join(game).await.expect("observer joins");
    c.close().await;
    j.state
}

/// Waits until every player's shared regions equal the server's state.
pub async fn wait_converged(world: &World, game: &str, players: &[&Player]) -> Vec<Vec<u8>> {
    wait_converged_at(&world.server.addr().to_string(), game, players).await
}

/// [`wait_converged`] for the server at `addr`.
pub async fn wait_converged_at(addr: &str, game: &str, players: &[&Player]) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let server = server_state_at(addr, game).await;
        let mut all = true;
        for p in players {
            if shared(p).await != server {
                all = false;
            }
        }
        if all {
            return server;
        }
        if std::time::Instant::now() > deadline {
            let mut msg = format!("no convergence: server {server:02x?}");
            for p in players {
                msg.push_str(&format!("\nplayer {:02x?}", shared(p).await));
            }
            panic!("{msg}");
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

/// Waits until `addr` reads `value` in the player's RAM; panics with what it read.
pub async fn wait_byte(p: &Player, addr: u16, value: u8, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = peek(p, addr).await;
        if got == value {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("{what}: {addr:#06x} is {got:#04x}, expected {value:#04x}");
        }
        smol::Timer::after(Duration::from_millis(5)).await;
    }
}
