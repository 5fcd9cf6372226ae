//! The sync loop of one player: reacts to the server, to openMSX and to a clock.
//!
//! It owns the decisions of docs/architecture.md: when to start syncing (game start,
//! sync gate, join key), what to do after a loadstate or a restart of the game, how to
//! get back after the connection dropped, and how to repair bytes that changed behind
//! the hooks' back.

use super::state::{diff_state, Offline, SyncState};
use super::Stats;
use crate::client::{self, printable, Client, ClientReceiver, ClientSender};
use crate::delta::{self, Change};
use crate::openmsx::hooks::JOIN_KEY;
use crate::openmsx::{Event, HookEvent, Hooks};
use crate::protocol::{Joined, PlayerInfo, ServerMsg, MAX_CHANGES_PER_MESSAGE};
use crate::regions::SyncWhen;
use anyhow::{Context, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How often the shared regions are compared with the server's state.
pub const CHECK_PERIOD: Duration = Duration::from_secs(2);
/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Inputs waiting for the loop; a full queue slows the server reader down instead of
/// growing without bound.
const INPUT_QUEUE: usize = 4096;

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
    /// A message (or the end) of server connection number `.0`.
    Server(u64, Result<ServerMsg>),
    Emulator(Event),
    Reconnected(Box<Result<(Client, Joined)>>),
    Tick,
    /// openMSX answered the desync check's question.
    Checked(Box<Result<StateCheck>>),
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
    pub rom_sha256: [u8; 32],
    /// Sent with every join of this run, so that after a reconnect the server can say
    /// which of our batches it already has (`Joined::last_batch`).
    pub session: u64,
}

/// The sync loop's state.
pub struct Session {
    pub hooks: Hooks,
    pub sync: SyncState,
    pub stats: Arc<Stats>,
    pub verbose: bool,
    pub who: Identity,
    pub players: Vec<PlayerInfo>,
    /// MSXSYNC_TRACE=1 prints every batch sent and update received, for debugging.
    pub trace: bool,
    /// The game's `sync-when:` condition, if it has one.
    pub gate: Option<SyncWhen>,
    /// Holding until the player presses the join key (a game in progress without
    /// `sync-when:`).
    pub waiting_for_key: bool,
    /// Whether the hooks sync (as far as this loop knows; the hooks hold by
    /// themselves when the gate closes or the game restarts).
    pub active: bool,
    /// The connection, while there is one.
    pub sender: Option<ClientSender>,
    /// Changes the game made while offline, sent after reconnecting.
    pub offline: Offline,
    /// Bytes that differed from the expected state at the last check.
    pub suspects: Vec<(usize, usize, u8, u8)>,
    /// Whether the cartridge's INIT breakpoint works for this game: then every start
    /// of the game is reported at INIT; otherwise a boot has to stand in for it.
    pub init_seen: bool,
    /// The whole state or a repair was written into RAM since the last batch was
    /// sent: a flush just before it may have been overwritten, so the next batch's
    /// echo is written back (see `send_local`).
    pub wrote_directly: bool,
    /// Applies sent to openMSX whose replies were not looked at yet.
    pub applying: std::collections::VecDeque<crate::openmsx::Reply>,
}

impl Session {
    fn say(&self, text: &str) {
        if self.verbose {
            println!("{text}");
        }
    }

    /// The game (re)started; the hooks hold and emulation is paused at its INIT when
    /// `at_init`. Decides when this player starts syncing:
    /// - with `sync-when:`, when the condition turns true (the game's own start-up
    ///   writes come first, with the gate closed);
    /// - without, a player of a fresh game syncs from the start, like the original
    ///   tool, so a group starting together just works; a player joining a game in
    ///   progress (or whose game restarted) waits for the join key, so that its
    ///   start-up does not wipe what the group has earned.
    pub async fn game_started(&mut self, at_init: bool, in_progress: bool) -> Result<()> {
        self.active = false;
        if let Some(cond) = &self.gate {
            let open = self.hooks.set_gate(cond, at_init).await?;
            if open {
                self.activate().await?;
            } else {
                self.say(&format!(
                    "waiting for the game to reach the shared part (sync-when: {cond})"
                ));
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
            self.say(&format!("{text} (in the openMSX window)"));
            let _ = self.hooks.show(&format!("msxsync: {text}")).await;
            return Ok(());
        }
        self.activate().await
    }

    /// Brings the emulator to the server's state and starts syncing.
    async fn activate(&mut self) -> Result<()> {
        self.waiting_for_key = false;
        self.hooks.write_state(self.sync.server_state()).await?;
        self.wrote_directly = true;
        self.active = true;
        self.suspects.clear();
        Stats::bump(&self.stats.state_writes);
        self.say(&format!(
            "syncing {}: shared state of update {} written into openMSX",
            self.who.game,
            self.sync.seq()
        ));
        Ok(())
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
        let mut conn_id = 0u64;
        let mut tasks = vec![spawn_reader(conn_id, receiver, tx.clone())];
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
        {
            let tx = tx.clone();
            tasks.push(smol::spawn(async move {
                loop {
                    smol::Timer::after(CHECK_PERIOD).await;
                    if tx.send(Input::Tick).await.is_err() {
                        return;
                    }
                }
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
                Input::Server(id, msg) if id == conn_id => {
                    match self.on_server_burst(id, msg, &inputs, &mut stash).await {
                        Ok(true) => Ok(None),
                        Ok(false) => {
                            // The connection is gone: try again, with growing pauses.
                            conn_id += 1;
                            reconnecting = Some(self.spawn_reconnect(0, tx.clone()));
                            attempt = 0;
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    }
                }
                Input::Server(..) => Ok(None), // from a connection already given up
                Input::Reconnected(result) => match *result {
                    Ok((conn, joined)) => {
                        reconnecting = None;
                        let (sender, receiver) = conn.split();
                        tasks.push(spawn_reader(conn_id, receiver, tx.clone()));
                        self.resume_after_outage(sender, joined)
                            .await
                            .map(|()| None)
                    }
                    Err(e) => {
                        attempt += 1;
                        let wait = backoff(attempt);
                        self.say(&format!(
                            "reconnecting to {} failed: {e:#}; next try in {} s",
                            self.who.server,
                            wait.as_secs_f32()
                        ));
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
                Input::Stop => Ok(Some(Ending::Interrupted)),
            };
            match step {
                Ok(None) => continue,
                Ok(Some(end)) => break Ok(end),
                Err(e) => break Err(e),
            }
        };
        drop(reconnecting);
        drop(checking);
        if let Some(mut s) = self.sender.take() {
            s.close().await;
        }
        drop(tasks);
        result
    }

    fn spawn_reconnect(&self, attempt: u32, tx: async_channel::Sender<Input>) -> smol::Task<()> {
        let server = self.who.server.clone();
        let name = self.who.name.clone();
        let game = self.who.game.clone();
        let session = self.who.session;
        smol::spawn(async move {
            if attempt > 0 {
                smol::Timer::after(backoff(attempt)).await;
            }
            let result = async {
                let mut conn = client::connect(&server, &name).await?;
                let joined = conn.join_session(&game, session).await?;
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
        if let (true, Event::Update { value, .. }) = (crate::hops::enabled(), &ev) {
            let seq = value.split_whitespace().nth(1).unwrap_or("-");
            crate::hops::log(format_args!("play-push {seq}"));
        }
        let decoded = self.hooks.decode(&ev);
        if self.trace {
            if let Some(Ok(e)) = &decoded {
                if !matches!(e, HookEvent::LocalChanges(_)) {
                    eprintln!("trace {}: hooks: {e:?}", self.sync.me());
                }
            }
        }
        match decoded {
            Some(Ok(HookEvent::LocalChanges(changes))) => self.send_local(changes).await,
            Some(Ok(HookEvent::MachineSwitched)) => {
                // Loadstate, rewind or another machine: RAM changed behind the hooks'
                // back. The shared state is the group's, not the savestate's.
                self.active = false;
                self.say("openMSX loaded a state or switched machine");
                let open = match &self.gate {
                    Some(_) => self.hooks.gate_state().await? == Some(true),
                    None => !self.waiting_for_key,
                };
                if open {
                    self.activate().await?;
                }
                self.hooks.resume().await?;
            }
            Some(Ok(HookEvent::CartridgeStarted)) => {
                self.say("the game restarted (reset or power cycle)");
                let fresh = self.sync.seq() == 0;
                self.game_started(true, !fresh).await?;
                self.hooks.resume().await?;
            }
            Some(Ok(HookEvent::Booted)) => {
                // Power-on or reset: the hooks hold already. With an INIT breakpoint
                // the decision comes at INIT; without one, now.
                self.active = false;
                if !self.init_seen {
                    self.say("the machine restarted (reset or power cycle)");
                    let fresh = self.sync.seq() == 0;
                    self.game_started(false, !fresh).await?;
                }
            }
            Some(Ok(HookEvent::Gate(open))) => {
                if open {
                    self.activate().await?;
                    self.hooks.resume().await?;
                } else {
                    self.active = false;
                    self.say("the game left the shared part (sync-when is false): holding");
                }
            }
            Some(Ok(HookEvent::JoinRequested)) => {
                if self.waiting_for_key {
                    self.activate().await?;
                    let _ = self.hooks.show("msxsync: joined the shared state").await;
                }
                self.hooks.resume().await?;
            }
            Some(Err(e)) => self.say(&format!("warning: {e:#}")),
            None => {
                if let Event::Log { level, text } = &ev {
                    if level == "warning" || level == "error" {
                        self.say(&format!("openMSX {level}: {text}"));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Sends what the game changed, or keeps it for later while offline.
    async fn send_local(&mut self, changes: Vec<Change>) {
        if self.sender.is_none() {
            self.offline.add(&changes);
            return;
        }
        // openMSX writes the reply to an apply before any push the emulation makes
        // after it, and we read them in that order: an apply still unanswered now ran
        // after the hooks flushed these changes (or has not run yet) and may have
        // overwritten them in RAM, so their echo must be written back then.
        let overtaken = match self.drain_answered_applies() {
            Ok(pending) => pending || std::mem::take(&mut self.wrote_directly),
            Err(e) => {
                self.say(&format!("warning: {e:#}"));
                true
            }
        };
        // A flush of a big, scattered region can hold more runs than one message may.
        for part in changes.chunks(MAX_CHANGES_PER_MESSAGE) {
            let batch = self.sync.send(part, overtaken);
            if self.trace {
                eprintln!("trace {}: send batch {batch}: {part:?}", self.sync.me());
            }
            let Some(sender) = self.sender.as_mut() else {
                return;
            };
            crate::hops::log(format_args!("play-send {} {batch}", self.sync.me()));
            match sender.send_changes(batch, part.to_vec()).await {
                Ok(()) => Stats::bump(&self.stats.batches_sent),
                // The reader notices the broken connection too and starts
                // reconnecting; the batch stays in flight and is re-sent from there.
                Err(e) => self.connection_lost(&e),
            }
        }
    }

    /// Handles a message from the server and every further one of the same connection
    /// that is already waiting, then writes their changes into openMSX with one Tcl
    /// command: under load, one round trip per update would fall behind. False when
    /// the connection is gone.
    async fn on_server_burst(
        &mut self,
        id: u64,
        first: Result<ServerMsg>,
        inputs: &async_channel::Receiver<Input>,
        stash: &mut Option<Input>,
    ) -> Result<bool> {
        /// Most changes written in one command (bounded so one command stays short).
        const MAX_BURST: usize = 1024;
        let mut apply = Vec::new();
        let mut alive = self.on_server(first, &mut apply)?;
        while alive && apply.len() < MAX_BURST {
            match inputs.try_recv() {
                Ok(Input::Server(i, msg)) if i == id => alive = self.on_server(msg, &mut apply)?,
                Ok(other) => {
                    *stash = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        if !apply.is_empty() {
            crate::hops::log(format_args!("play-post"));
            self.applying.push_back(self.hooks.post_apply(&apply)?);
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
    /// `apply`. False when the connection is gone.
    fn on_server(&mut self, msg: Result<ServerMsg>, apply_out: &mut Vec<Change>) -> Result<bool> {
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
                Stats::bump(&self.stats.updates_received);
                crate::hops::log(format_args!("play-recv {seq}"));
                let apply = match self.sync.update(seq, player, batch, &changes) {
                    Ok(a) => a,
                    Err(e) => {
                        // Our copy of the server's state can no longer be trusted:
                        // start over with a fresh join.
                        self.connection_lost(&e);
                        return Ok(false);
                    }
                };
                if self.trace {
                    eprintln!(
                        "trace {}: update {seq} from {player} batch {batch}: {changes:?} -> apply {apply:?}",
                        self.sync.me()
                    );
                }
                self.stats.seq.store(seq, Ordering::Relaxed);
                if player != self.sync.me() {
                    Stats::bump(&self.stats.updates_from_others);
                    if !apply.is_empty() {
                        Stats::bump(&self.stats.updates_applied);
                    }
                }
                apply_out.extend(apply);
            }
            ServerMsg::PlayerJoined(p) => {
                self.say(&format!("{} joined the game", printable(&p.name)));
                self.players.push(p);
            }
            ServerMsg::PlayerLeft(p) => {
                self.say(&format!("{} left the game", printable(&p.name)));
                self.players.retain(|q| q.id != p.id);
            }
            other => self.say(&format!(
                "ignoring an unexpected {} from the server",
                client::server_msg_name(&other)
            )),
        }
        Ok(true)
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
        let text = format!(
            "lost the connection to server {}: {e:#}; openMSX keeps running and msxsync reconnects",
            self.who.server
        );
        println!("{text}");
        let hooks = self.hooks.clone();
        smol::spawn(async move {
            let _ = hooks
                .show("msxsync: connection to the server lost, reconnecting...")
                .await;
        })
        .detach();
    }

    /// Back online: the server's state is the truth, plus what this player's game did
    /// meanwhile. A server that came back empty (restarted without saved state) is
    /// seeded with what this player knew, instead of wiping everyone with zeros.
    async fn resume_after_outage(&mut self, sender: ClientSender, joined: Joined) -> Result<()> {
        if joined.game.rom_sha256 != self.who.rom_sha256 {
            self.hooks.hold().await?;
            self.active = false;
            println!(
                "the server now has another rom for {}: not syncing any more (start msxsync play again)",
                self.who.game
            );
            return Ok(());
        }
        let known = self.sync.seq();
        let blank = joined.seq == 0 && !joined.in_progress;
        // What the server should hold: its state (or, when it came back empty, what
        // we knew) with our offline changes on top.
        let mut wanted = if blank && known > 0 {
            self.say(&format!(
                "the server lost the game's state (it restarted empty): seeding it with the state of update {known}"
            ));
            self.sync.server_state().to_vec()
        } else {
            joined.state.clone()
        };
        // Our batches the server never got, then what the game did offline (later, so
        // it wins bit by bit). Batches it did get are not repeated: another player may
        // have changed the same bits since.
        let (unreceived, received) = self.sync.unreceived(joined.last_batch);
        self.stats
            .batches_not_resent
            .fetch_add(received as u64, Ordering::Relaxed);
        for c in &unreceived {
            if let Some(region) = wanted.get_mut(c.region as usize) {
                delta::apply(region, c);
            }
        }
        self.offline.drain_into(&mut wanted);
        let changes = diff_state(&joined.state, &wanted);
        self.sync = self.sync.rejoined(&joined);
        self.sender = Some(sender);
        if !changes.is_empty() {
            self.send_local(changes).await;
        }
        Stats::bump(&self.stats.reconnects);
        self.stats.seq.store(joined.seq, Ordering::Relaxed);
        // Bring RAM to the server's state, keeping our in-flight and unflushed bits
        // (the hooks ignore this while they hold).
        let whole: Vec<Change> = joined
            .state
            .iter()
            .enumerate()
            .map(|(r, bytes)| Change::bytes(r as u16, 0, bytes.clone()))
            .collect();
        let apply = self.sync.unprotected(&whole);
        if self.active && !apply.is_empty() {
            self.hooks.apply(&apply).await?;
        }
        self.players = joined.game.players.clone();
        println!(
            "reconnected to {}: {} at update {}",
            self.who.server, self.who.game, joined.seq
        );
        let _ = self.hooks.show("msxsync: reconnected").await;
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
        for (r, (have, want)) in ram.iter().zip(&expected).enumerate() {
            for (i, (&h, &w)) in have.iter().zip(want).enumerate() {
                if h != w {
                    now.push((r, i, h, w));
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
            .map(|&(r, i, _, w)| Change::bytes(r as u16, i as u16, vec![w]))
            .collect();
        // Counted before the write so that anyone who sees the byte repaired also
        // sees the count.
        self.stats
            .repaired_bytes
            .fetch_add(repairs.len() as u64, Ordering::Relaxed);
        self.hooks.force(&repairs).await?;
        self.wrote_directly = true;
        println!(
            "repaired {} shared byte(s) that changed behind msxsync's back (first: region {} offset {}: {:#04x} -> {:#04x})",
            repairs.len(),
            stale[0].0,
            stale[0].1,
            stale[0].2,
            stale[0].3
        );
        Ok(())
    }
}

/// Reads one server connection into the loop's queue, tagged with its number.
fn spawn_reader(
    id: u64,
    mut receiver: ClientReceiver,
    tx: async_channel::Sender<Input>,
) -> smol::Task<()> {
    smol::spawn(async move {
        loop {
            let msg = receiver.recv().await;
            let failed = msg.is_err();
            if tx.send(Input::Server(id, msg)).await.is_err() || failed {
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
    fn backoff_grows_and_is_capped() {
        let waits: Vec<u64> = (1..=7).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10, 10]);
    }
}
