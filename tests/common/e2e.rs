//! End-to-end scaffolding: a real server on 127.0.0.1 port 0 serving the test
//! cartridge, and real players (headless openMSX, C-BIOS_MSX1) joining it.

use super::proxy::Proxy;
use super::{testrom, until, TIMEOUT};
use msxsync::openmsx::OpenMsx;
use msxsync::play::{PlayOptions, Player, Stats};
use msxsync::protocol::Joined;
use msxsync::server::{self, ServerHandle};
use std::path::{Path, PathBuf};

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

    /// The server's address.
    pub fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    /// Options for a headless, unthrottled player of `game` called `name`.
    pub fn options(&self, game: &str, name: &str) -> PlayOptions {
        player_options(&self.addr(), game, name, self.cache.path())
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

/// Cuts `p`'s connection through `proxy` and waits until `p` noticed.
pub async fn cut(proxy: &Proxy, p: &Player) {
    proxy.cut();
    until("the outage to be noticed", async || {
        Stats::get(&p.stats().disconnects) == 1
    })
    .await;
}

/// Lets `p`'s connection through `proxy` again and waits until `p` is back.
pub async fn restore(proxy: &Proxy, p: &Player) {
    proxy.restore();
    until("the reconnect", async || {
        Stats::get(&p.stats().reconnects) == 1
    })
    .await;
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

/// Something running the test game that a test can talk to: a [`Player`] (through its
/// openMSX) or an openMSX of the test's own (attached to by a `msxsync play` process).
pub trait Emulator {
    /// The control connection to its openMSX.
    fn msx(&self) -> &OpenMsx;
}

impl Emulator for Player {
    fn msx(&self) -> &OpenMsx {
        self.openmsx()
    }
}

impl Emulator for OpenMsx {
    fn msx(&self) -> &OpenMsx {
        self
    }
}

/// Waits until the test game finished its start-up and runs its main loop.
pub async fn wait_ready(p: &impl Emulator) {
    until("the game's start-up", async || {
        peek(p, testrom::READY).await == testrom::READY_VALUE
    })
    .await;
}

/// Reads one byte of an emulator's RAM.
pub async fn peek(p: &impl Emulator, addr: u16) -> u8 {
    let r = p.msx().command(&testrom::peek(addr)).await.expect("peek");
    r.trim().parse().expect("peek reply is a number")
}

/// Makes the game perform a mailbox command with CPU writes, and waits until the game
/// acknowledged it. That is all it waits for: the change is in this emulator's RAM,
/// not yet at the server or any other player (see [`game_does_seen_by`]).
pub async fn game_does(p: &impl Emulator, cmd: u8, addr: u16, value: u8) {
    let seq = post(p, cmd, addr, value).await;
    wait_ack(p, seq).await;
}

/// Posts a mailbox command without waiting; returns the sequence to wait for.
pub async fn post(p: &impl Emulator, cmd: u8, addr: u16, value: u8) -> u8 {
    // The game acts when the sequence differs from the last one it saw, which a
    // loadstate can take back in time: always use the next one.
    let seq = peek(p, testrom::LAST_SEQ).await.wrapping_add(1);
    p.msx()
        .command(&testrom::mailbox(seq, cmd, addr, value))
        .await
        .expect("mailbox");
    seq
}

/// Waits until the game acknowledged mailbox command `seq`.
pub async fn wait_ack(p: &impl Emulator, seq: u8) {
    until("the game to take the mailbox command", async || {
        peek(p, testrom::ACK).await == seq
    })
    .await;
}

/// Makes `writer`'s game perform a mailbox command on a shared byte and waits until
/// every one of `others` shows the byte as the writer has it afterwards: the next step
/// may then rely on everybody having seen it. Returns that value.
///
/// Acknowledged by the game is not delivered: the change still has to be flushed, sent,
/// sequenced and written into the others' RAM, and a later write by another player that
/// assumes it is there races it. (A write of the value a byte already holds is no
/// change, so such a later write can even vanish.)
pub async fn game_does_seen_by<E: Emulator>(
    writer: &E,
    cmd: u8,
    addr: u16,
    value: u8,
    others: &[&E],
    what: &str,
) -> u8 {
    game_does(writer, cmd, addr, value).await;
    let now = peek(writer, addr).await;
    wait_all(others, addr, now, what).await;
    now
}

/// Waits until `addr` reads `value` in every one of `players`.
pub async fn wait_all<E: Emulator>(players: &[&E], addr: u16, value: u8, what: &str) {
    for p in players {
        wait_byte(*p, addr, value, what).await;
    }
}

/// Waits until `addr` reads `value` in the emulator's RAM; panics with what it read.
pub async fn wait_byte(p: &impl Emulator, addr: u16, value: u8, what: &str) {
    let waited = super::wait::poll(what, TIMEOUT, || async {
        Ok((peek(p, addr).await == value).then_some(()))
    })
    .await;
    if let Err(e) = waited {
        let got = peek(p, addr).await;
        panic!("{e}: {addr:#06x} is {got:#04x}, expected {value:#04x}");
    }
}

/// The test game's shared regions as they are in the emulator's RAM.
pub async fn shared(p: &impl Emulator) -> Vec<Vec<u8>> {
    let mut regions = Vec::new();
    for r in testrom::regions() {
        let len = usize::from(r.end - r.start) + 1;
        // Decimal byte values, one Tcl list (a lambda, so no global variable is left
        // behind); only numbers formatted here go in.
        let reply = p
            .msx()
            .command(&format!(
                "apply {{{{a n}} {{binary scan [debug read_block memory $a $n] cu* v; \
                 return $v}}}} {} {len}",
                r.start
            ))
            .await
            .expect("read a shared region");
        let bytes: Vec<u8> = reply
            .split_whitespace()
            .map(|b| b.parse().expect("a byte value"))
            .collect();
        assert_eq!(bytes.len(), len, "read_block reply {reply:?}");
        regions.push(bytes);
    }
    regions
}

/// The server's current state, as a newly joining client receives it.
pub async fn server_state(world: &World, game: &str) -> Vec<Vec<u8>> {
    server_join_at(&world.addr(), game).await.state
}

/// The state of `game` on the server at `addr`, as a newly joining client receives it.
pub async fn server_state_at(addr: &str, game: &str) -> Vec<Vec<u8>> {
    server_join_at(addr, game).await.state
}

/// What a client joining `game` on the server at `addr` now is told (state and
/// sequence number); it leaves again at once.
pub async fn server_join_at(addr: &str, game: &str) -> Joined {
    server_join_room_at(addr, game, game).await
}

/// [`server_join_at`] for room `room` of `game`.
pub async fn server_join_room_at(addr: &str, game: &str, room: &str) -> Joined {
    let mut c = msxsync::client::connect(addr, &super::unique_name("observer"))
        .await
        .expect("observer connects");
    let j = c.join_room(game, room, 0).await.expect("observer joins");
    c.close().await;
    j
}

/// Waits until every one of `players` has received every update the server at `addr`
/// has sequenced for `game` so far, their own acknowledgements included (the updates may
/// still be on their way into the emulators). A check that a holding player did *not*
/// take an update in is only worth something once the update has reached it; a player
/// whose own batch is unacknowledged still has it in flight.
pub async fn wait_caught_up(addr: &str, game: &str, players: &[&Player]) {
    let seq = server_join_at(addr, game).await.seq;
    for p in players {
        until(
            &format!("every player to receive update {seq}"),
            async || Stats::get(&p.stats().seq) >= seq,
        )
        .await;
    }
}

/// Waits until every player's shared regions equal the server's state.
pub async fn wait_converged<E: Emulator>(
    world: &World,
    game: &str,
    players: &[&E],
) -> Vec<Vec<u8>> {
    wait_converged_at(&world.addr(), game, players).await
}

/// [`wait_converged`] for the server at `addr`.
pub async fn wait_converged_at<E: Emulator>(
    addr: &str,
    game: &str,
    players: &[&E],
) -> Vec<Vec<u8>> {
    let waited = super::wait::poll(
        "every player to have the server's state",
        TIMEOUT,
        || async {
            let server = server_state_at(addr, game).await;
            for p in players {
                if shared(*p).await != server {
                    return Ok(None);
                }
            }
            Ok(Some(server))
        },
    )
    .await;
    match waited {
        Ok(state) => state,
        Err(e) => {
            let mut msg = format!("{e}: server {:02x?}", server_state_at(addr, game).await);
            for p in players {
                msg.push_str(&format!("\nplayer {:02x?}", shared(*p).await));
            }
            panic!("{msg}");
        }
    }
}
