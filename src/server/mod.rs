//! `msxsync serve`: holds each game's authoritative shared state and relays changes.
//!
//! The pure per-game logic (validation, bit-wise merge, sequencing) is in [`game`]; this
//! file is the I/O around it: a WebSocket listener on a smol executor, one task per
//! connection, and one mutex per game under which changes are sequenced *and* queued to
//! every player, so that all players see the same order. Each player has a bounded
//! outgoing queue; a player that cannot keep up is disconnected instead of stalling the
//! others. Updates are encoded once and the bytes are shared by all queues.
//!
//! With a state folder, each game's state is loaded at start and kept on disk by a saver
//! thread ([`persist`]): a change marks its game dirty under the game's lock, and the
//! saver copies the bytes under that lock and writes the file with no lock held.

pub mod game;
pub mod persist;

use crate::catalog::{self, Game};
use crate::protocol::{
    self, ClientMsg, Joined, PlayerId, PlayerInfo, ServerMsg, DEFAULT_PORT, PROTOCOL_VERSION,
};
use anyhow::{bail, Context, Result};
use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender};
use futures_util::StreamExt;
use game::GameState;
use smol::net::{TcpListener, TcpStream};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Messages that may wait in one player's outgoing queue. A player whose queue is full
/// when an update must be queued is disconnected ("too slow"), so that one slow or dead
/// player never holds back the others. At 60 updates per second from each of 64
/// players this is about a second of traffic.
pub const PLAYER_QUEUE_LIMIT: usize = 4096;

/// How long a new connection may take to finish the WebSocket handshake and send `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server keeps trying to deliver a final `Error` before closing anyway.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// At most this many queued messages are packed into one `ServerMsg::Several`, so that
/// a busy queue is sent in few system calls but still goes out steadily.
const MAX_MESSAGES_PER_FLUSH: usize = 256;

/// Shortest time between two writes to one player's socket (see `pump`): at most this
/// much latency, in exchange for one write per interval instead of one per update.
const WRITE_INTERVAL: Duration = Duration::from_millis(3);

/// Arguments of `msxsync serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Folder holding games (NAME.regions files and their ROMs); repeat the option for
    /// several folders. Without it the default game folders are searched.
    #[arg(long = "games", value_name = "DIR")]
    pub games: Vec<PathBuf>,
    /// Address to listen on (0.0.0.0 for every IPv4 interface, :: for IPv6).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// TCP port to listen on; 0 picks a free port (the address is printed).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Folder where each game's shared state is kept (a GAME.state file per game), saved
    /// within a second of a change and on Ctrl-C, and loaded at start so a restarted
    /// server continues where it stopped. Default: $XDG_STATE_HOME/msxsync, or
    /// ~/.local/state/msxsync.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Start every game from zeros, ignoring its saved state (which is then overwritten).
    #[arg(long)]
    pub fresh: bool,
}

/// Runs `msxsync serve`: loads the games and their saved state, prints them and the
/// address, and serves until Ctrl-C or SIGTERM, then saves every game's state.
pub fn run(args: ServeArgs) -> Result<()> {
    let state_dir = match args.state_dir {
        Some(dir) => dir,
        None => persist::default_state_dir()?,
    };
    let (catalog, warnings, dirs) = if args.games.is_empty() {
        let (c, w) = catalog::Catalog::load_default();
        (c, w, catalog::default_game_dirs())
    } else {
        let (c, w) = catalog::Catalog::load(&args.games);
        (c, w, args.games.clone())
    };
    for w in &warnings {
        eprintln!("msxsync: warning: {w}");
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
    println!("serving {} game(s):", games.len());
    for g in &games {
        println!(
            "  {}: {} (rom {} bytes, {} shared bytes in {} region(s))",
            g.name,
            g.title,
            g.rom.len(),
            g.shared_bytes(),
            g.regions.len()
        );
    }
    // Installed before the server starts, so a stop request is never lost; the server
    // then stops accepting changes before the final save, which therefore has them all.
    let (quit_tx, quit_rx) = std::sync::mpsc::channel::<()>();
    ctrlc::set_handler(move || {
        let _ = quit_tx.send(());
    })
    .context("could not install the ctrl-c handler")?;
    let handle = start_with(
        SocketAddr::new(args.bind, args.port),
        games,
        ServerConfig {
            log: true,
            state_dir: Some(state_dir),
            fresh: args.fresh,
            ..ServerConfig::default()
        },
    )?;
    for (name, origin) in handle.state_origins() {
        if let Some(warning) = origin.warning(name) {
            eprintln!("msxsync: warning: {warning}");
        }
        println!("  {name}: {origin}");
    }
    println!("listening on {}", handle.addr());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = quit_rx.recv();
    println!("stopping: closing connections and saving the state");
    let report = handle.stop_and_save();
    if let Some(report) = report {
        if !report.errors.is_empty() {
            bail!(
                "could not save the state of {} game(s): {}",
                report.errors.len(),
                report.errors.join("; ")
            );
        }
        println!("stopped: {report}");
    }
    Ok(())
}

/// Tunables of a running server. `Default` gives the production values.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Messages that may wait for one player before it is disconnected as too slow.
    pub queue_limit: usize,
    /// Whether to log connections, joins and leaves on stderr.
    pub log: bool,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            queue_limit: PLAYER_QUEUE_LIMIT,
            log: false,
            threads: 1,
            state_dir: None,
            fresh: false,
            save_interval: persist::SAVE_INTERVAL,
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
    origins: Origins,
    /// Held while the server runs; released after the final save.
    _dir_lock: Option<persist::DirLock>,
}

impl ServerHandle {
    /// The address the server listens on, with the real port when 0 was asked for.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where each game's state came from at start, by game name (sorted).
    pub fn state_origins(&self) -> &[(String, persist::Origin)] {
        &self.origins
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
    let dir_lock = config
        .state_dir
        .as_deref()
        .map(persist::prepare_dir)
        .transpose()?;
    let (rooms, origins) = initial_rooms(&games, &config)?;
    let std_listener =
        std::net::TcpListener::bind(bind).with_context(|| format!("cannot listen on {bind}"))?;
    let addr = std_listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {bind}"))?;
    let listener = TcpListener::try_from(std_listener)
        .with_context(|| format!("cannot use the socket bound to {addr}"))?;

    let threads = config.threads.max(1);
    let (notifier, inbox) = persist::channel();
    let saver_games = config.state_dir.as_ref().map(|_| games.clone());
    let shared = Arc::new(Shared {
        games: games
            .into_iter()
            .zip(rooms)
            .map(|(game, room)| GameSlot {
                room: Mutex::new(room),
                game,
            })
            .collect(),
        saver: saver_games.as_ref().map(|_| notifier),
        config,
        next_player: AtomicU32::new(1),
    });
    let saver = match (&shared.config.state_dir, saver_games) {
        (Some(dir), Some(games)) => {
            let from = shared.clone();
            let saver = persist::Saver::start(
                inbox,
                dir.clone(),
                games,
                shared.config.save_interval,
                Box::new(move |g| from.snapshot(g)),
            )?;
            // Games that start dirty (--fresh) are written right away.
            for (g, slot) in shared.games.iter().enumerate() {
                if lock(&slot.room).dirty {
                    saver.notifier().dirty(g);
                }
            }
            Some(saver)
        }
        _ => None,
    };
    let ex: Arc<smol::Executor<'static>> = Arc::new(smol::Executor::new());
    // The accept task holds the executor weakly: a strong reference from one of its own
    // tasks would keep it (and every connection) alive after the threads stop.
    ex.spawn(accept_loop(listener, shared, Arc::downgrade(&ex)))
        .detach();
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
        origins,
        _dir_lock: dir_lock,
    })
}

/// Where each game's state came from at start, by game name.
type Origins = Vec<(String, persist::Origin)>;

/// Each game's room at start, from its saved state when there is one, and where that
/// state came from.
fn initial_rooms(games: &[Game], config: &ServerConfig) -> Result<(Vec<Room>, Origins)> {
    let mut rooms = Vec::with_capacity(games.len());
    let mut origins = Vec::with_capacity(games.len());
    for game in games {
        let fresh = GameState::new(&game.regions);
        let (state, dirty, origin) = match &config.state_dir {
            None => (fresh, false, persist::Origin::NotKept),
            Some(dir) if config.fresh => {
                let path = persist::state_file(dir, &game.name);
                (fresh, true, persist::Origin::Ignored { path })
            }
            Some(dir) => match persist::load(dir, game)? {
                (Some(saved), origin) => {
                    // `load` checked the layout, so the sizes agree.
                    let state = GameState::restore(&game.regions, saved.seq, &saved.bytes)
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("cannot restore game {}", game.name))?;
                    (state, false, origin)
                }
                (None, origin) => (fresh, false, origin),
            },
        };
        rooms.push(Room {
            state,
            members: Vec::new(),
            dirty,
        });
        origins.push((game.name.clone(), origin));
    }
    Ok((rooms, origins))
}

/// Everything the connection tasks share.
struct Shared {
    /// Sorted by name.
    games: Vec<GameSlot>,
    config: ServerConfig,
    next_player: AtomicU32,
    /// Tells the saver a game turned dirty; `None` when no state is kept.
    saver: Option<persist::Notifier>,
}

struct GameSlot {
    game: Game,
    room: Mutex<Room>,
}

/// The mutable part of a game: its state and the queues of its players.
struct Room {
    state: GameState,
    members: Vec<Member>,
    /// Changed since the saver last took a copy.
    dirty: bool,
}

struct Member {
    id: PlayerId,
    queue: async_channel::Sender<Bytes>,
    kick: async_channel::Sender<String>,
}

impl Shared {
    fn log(&self, text: std::fmt::Arguments) {
        if self.config.log {
            eprintln!("{text}");
        }
    }

    /// A copy of game `g`'s state for the saver, taken under the lock (the file is
    /// written after it is released); `None` when nothing changed since the last copy.
    fn snapshot(&self, g: usize) -> Option<persist::Snapshot> {
        let mut room = lock(&self.games.get(g)?.room);
        if !room.dirty {
            return None;
        }
        room.dirty = false;
        Some((room.state.seq(), room.state.bytes()))
    }

    fn find_game(&self, name: &str) -> Option<usize> {
        self.games
            .binary_search_by(|g| g.game.name.as_str().cmp(name))
            .ok()
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

    fn games_message(&self) -> ServerMsg {
        ServerMsg::Games {
            games: self
                .games
                .iter()
                .map(|g| g.game.info(lock(&g.room).state.players().to_vec()))
                .collect(),
        }
    }
}

/// Locks a room. A panic while holding the lock cannot leave a room half-updated in a
/// way that matters more than stopping the whole server would, so poisoning is ignored.
fn lock(room: &Mutex<Room>) -> MutexGuard<'_, Room> {
    room.lock().unwrap_or_else(|e| e.into_inner())
}

impl Room {
    /// Queues `bytes` for every member except `except`. Members whose queue is full are
    /// told to go (kicked), removed, and announced as gone to the rest.
    fn broadcast(&mut self, bytes: Bytes, except: Option<PlayerId>) {
        let mut work = vec![(bytes, except)];
        while let Some((bytes, except)) = work.pop() {
            let mut i = 0;
            while i < self.members.len() {
                let m = &self.members[i];
                if Some(m.id) == except {
                    i += 1;
                    continue;
                }
                match m.queue.try_send(bytes.clone()) {
                    Ok(()) | Err(async_channel::TrySendError::Closed(_)) => i += 1,
                    Err(async_channel::TrySendError::Full(_)) => {
                        let reason = format!("too slow: {} updates waiting", m.queue.len());
                        let _ = m.kick.try_send(reason);
                        let gone = self.members.remove(i);
                        if let Some(info) = self.state.remove_player(gone.id) {
                            work.push((encode(&ServerMsg::PlayerLeft(info)), None));
                        }
                    }
                }
            }
        }
    }

    /// Removes a player and tells the others; does nothing if it is already gone.
    fn leave(&mut self, id: PlayerId) {
        self.members.retain(|m| m.id != id);
        if let Some(info) = self.state.remove_player(id) {
            self.broadcast(encode(&ServerMsg::PlayerLeft(info)), None);
        }
    }
}

fn encode(msg: &ServerMsg) -> Bytes {
    Bytes::from(protocol::encode(msg))
}

/// The WebSocket settings: incoming messages are limited to the protocol's limit for
/// client messages, so an oversized message is refused before it is buffered whole.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(protocol::MAX_CLIENT_MESSAGE_BYTES))
        .max_frame_size(Some(protocol::MAX_CLIENT_MESSAGE_BYTES))
        .read_buffer_size(16 * 1024)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    ex: std::sync::Weak<smol::Executor<'static>>,
) {
    loop {
        match listener.accept().await {
            Ok((tcp, addr)) => {
                let _ = tcp.set_nodelay(true);
                let Some(ex) = ex.upgrade() else { return };
                ex.spawn(serve_connection(shared.clone(), tcp, addr))
                    .detach();
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                shared.log(format_args!("cannot accept a connection: {e}"));
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Why a connection ended: what to log, and what to tell the client (if anything).
struct End {
    log: String,
    tell: Option<String>,
}

impl End {
    fn quiet(log: impl Into<String>) -> End {
        End {
            log: log.into(),
            tell: None,
        }
    }

    fn tell(reason: impl Into<String>) -> End {
        let reason = reason.into();
        End {
            log: reason.clone(),
            tell: Some(reason),
        }
    }
}

type Sink = WebSocketSender<TcpStream>;
type Source = WebSocketReceiver<TcpStream>;

/// One client connection, as seen by its reader.
struct Conn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    id: PlayerId,
    name: String,
    /// Index of the joined game in `shared.games`.
    game: Option<usize>,
    queue: async_channel::Sender<Bytes>,
    kick: async_channel::Sender<String>,
}

async fn serve_connection(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr) {
    let ws = match with_timeout(
        HELLO_TIMEOUT,
        async_tungstenite::accept_async_with_config(tcp, Some(ws_config())),
    )
    .await
    {
        Some(Ok(ws)) => ws,
        Some(Err(e)) => {
            shared.log(format_args!("{addr}: websocket handshake failed: {e}"));
            return;
        }
        None => {
            shared.log(format_args!("{addr}: websocket handshake timed out"));
            return;
        }
    };
    let (mut sink, mut source) = ws.split();
    let (queue, queue_rx) = async_channel::bounded(shared.config.queue_limit.max(1));
    let (kick, kick_rx) = async_channel::bounded(1);
    let mut conn = Conn {
        id: shared.next_player.fetch_add(1, Ordering::Relaxed),
        shared: shared.clone(),
        addr,
        name: String::new(),
        game: None,
        queue,
        kick,
    };
    let me = conn.id;
    let end = smol::future::or(conn.read_loop(&mut source), async {
        let reason = smol::future::or(
            async { kick_rx.recv().await.unwrap_or_default() },
            pump(&mut sink, &queue_rx, me),
        )
        .await;
        End::tell(reason)
    })
    .await;
    if let Some(g) = conn.game {
        let slot = &shared.games[g];
        lock(&slot.room).leave(conn.id);
        shared.log(format_args!(
            "player {:?} (#{}, {addr}) left game {}: {}",
            conn.name, conn.id, slot.game.name, end.log
        ));
    } else {
        shared.log(format_args!("{addr}: connection closed: {}", end.log));
    }
    if let Some(reason) = end.tell {
        let bytes = encode(&ServerMsg::Error {
            reason: truncate(&reason),
        });
        let _ = with_timeout(CLOSE_TIMEOUT, async {
            sink.send(Message::Binary(bytes)).await?;
            sink.close(None).await
        })
        .await;
    }
}

/// Writes queued messages to the socket until it fails; returns why.
async fn pump(sink: &mut Sink, queue: &async_channel::Receiver<Bytes>, to: PlayerId) -> String {
    let result: Result<(), WsError> = async {
        let mut last_write: Option<std::time::Instant> = None;
        while let Ok(first) = queue.recv().await {
            // A player written to less than WRITE_INTERVAL ago waits out the rest of
            // it, and whatever else is queued by then goes out in the same WebSocket
            // message: a busy game costs one message (and one system call) per
            // interval, not one per update per player. A quiet game never waits.
            if let Some(at) = last_write {
                let due = at + WRITE_INTERVAL;
                if std::time::Instant::now() < due {
                    smol::Timer::at(due).await;
                }
            }
            let mut more = Vec::new();
            while more.len() + 1 < MAX_MESSAGES_PER_FLUSH {
                let Ok(m) = queue.try_recv() else { break };
                more.push(m);
            }
            let bytes = if more.is_empty() {
                first
            } else {
                let mut packed = Vec::with_capacity(more.len() + 1);
                packed.push(first.to_vec());
                packed.extend(more.iter().map(|b| b.to_vec()));
                encode(&ServerMsg::Several(packed))
            };
            if crate::hops::enabled() {
                crate::hops::log(format_args!("serve-write {to} {}", update_seqs(&bytes)));
            }
            sink.send(Message::Binary(bytes)).await?;
            last_write = Some(std::time::Instant::now());
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => "connection ended".into(),
        Err(e) => format!("cannot send: {e}"),
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
    async fn read_loop(&mut self, source: &mut Source) -> End {
        // The first message must be Hello, within the time limit.
        let first = match with_timeout(HELLO_TIMEOUT, next_message(source)).await {
            None => return End::tell("no hello message within 10 seconds"),
            Some(Err(end)) => return end,
            Some(Ok(msg)) => msg,
        };
        match first {
            ClientMsg::Hello { version, name } => {
                if version != PROTOCOL_VERSION {
                    return End::tell(format!(
                        "protocol version mismatch: this server speaks version \
                         {PROTOCOL_VERSION}, the client speaks version {version}; use the \
                         same msxsync release on all machines"
                    ));
                }
                if name.trim().is_empty() {
                    return End::tell("the player name is empty; give a name");
                }
                self.name = name;
            }
            other => {
                return End::tell(format!(
                    "the first message must be hello, not {}",
                    client_msg_name(&other)
                ))
            }
        }
        self.shared.log(format_args!(
            "{}: player {:?} (#{}) connected",
            self.addr, self.name, self.id
        ));
        if let Err(end) = self.reply(&ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            software: format!("msxsync {}", env!("CARGO_PKG_VERSION")),
        }) {
            return end;
        }
        loop {
            let msg = match next_message(source).await {
                Ok(msg) => msg,
                Err(end) => return end,
            };
            if let Err(end) = self.handle(msg) {
                return end;
            }
        }
    }

    fn handle(&mut self, msg: ClientMsg) -> Result<(), End> {
        match msg {
            ClientMsg::Hello { .. } => Err(End::tell("hello was already sent")),
            ClientMsg::ListGames => self.reply(&self.shared.games_message()),
            ClientMsg::Join { game, session } => self.join(&game, session),
            ClientMsg::FetchRom => {
                let Some(g) = self.game else {
                    return Err(End::tell("fetchrom before joining a game"));
                };
                let data = self.shared.games[g].game.rom.as_ref().clone();
                self.reply(&ServerMsg::Rom { data })
            }
            ClientMsg::Changes { batch, changes } => {
                let Some(g) = self.game else {
                    return Err(End::tell("changes before joining a game"));
                };
                let mut room = lock(&self.shared.games[g].room);
                let update = room
                    .state
                    .accept(self.id, batch, changes)
                    .map_err(End::tell)?;
                if let (true, ServerMsg::Update { seq, .. }) = (crate::hops::enabled(), &update) {
                    crate::hops::log(format_args!("serve-accept {} {batch} {seq}", self.id));
                }
                // Sequencing and queueing under one lock: everyone sees the same order.
                room.broadcast(encode(&update), None);
                // Only the clean-to-dirty step wakes the saver: one message per save.
                if !room.dirty {
                    room.dirty = true;
                    if let Some(saver) = &self.shared.saver {
                        saver.dirty(g);
                    }
                }
                Ok(())
            }
        }
    }

    fn join(&mut self, name: &str, session: u64) -> Result<(), End> {
        if let Some(g) = self.game {
            return Err(End::tell(format!(
                "already joined game {}",
                self.shared.games[g].game.name
            )));
        }
        let Some(g) = self.shared.find_game(name) else {
            return Err(End::tell(format!(
                "unknown game {:?}; this server has: {}",
                name,
                self.shared.game_names()
            )));
        };
        let slot = &self.shared.games[g];
        let me = PlayerInfo {
            id: self.id,
            name: self.name.clone(),
        };
        {
            let mut room = lock(&slot.room);
            let last_batch = room.state.add_player(me.clone(), session);
            let joined = ServerMsg::Joined(Box::new(Joined {
                player: self.id,
                game: slot.game.info(room.state.players().to_vec()),
                regions: slot.game.regions.clone(),
                state: room.state.state().to_vec(),
                seq: room.state.seq(),
                in_progress: room.state.in_progress(),
                last_batch,
            }));
            // Queued under the lock, so every update after `seq` follows it.
            if self.queue.try_send(encode(&joined)).is_err() {
                room.state.remove_player(self.id);
                return Err(End::tell("too slow: outgoing queue full on join"));
            }
            room.members.push(Member {
                id: self.id,
                queue: self.queue.clone(),
                kick: self.kick.clone(),
            });
            room.broadcast(encode(&ServerMsg::PlayerJoined(me)), Some(self.id));
        }
        self.game = Some(g);
        self.shared.log(format_args!(
            "player {:?} (#{}, {}) joined game {}",
            self.name, self.id, self.addr, slot.game.name
        ));
        Ok(())
    }

    /// Queues a reply to this client only.
    fn reply(&self, msg: &ServerMsg) -> Result<(), End> {
        self.queue
            .try_send(encode(msg))
            .map_err(|_| End::tell(format!("too slow: {} messages waiting", self.queue.len())))
    }
}

/// Reads the next protocol message, skipping pings and pongs.
async fn next_message(source: &mut Source) -> Result<ClientMsg, End> {
    loop {
        let msg = match source.next().await {
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
            Message::Binary(bytes) => {
                return protocol::decode::<ClientMsg>(&bytes)
                    .map_err(|e| End::tell(format!("bad message: {e}")))
            }
            Message::Text(_) => {
                return Err(End::tell(
                    "text messages are not part of the msxsync protocol; send binary messages",
                ))
            }
            Message::Close(_) => return Err(End::quiet("client closed the connection")),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        }
    }
}

fn client_msg_name(msg: &ClientMsg) -> &'static str {
    match msg {
        ClientMsg::Hello { .. } => "hello",
        ClientMsg::ListGames => "listgames",
        ClientMsg::Join { .. } => "join",
        ClientMsg::FetchRom => "fetchrom",
        ClientMsg::Changes { .. } => "changes",
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
