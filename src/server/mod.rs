//! `msxsync serve`: holds the authoritative shared state of each room of each game and
//! relays changes.
//!
//! A game has rooms: its default room, named like the game, and any other room a
//! player names when joining (`--room`), made on its first join. Each room has its own
//! shared state, sequence, players and state file; nothing passes between rooms.
//!
//! The pure per-room logic (validation, bit-wise merge, sequencing) is in [`game`]; who
//! may connect and how many rooms there may be is decided by [`limits`] (pure too);
//! this file is the I/O around them: a WebSocket listener on a smol executor, one task
//! per connection, and one mutex per room under which changes are sequenced *and*
//! queued to every player, so that all players see the same order. Updates are encoded
//! once and the bytes are shared by all queues.
//!
//! Everything a client can make the server hold has a limit in bytes or time: each
//! connection's outgoing queue is budgeted in bytes, and so is the total over all
//! queues (a message shared by many queues counts once); connections are capped in
//! total and per address, players per room, rooms per game and in all; a connection
//! has 10 s to say `Hello` (and
//! answer the password challenge), 60 s to join a game, and a player that stops
//! answering pings for 45 s is closed. A player that cannot keep up is disconnected
//! instead of stalling the others. docs/architecture.md ("Security and limits") lists
//! them and what an attacker can still do.
//!
//! With a state folder, every saved room is loaded at start and kept on disk by a saver
//! thread ([`persist`]): a change marks its room dirty under the room's lock, and the
//! saver copies the bytes under that lock and writes the file with no lock held. Every
//! save is also kept as a backup, which `msxsync restore` puts back while players play.
//!
//! Locks are taken in one order: a game's room table, then a room, then the room tally
//! or the saver's table; never two rooms at once.

pub mod game;
pub mod http;
pub mod limits;
pub mod pacing;
pub mod persist;
pub mod queue;
pub mod tracker;

use crate::auth::{self, Password};
use crate::catalog::{self, Game};
use crate::protocol::{
    self, BackupInfo, ClientMsg, Joined, PlayerId, PlayerInfo, RoomInfo, ServerMsg,
    PROTOCOL_VERSION,
};
use anyhow::{bail, Context, Result};
use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender};
use futures_util::future::Either;
use futures_util::StreamExt;
use game::GameState;
use limits::{Admission, Failures, Limits, Registry, RoomLimits, Rooms, Source};
use smol::net::{TcpListener, TcpStream};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, info, warn};

/// Bytes that may wait in one connection's outgoing queue (whole messages, plus
/// [`ENTRY_COST`] each; the game's ROM, which the server keeps anyway and sends once
/// per connection, counts only its entry). A connection whose queue would go over is
/// disconnected ("too slow"), so that one slow or dead player never holds back the
/// others. Some 25,000 one-byte updates: seconds of the busiest game.
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// Bytes that may wait in all outgoing queues together, each message counted once
/// however many queues share it. Over it, a connection that is more than
/// [`BEHIND_BYTES`] behind is disconnected when the next message for it comes.
pub const TOTAL_QUEUE_BYTES: usize = 256 * 1024 * 1024;

/// See [`TOTAL_QUEUE_BYTES`]: players that keep up (less than a packed write waiting)
/// are never disconnected because of the total.
const BEHIND_BYTES: usize = 256 * 1024;

/// What one queued message costs besides its bytes (its queue slot and reference): a
/// flood of tiny messages is budgeted too.
const ENTRY_COST: usize = 64;

/// Default cap on open connections. Below the usual 1,024 open files with room to
/// spare; the server also keeps it below its own file limit (see [`start_with`]).
pub const MAX_CONNECTIONS: usize = 512;

/// Default cap on open connections from one address (an IPv4 address or an IPv6 /64):
/// a LAN party behind one NAT router fits.
pub const MAX_PER_ADDRESS: usize = 64;

/// Default cap on players in one room of a game.
pub const MAX_PLAYERS_PER_GAME: usize = 128;

/// How long a new connection may take to finish the WebSocket handshake and send
/// `Hello`, and then to answer the password challenge.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may stay without joining a game (`msxsync list` and
/// `restore` need a second or two).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the server pings a connection (the answer shows that the player is
/// there, and how long the round trip takes: the tracker page shows it).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// The first ping goes this soon after a connection opens (or after
/// [`PING_INTERVAL`], when that is shorter), so that the tracker page shows a new
/// player's latency within seconds.
pub const FIRST_PING: Duration = Duration::from_secs(2);

/// A player from whom nothing (not even the answer to a ping) came for this long is
/// taken for gone and disconnected.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(45);

/// How long the server keeps trying to deliver a final `Error` before closing anyway.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the server waits before saying that a password was wrong.
pub const WRONG_PASSWORD_DELAY: Duration = Duration::from_secs(1);

/// Open files the server keeps for itself (listener, state files, the executor) below
/// its file limit when it sizes the connection cap.
const FD_RESERVE: usize = 64;

/// At most this many queued messages are packed into one `ServerMsg::Several`, so that
/// a busy room is sent in few system calls but still goes out steadily.
const MAX_MESSAGES_PER_FLUSH: usize = 256;

/// Largest packed message, encoded: far below what clients accept
/// ([`protocol::MAX_SERVER_MESSAGE_BYTES`]), whatever the size or number of updates.
pub const MAX_PACKED_BYTES: usize = 256 * 1024;
const _: () = assert!(MAX_PACKED_BYTES * 4 <= protocol::MAX_SERVER_MESSAGE_BYTES);
const _: () = assert!(QUEUE_BYTES >= 4 * MAX_PACKED_BYTES);

/// A message larger than this goes out as several WebSocket frames (the client joins
/// them), so a connection's write buffer never grows to the size of a ROM and stays
/// that large for as long as the connection lives.
const FRAME_BYTES: usize = 64 * 1024;

/// The same warning about refused or failed connections is logged at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub use crate::protocol::SERVER_PLAYER;

/// Where `msxsync serve` gets its games and keeps their state, and its limits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address and port to listen on (port 0 picks a free port).
    pub bind: SocketAddr,
    /// Folders holding games; empty means [`catalog::default_game_dirs`].
    pub game_dirs: Vec<PathBuf>,
    /// Folder for each game's saved state; `None` means [`persist::default_state_dir`].
    pub state_dir: Option<PathBuf>,
    /// Start every game from zeros, ignoring (and then overwriting) its saved state.
    pub fresh: bool,
    /// The password players must prove they know; `None`: anyone may join.
    pub password: Option<Password>,
    /// Cap on open connections.
    pub max_connections: usize,
    /// Cap on open connections from one address.
    pub max_per_address: usize,
    /// Cap on players in one room of a game.
    pub max_players: usize,
    /// Serve the tracker page to browsers on the same port.
    pub tracker: bool,
    /// Cap on the rooms of one game besides its own.
    pub max_rooms: usize,
}

impl ServeOptions {
    /// Options with the default limits and no password.
    pub fn new(bind: SocketAddr) -> ServeOptions {
        ServeOptions {
            bind,
            game_dirs: Vec::new(),
            state_dir: None,
            fresh: false,
            password: None,
            max_connections: MAX_CONNECTIONS,
            max_per_address: MAX_PER_ADDRESS,
            max_players: MAX_PLAYERS_PER_GAME,
            tracker: true,
            max_rooms: limits::MAX_ROOMS_PER_GAME,
        }
    }
}

/// Loads the games and their saved state and starts serving them: `msxsync serve` up
/// to where it waits for Ctrl-C. Games that cannot be loaded are skipped with a
/// warning event; no game at all is an error. [`ServerHandle::report`] says what is
/// served and where each game's state came from.
pub fn serve(opts: ServeOptions) -> Result<ServerHandle> {
    let state_dir = match opts.state_dir {
        Some(dir) => dir,
        None => persist::default_state_dir()?,
    };
    let (mut catalog, warnings, dirs) = if opts.game_dirs.is_empty() {
        let (c, w) = catalog::Catalog::load_default();
        (c, w, catalog::default_game_dirs())
    } else {
        let (c, w) = catalog::Catalog::load(&opts.game_dirs);
        (c, w, opts.game_dirs)
    };
    for w in &warnings {
        warn!("{w}");
    }
    // After the folders: a folder's game of the same name wins.
    for game in crate::builtin::games() {
        catalog.add(game);
    }
    let games = catalog.games().to_vec();
    if games.is_empty() {
        bail!(
            "no games found in {}; put NAME.regions files and their ROMs there",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    start_with(
        opts.bind,
        games,
        ServerConfig {
            state_dir: Some(state_dir),
            fresh: opts.fresh,
            password: opts.password,
            max_connections: opts.max_connections,
            max_per_address: opts.max_per_address,
            max_players: opts.max_players,
            tracker: opts.tracker,
            rooms: RoomLimits {
                per_game: opts.max_rooms,
                ..RoomLimits::default()
            },
            ..ServerConfig::default()
        },
    )
}

/// Tunables of a running server. `Default` gives the production values.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Bytes that may wait for one connection before it is disconnected as too slow.
    pub queue_bytes: usize,
    /// Bytes that may wait in all queues together (see [`TOTAL_QUEUE_BYTES`]).
    pub total_queue_bytes: usize,
    /// Executor threads (0 counts as 1). One is the default and the right choice: the
    /// work per update is small, and with several threads every fan-out wakes tasks on
    /// other threads, which cost more CPU than the work itself (docs/benchmarks.md).
    pub threads: usize,
    /// Folder to load each game's state from and save it to; `None` keeps no state.
    pub state_dir: Option<PathBuf>,
    /// Ignore saved state: every game starts from zeros and its file is overwritten.
    pub fresh: bool,
    /// How often, at most, a changing game's state is written.
    pub save_interval: Duration,
    /// The password clients must prove they know; `None`: anyone may connect.
    pub password: Option<Password>,
    /// Cap on open connections (lowered to fit the process's file limit).
    pub max_connections: usize,
    /// Cap on open connections from one address (IPv4 address or IPv6 /64).
    pub max_per_address: usize,
    /// Cap on players in one room of a game.
    pub max_players: usize,
    /// Caps on rooms besides the games' default rooms.
    pub rooms: RoomLimits,
    /// Time to finish the handshake and send `Hello`, and to answer the challenge.
    pub hello_timeout: Duration,
    /// Time a connection may stay without joining a game.
    pub join_timeout: Duration,
    /// Pause in sending after which the server pings.
    pub ping_interval: Duration,
    /// Silence after which a player is taken for gone.
    pub peer_timeout: Duration,
    /// Serve the tracker page ([`http`]) to browsers; off, every request that is not
    /// a WebSocket handshake gets 404.
    pub tracker: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            queue_bytes: QUEUE_BYTES,
            total_queue_bytes: TOTAL_QUEUE_BYTES,
            threads: 1,
            state_dir: None,
            fresh: false,
            save_interval: persist::SAVE_INTERVAL,
            password: None,
            max_connections: MAX_CONNECTIONS,
            max_per_address: MAX_PER_ADDRESS,
            max_players: MAX_PLAYERS_PER_GAME,
            rooms: RoomLimits::default(),
            hello_timeout: HELLO_TIMEOUT,
            join_timeout: JOIN_TIMEOUT,
            ping_interval: PING_INTERVAL,
            peer_timeout: PEER_TIMEOUT,
            tracker: true,
        }
    }
}

/// A running server. Dropping it (or [`ServerHandle::stop`]) stops the server and
/// closes every connection.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<async_channel::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    saver: Option<persist::Saver>,
    report: LoadReport,
    shared: Arc<Shared>,
    /// Held while the server runs; released after the final save.
    _dir_lock: Option<persist::DirLock>,
}

impl ServerHandle {
    /// The address the server listens on, with the real port when 0 was asked for.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The games served and where each one's state came from.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Connections open right now (closing ones included).
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).open()
    }

    /// Bytes waiting in all outgoing queues now, each message counted once.
    pub fn queued_bytes(&self) -> usize {
        self.shared.budget.total.load(Ordering::Relaxed)
    }

    /// Stops the server and waits for its threads to finish; unsaved state is saved.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stops the server, then saves every game with unsaved changes. Says what was
    /// saved, or `None` when the server keeps no state.
    pub fn stop_and_save(mut self) -> Option<persist::StopReport> {
        self.shutdown()
    }

    /// Blocks until the server stops (it only stops when told to, so: forever).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    fn shutdown(&mut self) -> Option<persist::StopReport> {
        // Closing the channel ends every executor thread's `run`; the executor is then
        // dropped together with its tasks, which closes the listener and the sockets.
        if let Some(stop) = self.stop.take() {
            stop.close();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // No connection is left to change anything, so the final save is the last word.
        self.saver.take().and_then(persist::Saver::stop)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a server for `games` on `bind` (port 0 allowed) with the default settings.
pub fn start(bind: SocketAddr, games: Vec<Game>) -> Result<ServerHandle> {
    start_with(bind, games, ServerConfig::default())
}

/// Raises this process's soft limit on open files to its hard limit and returns the
/// soft limit now in force (`None` where there is no such limit). Each connection is a
/// file; a server that runs out of files can accept nobody, not even `msxsync list`.
pub fn raise_file_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let wanted = libc::rlimit {
                    // An unlimited hard limit is not a valid soft limit for files.
                    rlim_cur: lim.rlim_max.min(1 << 20),
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                    lim = wanted;
                }
            }
        }
        Some(usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Starts a server on its own threads and returns once it listens.
pub fn start_with(
    bind: SocketAddr,
    games: Vec<Game>,
    config: ServerConfig,
) -> Result<ServerHandle> {
    let mut games = games;
    games.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = games.windows(2).find(|w| w[0].name == w[1].name) {
        bail!(
            "two games are named {:?}; game names must be unique",
            w[0].name
        );
    }
    let mut config = config;
    if let Some(files) = raise_file_limit() {
        let fits = files.saturating_sub(FD_RESERVE) / 2;
        if config.max_connections > fits {
            warn!(
                "this process may open {files} files: serving at most {fits} connections \
                 instead of {} (raise the limit with ulimit -n)",
                config.max_connections
            );
            config.max_connections = fits.max(1);
        }
    }
    let dir_lock = config
        .state_dir
        .as_deref()
        .map(persist::prepare_dir)
        .transpose()?;
    let mut tally = Rooms::new(config.rooms);
    let (rooms, origins, room_origins) = initial_rooms(&games, &config, &mut tally)?;
    let std_listener =
        std::net::TcpListener::bind(bind).with_context(|| format!("cannot listen on {bind}"))?;
    let addr = std_listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {bind}"))?;
    let listener = TcpListener::try_from(std_listener)
        .with_context(|| format!("cannot use the socket bound to {addr}"))?;

    let threads = config.threads.max(1);
    let (notifier, inbox) = persist::channel();
    let report = LoadReport {
        games: games.clone(),
        origins,
        rooms: room_origins,
    };
    let limits = Limits {
        total: config.max_connections,
        per_source: config.max_per_address,
        // Connections closed to make room say why within CLOSE_TIMEOUT; the slack (and
        // FD_RESERVE above) keeps those sockets within the file limit.
        closing_slack: config.max_connections,
    };
    let keeps_state = config.state_dir.is_some();
    let (writes, due) = async_channel::unbounded();
    let shared = Arc::new(Shared {
        games: games
            .into_iter()
            .zip(rooms)
            .map(|(game, rooms)| GameSlot {
                rooms: Mutex::new(rooms),
                game,
                rom: OnceLock::new(),
            })
            .collect(),
        saver: keeps_state.then_some(notifier),
        budget: Budget {
            each: config.queue_bytes,
            total_limit: config.total_queue_bytes,
            total: Arc::new(AtomicUsize::new(0)),
        },
        config,
        next_player: AtomicU32::new(SERVER_PLAYER + 1),
        conns: Mutex::new(Registry::new(limits)),
        failures: Mutex::new(Failures::default()),
        roster: AtomicU64::new(0),
        games_list: Mutex::new(None),
        live: http::Live::default(),
        tally: Mutex::new(tally),
        saved: Mutex::new(Vec::new()),
        writes,
    });
    let saver = match &shared.config.state_dir {
        Some(dir) => {
            let from = shared.clone();
            let saver = persist::Saver::start(
                inbox,
                dir.clone(),
                shared.config.save_interval,
                Box::new(move |g| from.snapshot(g)),
            )?;
            // Rooms that start dirty (--fresh) are written right away.
            for slot in &shared.games {
                for room in lock(&slot.rooms).values() {
                    let mut r = lock(&room.room);
                    if std::mem::take(&mut r.dirty) {
                        shared.changed(room, &mut r);
                    }
                }
            }
            Some(saver)
        }
        None => None,
    };
    let ex: Arc<smol::Executor<'static>> = Arc::new(smol::Executor::new());
    // The accept task holds the executor weakly: a strong reference from one of its own
    // tasks would keep it (and every connection) alive after the threads stop.
    ex.spawn(accept_loop(listener, shared.clone(), Arc::downgrade(&ex)))
        .detach();
    ex.spawn(write_rooms(Arc::downgrade(&shared), due)).detach();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let mut handles = Vec::new();
    for i in 0..threads {
        let ex = ex.clone();
        let stop_rx = stop_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("msxsync-server-{i}"))
            .spawn(move || {
                let _ = smol::block_on(ex.run(stop_rx.recv()));
            })
            .context("cannot start a server thread")?;
        handles.push(t);
    }
    Ok(ServerHandle {
        addr,
        stop: Some(stop_tx),
        threads: handles,
        saver,
        report,
        shared,
        _dir_lock: dir_lock,
    })
}

/// Where each game's state came from at start, by game name.
type Origins = Vec<(String, persist::Origin)>;

/// Where each saved room's state came from at start: game, room, origin.
type RoomOrigins = Vec<(String, String, persist::Origin)>;

/// What a server loaded at start, for `msxsync serve` to show.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The games served, sorted by name.
    pub games: Vec<Game>,
    /// Where the state of each game's default room came from, by game name, in the
    /// same order.
    pub origins: Origins,
    /// The other rooms found in the state folder and where each one's state came from,
    /// by game and room name, sorted.
    pub rooms: RoomOrigins,
}

/// A game's rooms by name.
type RoomTable = BTreeMap<String, Arc<RoomSlot>>;

/// Each game's rooms at start: its default room, and every other room with a state file
/// in the state folder (as many as the room caps allow), from their saved state; and
/// where each room's state came from.
///
/// Every saved room is loaded now rather than when first joined: `list` shows them
/// all, the caps count them, a damaged file is reported at start as before, and they
/// cost little (the caps bound them to a few MiB).
fn initial_rooms(
    games: &[Game],
    config: &ServerConfig,
    tally: &mut Rooms,
) -> Result<(Vec<RoomTable>, Origins, RoomOrigins)> {
    let mut tables = Vec::with_capacity(games.len());
    let mut origins = Vec::with_capacity(games.len());
    let mut room_origins = Vec::new();
    for (g, game) in games.iter().enumerate() {
        let mut table = RoomTable::new();
        let slot = |name: &str, room| {
            Arc::new(RoomSlot {
                game: g,
                name: name.to_string(),
                room: Mutex::new(room),
            })
        };
        let (room, origin) = load_room(game, &game.name, config)?;
        table.insert(game.name.clone(), slot(&game.name, room));
        origins.push((game.name.clone(), origin));
        let saved = match &config.state_dir {
            Some(dir) => persist::saved_rooms(dir, &game.name)?,
            None => Default::default(),
        };
        let (names, strays) = saved;
        for path in strays {
            warn!(
                "{} is not the state file of a room of game {}; left alone",
                path.display(),
                game.name
            );
        }
        let cost = Rooms::cost(game.shared_bytes());
        for name in names {
            let label = persist::room_label(&game.name, &name);
            if let Err(why) = check_room_name(&name) {
                warn!("{label} is not loaded: {why}; its files are left alone");
                continue;
            }
            if let Err(why) = tally.take(&game.name, table.len() - 1, cost) {
                warn!("{label} is not loaded: {why}; its files are left alone");
                continue;
            }
            let (room, origin) = load_room(game, &name, config)?;
            if room.keep {
                table.insert(name.clone(), slot(&name, room));
            } else {
                // Its file was unusable and moved aside: nothing left to keep.
                tally.give(cost);
            }
            room_origins.push((game.name.clone(), name, origin));
        }
        tables.push(table);
    }
    Ok((tables, origins, room_origins))
}

/// Room `name` of `game` at start: from its saved state when there is one, and where
/// that state came from.
fn load_room(game: &Game, name: &str, config: &ServerConfig) -> Result<(Room, persist::Origin)> {
    let fresh = GameState::new(&game.regions);
    let default = name == game.name;
    let (state, dirty, origin) = match &config.state_dir {
        None => (fresh, false, persist::Origin::NotKept),
        Some(dir) if config.fresh => {
            let path = persist::room_file(dir, &game.name, name);
            (fresh, true, persist::Origin::Ignored { path })
        }
        Some(dir) => match persist::load_file(persist::room_file(dir, &game.name, name), game)? {
            (Some(saved), origin) => {
                // `load_file` checked the layout, so the sizes agree.
                let state = GameState::restore(&game.regions, saved.seq, &saved.bytes)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| {
                        format!("cannot restore {}", persist::room_label(&game.name, name))
                    })?;
                (state, false, origin)
            }
            (None, origin) => (fresh, false, origin),
        },
    };
    let keep = default || dirty || matches!(origin, persist::Origin::Loaded { .. });
    Ok((Room::new(game, state, dirty, keep), origin))
}

/// Whether `name` may name a room: the rules of player and game names.
fn check_room_name(name: &str) -> Result<(), String> {
    crate::text::check_name("the room name", name, protocol::MAX_NAME_BYTES)
}

/// Whether two player names are the same to the people reading them: spaces around
/// and case do not count.
fn same_name(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Everything the connection tasks share.
struct Shared {
    /// Sorted by name.
    games: Vec<GameSlot>,
    config: ServerConfig,
    next_player: AtomicU32,
    /// Tells the saver a game turned dirty; `None` when no state is kept.
    saver: Option<persist::Notifier>,
    budget: Budget,
    /// Open connections; those that have not joined a game with the channel that
    /// closes them, to make room when the server is full.
    conns: Mutex<Registry<async_channel::Sender<End>>>,
    /// Wrong passwords per address.
    failures: Mutex<Failures>,
    /// Counts every player joining or leaving any room, and rooms made and dropped:
    /// the games list is encoded again only when it moved.
    roster: AtomicU64,
    /// The last encoded games list and the `roster` count it was made at.
    games_list: Mutex<Option<(u64, Outgoing)>>,
    /// The tracker page's viewers: told of every change the page shows.
    live: http::Live,
    /// The rooms besides the default rooms, against their caps.
    tally: Mutex<Rooms>,
    /// The rooms the saver knows, by the number it knows them by.
    saved: Mutex<Vec<Arc<RoomSlot>>>,
    /// Asks [`write_rooms`] to write a room's pending updates at a time.
    writes: async_channel::Sender<(Instant, Weak<RoomSlot>)>,
}

struct GameSlot {
    game: Game,
    /// The game's rooms by name; its default room (named like the game) always.
    rooms: Mutex<RoomTable>,
    /// The encoded `Rom` message, made on the first `FetchRom` and shared by all.
    rom: OnceLock<Bytes>,
}

impl GameSlot {
    /// The rooms and who is in each, the default room first, then by name.
    fn room_infos(&self) -> Vec<RoomInfo> {
        let rooms = lock(&self.rooms);
        let info = |r: &Arc<RoomSlot>| RoomInfo {
            name: r.name.clone(),
            players: lock(&r.room).state.players().to_vec(),
        };
        let own = rooms.get(&self.game.name).map(info);
        own.into_iter()
            .chain(
                rooms
                    .values()
                    .filter(|r| r.name != self.game.name)
                    .map(info),
            )
            .collect()
    }
}

/// One room of a game, shared by its players' connections (and the saver).
struct RoomSlot {
    /// Index of its game in `Shared::games`.
    game: usize,
    name: String,
    room: Mutex<Room>,
}

/// The mutable part of a room: its state, the queues of its players, and its recent
/// past for the tracker page.
struct Room {
    state: GameState,
    members: Vec<Member>,
    /// Changed since the saver last took a copy.
    dirty: bool,
    history: tracker::History,
    /// The saver's number for this room, given when it first changes.
    saver_id: Option<usize>,
    /// Kept when nobody is in it: the default room, a room with a state file, a room
    /// that changed. A room made by a join and left unchanged is dropped, so an
    /// abandoned name costs nothing and does not count against the caps.
    keep: bool,
    /// Updates for every member, waiting for the room's next write ([`pacing`]).
    pending: Vec<Outgoing>,
    pacer: pacing::Pacer,
}

struct Member {
    id: PlayerId,
    outbox: Outbox,
    kick: async_channel::Sender<End>,
    /// When the player joined, in milliseconds since 1970 (for the tracker page).
    joined: u64,
    rtt: Arc<Rtt>,
}

/// The round trip of one connection's pings, for the tracker page: the writer notes
/// when it sent which ping, the reader matches the answer (a pong carries the ping's
/// bytes back).
#[derive(Default)]
struct Rtt {
    /// The last ping sent: its number and when.
    pinged: Mutex<Option<(u64, Instant)>>,
    pings: AtomicU64,
    /// The last round trip in microseconds; 0 until a ping was answered.
    micros: AtomicU64,
}

impl Rtt {
    /// A new ping's payload, noted as sent now.
    fn ping(&self) -> Bytes {
        let n = self.pings.fetch_add(1, Ordering::Relaxed) + 1;
        *lock(&self.pinged) = Some((n, Instant::now()));
        Bytes::copy_from_slice(&n.to_be_bytes())
    }

    /// A pong with `payload` came: whether it answered the last ping (the round trip
    /// is then noted).
    fn pong(&self, payload: &[u8]) -> bool {
        let mut pinged = lock(&self.pinged);
        match *pinged {
            Some((n, at)) if payload == n.to_be_bytes() => {
                let micros = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.micros.store(micros.max(1), Ordering::Relaxed);
                *pinged = None;
                true
            }
            _ => false,
        }
    }

    /// The last round trip in milliseconds, once a ping was answered.
    fn ms(&self) -> Option<f64> {
        match self.micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1000.0),
        }
    }
}

/// Now, in milliseconds since 1970 (the tracker page's times).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The byte budgets of the outgoing queues.
struct Budget {
    /// Per connection.
    each: usize,
    /// Over all connections.
    total_limit: usize,
    /// Bytes held by all queues now, each message once.
    total: Arc<AtomicUsize>,
}

impl Budget {
    /// `msg` encoded, counted in the total for as long as any queue holds it.
    fn message(&self, msg: &ServerMsg) -> Outgoing {
        self.held(Bytes::from(protocol::encode(msg)), false)
    }

    /// `bytes` (`packed`: a `Several`), counted in the total as [`Budget::message`].
    fn held(&self, bytes: Bytes, packed: bool) -> Outgoing {
        self.total.fetch_add(bytes.len(), Ordering::Relaxed);
        Outgoing {
            _held: Some(Arc::new(Held {
                len: bytes.len(),
                total: self.total.clone(),
            })),
            bytes,
            packed,
        }
    }
}

/// An encoded message on its way to one or more connections.
#[derive(Clone)]
struct Outgoing {
    bytes: Bytes,
    /// A `ServerMsg::Several` already: written as it is, never packed into another.
    packed: bool,
    /// Counts the bytes in [`Budget::total`] until the last queue is done with them;
    /// `None` for what the server keeps anyway (a game's ROM).
    _held: Option<Arc<Held>>,
}

impl Outgoing {
    /// What it costs in one connection's budget: what the server keeps anyway (a ROM)
    /// costs only its entry.
    fn cost(&self) -> usize {
        match self._held {
            Some(_) => self.bytes.len() + ENTRY_COST,
            None => ENTRY_COST,
        }
    }
}

struct Held {
    len: usize,
    total: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.total.fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// One connection's outgoing queue: unbounded as a list, bounded in bytes here.
#[derive(Clone)]
struct Outbox {
    tx: Arc<queue::Queue<Outgoing>>,
    /// Bytes queued and not yet written to the socket ([`Outgoing::cost`] each).
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    /// Queues `out`, or says why this connection is too slow to take it.
    fn push(&self, out: Outgoing, budget: &Budget) -> Result<(), String> {
        let cost = out.cost();
        let mine = self.queued.load(Ordering::Relaxed);
        if mine + cost > budget.each {
            return Err(format!("too slow: {mine} bytes waiting"));
        }
        let total = budget.total.load(Ordering::Relaxed);
        if total > budget.total_limit && mine >= BEHIND_BYTES {
            return Err(format!(
                "too slow: {mine} bytes waiting while the server's queues hold {total}"
            ));
        }
        self.queued.fetch_add(cost, Ordering::Relaxed);
        if self.tx.push(out).is_err() {
            // The connection is ending; nothing will be written.
            self.queued.fetch_sub(cost, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Shared {
    /// A copy of the state of the room the saver knows as `g`, taken under the room's
    /// lock (the file is written after it is released); `None` when nothing changed
    /// since the last copy.
    fn snapshot(&self, g: usize) -> Option<persist::Snapshot> {
        let slot = lock(&self.saved).get(g)?.clone();
        let mut room = lock(&slot.room);
        if !room.dirty {
            return None;
        }
        room.dirty = false;
        Some(persist::Snapshot {
            game: self.games.get(slot.game)?.game.clone(),
            room: slot.name.clone(),
            seq: room.state.seq(),
            bytes: room.state.bytes(),
        })
    }

    /// Room `name` of game `g`, made when it does not exist yet (within the room caps;
    /// the caller holds the game's room table, `rooms`).
    fn room(&self, g: usize, rooms: &mut RoomTable, name: &str) -> Result<Arc<RoomSlot>, End> {
        if let Some(r) = rooms.get(name) {
            return Ok(r.clone());
        }
        let game = &self.games[g].game;
        check_room_name(name).map_err(|why| End::tell(format!("{why}; choose another room")))?;
        lock(&self.tally)
            .take(
                &game.name,
                rooms.len().saturating_sub(1),
                Rooms::cost(game.shared_bytes()),
            )
            .map_err(End::tell)?;
        let room = Arc::new(RoomSlot {
            game: g,
            name: name.to_string(),
            room: Mutex::new(Room::new(game, GameState::new(&game.regions), false, false)),
        });
        rooms.insert(name.to_string(), room.clone());
        self.roster.fetch_add(1, Ordering::Relaxed);
        info!("{} made", persist::room_label(&game.name, name));
        Ok(room)
    }

    /// Drops `slot` from its game's table, `rooms`, when nobody is in it and it has
    /// nothing to keep; the caller holds the table and `room` (the slot's room).
    fn drop_if_unused(&self, rooms: &mut RoomTable, slot: &Arc<RoomSlot>, room: &Room) {
        if room.keep || !room.members.is_empty() {
            return;
        }
        let game = &self.games[slot.game].game;
        if rooms.get(&slot.name).is_some_and(|r| Arc::ptr_eq(r, slot)) {
            rooms.remove(&slot.name);
            lock(&self.tally).give(Rooms::cost(game.shared_bytes()));
            self.roster.fetch_add(1, Ordering::Relaxed);
            self.live.changed();
            info!(
                "{} dropped: nobody in it and nothing to keep",
                persist::room_label(&game.name, &slot.name)
            );
        }
    }

    /// Player `id` leaves `slot`; the room goes too when nothing of it is worth keeping.
    fn leave(&self, slot: &Arc<RoomSlot>, id: PlayerId) {
        let mut rooms = lock(&self.games[slot.game].rooms);
        let mut room = lock(&slot.room);
        room.leave(self, id);
        self.drop_if_unused(&mut rooms, slot, &room);
    }

    fn find_game(&self, name: &str) -> Result<usize, End> {
        self.games
            .binary_search_by(|g| g.game.name.as_str().cmp(name))
            .map_err(|_| {
                End::tell(format!(
                    "unknown game {:?}; this server has: {}",
                    name,
                    self.game_names()
                ))
            })
    }

    fn game_names(&self) -> String {
        if self.games.is_empty() {
            return "none".into();
        }
        self.games
            .iter()
            .map(|g| g.game.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The encoded games list, made again only when players came or went since.
    fn games_list(&self) -> Outgoing {
        let now = self.roster.load(Ordering::Relaxed);
        let mut cached = lock(&self.games_list);
        if let Some((at, out)) = cached.as_ref() {
            if *at == now {
                return out.clone();
            }
        }
        let msg = ServerMsg::Games {
            games: self
                .games
                .iter()
                .map(|g| g.game.info(g.room_infos()))
                .collect(),
        };
        let out = self.budget.message(&msg);
        *cached = Some((now, out.clone()));
        out
    }

    /// What the tracker page shows now. Each room's lock is held only while its part
    /// is made (a game's room table first, as everywhere).
    fn page_state(&self) -> tracker::PageState {
        let games = self
            .games
            .iter()
            .map(|slot| {
                let table = lock(&slot.rooms);
                // The game's own room first, then the others by name (as `list`).
                let own = table.get(&slot.game.name);
                let others = table.values().filter(|r| r.name != slot.game.name);
                let rooms = own
                    .into_iter()
                    .chain(others)
                    .map(|r| {
                        let mut guard = lock(&r.room);
                        let room = &mut *guard;
                        let present: Vec<tracker::Present> = room
                            .state
                            .players()
                            .iter()
                            .map(|p| {
                                let member = room.members.iter().find(|m| m.id == p.id);
                                tracker::Present {
                                    name: p.name.clone(),
                                    joined: member.map_or(0, |m| m.joined),
                                    rtt_ms: member.and_then(|m| m.rtt.ms()),
                                }
                            })
                            .collect();
                        tracker::room_view(
                            &r.name,
                            room.state.state(),
                            room.state.seq(),
                            &present,
                            &mut room.history,
                        )
                    })
                    .collect();
                tracker::GameView {
                    name: slot.game.name.clone(),
                    title: slot.game.title.clone(),
                    rooms,
                }
            })
            .collect();
        tracker::PageState { games }
    }

    /// Marks room `slot` (whose lock the caller holds: `room`) changed, waking the
    /// saver on the clean-to-dirty step only (one message per save). A room changed
    /// once is kept, and gets its number for the saver.
    fn changed(&self, slot: &Arc<RoomSlot>, room: &mut Room) {
        self.live.changed();
        room.keep = true;
        if room.dirty {
            return;
        }
        room.dirty = true;
        let Some(saver) = &self.saver else { return };
        let id = *room.saver_id.get_or_insert_with(|| {
            let mut saved = lock(&self.saved);
            saved.push(slot.clone());
            saved.len() - 1
        });
        saver.dirty(id);
    }
}

/// Locks a mutex. A panic while holding the lock cannot leave a room half-updated in a
/// way that matters more than stopping the whole server would, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Room {
    /// A room of `game` holding `state`, with nobody in it yet.
    fn new(game: &Game, state: GameState, dirty: bool, keep: bool) -> Room {
        Room {
            history: tracker::History::new(
                crate::labels::Names::new(&game.regions, &game.labels),
                state.state(),
            ),
            state,
            members: Vec::new(),
            dirty,
            saver_id: None,
            keep,
            pending: Vec::new(),
            pacer: pacing::Pacer::default(),
        }
    }

    /// Queues `msg`, just sequenced in room `slot` (whose lock the caller holds: this)
    /// on behalf of `who` at `at`, for every member, written with the room's next
    /// write: now, or when [`write_rooms`] finds it due ([`pacing`]); and notes it in
    /// the tracker's history.
    fn queue(
        &mut self,
        shared: &Shared,
        slot: &Arc<RoomSlot>,
        msg: &ServerMsg,
        who: &str,
        at: u64,
    ) {
        self.history.record(who, msg, at, self.state.state());
        self.pending.push(shared.budget.message(msg));
        let now = Instant::now();
        if self.pending.len() >= MAX_MESSAGES_PER_FLUSH {
            self.write(shared);
            return;
        }
        match self.pacer.queued(now) {
            pacing::Write::Now => self.write(shared),
            pacing::Write::At(due) => {
                // Unbounded, but a room asks once per interval (`Pacer::asked`), and
                // `write_rooms` takes the requests off as they come.
                let _ = shared.writes.try_send((due, Arc::downgrade(slot)));
            }
            pacing::Write::Later => {}
        }
    }

    /// Queues the pending updates for every member, packed into as few messages as
    /// fit [`MAX_PACKED_BYTES`], each encoded once for all.
    fn write(&mut self, shared: &Shared) {
        if self.pending.is_empty() {
            return;
        }
        self.pacer.wrote(Instant::now());
        let pending = std::mem::take(&mut self.pending);
        let mut rest = &pending[..];
        while !rest.is_empty() {
            let n = packable(rest);
            let out = match &rest[..n] {
                [one] => one.clone(),
                some => shared.budget.held(pack(some), true),
            };
            self.push_all(shared, out, None);
            rest = &rest[n..];
        }
    }

    /// Queues `out` for every member except `except`, after the updates waiting for
    /// the room's next write (so that every member sees the order they were made in).
    fn broadcast(&mut self, shared: &Shared, out: Outgoing, except: Option<PlayerId>) {
        self.write(shared);
        self.push_all(shared, out, except);
    }

    /// Queues `out` for every member except `except`. Members whose queue is over its
    /// budget are told to go (kicked), removed, and announced as gone to the rest.
    fn push_all(&mut self, shared: &Shared, out: Outgoing, except: Option<PlayerId>) {
        let mut work = vec![(out, except)];
        while let Some((out, except)) = work.pop() {
            let mut i = 0;
            while i < self.members.len() {
                let m = &self.members[i];
                if Some(m.id) == except {
                    i += 1;
                    continue;
                }
                match m.outbox.push(out.clone(), &shared.budget) {
                    Ok(()) => i += 1,
                    Err(reason) => {
                        let _ = m.kick.try_send(End::tell(reason));
                        let gone = self.members.remove(i);
                        shared.roster.fetch_add(1, Ordering::Relaxed);
                        if let Some(left) = self.forget(shared, gone.id, Some(gone.joined)) {
                            work.push((left, None));
                        }
                    }
                }
            }
        }
    }

    /// Removes a player and tells the others; does nothing if it is already gone.
    fn leave(&mut self, shared: &Shared, id: PlayerId) {
        let joined = self.members.iter().find(|m| m.id == id).map(|m| m.joined);
        self.members.retain(|m| m.id != id);
        if let Some(left) = self.forget(shared, id, joined) {
            shared.roster.fetch_add(1, Ordering::Relaxed);
            self.broadcast(shared, left, None);
        }
    }

    /// Takes player `id` (who joined at `joined`, when known) out of the room's state
    /// and notes it for the tracker page; the `PlayerLeft` to tell the others, or
    /// `None` when the player was already gone.
    fn forget(&mut self, shared: &Shared, id: PlayerId, joined: Option<u64>) -> Option<Outgoing> {
        let info = self.state.remove_player(id)?;
        let now = now_ms();
        self.history.left(&info.name, joined.unwrap_or(now), now);
        shared.live.changed();
        Some(shared.budget.message(&ServerMsg::PlayerLeft(info)))
    }
}

/// The WebSocket settings: incoming messages are limited to the protocol's limit for
/// client messages, so an oversized message is refused before it is buffered whole. The
/// read buffer starts small (an idle connection costs little); frames are written as
/// they are made rather than gathered.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(protocol::MAX_CLIENT_MESSAGE_BYTES))
        .max_frame_size(Some(protocol::MAX_CLIENT_MESSAGE_BYTES))
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Says the same kind of warning at most once per interval, with how many were not
/// said in between: a flood of refused connections must not flood the log too.
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            skipped: 0,
        }
    }

    fn warn(&mut self, what: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.skipped += 1;
            return;
        }
        let more = match std::mem::take(&mut self.skipped) {
            0 => String::new(),
            n => format!(" ({n} more like it since the last such message)"),
        };
        self.last = Some(now);
        warn!("{}{more}", what());
    }
}

/// What a refused client reads before the socket closes: its WebSocket handshake fails
/// with "503 Service Unavailable".
const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Writes each room's pending updates when they are due (see [`Room::queue`]): one
/// task and one timer for the whole server, however many players wait.
async fn write_rooms(
    shared: Weak<Shared>,
    asked: async_channel::Receiver<(Instant, Weak<RoomSlot>)>,
) {
    // Few rooms are busy at once: a list is enough.
    let mut due: Vec<(Instant, Weak<RoomSlot>)> = Vec::new();
    let mut timer = smol::Timer::never();
    // When `timer` is set to fire; setting it costs a system call, so only on a change.
    let mut timer_at: Option<Instant> = None;
    loop {
        let first = due.iter().map(|(at, _)| *at).min();
        if first != timer_at {
            match first {
                Some(at) => timer.set_at(at),
                None => timer = smol::Timer::never(),
            }
            timer_at = first;
        }
        let asked_now = smol::future::or(async { Some(asked.recv().await) }, async {
            (&mut timer).await;
            None
        })
        .await;
        match asked_now {
            Some(Ok(request)) => {
                due.push(request);
                while let Ok(request) = asked.try_recv() {
                    due.push(request);
                }
                continue;
            }
            // The server is gone.
            Some(Err(_)) => return,
            None => timer_at = None,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        due.retain(|(at, slot)| {
            if *at > now {
                return true;
            }
            if let Some(slot) = slot.upgrade() {
                lock(&slot.room).write(&shared);
            }
            false
        });
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    ex: std::sync::Weak<smol::Executor<'static>>,
) {
    let mut refusals = Throttle::new(REFUSAL_LOG_INTERVAL);
    let mut failures = Throttle::new(REFUSAL_LOG_INTERVAL);
    loop {
        match listener.accept().await {
            Ok((mut tcp, addr)) => {
                let source = Source::of(addr.ip());
                let (kick, kicked) = async_channel::bounded(1);
                let admission = lock(&shared.conns).admit(source, kick.clone());
                match admission {
                    Admission::Refused(why) => {
                        refusals.warn(|| format!("{addr}: connection refused: {why}"));
                        // Best effort, never waited for: the socket is new, so a short
                        // write goes straight into its buffer.
                        use smol::io::AsyncWriteExt;
                        let _ = smol::future::poll_once(tcp.write(REFUSED)).await;
                    }
                    Admission::Admitted { id, evicted } => {
                        if let Some(old) = evicted {
                            let _ = old.try_send(End::kicked(
                                "the server is full; closing the oldest connection that has \
                                 not joined a game",
                            ));
                        }
                        let _ = tcp.set_nodelay(true);
                        let Some(ex) = ex.upgrade() else { return };
                        let ticket = Ticket {
                            shared: shared.clone(),
                            id,
                            source,
                        };
                        ex.spawn(serve_connection(
                            ticket,
                            tcp,
                            addr,
                            (kick, kicked),
                            Arc::downgrade(&ex),
                        ))
                        .detach();
                    }
                }
            }
            Err(e) => {
                // Typically out of file descriptors (the cap should prevent it): back
                // off instead of spinning.
                failures.warn(|| format!("cannot accept a connection: {e}"));
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connection's place in the registry, given back when the connection task ends.
struct Ticket {
    shared: Arc<Shared>,
    id: u64,
    source: Source,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.shared.conns).release(self.id, self.source);
    }
}

/// Why a connection ended: what to log, and what to tell the client (if anything).
struct End {
    log: String,
    tell: Option<String>,
    /// Whether to wait (briefly) for the client to read the reason and close: yes when
    /// it is talking to us, no when it is closed for being slow or to make room.
    linger: bool,
}

impl End {
    fn quiet(log: impl Into<String>) -> End {
        End {
            log: log.into(),
            tell: None,
            linger: false,
        }
    }

    fn tell(reason: impl Into<String>) -> End {
        let reason = reason.into();
        End {
            log: reason.clone(),
            tell: Some(reason),
            linger: true,
        }
    }

    fn kicked(reason: impl Into<String>) -> End {
        End {
            linger: false,
            ..End::tell(reason)
        }
    }
}

type Sink = WebSocketSender<http::Replayed>;
type Source_ = WebSocketReceiver<http::Replayed>;

/// One client connection, as seen by its reader.
struct Conn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The connection's number in the registry.
    conn: u64,
    id: PlayerId,
    name: String,
    /// The room joined.
    room: Option<Arc<RoomSlot>>,
    /// Whether the ROM was sent on this connection (once is all a client needs).
    rom_sent: bool,
    outbox: Outbox,
    kick: async_channel::Sender<End>,
    rtt: Arc<Rtt>,
}

async fn serve_connection(
    ticket: Ticket,
    mut tcp: TcpStream,
    addr: SocketAddr,
    (kick, kicked): (async_channel::Sender<End>, async_channel::Receiver<End>),
    ex: Weak<smol::Executor<'static>>,
) {
    let shared = ticket.shared.clone();
    let hello = shared.config.hello_timeout;
    let deadline = Instant::now() + hello;
    let kicked_why = || async {
        kicked
            .recv()
            .await
            .map_or_else(|_| "server stopping".to_string(), |end| end.log)
    };
    // Every connection starts with an HTTP request head: a player's WebSocket
    // handshake, or a browser asking for the tracker page.
    let head = smol::future::or(
        async {
            with_timeout(hello, http::read_head(&mut tcp))
                .await
                .unwrap_or_else(|| {
                    Err(http::HeadError::Closed(format!(
                        "no request within {} seconds",
                        hello.as_secs_f64()
                    )))
                })
        },
        async { Err(http::HeadError::Closed(kicked_why().await)) },
    );
    let (read, end) = match head.await {
        Ok(head) => head,
        Err(http::HeadError::TooLarge) => {
            let _ = http::respond(
                &mut tcp,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request head too large\n",
            )
            .await;
            info!(
                "{addr}: request head over {} bytes refused",
                http::MAX_HEAD_BYTES
            );
            return;
        }
        Err(http::HeadError::Closed(why)) => {
            info!("{addr}: {why}");
            return;
        }
    };
    let request = match http::parse_head(&read[..end]) {
        Ok(request) => request,
        Err(why) => {
            let body = format!("{why}\n");
            let _ = http::respond(&mut tcp, "400 Bad Request", "text/plain", body.as_bytes()).await;
            info!("{addr}: bad request: {why}");
            return;
        }
    };
    if request != http::Request::WebSocket {
        let make = || shared.page_state();
        let tracker = shared.config.tracker.then(|| http::Tracker {
            live: &shared.live,
            make: &make,
        });
        let what = smol::future::or(http::answer(&mut tcp, &request, tracker), kicked_why()).await;
        debug!("{addr}: {what}");
        return;
    }
    // The handshake reads the request head again, from the bytes already read.
    let ws = http::Replayed::new(read, tcp);
    let handshake = smol::future::or(
        async {
            with_timeout(
                deadline.saturating_duration_since(Instant::now()),
                async_tungstenite::accept_async_with_config(ws, Some(ws_config())),
            )
            .await
            .ok_or_else(|| "websocket handshake timed out".to_string())?
            .map_err(|e| format!("websocket handshake failed: {e}"))
        },
        async { Err(kicked_why().await) },
    );
    let ws = match handshake.await {
        Ok(ws) => ws,
        Err(why) => {
            info!("{addr}: {why}");
            return;
        }
    };
    let (mut sink, mut source) = ws.split();
    let queue = Arc::new(queue::Queue::default());
    let outbox = Outbox {
        tx: queue.clone(),
        queued: Arc::new(AtomicUsize::new(0)),
    };
    let mut conn = Conn {
        id: shared.next_player.fetch_add(1, Ordering::Relaxed),
        shared: shared.clone(),
        addr,
        conn: ticket.id,
        name: String::new(),
        room: None,
        rom_sent: false,
        outbox: outbox.clone(),
        kick,
        rtt: Arc::new(Rtt::default()),
    };
    let rtt = conn.rtt.clone();
    let flags = Arc::new(WriterFlags::default());
    // The writer is a task of its own, so that a wake of one (an update queued, a
    // frame received) polls only that one. Polled together in this task, every wake
    // of the writer also polled the reader, which cost a `recvfrom` that found nothing
    // and a look at its timers: at 64 busy players about half of the server's system
    // calls (docs/benchmarks.md, "Server fan-out: where the CPU went").
    let Some(ex) = ex.upgrade() else { return };
    let mut writer = ex.spawn({
        let pump = Pump {
            queue,
            queued: outbox.queued.clone(),
            ping_every: shared.config.ping_interval,
            rtt: rtt.clone(),
            flags: flags.clone(),
            to: conn.id,
        };
        async move {
            let why = pump.run(&mut sink).await;
            (sink, why)
        }
    });
    drop(ex);
    let reader = async {
        let mut reader = Reader::new(&mut source, &rtt, &shared.live);
        conn.read_loop(&mut reader).await
    };
    let kicked_end = async {
        kicked
            .recv()
            .await
            .unwrap_or_else(|_| End::quiet("server stopping"))
    };
    let first = smol::future::or(
        async { Either::Left(smol::future::or(reader, kicked_end).await) },
        async { Either::Right((&mut writer).await) },
    )
    .await;
    let (end, sink) = match first {
        Either::Left(end) => {
            flags.stopped.store(true, Ordering::Relaxed);
            outbox.tx.close();
            // A message being written is finished first, so that the client can
            // still read why the connection ends.
            let sink = with_timeout(CLOSE_TIMEOUT, &mut writer)
                .await
                .map(|(sink, _)| sink);
            (end, sink)
        }
        Either::Right((sink, reason)) => (
            End::kicked(reason.unwrap_or_else(|| "connection ended".into())),
            Some(sink),
        ),
    };
    if let Some(slot) = &conn.room {
        shared.leave(slot, conn.id);
        info!(
            "player {:?} (#{}, {addr}) left {}: {}",
            conn.name,
            conn.id,
            persist::room_label(&shared.games[slot.game].game.name, &slot.name),
            end.log
        );
    } else {
        info!("{addr}: connection closed: {}", end.log);
    }
    let sink = sink.filter(|_| !flags.mid_message.load(Ordering::Relaxed));
    if let (Some(reason), Some(mut sink)) = (&end.tell, sink) {
        let bytes = Bytes::from(protocol::encode(&ServerMsg::Error {
            reason: truncate(reason),
        }));
        let _ = with_timeout(CLOSE_TIMEOUT, async {
            sink.send(Message::Binary(bytes)).await?;
            sink.close(None).await?;
            // Read (and drop) what the client still sends until it closes too: a
            // socket closed with unread input is reset, and the reset can destroy the
            // reason before the client reads it.
            if end.linger {
                while let Some(Ok(_)) = source.next().await {}
            }
            Ok::<(), WsError>(())
        })
        .await;
    }
    drop(ticket);
}

/// What a connection's reader and writer tell each other.
#[derive(Default)]
struct WriterFlags {
    /// Set while a message is half written: cut there, the connection cannot carry a
    /// final message any more.
    mid_message: AtomicBool,
    /// Set (and the queue closed, to wake the writer) when the reader is done: the
    /// writer stops at the next message boundary.
    stopped: AtomicBool,
}

/// A connection's writer, besides its socket.
struct Pump {
    /// The connection's outgoing messages.
    queue: Arc<queue::Queue<Outgoing>>,
    /// Bytes still queued, counted against the connection's budget.
    queued: Arc<AtomicUsize>,
    /// Ping after this long without a write.
    ping_every: Duration,
    /// The round-trip clock the pings feed.
    rtt: Arc<Rtt>,
    flags: Arc<WriterFlags>,
    /// Who the connection belongs to (for the hop log).
    to: PlayerId,
}

impl Pump {
    /// Writes queued messages to the socket until it fails (returns why) or `stopped` is
    /// set (returns `None`, between two messages; the queue is closed to wake it). Pings
    /// the client when nothing was queued for `ping_every`, so a dead peer shows.
    async fn run(self, sink: &mut Sink) -> Option<String> {
        let Pump {
            queue,
            queued,
            ping_every,
            rtt,
            flags,
            to,
        } = self;
        let WriterFlags {
            mid_message,
            stopped,
        } = &*flags;
        // Ok(true): the queue ended; Ok(false): told to stop.
        let result: Result<bool, WsError> = async {
            // One timer for the connection's life, re-armed when it fires: a timer per
            // message would cost more than the message.
            let mut ping = smol::Timer::after(ping_every.min(FIRST_PING));
            // Messages taken off the queue and not written yet, in order.
            let mut backlog: VecDeque<Outgoing> = VecDeque::new();
            loop {
                if stopped.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                if backlog.is_empty() {
                    let next = smol::future::or(async { Some(queue.pop().await) }, async {
                        (&mut ping).await;
                        None
                    })
                    .await;
                    match next {
                        Some(Some(m)) => backlog.push_back(m),
                        Some(None) => return Ok(!stopped.load(Ordering::Relaxed)),
                        None => {
                            sink.send(Message::Ping(rtt.ping())).await?;
                            ping.set_after(ping_every);
                            continue;
                        }
                    }
                }
                // Whatever else is queued by now goes out in the same WebSocket message,
                // as much as fits (a room's updates come packed already: see
                // `Room::write`).
                while let Some(m) = queue.try_pop() {
                    backlog.push_back(m);
                }
                let n = packable(backlog.make_contiguous());
                let batch: Vec<Outgoing> = backlog.drain(..n).collect();
                let bytes = match &batch[..] {
                    [one] => one.bytes.clone(),
                    some => pack(some),
                };
                if crate::hops::enabled() {
                    crate::hops::log(format_args!("serve-write {to} {}", update_seqs(&bytes)));
                }
                send(sink, bytes, mid_message).await?;
                queued.fetch_sub(batch.iter().map(Outgoing::cost).sum(), Ordering::Relaxed);
            }
        }
        .await;
        match result {
            Ok(true) => Some("connection ended".into()),
            Ok(false) => None,
            Err(e) => Some(format!("cannot send: {e}")),
        }
    }
}

/// An upper bound on what a message of `len` bytes adds to a packed message: itself
/// and its length prefix (the packed message's own header fits in the first one's 9).
fn packed_size(len: usize) -> usize {
    len + 9
}

/// How many of `items` (at least one, when there are any) go into the first packed
/// message: at most [`MAX_MESSAGES_PER_FLUSH`] and [`MAX_PACKED_BYTES`], and a message
/// packed already goes alone.
fn packable(items: &[Outgoing]) -> usize {
    let Some(first) = items.first() else { return 0 };
    if first.packed {
        return 1;
    }
    let mut size = packed_size(first.bytes.len());
    let mut n = 1;
    while let Some(next) = items.get(n) {
        let more = packed_size(next.bytes.len());
        if next.packed || n == MAX_MESSAGES_PER_FLUSH || size + more > MAX_PACKED_BYTES {
            break;
        }
        size += more;
        n += 1;
    }
    n
}

/// `parts`, none packed itself, as one `ServerMsg::Several`.
fn pack(parts: &[Outgoing]) -> Bytes {
    let parts = parts.iter().map(|m| m.bytes.to_vec()).collect();
    Bytes::from(protocol::encode(&ServerMsg::Several(parts)))
}

/// Sends one message; a large one in frames of [`FRAME_BYTES`] (see there).
async fn send(sink: &mut Sink, bytes: Bytes, mid_message: &AtomicBool) -> Result<(), WsError> {
    if bytes.len() <= FRAME_BYTES {
        return sink.send(Message::Binary(bytes)).await;
    }
    mid_message.store(true, Ordering::Relaxed);
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + FRAME_BYTES).min(bytes.len());
        let opcode = if at == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(bytes.slice(at..end), opcode, end == bytes.len());
        sink.send(Message::Frame(frame)).await?;
        at = end;
    }
    mid_message.store(false, Ordering::Relaxed);
    Ok(())
}

/// Reads a connection's messages with a deadline: a fixed one until the client has
/// joined, then one that every frame received pushes back (`extend`).
struct Reader<'a> {
    source: &'a mut Source_,
    timer: smol::Timer,
    deadline: Instant,
    extend: Option<Duration>,
    /// What the client is told when the deadline passes.
    late: String,
    /// Pongs answer the writer's pings: their round trip goes to the tracker page.
    rtt: &'a Rtt,
    live: &'a http::Live,
}

impl<'a> Reader<'a> {
    fn new(source: &'a mut Source_, rtt: &'a Rtt, live: &'a http::Live) -> Reader<'a> {
        let now = Instant::now();
        Reader {
            source,
            timer: smol::Timer::at(now),
            deadline: now,
            extend: None,
            late: String::new(),
            rtt,
            live,
        }
    }

    /// From now on: give up after `limit` (pushed back by every frame when `extend`),
    /// telling the client `late`.
    fn limit(&mut self, limit: Duration, extend: bool, late: String) {
        self.deadline = Instant::now() + limit;
        self.timer.set_at(self.deadline);
        self.extend = extend.then_some(limit);
        self.late = late;
    }

    /// The next protocol message; pings and pongs only count as signs of life.
    async fn next(&mut self) -> Result<ClientMsg, End> {
        loop {
            let Reader {
                source,
                timer,
                deadline,
                ..
            } = self;
            let frame = smol::future::or(async { Some(source.next().await) }, async {
                loop {
                    (&mut *timer).await;
                    if Instant::now() >= *deadline {
                        return None;
                    }
                    timer.set_at(*deadline);
                }
            })
            .await;
            let Some(frame) = frame else {
                return Err(End::tell(self.late.clone()));
            };
            if let Some(e) = self.extend {
                self.deadline = Instant::now() + e;
            }
            if let Some(Ok(Message::Pong(payload))) = &frame {
                if self.rtt.pong(payload) {
                    self.live.changed();
                }
            }
            if let Some(msg) = message(frame)? {
                return Ok(msg);
            }
        }
    }
}

/// The protocol message in a frame read off the socket; `None` for pings and pongs.
fn message(frame: Option<Result<Message, WsError>>) -> Result<Option<ClientMsg>, End> {
    let msg = match frame {
        None => return Err(End::quiet("client disconnected")),
        Some(Ok(msg)) => msg,
        Some(Err(WsError::Capacity(e))) => {
            return Err(End::tell(format!(
                "message too large ({e}); the limit is {} bytes",
                protocol::MAX_CLIENT_MESSAGE_BYTES
            )))
        }
        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
            return Err(End::quiet("client disconnected without closing"))
        }
        Some(Err(WsError::Protocol(e))) => {
            return Err(End::tell(format!("websocket protocol error: {e}")))
        }
        Some(Err(e)) => return Err(End::quiet(format!("read error: {e}"))),
    };
    match msg {
        Message::Binary(bytes) => protocol::decode::<ClientMsg>(&bytes)
            .map(Some)
            .map_err(|e| End::tell(format!("bad message: {e}"))),
        Message::Text(_) => Err(End::tell(
            "text messages are not part of the msxsync protocol; send binary messages",
        )),
        Message::Close(_) => Err(End::quiet("client closed the connection")),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(None),
    }
}

/// Whether `ip` is this machine.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The `seq` of every update in an encoded message, for the hop log.
fn update_seqs(bytes: &[u8]) -> String {
    let mut seqs = Vec::new();
    let mut add = |m: &ServerMsg| {
        if let ServerMsg::Update { seq, .. } = m {
            seqs.push(seq.to_string());
        }
    };
    match protocol::decode::<ServerMsg>(bytes) {
        Ok(ServerMsg::Several(packed)) => packed
            .iter()
            .filter_map(|b| protocol::decode::<ServerMsg>(b).ok())
            .for_each(|m| add(&m)),
        Ok(m) => add(&m),
        Err(_) => {}
    }
    if seqs.is_empty() {
        "-".into()
    } else {
        seqs.join(",")
    }
}

impl Conn {
    async fn read_loop(&mut self, reader: &mut Reader<'_>) -> End {
        if let Err(end) = self.greet(reader).await {
            return end;
        }
        let join = self.shared.config.join_timeout;
        reader.limit(
            join,
            false,
            format!(
                "no join within {} seconds; connections that do not join a game are closed",
                join.as_secs_f64()
            ),
        );
        loop {
            let msg = match reader.next().await {
                Ok(msg) => msg,
                Err(end) => return end,
            };
            let joined_before = self.room.is_some();
            if let Err(end) = self.handle(msg).await {
                return end;
            }
            if !joined_before && self.room.is_some() {
                // A player now: never closed to make room, but expected to answer.
                lock(&self.shared.conns).joined(self.conn);
                let peer = self.shared.config.peer_timeout;
                reader.limit(
                    peer,
                    true,
                    format!("no answer for {} seconds", peer.as_secs_f64()),
                );
            }
        }
    }

    /// `Hello`, the password challenge when the server has a password, `Welcome`.
    async fn greet(&mut self, reader: &mut Reader<'_>) -> Result<(), End> {
        let hello = self.shared.config.hello_timeout;
        reader.limit(
            hello,
            false,
            format!("no hello message within {} seconds", hello.as_secs_f64()),
        );
        match reader.next().await? {
            ClientMsg::Hello { version, name } => {
                if version != PROTOCOL_VERSION {
                    return Err(End::tell(crate::version::server_refusal(version)));
                }
                if name.trim().is_empty() {
                    return Err(End::tell("the player name is empty; give a name"));
                }
                // Every other player's terminal shows this name.
                if let Err(why) =
                    crate::text::check_name("the player name", &name, protocol::MAX_NAME_BYTES)
                {
                    return Err(End::tell(format!("{why}; choose another name")));
                }
                self.name = name;
            }
            other => {
                return Err(End::tell(format!(
                    "the first message must be hello, not {}",
                    client_msg_name(&other)
                )))
            }
        }
        if let Some(password) = self.shared.config.password.clone() {
            self.check_password(&password, reader).await?;
        }
        info!(
            "{}: player {:?} (#{}) connected",
            self.addr, self.name, self.id
        );
        self.reply(&ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            software: crate::version::software(),
        })
    }

    /// The challenge and its answer. A wrong password is refused after a delay, and
    /// makes its address wait longer and longer before its next one is even checked.
    async fn check_password(
        &mut self,
        password: &Password,
        reader: &mut Reader<'_>,
    ) -> Result<(), End> {
        let nonce = auth::nonce().map_err(|e| End::tell(format!("{e:#}")))?;
        self.reply(&ServerMsg::Challenge { nonce })?;
        let hello = self.shared.config.hello_timeout;
        reader.limit(
            hello,
            false,
            format!(
                "no answer to the password challenge within {} seconds",
                hello.as_secs_f64()
            ),
        );
        let (theirs, proof) = match reader.next().await? {
            ClientMsg::Auth { nonce, proof } => (nonce, proof),
            other => {
                return Err(End::tell(format!(
                    "this server has a password: the answer to its challenge must be auth, \
                     not {}",
                    client_msg_name(&other)
                )))
            }
        };
        let source = Source::of(self.addr.ip());
        let locked = lock(&self.shared.failures).locked(source, Instant::now());
        if let Some(left) = locked {
            smol::Timer::after(WRONG_PASSWORD_DELAY).await;
            return Err(End::tell(format!(
                "too many wrong passwords from {source}; try again in {} seconds",
                left.as_secs().max(1)
            )));
        }
        if !password.verify(&nonce, &theirs, &proof) {
            let wait = lock(&self.shared.failures).failed(source, Instant::now());
            warn!(
                "{}: wrong password from {:?}; {source} may try again in {} s",
                self.addr,
                self.name,
                wait.as_secs()
            );
            smol::Timer::after(WRONG_PASSWORD_DELAY).await;
            return Err(End::tell("wrong password"));
        }
        Ok(())
    }

    async fn handle(&mut self, msg: ClientMsg) -> Result<(), End> {
        match msg {
            ClientMsg::Hello { .. } => Err(End::tell("hello was already sent")),
            ClientMsg::Auth { .. } => Err(End::tell("auth was not asked for")),
            ClientMsg::ListGames => self.send(self.shared.games_list()),
            ClientMsg::Join {
                game,
                room,
                session,
            } => self.join(&game, &room, session),
            ClientMsg::FetchRom => {
                let Some(g) = self.room.as_ref().map(|r| r.game) else {
                    return Err(End::tell("fetchrom before joining a game"));
                };
                if self.rom_sent {
                    return Err(End::tell(
                        "the rom was already sent on this connection; ask once",
                    ));
                }
                self.rom_sent = true;
                let slot = &self.shared.games[g];
                // Encoded once per game and shared; the server keeps it anyway, so it
                // counts in no budget but as one entry.
                let bytes = slot
                    .rom
                    .get_or_init(|| {
                        Bytes::from(protocol::encode(&ServerMsg::Rom {
                            data: slot.game.rom.as_ref().clone(),
                        }))
                    })
                    .clone();
                self.send(Outgoing {
                    bytes,
                    packed: false,
                    _held: None,
                })
            }
            ClientMsg::Changes { batch, changes } => {
                self.sequence("changes", |state, id| state.accept(id, batch, changes))
            }
            ClientMsg::Counts { batch, ops } => {
                self.sequence("counts", |state, id| state.count(id, batch, &ops))
            }
            ClientMsg::ListBackups { game, room } => self.list_backups(&game, &room).await,
            ClientMsg::Restore { game, room, backup } => self.restore(&game, &room, backup).await,
        }
    }

    /// Applies a player's batch to the joined room's state with `apply` and sends the
    /// sequenced result to every player of the room; `what` names the message for the
    /// error when the player has not joined a room.
    fn sequence(
        &mut self,
        what: &str,
        apply: impl FnOnce(&mut GameState, PlayerId) -> Result<ServerMsg, String>,
    ) -> Result<(), End> {
        let Some(slot) = self.room.clone() else {
            return Err(End::tell(format!("{what} before joining a game")));
        };
        let shared = &self.shared;
        let mut room = lock(&slot.room);
        // A connection replaced by its own reconnect, or dropped as too slow, may still
        // read a message before its task ends: it no longer speaks for the room.
        if !room.members.iter().any(|m| m.id == self.id) {
            return Err(End::quiet("no longer in its room"));
        }
        let update = apply(&mut room.state, self.id).map_err(End::tell)?;
        if let (true, ServerMsg::Update { seq, batch, .. }) = (crate::hops::enabled(), &update) {
            crate::hops::log(format_args!("serve-accept {} {batch} {seq}", self.id));
        }
        // Sequencing and queueing under one lock: everyone sees the same order.
        room.queue(shared, &slot, &update, &self.name, now_ms());
        shared.changed(&slot, &mut room);
        Ok(())
    }

    fn join(&mut self, game: &str, room_name: &str, session: u64) -> Result<(), End> {
        let shared = self.shared.clone();
        if let Some(slot) = &self.room {
            return Err(End::tell(format!(
                "already joined {}",
                persist::room_label(&shared.games[slot.game].game.name, &slot.name)
            )));
        }
        let g = shared.find_game(game)?;
        let game = &shared.games[g];
        let mut rooms = lock(&game.rooms);
        let slot = shared.room(g, &mut rooms, room_name)?;
        let mut room = lock(&slot.room);
        let joined = self.enter(&slot, &mut room, session);
        if joined.is_err() {
            shared.drop_if_unused(&mut rooms, &slot, &room);
        }
        drop(room);
        drop(rooms);
        joined?;
        info!(
            "player {:?} (#{}, {}) joined {}",
            self.name,
            self.id,
            self.addr,
            persist::room_label(&game.game.name, room_name)
        );
        self.room = Some(slot);
        Ok(())
    }

    /// Adds this connection's player to `slot` (whose lock the caller holds: `room`),
    /// joining as `session`. Names are unique within a room: a name taken is refused,
    /// unless it is this player's own session coming back before the server noticed
    /// that its old connection died, which is then replaced.
    fn enter(&mut self, slot: &Arc<RoomSlot>, room: &mut Room, session: u64) -> Result<(), End> {
        let shared = &self.shared;
        let game = &shared.games[slot.game].game;
        let label = persist::room_label(&game.name, &slot.name);
        let taken = room
            .state
            .players()
            .iter()
            .find(|p| same_name(&p.name, &self.name))
            .cloned();
        if let Some(old) = taken {
            let same_session = session != 0
                && old.name == self.name
                && room.state.session_of(old.id) == Some(session);
            if !same_session {
                return Err(End::tell(format!(
                    "the name {} is taken in {label}; pick another with --name",
                    self.name
                )));
            }
            if let Some(m) = room.members.iter().find(|m| m.id == old.id) {
                let _ = m.kick.try_send(End::kicked(
                    "replaced: this player connected again (the same session)",
                ));
            }
            room.leave(shared, old.id);
            info!(
                "player {:?} (#{}) in {label} replaced by its new connection #{} ({})",
                old.name, old.id, self.id, self.addr
            );
        }
        let max = shared.config.max_players;
        if room.state.players().len() >= max {
            return Err(End::tell(format!(
                "{label} is full: it has {max} players, the most this server allows"
            )));
        }
        let me = PlayerInfo {
            id: self.id,
            name: self.name.clone(),
        };
        let last_batch = room.state.add_player(me.clone(), session);
        let joined = ServerMsg::Joined(Box::new(Joined {
            player: self.id,
            game: game.info(Vec::new()),
            room: RoomInfo {
                name: slot.name.clone(),
                players: room.state.players().to_vec(),
            },
            regions: game.regions.clone(),
            state: room.state.state().to_vec(),
            seq: room.state.seq(),
            in_progress: room.state.in_progress(),
            last_batch,
            labels: game.labels.clone(),
        }));
        // Queued under the lock, so every update after `seq` follows it; the updates
        // before it, still waiting for the room's write, go to the others first (the
        // new player has them in `state`).
        room.write(shared);
        if let Err(why) = self
            .outbox
            .push(shared.budget.message(&joined), &shared.budget)
        {
            room.state.remove_player(self.id);
            return Err(End::tell(why));
        }
        room.members.push(Member {
            id: self.id,
            outbox: self.outbox.clone(),
            kick: self.kick.clone(),
            joined: now_ms(),
            rtt: self.rtt.clone(),
        });
        shared.roster.fetch_add(1, Ordering::Relaxed);
        shared.live.changed();
        let hello = shared.budget.message(&ServerMsg::PlayerJoined(me));
        room.broadcast(shared, hello, Some(self.id));
        Ok(())
    }

    /// Restoring (and listing what can be restored) needs the password, or, on a
    /// server without one, a client on the server's own machine.
    fn may_restore(&self) -> Result<std::path::PathBuf, End> {
        if self.shared.config.password.is_none() && !is_loopback(self.addr.ip()) {
            return Err(End::tell(
                "saved states can be restored only from the server's own machine when the \
                 server has no password; run msxsync restore there, or start the server \
                 with --password-file",
            ));
        }
        self.shared.config.state_dir.clone().ok_or_else(|| {
            End::tell("this server keeps no state, so it has no saved states to restore")
        })
    }

    /// The state file of room `room` of game `name` in the state folder `dir`, and how
    /// the room is named in messages.
    fn room_file(
        &self,
        dir: &Path,
        name: &str,
        room: &str,
    ) -> Result<(usize, PathBuf, String), End> {
        let g = self.shared.find_game(name)?;
        check_room_name(room).map_err(End::tell)?;
        Ok((
            g,
            persist::room_file(dir, name, room),
            persist::room_label(name, room),
        ))
    }

    async fn list_backups(&mut self, name: &str, room: &str) -> Result<(), End> {
        let dir = self.may_restore()?;
        let (g, file, what) = self.room_file(&dir, name, room)?;
        let game = self.shared.games[g].game.clone();
        let backups = smol::unblock(move || -> Result<Vec<BackupInfo>> {
            let mut out = Vec::new();
            for id in persist::backups::list(&file)? {
                // Backups of another layout or damaged ones cannot be restored.
                if let Ok(saved) = persist::backups::read(&file, &game, &what, id) {
                    out.push(BackupInfo { id, seq: saved.seq });
                }
                if out.len() == protocol::MAX_BACKUPS {
                    break;
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| End::tell(format!("{e:#}")))?;
        self.reply(&ServerMsg::Backups {
            game: name.to_string(),
            room: room.to_string(),
            backups,
        })
    }

    /// Puts saved state `id` of a room back and sends it to every player of the room
    /// as an update that sets every shared bit, which they take like any other. A room
    /// that is not there (its file was unusable) is made again, within the caps.
    async fn restore(&mut self, name: &str, room_name: &str, id: u64) -> Result<(), End> {
        let dir = self.may_restore()?;
        let (g, file, what) = self.room_file(&dir, name, room_name)?;
        let shared = self.shared.clone();
        let game = shared.games[g].game.clone();
        let label = what.clone();
        let saved = smol::unblock(move || persist::backups::read(&file, &game, &label, id))
            .await
            .map_err(|e| End::tell(format!("{e:#}")))?;
        let seq = {
            let mut rooms = lock(&shared.games[g].rooms);
            let slot = shared.room(g, &mut rooms, room_name)?;
            let mut room = lock(&slot.room);
            let messages = match room.state.replace_all(SERVER_PLAYER, &saved.bytes) {
                Ok(messages) => messages,
                Err(why) => {
                    shared.drop_if_unused(&mut rooms, &slot, &room);
                    return Err(End::tell(why));
                }
            };
            let now = now_ms();
            for msg in &messages {
                room.queue(&shared, &slot, msg, "the host", now);
            }
            shared.changed(&slot, &mut room);
            room.state.seq()
        };
        warn!(
            "{what} restored to its saved state {id} (update {}) by {:?} ({}); players get \
             it as update {seq}",
            saved.seq, self.name, self.addr
        );
        self.reply(&ServerMsg::Restored {
            game: name.to_string(),
            room: room_name.to_string(),
            backup: id,
            seq,
        })
    }

    /// Queues a reply to this client only.
    fn reply(&self, msg: &ServerMsg) -> Result<(), End> {
        self.send(self.shared.budget.message(msg))
    }

    fn send(&self, out: Outgoing) -> Result<(), End> {
        self.outbox
            .push(out, &self.shared.budget)
            .map_err(End::tell)
    }
}

fn client_msg_name(msg: &ClientMsg) -> &'static str {
    match msg {
        ClientMsg::Hello { .. } => "hello",
        ClientMsg::ListGames => "listgames",
        ClientMsg::Join { .. } => "join",
        ClientMsg::FetchRom => "fetchrom",
        ClientMsg::Changes { .. } => "changes",
        ClientMsg::Counts { .. } => "counts",
        ClientMsg::Auth { .. } => "auth",
        ClientMsg::ListBackups { .. } => "listbackups",
        ClientMsg::Restore { .. } => "restore",
    }
}

/// Cuts a reason to the protocol's text limit, on a character boundary.
fn truncate(text: &str) -> String {
    if text.len() <= protocol::MAX_TEXT_BYTES {
        return text.to_string();
    }
    let mut end = protocol::MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Runs `fut` for at most `limit`; `None` when the time ran out.
async fn with_timeout<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_stops_at_the_count_the_bytes_and_a_message_packed_already() {
        let msg = |len: usize, packed: bool| Outgoing {
            bytes: Bytes::from(vec![0u8; len]),
            packed,
            _held: None,
        };
        assert_eq!(packable(&[]), 0);
        let small: Vec<Outgoing> = (0..300).map(|_| msg(10, false)).collect();
        assert_eq!(packable(&small), MAX_MESSAGES_PER_FLUSH);
        let big: Vec<Outgoing> = (0..8).map(|_| msg(MAX_PACKED_BYTES / 3, false)).collect();
        assert_eq!(packable(&big), 2, "a third would go over MAX_PACKED_BYTES");
        let mixed = [
            msg(10, false),
            msg(10, false),
            msg(10, true),
            msg(10, false),
        ];
        assert_eq!(packable(&mixed), 2);
        assert_eq!(packable(&mixed[2..]), 1, "a packed message goes alone");
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        let long = "é".repeat(protocol::MAX_TEXT_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() <= protocol::MAX_TEXT_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn duplicate_game_names_are_refused() {
        let g = Game::new("a", "A", vec![], vec![1]);
        let err = start("127.0.0.1:0".parse().unwrap(), vec![g.clone(), g])
            .err()
            .unwrap();
        assert!(err.to_string().contains("two games are named"), "{err}");
    }
}
