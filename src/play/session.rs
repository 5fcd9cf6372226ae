//! The sync loop of one player: reacts to the server, to openMSX and to a clock.
//!
//! It owns the decisions of docs/architecture.md: when to start syncing (game start,
//! sync gate, join key), what to do after a loadstate or a restart of the game, how to
//! get back after the connection dropped, and how to repair bytes that changed behind
//! the hooks' back.

use super::notices::{Author, Notices};
use super::state::{Layout, SyncState};
use super::Stats;
use crate::client::{self, Client, ClientReceiver, ClientSender};
use crate::counter::{CounterOp, CounterWrite, Flushed};
use crate::delta::Change;
use crate::openmsx::hooks::JOIN_KEY;
use crate::openmsx::{Event, HookEvent, Hooks, Output};
use crate::protocol::{
    Joined, OnRestart, PlayerId, PlayerInfo, ServerMsg, MAX_CHANGES_PER_MESSAGE, MAX_PLAYERS,
};
use crate::replica::{catch_up, Offline, Payload};
use crate::sync_when::{parse_sync_when, SyncWhen};
use crate::text::printable;
use anyhow::{anyhow, Context, Result};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, trace, warn};

/// How often the shared regions are compared with the server's state.
pub const CHECK_PERIOD: Duration = Duration::from_secs(2);
/// How often waiting notices are looked at: well under their gathering time
/// (`notices::GATHER`), so a line shows soon after it is due.
const NOTICE_PERIOD: Duration = Duration::from_millis(150);
/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Inputs waiting for the loop; a full queue slows the server reader down instead of
/// growing without bound.
const INPUT_QUEUE: usize = 4096;
/// Most memory ([`ServerMsg::memory_bytes`]) that server messages queued for the loop,
/// and those it is writing into openMSX, may take: one message can be 8 MiB, so
/// [`INPUT_QUEUE`] alone would allow gigabytes. The reader waits when it is reached.
const INPUT_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Why a player's session ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The player closed openMSX.
    OpenMsxClosed,
    /// Ctrl-C or a stop request.
    Interrupted,
}

/// What the sync loop reacts to.
enum Input {
    /// A message (or the end) of server connection number `.0`, which took `.2` bytes
    /// of the [`Budget`].
    Server(u64, Result<ServerMsg>, usize),
    Emulator(Event),
    Reconnected(Box<Result<(Client, Joined)>>),
    Tick,
    /// openMSX answered the desync check's question.
    Checked(Box<Result<StateCheck>>),
    /// Time to show the notices that are due.
    NoticeTick,
    Stop,
}

/// The desync check's answer and what RAM should have held when openMSX read it.
struct StateCheck {
    active: bool,
    ram: Vec<Vec<u8>>,
    expected: Vec<Vec<u8>>,
}

/// Who this player is, for reconnecting.
pub struct Identity {
    pub server: String,
    pub name: String,
    pub game: String,
    /// The room of the game joined (the game's name for its default room).
    pub room: String,
    /// The game as joined first: a reconnect to a game laid out otherwise stops
    /// syncing.
    pub layout: Layout,
    /// Sent with every join of this run, so that after a reconnect the server can say
    /// which of our batches it already has (`Joined::last_batch`).
    pub session: u64,
    /// The server's password, if it has one.
    pub password: Option<crate::auth::Password>,
}

/// What happened to this player's game since it last synced. When the sync gate opens,
/// it decides whether the player takes the group's state or shares its own
/// (docs/architecture.md, "Restarts"): only what msxsync saw happen counts, never what
/// the bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Since {
    /// It never synced in this run: a player joining.
    Joined,
    /// The machine was reset or powered off and on.
    Reset,
    /// A savestate was loaded, the game was rewound, or the machine switched.
    Loaded,
    /// It synced, then its gate closed (the title, game over) with nothing of the
    /// above since: when the gate opens again, the game restarted, a game event.
    LeftGame,
}

/// A shared byte that differs from what it should hold, found by the desync check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mismatch {
    region: usize,
    offset: usize,
    /// What RAM holds.
    have: u8,
    /// What it should hold: the server's state with own batches in flight on top.
    want: u8,
}

/// The sync loop's state.
pub struct Session {
    hooks: Hooks,
    sync: SyncState,
    stats: Arc<Stats>,
    who: Identity,
    players: Vec<PlayerInfo>,
    /// The game's `sync-when:` condition, if it has one.
    gate: Option<SyncWhen>,
    /// The game's `on-restart:` rule.
    on_restart: OnRestart,
    /// What happened since this player last synced (meaningless while `active`).
    since: Since,
    /// Holding until the player presses the join key (a game in progress without
    /// `sync-when:`).
    waiting_for_key: bool,
    /// Whether the hooks sync (as far as this loop knows; the hooks hold by
    /// themselves when the gate closes or the game restarts).
    active: bool,
    /// The connection, while there is one.
    sender: Option<ClientSender>,
    /// Changes the game made while offline, sent after reconnecting.
    offline: Offline,
    /// Bytes that differed from the expected state at the last check.
    suspects: Vec<Mismatch>,
    /// Whether the cartridge's INIT breakpoint works for this game: then every start
    /// of the game is reported at INIT; otherwise a boot has to stand in for it.
    init_seen: bool,
    /// The whole state or a repair was written into RAM since the last batch was
    /// sent: a flush just before it may have been overwritten, so the next batch's
    /// echo is written back (see `send_local`).
    wrote_directly: bool,
    /// Applies sent to openMSX whose replies were not looked at yet.
    applying: std::collections::VecDeque<crate::openmsx::Reply>,
    /// The game changed on the server (see [`Layout`]): this player no longer syncs
    /// and does not reconnect; openMSX keeps running.
    retired: bool,
    /// What to tell the player on the emulator screen; `None` with `--quiet`.
    notices: Option<Notices>,
}

/// Memory that server messages on their way through the loop may take, shared by the
/// readers (which take before queueing a message) and the loop (which gives back once
/// it handled it). One message is always let through, however big, so nothing waits
/// for ever.
struct Budget {
    used: Mutex<usize>,
    limit: usize,
    /// A token each time bytes are given back, for a reader waiting for room.
    freed: async_channel::Sender<()>,
    wake: async_channel::Receiver<()>,
}

impl Budget {
    fn new(limit: usize) -> Arc<Budget> {
        let (freed, wake) = async_channel::bounded(1);
        Arc::new(Budget {
            used: Mutex::new(0),
            limit,
            freed,
            wake,
        })
    }

    async fn take(&self, bytes: usize) {
        loop {
            {
                let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
                if *used == 0 || *used + bytes <= self.limit {
                    *used += bytes;
                    return;
                }
            }
            if self.wake.recv().await.is_err() {
                return;
            }
        }
    }

    fn give(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(bytes);
        let _ = self.freed.try_send(());
    }
}

impl Session {
    /// The session of a player who just joined (`joined`) over the connection
    /// `sender`, with `hooks` watching the regions. It holds until
    /// [`Session::game_started`] decides when to sync. `init_seen`: the cartridge's
    /// INIT breakpoint was reached; `notices`: tell the player on the emulator screen
    /// what the others do. Fails when the server sent a `sync-when:` that does not
    /// parse.
    pub fn new(
        hooks: Hooks,
        joined: &Joined,
        sender: ClientSender,
        who: Identity,
        init_seen: bool,
        notices: bool,
    ) -> Result<Session> {
        let gate =
            match &joined.game.sync_when {
                Some(text) => Some(parse_sync_when(text).map_err(|e| {
                    anyhow::anyhow!("the server sent a bad sync-when {text:?}: {e}")
                })?),
                None => None,
            };
        let sync = SyncState::new(joined);
        let stats = Arc::new(Stats::default());
        stats.seq.store(sync.seq(), Ordering::Relaxed);
        Ok(Session {
            hooks,
            offline: Offline::new(&sync.region_sizes()),
            sync,
            stats,
            who,
            players: joined.room.players.clone(),
            gate,
            on_restart: joined.game.on_restart,
            since: Since::Joined,
            waiting_for_key: false,
            active: false,
            sender: Some(sender),
            suspects: Vec::new(),
            init_seen,
            wrote_directly: false,
            applying: Default::default(),
            retired: false,
            notices: notices.then(|| Notices::new(joined)),
        })
    }

    /// The counters this session keeps.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The game (re)started; the hooks hold and emulation is paused at its INIT when
    /// `at_init`. Decides when this player starts syncing:
    /// - with `sync-when:`, when the condition has held for its settle period (the
    ///   game's own start-up writes come first, with the gate closed);
    /// - without, a player of a fresh game syncs from the start, like the original
    ///   tool, so a group starting together just works; a player joining a game in
    ///   progress (or whose game restarted) waits for the join key, so that its
    ///   start-up does not wipe what the group has earned.
    pub async fn game_started(&mut self, at_init: bool, in_progress: bool) -> Result<()> {
        self.active = false;
        let restarted = if self.since == Since::Reset {
            "the game restarted (reset or power cycle): "
        } else {
            ""
        };
        if let Some(cond) = &self.gate {
            let open = self.hooks.set_gate(cond, at_init).await?;
            if open {
                self.gate_opened().await?;
            } else {
                info!(
                    "{restarted}waiting for the game to reach the shared part (sync-when: {cond})"
                );
            }
            return Ok(());
        }
        if in_progress {
            self.hooks.hold().await?;
            self.hooks.bind_join_key().await?;
            self.waiting_for_key = true;
            let text = format!(
                "{} is in progress. Press {JOIN_KEY} when you are in the game to join the shared state.",
                self.who.game
            );
            info!("{restarted}{text} (in the openMSX window)");
            let _ = self.hooks.show(&format!("msxsync: {text}")).await;
            return Ok(());
        }
        let (game, seq) = (&self.who.game, self.sync.seq());
        let why = if seq == 0 {
            format!("{restarted}syncing {game} from the game's start: the group has nothing yet")
        } else {
            format!("joined the shared state of {game} at update {seq} at the game's start (--join-now)")
        };
        self.take(&why).await
    }

    /// The sync gate opened (its condition held for the settle period); emulation is
    /// paused. Takes the group's state or shares this player's, by what happened since
    /// the player last synced (see [`Since`]).
    async fn gate_opened(&mut self) -> Result<()> {
        // Something may have resumed emulation since the gate opened, and closed it.
        if self.hooks.gate_state().await? != Some(true) {
            return Ok(());
        }
        let seq = self.sync.seq();
        const RESTARTED: &str = "game restarted (it went back through the title or game over)";
        match (self.since, self.on_restart) {
            (Since::LeftGame, OnRestart::Share) if seq > 0 => {
                self.share(
                    true,
                    &format!(
                        "{RESTARTED}: sharing its new game with the group (on-restart: share)"
                    ),
                )
                .await
            }
            (Since::LeftGame, OnRestart::Keep) if seq > 0 => {
                self.take(&format!(
                    "{RESTARTED}: it takes the group's state of update {seq} (on-restart: keep)"
                ))
                .await
            }
            (Since::Loaded, _) => {
                self.take(&format!(
                    "took the group's state of update {seq} after the loadstate, rewind or \
                     machine switch: the saved values stay here"
                ))
                .await
            }
            _ if seq == 0 => {
                self.share(
                    false,
                    "the group has no shared state yet: sharing this game's starting values",
                )
                .await
            }
            (Since::Reset, _) => {
                self.take(&format!(
                    "took the group's state of update {seq} after the reset: the restarted \
                     game's start-up stays here"
                ))
                .await
            }
            (Since::Joined | Since::LeftGame, _) => {
                self.take(&format!(
                    "joined the shared state of {} at update {seq}: this game's start-up \
                     stays here",
                    self.who.game
                ))
                .await
            }
        }
    }

    /// Brings the emulator to the server's state and starts syncing; says `why` in one
    /// line.
    async fn take(&mut self, why: &str) -> Result<()> {
        if self.retired {
            return Ok(());
        }
        self.waiting_for_key = false;
        self.hooks.write_state(&self.sync.state_to_write()).await?;
        self.wrote_directly = true;
        self.now_active();
        Stats::bump(&self.stats.state_writes);
        info!("{why}");
        Ok(())
    }

    /// Starts syncing with this player's values sent to the group as one change (see
    /// [`Hooks::share`]); says `why` in one line. The change arrives from the hooks as
    /// a flush and leaves like one.
    async fn share(&mut self, keep_since_sync: bool, why: &str) -> Result<()> {
        // Against the server's state with the own batches in flight on top: those are
        // sent already, and must not be sent again as part of this change.
        self.hooks
            .share(&self.sync.expected(), keep_since_sync)
            .await?;
        // Updates may be written over the shared values before the change leaves: its
        // echo puts them back (see `send_local`).
        self.wrote_directly = true;
        self.now_active();
        Stats::bump(&self.stats.shares);
        info!("{why}");
        Ok(())
    }

    fn now_active(&mut self) {
        self.active = true;
        self.suspects.clear();
    }

    /// Runs until openMSX closes, a stop request, or a fatal error.
    pub async fn run(
        mut self,
        receiver: ClientReceiver,
        events: async_channel::Receiver<Event>,
        early: Vec<Event>,
        stop: async_channel::Receiver<()>,
    ) -> Result<Ending> {
        let (tx, inputs) = async_channel::bounded(INPUT_QUEUE);
        let budget = Budget::new(INPUT_QUEUE_BYTES);
        let mut conn_id = 0u64;
        // The reader of the current connection; dropping it stops it.
        let mut reader = Some(spawn_reader(conn_id, receiver, tx.clone(), budget.clone()));
        let mut tasks = Vec::new();
        {
            let tx = tx.clone();
            tasks.push(smol::spawn(async move {
                while let Ok(ev) = events.recv().await {
                    if tx.send(Input::Emulator(ev)).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(Input::Emulator(Event::Closed)).await;
            }));
        }
        {
            let tx = tx.clone();
            tasks.push(smol::spawn(async move {
                let _ = stop.recv().await;
                let _ = tx.send(Input::Stop).await;
            }));
        }
        tasks.push(spawn_ticker(tx.clone(), CHECK_PERIOD, || Input::Tick));
        if self.notices.is_some() {
            tasks.push(spawn_ticker(tx.clone(), NOTICE_PERIOD, || {
                Input::NoticeTick
            }));
        }
        for ev in early {
            if let Some(end) = self.on_emulator(ev).await? {
                return Ok(end);
            }
        }
        let mut reconnecting: Option<smol::Task<()>> = None;
        let mut checking: Option<smol::Task<()>> = None;
        // A tick that came while the last check was still waiting for openMSX: the
        // next check starts as soon as that one is answered, as if it had queued.
        let mut tick_waiting = false;
        let mut attempt = 0u32;
        let mut stash: Option<Input> = None;
        let result = loop {
            let input = match stash.take() {
                Some(i) => i,
                None => match inputs.recv().await {
                    Ok(i) => i,
                    Err(_) => break Ok(Ending::Interrupted),
                },
            };
            let step = match input {
                Input::Emulator(ev) => self.on_emulator(ev).await,
                Input::Server(id, msg, bytes) if id == conn_id && !self.retired => {
                    let step = self
                        .on_server_burst(id, (msg, bytes), &inputs, &mut stash, &budget)
                        .await;
                    step.map(|_| None)
                }
                Input::Server(_, _, bytes) => {
                    // From a connection already given up.
                    budget.give(bytes);
                    Ok(None)
                }
                Input::Reconnected(result) => match *result {
                    Ok((conn, joined)) => {
                        reconnecting = None;
                        let (sender, receiver) = conn.split();
                        let step = self.resume_after_outage(sender, joined).await;
                        if !self.retired {
                            reader =
                                Some(spawn_reader(conn_id, receiver, tx.clone(), budget.clone()));
                        }
                        step.map(|()| None)
                    }
                    Err(e) => {
                        attempt += 1;
                        let wait = backoff(attempt);
                        // The error names the server.
                        info!(
                            "reconnecting failed: {e:#}; next try in {} s",
                            wait.as_secs_f32()
                        );
                        reconnecting = Some(self.spawn_reconnect(attempt, tx.clone()));
                        Ok(None)
                    }
                },
                Input::Tick if checking.is_none() => self.start_check(&tx).map(|task| {
                    checking = task;
                    None
                }),
                Input::Tick => {
                    tick_waiting = true;
                    Ok(None)
                }
                Input::Checked(answer) => {
                    checking = None;
                    let finished = self.finish_check(*answer).await;
                    if finished.is_ok() && std::mem::take(&mut tick_waiting) {
                        stash = Some(Input::Tick);
                    }
                    finished.map(|()| None)
                }
                Input::NoticeTick => {
                    self.show_notices();
                    Ok(None)
                }
                Input::Stop => Ok(Some(Ending::Interrupted)),
            };
            match step {
                Ok(None) => {}
                Ok(Some(end)) => break Ok(end),
                Err(e) => break Err(e),
            }
            // Whatever lost the connection (the reader, a failed send, a server that
            // stopped acknowledging), get it back, with growing pauses.
            if self.sender.is_none() && reconnecting.is_none() && !self.retired {
                // A server that keeps the old connection open must not keep its
                // reader alive.
                reader = None;
                conn_id += 1;
                attempt = 0;
                reconnecting = Some(self.spawn_reconnect(0, tx.clone()));
            }
        };
        drop(reconnecting);
        drop(checking);
        if let Some(mut s) = self.sender.take() {
            s.close().await;
        }
        drop(reader);
        drop(tasks);
        result
    }

    fn spawn_reconnect(&self, attempt: u32, tx: async_channel::Sender<Input>) -> smol::Task<()> {
        let server = self.who.server.clone();
        let name = self.who.name.clone();
        let game = self.who.game.clone();
        let room = self.who.room.clone();
        let session = self.who.session;
        let password = self.who.password.clone();
        smol::spawn(async move {
            if attempt > 0 {
                smol::Timer::after(backoff(attempt)).await;
            }
            let result = async {
                let mut conn =
                    client::connect_with_password(&server, &name, password.as_ref()).await?;
                let joined = conn.join_room(&game, &room, session).await?;
                Ok((conn, joined))
            }
            .await;
            let _ = tx.send(Input::Reconnected(Box::new(result))).await;
        })
    }

    /// Handles one event from openMSX; `Some` when the session is over.
    async fn on_emulator(&mut self, ev: Event) -> Result<Option<Ending>> {
        if ev == Event::Closed {
            return Ok(Some(Ending::OpenMsxClosed));
        }
        if let (true, Event::Said(Output::Update { value, .. })) = (crate::hops::enabled(), &ev) {
            let seq = crate::hops::push_seq(value);
            crate::hops::log(format_args!("play-push {seq}"));
        }
        let decoded = self.hooks.decode(&ev);
        if let Some(Ok(e)) = &decoded {
            if !matches!(e, HookEvent::LocalChanges(_)) {
                trace!("{}: hooks: {e:?}", self.sync.me());
            }
        }
        match decoded {
            Some(Ok(HookEvent::LocalChanges(changes))) => self.send_local(changes).await,
            Some(Ok(HookEvent::LocalCounters(flushed))) => self.send_counters(&flushed).await,
            Some(Ok(HookEvent::MachineSwitched)) => {
                // Loadstate, rewind or another machine: RAM changed behind the hooks'
                // back. The shared state is the group's, not the savestate's.
                self.active = false;
                self.since = Since::Loaded;
                const SWITCHED: &str = "openMSX loaded a state, rewound or switched machine";
                match &self.gate {
                    // With a settle period the gate opens only after it.
                    Some(cond) if self.hooks.gate_state().await? != Some(true) => info!(
                        "{SWITCHED}: holding until the game has been in the shared part for {} frames",
                        cond.frames
                    ),
                    Some(_) => self.gate_opened().await?,
                    None if self.waiting_for_key => {
                        info!("{SWITCHED}: still waiting for {JOIN_KEY}")
                    }
                    None => {
                        let seq = self.sync.seq();
                        self.take(&format!(
                            "{SWITCHED}: took the group's state of update {seq}"
                        ))
                        .await?
                    }
                }
                self.hooks.resume().await?;
            }
            Some(Ok(HookEvent::CartridgeStarted)) => {
                self.since = Since::Reset;
                let fresh = self.sync.seq() == 0;
                self.game_started(true, !fresh).await?;
                self.hooks.resume().await?;
            }
            Some(Ok(HookEvent::Booted)) => {
                // Power-on or reset: the hooks hold already. With an INIT breakpoint
                // the decision comes at INIT; without one, now.
                self.active = false;
                self.since = Since::Reset;
                if !self.init_seen {
                    let fresh = self.sync.seq() == 0;
                    self.game_started(false, !fresh).await?;
                }
            }
            Some(Ok(HookEvent::Gate(open))) => {
                if open {
                    self.gate_opened().await?;
                    self.hooks.resume().await?;
                } else if self.active {
                    self.active = false;
                    self.since = Since::LeftGame;
                    info!(
                        "holding: the game left the shared part (sync-when is false: the title \
                         or game over); what it does now stays here"
                    );
                }
            }
            Some(Ok(HookEvent::JoinRequested)) => {
                if self.waiting_for_key {
                    let seq = self.sync.seq();
                    self.take(&format!(
                        "joined the shared state of {} at update {seq} ({JOIN_KEY} pressed)",
                        self.who.game
                    ))
                    .await?;
                    let _ = self.hooks.show("msxsync: joined the shared state").await;
                }
                self.hooks.resume().await?;
            }
            Some(Ok(HookEvent::Settling)) => {
                if let Some(cond) = &self.gate {
                    debug!(
                        "sync-when is true: syncing once it has held for {} frames",
                        cond.frames
                    );
                }
            }
            Some(Ok(HookEvent::SettleBroken(frames))) => {
                if let Some(cond) = &self.gate {
                    debug!(
                        "sync-when turned false after {frames} of {} frames: waiting until it holds again",
                        cond.frames
                    );
                }
            }
            Some(Err(e)) => warn!("{e:#}"),
            None => {
                if let Event::Said(Output::Log { level, text }) = &ev {
                    match level.as_str() {
                        "warning" => warn!("openMSX: {}", printable(text)),
                        "error" => error!("openMSX: {}", printable(text)),
                        _ => {}
                    }
                }
            }
        }
        Ok(None)
    }

    /// Sends what the game changed, or keeps it for later while offline.
    async fn send_local(&mut self, changes: Vec<Change>) {
        if self.retired {
            return;
        }
        if self.sender.is_none() {
            self.offline.add(&Payload::Bits(changes));
            return;
        }
        let overtaken = self.overtaken();
        // A flush of a big, scattered region can hold more runs than one message may.
        for part in changes.chunks(MAX_CHANGES_PER_MESSAGE) {
            let batch = self.sync.send(part, overtaken);
            trace!("{}: send batch {batch}: {part:?}", self.sync.me());
            let Some(sender) = self.sender.as_mut() else {
                return;
            };
            crate::hops::log(format_args!("play-send {} {batch}", self.sync.me()));
            let sent = sender.send_changes(batch, part.to_vec()).await;
            self.sent(sent);
        }
    }

    /// Sends what the game added to or spent from counters, or keeps it for later
    /// while offline.
    async fn send_counters(&mut self, flushed: &[Flushed]) {
        if self.retired {
            return;
        }
        if self.sender.is_none() {
            self.offline
                .add(&Payload::Counts(self.sync.amounts(flushed)));
            return;
        }
        let overtaken = self.overtaken();
        let Some((batch, ops)) = self.sync.send_flushed(flushed, overtaken) else {
            return;
        };
        self.send_ops(batch, ops).await;
    }

    /// Sends counter operations already recorded as `batch`.
    async fn send_ops(&mut self, batch: u32, ops: Vec<CounterOp>) {
        trace!("{}: send batch {batch}: {ops:?}", self.sync.me());
        if let Some(sender) = self.sender.as_mut() {
            let sent = sender.send_counts(batch, ops).await;
            self.sent(sent);
        }
    }

    /// Counts a batch sent, or notes the broken connection.
    /// A server that keeps the connection but stops acknowledging counts as broken
    /// too, before its batches pile up.
    fn sent(&mut self, result: Result<()>) {
        match result {
            Ok(()) => Stats::bump(&self.stats.batches_sent),
            // The loop reconnects; the batch stays in flight and is re-sent from there
            // if the server did not get it.
            Err(e) => self.connection_lost(&e),
        }
        if let Some(why) = self.sync.unacknowledged() {
            let e = anyhow!(
                "server {} {why}: taking the connection as broken",
                self.who.server
            );
            self.connection_lost(&e);
        }
    }

    /// Whether updates written into the emulator may have landed after the hooks'
    /// flush that is about to be sent, so its echo must be written back.
    fn overtaken(&mut self) -> bool {
        // openMSX writes the reply to an apply before any push the emulation makes
        // after it, and we read them in that order: an apply still unanswered now ran
        // after the hooks flushed these changes (or has not run yet) and may have
        // overwritten them in RAM, so their echo must be written back then.
        match self.drain_answered_applies() {
            Ok(pending) => pending || std::mem::take(&mut self.wrote_directly),
            Err(e) => {
                warn!("{e:#}");
                true
            }
        }
    }

    /// Handles a message from the server and every further one of the same connection
    /// that is already waiting, then writes their changes into openMSX with one Tcl
    /// command: under load, one round trip per update would fall behind. False when
    /// the connection is gone. The messages' bytes go back to `budget` once their
    /// changes are on their way into openMSX.
    async fn on_server_burst(
        &mut self,
        id: u64,
        (first, first_bytes): (Result<ServerMsg>, usize),
        inputs: &async_channel::Receiver<Input>,
        stash: &mut Option<Input>,
        budget: &Budget,
    ) -> Result<bool> {
        /// Most changes written in one command (bounded so one command stays short).
        const MAX_BURST: usize = 1024;
        let mut apply = Apply::default();
        let mut taken = first_bytes;
        let mut alive = self.on_server(first, &mut apply);
        while matches!(alive, Ok(true)) && apply.changes.len() + apply.counters.len() < MAX_BURST {
            match inputs.try_recv() {
                Ok(Input::Server(i, msg, bytes)) if i == id => {
                    taken += bytes;
                    alive = self.on_server(msg, &mut apply);
                }
                Ok(other) => {
                    *stash = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let posted = match alive {
            Ok(_) if !apply.changes.is_empty() || !apply.counters.is_empty() => {
                crate::hops::log(format_args!("play-post"));
                self.hooks
                    .post_apply(&apply.changes, &apply.counters)
                    .map(Some)
            }
            _ => Ok(None),
        };
        drop(apply);
        budget.give(taken);
        let alive = alive?;
        if let Some(reply) = posted? {
            self.applying.push_back(reply);
        }
        self.collect_applies().await?;
        Ok(alive)
    }

    /// Takes the replies of applies that openMSX has answered (without waiting); an
    /// apply that failed is a bug, reported as an error. Returns whether any apply is
    /// still unanswered.
    fn drain_answered_applies(&mut self) -> Result<bool> {
        while let Some(front) = self.applying.front() {
            match front.try_take() {
                Some(r) => {
                    self.applying.pop_front();
                    r.context("writing other players' changes into openmsx")?;
                }
                None => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Like [`Self::drain_answered_applies`], but first waits for the oldest applies
    /// while too many are outstanding, so a player that cannot keep up slows its
    /// server reader instead of flooding openMSX.
    async fn collect_applies(&mut self) -> Result<()> {
        /// Applies openMSX may have queued before we wait for one.
        const MAX_OUTSTANDING: usize = 64;
        while self.applying.len() > MAX_OUTSTANDING {
            let oldest = self.applying.pop_front().expect("more than 64 are queued");
            oldest
                .wait()
                .await
                .context("writing other players' changes into openmsx")?;
        }
        self.drain_answered_applies().map(|_| ())
    }

    /// Handles one message from the server, adding what to write into openMSX to
    /// `apply_out`. False when the connection is gone.
    fn on_server(&mut self, msg: Result<ServerMsg>, apply_out: &mut Apply) -> Result<bool> {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                self.connection_lost(&e);
                return Ok(false);
            }
        };
        match msg {
            ServerMsg::Update {
                seq,
                player,
                batch,
                changes,
            } => {
                let apply = match self.sync.update(seq, player, batch, &changes) {
                    Ok(a) => a,
                    Err(e) => {
                        // Our copy of the server's state can no longer be trusted:
                        // start over with a fresh join.
                        self.connection_lost(&e);
                        return Ok(false);
                    }
                };
                trace!(
                    "{}: update {seq} from {player} batch {batch}: {changes:?} -> apply {apply:?}",
                    self.sync.me()
                );
                self.received(seq, player, !apply.is_empty());
                apply_out.changes.extend(apply);
                if let Some(notices) = self.notices.as_mut() {
                    let by = author(&self.players, self.sync.me(), player);
                    notices.changes(Instant::now(), by, &changes);
                }
            }
            ServerMsg::Counted {
                seq,
                player,
                batch,
                counts,
            } => {
                let writes = match self.sync.count(seq, player, batch, &counts) {
                    Ok(w) => w,
                    Err(e) => {
                        self.connection_lost(&e);
                        return Ok(false);
                    }
                };
                trace!(
                    "{}: update {seq} from {player} batch {batch}: {counts:?} -> write {writes:?}",
                    self.sync.me()
                );
                self.received(seq, player, !writes.is_empty());
                if let Some(notices) = self.notices.as_mut() {
                    let by = author(&self.players, self.sync.me(), player);
                    notices.counts(Instant::now(), by, &counts);
                }
                // A later value of a counter replaces an earlier one of the same burst:
                // the hooks would write both, and the last one counts.
                for w in writes {
                    apply_out.counters.retain(|c| c.region != w.region);
                    apply_out.counters.push(w);
                }
            }
            ServerMsg::PlayerJoined(p) => {
                info!("{} joined the game", printable(&p.name));
                if let Some(notices) = self.notices.as_mut() {
                    notices.player_joined(&p.name);
                }
                // At most MAX_PLAYERS names of at most 64 bytes: under half a MiB.
                self.players.retain(|q| q.id != p.id);
                if self.players.len() >= MAX_PLAYERS {
                    let e = anyhow!(
                        "server {} says more than {MAX_PLAYERS} players are in the game",
                        self.who.server
                    );
                    self.connection_lost(&e);
                    return Ok(false);
                }
                self.players.push(p);
            }
            ServerMsg::PlayerLeft(p) => {
                info!("{} left the game", printable(&p.name));
                if let Some(notices) = self.notices.as_mut() {
                    notices.player_left(&p.name);
                }
                self.players.retain(|q| q.id != p.id);
            }
            other => info!(
                "ignoring an unexpected {} from the server",
                client::server_msg_name(&other)
            ),
        }
        Ok(true)
    }

    /// Counts an update received (`applied`: something of it goes into openMSX).
    fn received(&self, seq: u64, player: crate::protocol::PlayerId, applied: bool) {
        crate::hops::log(format_args!("play-recv {seq}"));
        Stats::bump(&self.stats.updates_received);
        self.stats.seq.store(seq, Ordering::Relaxed);
        if player != self.sync.me() {
            Stats::bump(&self.stats.updates_from_others);
            if applied {
                Stats::bump(&self.stats.updates_applied);
            }
        }
    }

    /// The connection broke: keep playing offline. What was in flight may not have
    /// reached the server; it stays in flight until the next join says which batches
    /// the server has.
    fn connection_lost(&mut self, e: &anyhow::Error) {
        let Some(mut old) = self.sender.take() else {
            return;
        };
        // Close it for real, so the server does not keep a ghost player that reads
        // nothing (the reader task ends when the socket does).
        smol::spawn(async move { old.close().await }).detach();
        Stats::bump(&self.stats.disconnects);
        // The client's errors name the server.
        info!("lost the connection: {e:#}; openMSX keeps running and msxsync reconnects");
        if let Some(notices) = self.notices.as_mut() {
            notices.connection_lost();
        }
    }

    /// Shows the notices that are due, without waiting for openMSX: a notice that
    /// could not be shown is only worth a debug line.
    fn show_notices(&mut self) {
        let Some(notices) = self.notices.as_mut() else {
            return;
        };
        for line in notices.due(Instant::now()) {
            debug!("notice: {line}");
            match self.hooks.post_notice(&line) {
                Ok(reply) => smol::spawn(async move {
                    if let Err(e) = reply.wait().await {
                        debug!("showing a notice: {e:#}");
                    }
                })
                .detach(),
                Err(e) => debug!("showing a notice: {e:#}"),
            }
        }
    }

    /// Back online: the server's state is the truth, plus what this player's game did
    /// meanwhile. A server that came back empty (restarted without saved state) is
    /// seeded with what this player knew, instead of wiping everyone with zeros.
    async fn resume_after_outage(
        &mut self,
        mut sender: ClientSender,
        joined: Joined,
    ) -> Result<()> {
        if let Some(what) = self.who.layout.changes_to(&Layout::of(&joined)) {
            // Our bytes belong to the old layout: sending them, or seeding an empty
            // server with them, would put them in the wrong places.
            smol::spawn(async move { sender.close().await }).detach();
            self.retired = true;
            self.active = false;
            Stats::bump(&self.stats.layout_changes);
            self.hooks.hold().await?;
            info!(
                "game {} changed on server {} since you joined ({what} changed): not \
                 syncing any more; openMSX keeps running; start msxsync play again to \
                 play the new version",
                self.who.game, self.who.server
            );
            let _ = self
                .hooks
                .show("msxsync: the game changed on the server; not syncing any more")
                .await;
            return Ok(());
        }
        let known = self.sync.seq();
        let blank = joined.seq == 0 && !joined.in_progress;
        // What the server should hold: its state, or, when it came back empty, what
        // we knew (which seeds it).
        let base = if blank && known > 0 {
            info!(
                "the server lost the game's state (it restarted empty): seeding it with the state of update {known}"
            );
            self.sync.server_state().to_vec()
        } else {
            joined.state.clone()
        };
        // On top, our batches the server never got, then what the game did offline
        // (later, so it wins bit by bit; amounts add up). Batches it did get are not
        // repeated: another player may have changed the same bits since, and a
        // counter would count them twice.
        let unreceived = self.sync.unreceived(joined.last_batch);
        self.stats
            .batches_not_resent
            .fetch_add(unreceived.received_batches as u64, Ordering::Relaxed);
        let (changes, ops) = catch_up(
            &joined.state,
            &base,
            self.sync.counters(),
            &unreceived,
            &mut self.offline,
        );
        self.sync = self.sync.rejoined(&joined);
        self.sender = Some(sender);
        if !changes.is_empty() {
            self.send_local(changes).await;
        }
        if !ops.is_empty() {
            let batch = self.sync.send_ops(&ops, false);
            self.send_ops(batch, ops).await;
        }
        Stats::bump(&self.stats.reconnects);
        self.stats.seq.store(joined.seq, Ordering::Relaxed);
        // Bring RAM to the server's state, keeping our in-flight and unflushed bits
        // and amounts (the hooks ignore this while they hold).
        let (apply, counters) = self.sync.writes_for_state();
        if self.active {
            self.hooks.apply_all(&apply, &counters).await?;
        }
        self.players = joined.room.players.clone();
        info!(
            "reconnected to {}: {} at update {}",
            self.who.server, self.who.game, joined.seq
        );
        if let Some(notices) = self.notices.as_mut() {
            notices.rejoined(&joined);
            notices.back_online();
        }
        Ok(())
    }

    /// Starts the desync check: posts the question to openMSX and hands the answer
    /// to the loop as an input later ([`Self::finish_check`]). openMSX answers only at
    /// the end of its current sleep (up to a burst period, ~23 ms), and updates that
    /// arrive meanwhile must not wait for it. `None` when there is nothing to check.
    fn start_check(&mut self, tx: &async_channel::Sender<Input>) -> Result<Option<smol::Task<()>>> {
        if !self.active || self.sender.is_none() {
            self.suspects.clear();
            return Ok(None);
        }
        let query = self.hooks.query_state()?;
        // What RAM should hold when openMSX reads it: the read runs after every apply
        // posted so far, and the mirror is as of those.
        let expected = self.sync.expected();
        let tx = tx.clone();
        Ok(Some(smol::spawn(async move {
            let answer = query.answer().await.map(|(active, ram)| StateCheck {
                active,
                ram,
                expected,
            });
            let _ = tx.send(Input::Checked(Box::new(answer))).await;
        })))
    }

    /// Compares the shared regions with what they should hold and repairs bytes that
    /// stay wrong across two checks (a write to "Main RAM", a cheat, a bug): a byte that
    /// differs only for a moment is a game write on its way out.
    async fn finish_check(&mut self, answer: Result<StateCheck>) -> Result<()> {
        let StateCheck {
            active,
            ram,
            expected,
        } = answer?;
        // The hooks hold by themselves (boot, gate closing), so their answer counts;
        // and the loop may have stopped syncing since it asked.
        if !active || !self.active || self.sender.is_none() {
            self.suspects.clear();
            return Ok(());
        }
        let mut now = Vec::new();
        for (region, (have, want)) in ram.iter().zip(&expected).enumerate() {
            for (offset, (&have, &want)) in have.iter().zip(want).enumerate() {
                if have != want {
                    now.push(Mismatch {
                        region,
                        offset,
                        have,
                        want,
                    });
                }
            }
        }
        let (stale, fresh): (Vec<_>, Vec<_>) =
            now.into_iter().partition(|d| self.suspects.contains(d));
        self.suspects = fresh;
        if stale.is_empty() {
            return Ok(());
        }
        let repairs: Vec<Change> = stale
            .iter()
            .map(|m| Change::bytes(m.region as u16, m.offset as u16, vec![m.want]))
            .collect();
        // Counted before the write so that anyone who sees the byte repaired also
        // sees the count.
        self.stats
            .repaired_bytes
            .fetch_add(repairs.len() as u64, Ordering::Relaxed);
        self.hooks.force(&repairs).await?;
        self.wrote_directly = true;
        info!(
            "repaired {} shared byte(s) that changed behind msxsync's back (first: region {} offset {}: {:#04x} -> {:#04x})",
            repairs.len(),
            stale[0].region,
            stale[0].offset,
            stale[0].have,
            stale[0].want
        );
        Ok(())
    }
}

/// What one burst of server messages writes into openMSX.
#[derive(Default)]
struct Apply {
    changes: Vec<Change>,
    counters: Vec<CounterWrite>,
}

/// Reads one server connection into the loop's queue, tagged with its number, taking
/// each message's memory from `budget` first.
fn spawn_reader(
    id: u64,
    mut receiver: ClientReceiver,
    tx: async_channel::Sender<Input>,
    budget: Arc<Budget>,
) -> smol::Task<()> {
    smol::spawn(async move {
        loop {
            let msg = receiver.recv().await;
            let failed = msg.is_err();
            let bytes = msg.as_ref().map_or(0, ServerMsg::memory_bytes);
            budget.take(bytes).await;
            if tx.send(Input::Server(id, msg, bytes)).await.is_err() || failed {
                return;
            }
        }
    })
}

/// Who made update `player`'s changes, as the notices name them: this player, the
/// server (a restore), or another player by the name the server gave (a player the
/// list does not know is "player N").
fn author(players: &[PlayerInfo], me: PlayerId, player: PlayerId) -> Author<'_> {
    if player == me {
        return Author::Me;
    }
    if player == crate::protocol::SERVER_PLAYER {
        return Author::Server;
    }
    match players.iter().find(|p| p.id == player) {
        Some(p) => Author::Player(&p.name),
        None => Author::Unknown(player),
    }
}

/// Sends `input()` into the loop's queue every `period`, until the loop is gone.
fn spawn_ticker(
    tx: async_channel::Sender<Input>,
    period: Duration,
    input: fn() -> Input,
) -> smol::Task<()> {
    smol::spawn(async move {
        loop {
            smol::Timer::after(period).await;
            if tx.send(input()).await.is_err() {
                return;
            }
        }
    })
}

/// Pause before reconnection attempt `attempt` (1, 2, 4, 8, 10, 10... seconds).
fn backoff(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.saturating_sub(1).min(4);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_are_this_player_the_server_or_a_name() {
        let players = [PlayerInfo {
            id: 7,
            name: "alice".into(),
        }];
        assert_eq!(author(&players, 3, 3), Author::Me);
        assert_eq!(author(&players, 3, 0), Author::Server);
        assert_eq!(author(&players, 3, 7), Author::Player("alice"));
        assert_eq!(author(&players, 3, 9), Author::Unknown(9));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let waits: Vec<u64> = (1..=7).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10, 10]);
    }
}
