//! The wire protocol between `msxsync play` (and other clients) and `msxsync serve`.
//!
//! Transport: WebSocket binary messages, each carrying exactly one bincode-encoded value
//! of [`ClientMsg`] (client to server) or [`ServerMsg`] (server to client). This module
//! is the only place that calls bincode; docs/protocol.md describes every message.
//!
//! Compatibility rules: the first message of each side is `Hello`/`Welcome`, whose first
//! field is the protocol version, so that a peer of another version can always read it
//! and say clearly what is wrong. New variants are only ever added at the end of an enum.

use crate::counter::{Count, Counter, CounterOp};
use crate::delta::Change;
use bincode::Options;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::marker::PhantomData;
use std::mem::size_of;

/// Version of this protocol; both sides send it first and refuse to talk on a mismatch.
/// Version 2 added `ServerMsg::Several`, which a version 1 client cannot decode.
/// Version 3 added counters (`RegionInfo::kind`, `ClientMsg::Counts`,
/// `ServerMsg::Counted`), `GameInfo::on_restart` and the settle period at the end of
/// the `sync_when` text (which a version 2 client would refuse to parse), and the
/// password exchange (`ServerMsg::Challenge`, `ClientMsg::Auth`) and
/// the host's undo (`ClientMsg::ListBackups`/`Restore`, `ServerMsg::Backups`/`Restored`),
/// and rooms (`room` in `Join`, the backup messages and `Joined`, `GameInfo::rooms`).
pub const PROTOCOL_VERSION: u32 = 3;

/// Default TCP port of `msxsync serve` (the original openmsx-sync used it too).
pub const DEFAULT_PORT: u16 = 4567;

/// Largest ROM the server will serve and a client will accept (8 MiB).
pub const MAX_ROM_BYTES: usize = 8 * 1024 * 1024;
/// Largest number of shared bytes in one game, over all its regions (16 KiB).
pub const MAX_SHARED_BYTES: usize = 16 * 1024;
/// Largest number of regions in one game.
pub const MAX_REGIONS: usize = 256;
/// Largest number of changes in one `Changes` or `Update` message.
pub const MAX_CHANGES_PER_MESSAGE: usize = 1024;
/// Largest encoded message a client may send. Clients never send ROMs, and a full
/// change of every shared byte (values plus masks) fits with room to spare.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4 * MAX_SHARED_BYTES + 64 * 1024;
/// Largest encoded message the server may send: a whole ROM plus room for the rest.
pub const MAX_SERVER_MESSAGE_BYTES: usize = MAX_ROM_BYTES + 256 * 1024;
/// Longest player, game, or title name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest free text (region descriptions, error reasons), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Largest number of games in a `Games` list.
pub const MAX_GAMES: usize = 4096;
/// Largest number of messages packed into one `ServerMsg::Several`.
pub const MAX_PACKED_MESSAGES: usize = 1024;
/// Largest number of players listed in one message.
pub const MAX_PLAYERS: usize = 4096;
/// Largest sequence number of an update. No game gets near it (at a million updates
/// a second it takes 290,000 years); refusing larger ones on decode means that adding
/// one to a sequence number we received never overflows.
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// Largest number of rooms listed for one game (the server's own caps are far lower,
/// see `server::limits`).
pub const MAX_ROOMS: usize = 1024;
/// Largest number of saved states listed in one `Backups` message.
pub const MAX_BACKUPS: usize = 1024;
/// Size of the random numbers of the password exchange and of its proof (SHA-256).
pub const AUTH_BYTES: usize = 32;
/// Largest number of names (`item:` and `flag:` lines) in one game.
pub const MAX_LABELS: usize = 1024;
/// Largest total size of a game's names, in bytes (each is at most [`MAX_NAME_BYTES`]).
pub const MAX_LABEL_BYTES: usize = 32 * 1024;

/// Identifies one connected player for the lifetime of its connection.
pub type PlayerId = u32;

/// Messages from a client to the server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// First message on every connection.
    Hello {
        /// Must equal the server's [`PROTOCOL_VERSION`].
        version: u32,
        /// The player's name, shown to the others.
        name: String,
    },
    /// Ask for the list of games; answered with [`ServerMsg::Games`].
    ListGames,
    /// Join a room of a game by name; answered with [`ServerMsg::Joined`] or an error.
    Join {
        /// The game's name (its regions file name without `.regions`).
        game: String,
        /// The room: each room of a game has its own shared state and players. The
        /// game's name is its default room; another name makes a room on first join.
        room: String,
        /// A number the client picks at random once per run and sends again when it
        /// reconnects, so the server can say in [`Joined::last_batch`] which of the
        /// client's batches it already has. 0: no session (nothing is remembered).
        session: u64,
    },
    /// Ask for the joined game's ROM; answered with [`ServerMsg::Rom`]. Clients send it
    /// only when their cache has no file with the ROM's SHA-256.
    FetchRom,
    /// Changes this player's game made to shared RAM.
    Changes {
        /// Chosen by the client, echoed in the [`ServerMsg::Update`] that sequences
        /// these changes, so the client can tell its own changes apart.
        batch: u32,
        /// The changes, in the order they happened.
        #[serde(deserialize_with = "bounded::<_, _, MAX_CHANGES_PER_MESSAGE>")]
        changes: Vec<Change>,
    },
    /// Changes this player's game made to counters (regions of kind
    /// [`RegionKind::Counter`]). Bit changes never name a counter: a counter changes
    /// by amounts, which the server adds up.
    Counts {
        /// As in `Changes`: echoed in the [`ServerMsg::Counted`] that sequences these
        /// operations. Batch numbers count on across both kinds of message.
        batch: u32,
        /// The operations, in the order they happened.
        #[serde(deserialize_with = "bounded::<_, _, MAX_CHANGES_PER_MESSAGE>")]
        ops: Vec<CounterOp>,
    },
    /// Answer to [`ServerMsg::Challenge`]: proves the client knows the server's password
    /// without sending it (see `auth::Password::proof`).
    Auth {
        /// A random number the client picked for this exchange.
        nonce: [u8; AUTH_BYTES],
        /// HMAC-SHA256 keyed with the password over both random numbers.
        proof: [u8; AUTH_BYTES],
    },
    /// Ask for the saved states the server keeps of a game (the host's undo); answered
    /// with [`ServerMsg::Backups`]. Needs no `Join`.
    ListBackups {
        /// The game's name.
        game: String,
        /// The room (the game's name for its default room).
        room: String,
    },
    /// Put a saved state back as the game's shared state, while players play; answered
    /// with [`ServerMsg::Restored`]. Allowed with the server's password, or from the
    /// server's own machine when it has none.
    Restore {
        /// The game's name.
        game: String,
        /// The room (the game's name for its default room).
        room: String,
        /// Which saved state: [`BackupInfo::id`].
        backup: u64,
    },
}

/// Messages from the server to a client.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// Answer to a good `Hello`.
    Welcome {
        /// The server's [`PROTOCOL_VERSION`].
        version: u32,
        /// The server's program version, for humans.
        software: String,
    },
    /// The games this server serves.
    Games {
        /// One entry per game, sorted by name.
        #[serde(deserialize_with = "bounded::<_, _, MAX_GAMES>")]
        games: Vec<GameInfo>,
    },
    /// Answer to `Join`: everything the player needs to start.
    Joined(Box<Joined>),
    /// The joined game's ROM image.
    Rom {
        /// The whole ROM file.
        data: Vec<u8>,
    },
    /// Changes accepted by the server, in sequence order. Sent to every player of the
    /// game, the one who made them included (it uses them as its acknowledgement).
    Update {
        /// Sequence number of this update within the game; each update is one more.
        seq: u64,
        /// Who made the changes.
        player: PlayerId,
        /// The `batch` the player gave them.
        batch: u32,
        /// The changes, already merged into the server's state.
        #[serde(deserialize_with = "bounded::<_, _, MAX_CHANGES_PER_MESSAGE>")]
        changes: Vec<Change>,
    },
    /// Another player joined the game.
    PlayerJoined(PlayerInfo),
    /// A player left the game.
    PlayerLeft(PlayerInfo),
    /// Something went wrong; the server closes the connection after sending it.
    Error {
        /// Lowercase, human-readable reason.
        reason: String,
    },
    /// Several messages in one: what was queued for a player when the server wrote to
    /// its socket, so that a busy game costs one WebSocket message per write, not per
    /// update. Each element is one encoded message (never `Several` itself), to be
    /// handled in order.
    Several(#[serde(deserialize_with = "bounded::<_, _, MAX_PACKED_MESSAGES>")] Vec<Vec<u8>>),
    /// Counter operations accepted by the server: like `Update`, in the same sequence,
    /// to every player of the game, the one who sent them included.
    Counted {
        /// Sequence number (the same numbering as `Update`).
        seq: u64,
        /// Who sent the operations.
        player: PlayerId,
        /// The `batch` the player gave them.
        batch: u32,
        /// What each operation did to its counter, in order, already in the server's
        /// state.
        #[serde(deserialize_with = "bounded::<_, _, MAX_CHANGES_PER_MESSAGE>")]
        counts: Vec<Count>,
    },
    /// Answer to a good `Hello` when the server has a password: the client must answer
    /// with [`ClientMsg::Auth`] before anything else; `Welcome` follows a good proof.
    Challenge {
        /// A random number the server picked for this connection.
        nonce: [u8; AUTH_BYTES],
    },
    /// Answer to `ListBackups`: the room's saved states, newest first.
    Backups {
        /// The game's name.
        game: String,
        /// The room.
        room: String,
        /// The saved states that fit the game's current regions.
        #[serde(deserialize_with = "bounded::<_, _, MAX_BACKUPS>")]
        backups: Vec<BackupInfo>,
    },
    /// Answer to `Restore`: the state is back, and every player of the game received it
    /// as the update numbered `seq`.
    Restored {
        /// The game's name.
        game: String,
        /// The room.
        room: String,
        /// The saved state put back.
        backup: u64,
        /// Sequence number of the update that carried it to the players.
        seq: u64,
    },
}

/// One saved state of a game, as listed by `ServerMsg::Backups`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// When it was saved, in milliseconds since 1970-01-01 UTC; also its name.
    pub id: u64,
    /// Sequence number of the last update it includes.
    pub seq: u64,
}

/// A game as listed by the server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GameInfo {
    /// The game's name, used to join it.
    pub name: String,
    /// Title shown to players (from `title:`, or the name).
    pub title: String,
    /// Size of the ROM in bytes.
    pub rom_size: u32,
    /// SHA-256 of the ROM, the key of the players' ROM cache.
    pub rom_sha256: [u8; 32],
    /// Total shared bytes over all regions.
    pub shared_bytes: u32,
    /// openMSX machine to start (`machine:`), if the game names one.
    pub machine: Option<String>,
    /// openMSX mapper type (`romtype:`), if the game names one.
    pub romtype: Option<String>,
    /// Condition on RAM that must hold before the player syncs (`sync-when:`), as
    /// written in the regions file. Clients parse it with `sync_when::parse_sync_when`
    /// and never paste it into Tcl.
    pub sync_when: Option<String>,
    /// What a restart of a player who was in the shared game does (`on-restart:`);
    /// only games with `sync_when` can tell a restart.
    pub on_restart: OnRestart,
    /// The game's rooms with the players in each: in `Games`, every room the server
    /// has (the default room first, then by name; saved rooms nobody is in too); in
    /// `Joined`, none (the joined room is [`Joined::room`]).
    #[serde(deserialize_with = "bounded::<_, _, MAX_ROOMS>")]
    pub rooms: Vec<RoomInfo>,
}

/// A room of a game: its own shared state, players and saved state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room's name, used to join it (the game's name for its default room).
    pub name: String,
    /// Players in the room now, in joining order.
    #[serde(deserialize_with = "bounded::<_, _, MAX_PLAYERS>")]
    pub players: Vec<PlayerInfo>,
}

/// What happens when a player who was in the shared game goes back through the title
/// or game over and starts a new game (`on-restart:` in the regions file; see
/// docs/architecture.md, "Restarts"). Joining, a reset, a loadstate, a rewind or a
/// reconnect is never a restart in this sense: those always take the group's state.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRestart {
    /// The restarting player's new game reaches every player, in one change: losses
    /// are shared, as in the original tool.
    #[default]
    Share,
    /// The group keeps its state and the restarting player takes it.
    Keep,
}

impl OnRestart {
    /// The rule as written after `on-restart:`.
    pub fn name(self) -> &'static str {
        match self {
            OnRestart::Share => "share",
            OnRestart::Keep => "keep",
        }
    }
}

impl std::fmt::Display for OnRestart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The player id of updates the server makes itself (a restore); players count from 1.
pub const SERVER_PLAYER: PlayerId = 0;

/// A connected player.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PlayerInfo {
    /// The player's id within the server.
    pub id: PlayerId,
    /// The name the player gave in `Hello`, unique within its room.
    pub name: String,
}

/// One shared RAM region, as CPU addresses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// First shared address.
    pub start: u16,
    /// Last shared address (inclusive, as in `.regions` files).
    pub end: u16,
    /// Free text from the regions file.
    pub description: String,
    /// How the region's changes merge.
    pub kind: RegionKind,
}

/// How a region's changes merge.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegionKind {
    /// Bytes merged bit by bit: the masked bits of the latest change win.
    #[default]
    Bytes,
    /// A number that players add to and spend from: changes are amounts, which the
    /// server adds up (`ClientMsg::Counts`).
    Counter(Counter),
}

impl RegionInfo {
    /// A region of bytes merged bit by bit.
    pub fn bytes(start: u16, end: u16, description: impl Into<String>) -> RegionInfo {
        RegionInfo {
            start,
            end,
            description: description.into(),
            kind: RegionKind::Bytes,
        }
    }

    /// The counter, when the region is one.
    pub fn counter(&self) -> Option<Counter> {
        match self.kind {
            RegionKind::Counter(c) => Some(c),
            RegionKind::Bytes => None,
        }
    }

    /// Number of bytes in the region.
    pub fn len(&self) -> usize {
        self.end as usize - self.start as usize + 1
    }

    /// Always false: a region has at least one byte. Here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A name the regions file gives to one shared byte (`item:`) or to one bit of it
/// (`flag:`), so that players read "alice got the boots" rather than a byte's value
/// (see `labels`, which turns changes into such words).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label {
    /// Index of the region in the game's region list; always a region of bytes (a
    /// counter is named by its description).
    pub region: u16,
    /// Byte offset inside the region.
    pub offset: u16,
    /// The bit (0 the lowest, 7 the highest) for `flag:`; `None` for `item:`, which
    /// names the whole byte.
    pub bit: Option<u8>,
    /// The name, as written after the address (at most [`MAX_NAME_BYTES`]).
    pub name: String,
}

/// Everything a player receives on joining a game.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// This player's id; updates carrying it are this player's own changes.
    pub player: PlayerId,
    /// The game.
    pub game: GameInfo,
    /// The room joined, with its players (this one included).
    pub room: RoomInfo,
    /// The shared regions, in the order changes refer to them.
    #[serde(deserialize_with = "bounded::<_, _, MAX_REGIONS>")]
    pub regions: Vec<RegionInfo>,
    /// The current shared state, one byte vector per region.
    #[serde(deserialize_with = "bounded::<_, _, MAX_REGIONS>")]
    pub state: Vec<Vec<u8>>,
    /// Sequence number of the last update included in `state`.
    pub seq: u64,
    /// Whether any change was accepted since the server started with this state.
    /// A player joining a game in progress must not send its start-up writes.
    pub in_progress: bool,
    /// The last batch of the joining session (`Join::session`) that `state` includes,
    /// when the server remembers one. A client reconnecting after an outage must not
    /// send these batches again: others may have changed the same bits since, and a
    /// re-sent batch would undo their change.
    pub last_batch: Option<u32>,
    /// The names of the game's items and flags, for the notices.
    #[serde(deserialize_with = "bounded::<_, _, MAX_LABELS>")]
    pub labels: Vec<Label>,
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A message type of this protocol: knows its size limit and checks its own limits.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// Largest encoded size accepted on decode.
    const MAX_BYTES: usize;
    /// Checks the named limits that bincode cannot check by itself.
    fn check_limits(&self) -> Result<(), String>;
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!(
            "{what} is {} bytes long, the limit is {max}",
            text.len()
        ));
    }
    Ok(())
}

fn check_count(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("{n} {what} in one message, the limit is {max}"));
    }
    Ok(())
}

fn check_seq(seq: u64) -> Result<(), String> {
    if seq > MAX_SEQ {
        return Err(format!(
            "sequence number {seq} is larger than the limit of {MAX_SEQ}"
        ));
    }
    Ok(())
}

fn check_changes(changes: &[Change]) -> Result<(), String> {
    check_count("changes", changes.len(), MAX_CHANGES_PER_MESSAGE)
}

fn check_counts<T>(counts: &[T]) -> Result<(), String> {
    check_count("counter operations", counts.len(), MAX_CHANGES_PER_MESSAGE)
}

fn check_room(r: &RoomInfo) -> Result<(), String> {
    check_text("room name", &r.name, MAX_NAME_BYTES)?;
    check_count("players", r.players.len(), MAX_PLAYERS)
}

fn check_game(g: &GameInfo) -> Result<(), String> {
    check_text("game name", &g.name, MAX_NAME_BYTES)?;
    check_text("game title", &g.title, MAX_TEXT_BYTES)?;
    if let Some(cond) = &g.sync_when {
        check_text("sync-when condition", cond, MAX_TEXT_BYTES)?;
    }
    if g.rom_size as usize > MAX_ROM_BYTES {
        return Err(format!(
            "rom of {} bytes is larger than the limit of {MAX_ROM_BYTES}",
            g.rom_size
        ));
    }
    check_count("rooms", g.rooms.len(), MAX_ROOMS)?;
    g.rooms.iter().try_for_each(check_room)
}

/// A game's and a room's names, as requests carry them.
fn check_game_and_room(game: &str, room: &str) -> Result<(), String> {
    check_text("game name", game, MAX_NAME_BYTES)?;
    check_text("room name", room, MAX_NAME_BYTES)
}

/// Names must fit the limits and name a bit or byte of a region of bytes.
fn check_labels(labels: &[Label], regions: &[RegionInfo]) -> Result<(), String> {
    check_count("names", labels.len(), MAX_LABELS)?;
    let mut bytes = 0usize;
    for l in labels {
        check_text("item name", &l.name, MAX_NAME_BYTES)?;
        bytes += l.name.len();
        let Some(r) = regions.get(usize::from(l.region)) else {
            return Err(format!(
                "name {:?} is for region {}, but the game has {} regions",
                l.name,
                l.region,
                regions.len()
            ));
        };
        let problem = if usize::from(l.offset) >= r.len() {
            format!("byte {}, past its end", l.offset)
        } else if let Some(bit) = l.bit.filter(|&b| b > 7) {
            format!("bit {bit}, which no byte has")
        } else if r.counter().is_some() {
            "a counter, which is named by its description".to_string()
        } else {
            continue;
        };
        return Err(format!(
            "name {:?} is for region {:#06x}-{:#06x}: {problem}",
            l.name, r.start, r.end
        ));
    }
    if bytes > MAX_LABEL_BYTES {
        return Err(format!(
            "names of {bytes} bytes in all, the limit is {MAX_LABEL_BYTES}"
        ));
    }
    Ok(())
}

impl Message for ClientMsg {
    const MAX_BYTES: usize = MAX_CLIENT_MESSAGE_BYTES;
    fn check_limits(&self) -> Result<(), String> {
        match self {
            ClientMsg::Hello { name, .. } => check_text("player name", name, MAX_NAME_BYTES),
            ClientMsg::Join { game, room, .. } => check_game_and_room(game, room),
            ClientMsg::Changes { changes, .. } => check_changes(changes),
            ClientMsg::Counts { ops, .. } => check_counts(ops),
            ClientMsg::ListBackups { game, room } | ClientMsg::Restore { game, room, .. } => {
                check_game_and_room(game, room)
            }
            ClientMsg::ListGames | ClientMsg::FetchRom | ClientMsg::Auth { .. } => Ok(()),
        }
    }
}

impl Message for ServerMsg {
    const MAX_BYTES: usize = MAX_SERVER_MESSAGE_BYTES;
    fn check_limits(&self) -> Result<(), String> {
        match self {
            ServerMsg::Games { games } => {
                check_count("games", games.len(), MAX_GAMES)?;
                games.iter().try_for_each(check_game)
            }
            ServerMsg::Joined(j) => {
                check_game(&j.game)?;
                check_room(&j.room)?;
                check_count("regions", j.regions.len(), MAX_REGIONS)?;
                if j.state.len() != j.regions.len() {
                    return Err(format!(
                        "joined message has {} regions but state for {}",
                        j.regions.len(),
                        j.state.len()
                    ));
                }
                check_seq(j.seq)?;
                let mut shared = 0usize;
                for (r, s) in j.regions.iter().zip(&j.state) {
                    check_text("region description", &r.description, MAX_TEXT_BYTES)?;
                    if r.end < r.start || s.len() != r.len() {
                        return Err(format!(
                            "region {:#06x}-{:#06x} has {} bytes of state",
                            r.start,
                            r.end,
                            s.len()
                        ));
                    }
                    if let Some(c) = r.counter() {
                        c.check(r.len())
                            .map_err(|e| format!("counter {:#06x}-{:#06x}: {e}", r.start, r.end))?;
                    }
                    shared += s.len();
                }
                if shared > MAX_SHARED_BYTES {
                    return Err(format!(
                        "{shared} shared bytes, the limit is {MAX_SHARED_BYTES}"
                    ));
                }
                check_labels(&j.labels, &j.regions)
            }
            ServerMsg::Rom { data } => {
                if data.len() > MAX_ROM_BYTES {
                    return Err(format!(
                        "rom of {} bytes is larger than the limit of {MAX_ROM_BYTES}",
                        data.len()
                    ));
                }
                Ok(())
            }
            ServerMsg::Update { seq, changes, .. } => {
                check_seq(*seq)?;
                check_changes(changes)
            }
            ServerMsg::Counted { seq, counts, .. } => {
                check_seq(*seq)?;
                check_counts(counts)
            }
            ServerMsg::PlayerJoined(p) | ServerMsg::PlayerLeft(p) => {
                check_text("player name", &p.name, MAX_NAME_BYTES)
            }
            ServerMsg::Error { reason } => check_text("error reason", reason, MAX_TEXT_BYTES),
            ServerMsg::Several(messages) => {
                check_count("packed messages", messages.len(), MAX_PACKED_MESSAGES)
            }
            ServerMsg::Welcome { software, .. } => {
                check_text("software version", software, MAX_NAME_BYTES)
            }
            ServerMsg::Backups {
                game,
                room,
                backups,
            } => {
                check_game_and_room(game, room)?;
                check_count("saved states", backups.len(), MAX_BACKUPS)
            }
            ServerMsg::Restored { game, room, .. } => check_game_and_room(game, room),
            ServerMsg::Challenge { .. } => Ok(()),
        }
    }
}

/// Deserializes a list of at most `N` elements, refusing a longer one as soon as its
/// length is read. Without it, a length prefix of a million small elements makes the
/// decoder build them all (in memory up to 20 times the bytes they took on the wire)
/// before [`Message::check_limits`] could refuse the list. The encoding is unchanged.
fn bounded<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const N: usize>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {N} elements")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let too_long =
                |n: usize| A::Error::custom(format!("a list of {n} elements, the limit is {N}"));
            let announced = seq.size_hint().unwrap_or(0);
            if announced > N {
                return Err(too_long(announced));
            }
            let mut out = Vec::with_capacity(announced);
            while let Some(x) = seq.next_element()? {
                if out.len() == N {
                    return Err(too_long(N + 1));
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded::<T, N>(PhantomData))
}

/// Allowance for the allocator's own bytes per heap block, in [`ServerMsg::memory_bytes`].
const PER_ALLOCATION: usize = 16;

fn text_bytes(text: &str) -> usize {
    text.len() + PER_ALLOCATION
}

fn game_bytes(g: &GameInfo) -> usize {
    let options = [&g.machine, &g.romtype, &g.sync_when];
    size_of::<GameInfo>()
        + text_bytes(&g.name)
        + text_bytes(&g.title)
        + options
            .iter()
            .flat_map(|o| o.as_deref())
            .map(text_bytes)
            .sum::<usize>()
        + g.rooms.iter().map(room_bytes).sum::<usize>()
}

fn room_bytes(r: &RoomInfo) -> usize {
    size_of::<RoomInfo>()
        + text_bytes(&r.name)
        + r.players
            .iter()
            .map(|p| size_of::<PlayerInfo>() + text_bytes(&p.name))
            .sum::<usize>()
}

impl ServerMsg {
    /// About how many bytes of memory this message takes once decoded: its own size,
    /// what it points to, and an allowance per allocation. Queues of received messages
    /// are limited by this, not by their number: a message can be a few bytes or 8 MiB.
    pub fn memory_bytes(&self) -> usize {
        let vec_bytes = |v: &Vec<u8>| size_of::<Vec<u8>>() + v.len() + PER_ALLOCATION;
        size_of::<ServerMsg>()
            + match self {
                ServerMsg::Welcome { software, .. } => text_bytes(software),
                ServerMsg::Games { games } => games.iter().map(game_bytes).sum(),
                ServerMsg::Joined(j) => {
                    size_of::<Joined>()
                        + game_bytes(&j.game)
                        + room_bytes(&j.room)
                        + j.regions
                            .iter()
                            .map(|r| size_of::<RegionInfo>() + text_bytes(&r.description))
                            .sum::<usize>()
                        + j.state.iter().map(vec_bytes).sum::<usize>()
                        + j.labels
                            .iter()
                            .map(|l| size_of::<Label>() + text_bytes(&l.name))
                            .sum::<usize>()
                }
                ServerMsg::Rom { data } => vec_bytes(data),
                ServerMsg::Update { changes, .. } => changes.iter().map(Change::memory_bytes).sum(),
                ServerMsg::Counted { counts, .. } => counts.len() * size_of::<Count>(),
                ServerMsg::PlayerJoined(p) | ServerMsg::PlayerLeft(p) => text_bytes(&p.name),
                ServerMsg::Error { reason } => text_bytes(reason),
                ServerMsg::Several(packed) => packed.iter().map(vec_bytes).sum(),
                ServerMsg::Challenge { .. } | ServerMsg::Restored { .. } => 0,
                ServerMsg::Backups {
                    game,
                    room,
                    backups,
                } => text_bytes(game) + text_bytes(room) + backups.len() * size_of::<BackupInfo>(),
            }
    }
}

/// bincode options used on both sides: variable-length integers (small numbers take one
/// byte, which keeps a one-byte change tiny), a hard size limit (so a hostile length
/// prefix cannot make the decoder allocate gigabytes) and no trailing bytes.
fn options(limit: usize) -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(limit as u64)
        .reject_trailing_bytes()
}

/// Encodes one message. Infallible for the types of this module.
pub fn encode<M: Message>(msg: &M) -> Vec<u8> {
    // Serializing these plain enums into a Vec can only fail when the limit is hit,
    // and the limit here is the whole address space.
    options(usize::MAX)
        .serialize(msg)
        .expect("encoding a protocol message into memory cannot fail")
}

/// Decodes one message, enforcing its size limit and named limits. Never panics.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    if bytes.len() > M::MAX_BYTES {
        return Err(DecodeError(format!(
            "message of {} bytes is larger than the limit of {}",
            bytes.len(),
            M::MAX_BYTES
        )));
    }
    let msg: M = options(M::MAX_BYTES)
        .deserialize(bytes)
        .map_err(|e| DecodeError(format!("malformed message: {e}")))?;
    msg.check_limits().map_err(DecodeError)?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game() -> GameInfo {
        GameInfo {
            name: "demo".into(),
            title: "Demo".into(),
            rom_size: 16384,
            rom_sha256: [7; 32],
            shared_bytes: 9,
            machine: Some("C-BIOS_MSX1".into()),
            romtype: None,
            sync_when: Some("e001 == 03 for 60 frames".into()),
            on_restart: OnRestart::Keep,
            rooms: vec![
                RoomInfo {
                    name: "demo".into(),
                    players: vec![PlayerInfo {
                        id: 1,
                        name: "ann".into(),
                    }],
                },
                RoomInfo {
                    name: "friday".into(),
                    players: vec![],
                },
            ],
        }
    }

    fn all_client() -> Vec<ClientMsg> {
        vec![
            ClientMsg::Hello {
                version: PROTOCOL_VERSION,
                name: "ann".into(),
            },
            ClientMsg::ListGames,
            ClientMsg::Join {
                game: "demo".into(),
                room: "friday".into(),
                session: 0x0123_4567_89ab_cdef,
            },
            ClientMsg::FetchRom,
            ClientMsg::Changes {
                batch: 3,
                changes: vec![Change::bytes(0, 1, vec![1, 2])],
            },
            ClientMsg::Counts {
                batch: 4,
                ops: vec![
                    CounterOp::Add {
                        region: 1,
                        amount: -3,
                    },
                    CounterOp::Seed {
                        region: 1,
                        total: 120,
                    },
                ],
            },
            ClientMsg::Auth {
                nonce: [1; AUTH_BYTES],
                proof: [2; AUTH_BYTES],
            },
            ClientMsg::ListBackups {
                game: "demo".into(),
                room: "demo".into(),
            },
            ClientMsg::Restore {
                game: "demo".into(),
                room: "friday".into(),
                backup: 1_700_000_000_123,
            },
        ]
    }

    fn all_server() -> Vec<ServerMsg> {
        vec![
            ServerMsg::Welcome {
                version: PROTOCOL_VERSION,
                software: "msxsync 0.1.0".into(),
            },
            ServerMsg::Games {
                games: vec![game()],
            },
            ServerMsg::Joined(Box::new(Joined {
                player: 2,
                game: GameInfo {
                    rooms: vec![],
                    ..game()
                },
                room: RoomInfo {
                    name: "friday".into(),
                    players: vec![PlayerInfo {
                        id: 2,
                        name: "bob".into(),
                    }],
                },
                regions: vec![
                    RegionInfo::bytes(0xe000, 0xe008, "items"),
                    RegionInfo {
                        start: 0xe048,
                        end: 0xe049,
                        description: "coins".into(),
                        kind: RegionKind::Counter(Counter {
                            encoding: crate::counter::Encoding::Bcd,
                            min: 0,
                            max: 999,
                        }),
                    },
                ],
                state: vec![vec![0; 9], vec![0x99, 0x01]],
                seq: 5,
                in_progress: true,
                last_batch: Some(41),
                labels: vec![
                    Label {
                        region: 0,
                        offset: 8,
                        bit: None,
                        name: "boots".into(),
                    },
                    Label {
                        region: 0,
                        offset: 0,
                        bit: Some(7),
                        name: "world 1 key".into(),
                    },
                ],
            })),
            ServerMsg::Rom {
                data: vec![0x41, 0x42],
            },
            ServerMsg::Update {
                seq: 6,
                player: 1,
                batch: 9,
                changes: vec![Change::bytes(0, 0, vec![9])],
            },
            ServerMsg::PlayerJoined(PlayerInfo {
                id: 3,
                name: "bob".into(),
            }),
            ServerMsg::PlayerLeft(PlayerInfo {
                id: 3,
                name: "bob".into(),
            }),
            ServerMsg::Error {
                reason: "nope".into(),
            },
            ServerMsg::Several(vec![
                encode(&ServerMsg::PlayerLeft(PlayerInfo {
                    id: 3,
                    name: "bob".into(),
                })),
                encode(&ServerMsg::Update {
                    seq: 7,
                    player: 1,
                    batch: 10,
                    changes: vec![Change::bytes(0, 1, vec![2])],
                }),
            ]),
            ServerMsg::Counted {
                seq: 8,
                player: 1,
                batch: 11,
                counts: vec![Count {
                    region: 1,
                    amount: 1,
                    total: 200,
                }],
            },
            ServerMsg::Challenge {
                nonce: [3; AUTH_BYTES],
            },
            ServerMsg::Backups {
                game: "demo".into(),
                room: "demo".into(),
                backups: vec![BackupInfo {
                    id: 1_700_000_000_123,
                    seq: 42,
                }],
            },
            ServerMsg::Restored {
                game: "demo".into(),
                room: "friday".into(),
                backup: 1_700_000_000_123,
                seq: 43,
            },
        ]
    }

    #[test]
    fn a_joined_counter_must_fit_its_region() {
        let mut joined = all_server().remove(2);
        let ServerMsg::Joined(j) = &mut joined else {
            panic!("not joined")
        };
        j.regions[1].kind = RegionKind::Counter(Counter {
            encoding: crate::counter::Encoding::Bcd,
            min: 0,
            max: 10_000,
        });
        let err = decode::<ServerMsg>(&encode(&joined)).unwrap_err();
        assert!(err.0.contains("counter 0xe048-0xe049: max 10000"), "{err}");
    }

    #[test]
    fn joined_names_must_fit_their_regions_and_limits() {
        let refused = |edit: &dyn Fn(&mut Joined)| {
            let mut joined = all_server().remove(2);
            let ServerMsg::Joined(j) = &mut joined else {
                panic!("not joined")
            };
            edit(j);
            decode::<ServerMsg>(&encode(&joined)).unwrap_err().0
        };
        let e = refused(&|j| j.labels[0].region = 2);
        assert_eq!(
            e,
            "name \"boots\" is for region 2, but the game has 2 regions"
        );
        let e = refused(&|j| j.labels[0].offset = 9);
        assert_eq!(
            e,
            "name \"boots\" is for region 0xe000-0xe008: byte 9, past its end"
        );
        let e = refused(&|j| j.labels[1].bit = Some(8));
        assert!(e.ends_with("bit 8, which no byte has"), "{e}");
        let e = refused(&|j| j.labels[1].region = 1);
        assert!(
            e.ends_with("a counter, which is named by its description"),
            "{e}"
        );
        let e = refused(&|j| j.labels[0].name = "b".repeat(MAX_NAME_BYTES + 1));
        assert_eq!(e, "item name is 65 bytes long, the limit is 64");
        // 1024 names of 64 bytes are 64 KiB: over the byte limit, at the count limit.
        let e = refused(&|j| {
            j.labels = vec![j.labels[0].clone(); MAX_LABELS];
            j.labels.iter_mut().for_each(|l| l.name = "n".repeat(64));
        });
        assert_eq!(e, "names of 65536 bytes in all, the limit is 32768");
        let e = refused(&|j| j.labels = vec![j.labels[0].clone(); MAX_LABELS + 1]);
        assert!(
            e.contains("a list of 1025 elements, the limit is 1024"),
            "{e}"
        );
    }

    #[test]
    fn one_counter_change_is_small() {
        // Galious's coins (region 1) plus one, with a total above 250 (3 bytes).
        let up = encode(&ClientMsg::Counts {
            batch: 7,
            ops: vec![CounterOp::Add {
                region: 1,
                amount: 1,
            }],
        });
        let down = encode(&ServerMsg::Counted {
            seq: 7,
            player: 3,
            batch: 7,
            counts: vec![Count {
                region: 1,
                amount: 1,
                total: 300,
            }],
        });
        assert_eq!((up.len(), down.len()), (6, 10));
    }

    #[test]
    fn every_message_round_trips() {
        for m in all_client() {
            assert_eq!(decode::<ClientMsg>(&encode(&m)).unwrap(), m);
        }
        for m in all_server() {
            assert_eq!(decode::<ServerMsg>(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn one_changed_byte_is_small() {
        let change = Change {
            region: 3,
            offset: 200,
            values: vec![0x80],
            masks: vec![0x80],
        };
        let up = encode(&ClientMsg::Changes {
            batch: 100_000,
            changes: vec![change.clone()],
        });
        let down = encode(&ServerMsg::Update {
            seq: 10_000_000,
            player: 70_000,
            batch: 100_000,
            changes: vec![change],
        });
        // WebSocket framing adds 6 bytes client to server (masked) and 2 the other way.
        assert!(up.len() + 6 < 24, "up: {} bytes", up.len());
        assert!(down.len() + 2 < 32, "down: {} bytes", down.len());
    }

    #[test]
    fn hello_layout_is_stable_across_versions() {
        // A peer of another version must still be able to read the version number:
        // Hello is variant 0 and the version is its first field.
        let bytes = encode(&ClientMsg::Hello {
            version: 77,
            name: String::new(),
        });
        assert_eq!(&bytes[..2], &[0, 77]);
        let bytes = encode(&ServerMsg::Welcome {
            version: 77,
            software: String::new(),
        });
        assert_eq!(&bytes[..2], &[0, 77]);
    }

    #[test]
    fn limits_are_enforced_on_decode() {
        let long = ClientMsg::Hello {
            version: 1,
            name: "x".repeat(MAX_NAME_BYTES + 1),
        };
        assert!(decode::<ClientMsg>(&encode(&long)).is_err());
        // A room name of 10 KB, in a request and in a list.
        let huge = "r".repeat(10 * 1024);
        let join = ClientMsg::Join {
            game: "demo".into(),
            room: huge.clone(),
            session: 1,
        };
        let e = decode::<ClientMsg>(&encode(&join)).unwrap_err().to_string();
        assert_eq!(e, "room name is 10240 bytes long, the limit is 64");
        let mut listed = game();
        listed.rooms[1].name = huge;
        let games = ServerMsg::Games {
            games: vec![listed],
        };
        assert!(decode::<ServerMsg>(&encode(&games)).is_err());
        let mut crowded = game();
        crowded.rooms = vec![crowded.rooms[1].clone(); MAX_ROOMS + 1];
        let e = decode::<ServerMsg>(&encode(&ServerMsg::Games {
            games: vec![crowded],
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains("the limit is 1024"), "{e}");
        let many = ClientMsg::Changes {
            batch: 0,
            changes: vec![Change::bytes(0, 0, vec![1]); MAX_CHANGES_PER_MESSAGE + 1],
        };
        assert!(decode::<ClientMsg>(&encode(&many)).is_err());
        let big = vec![0u8; MAX_CLIENT_MESSAGE_BYTES + 1];
        assert!(decode::<ClientMsg>(&big).is_err());
        // A length prefix claiming a huge vector must fail, not allocate.
        let mut hostile = vec![4u8, 0]; // Changes, batch 0
        hostile.push(0xfd); // varint u64 follows
        hostile.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<ClientMsg>(&hostile).is_err());
        // Trailing bytes are an error, not ignored.
        let mut trailing = encode(&ClientMsg::ListGames);
        trailing.push(0);
        assert!(decode::<ClientMsg>(&trailing).is_err());
    }

    #[test]
    fn long_lists_are_refused_when_their_length_is_read() {
        // A million empty packed messages: 1 MB on the wire, 24 MB as vectors. The
        // length alone refuses it now; the limit check came after building them all.
        let mut several = vec![8u8, 0xfc]; // Several, varint u32 length follows
        several.extend_from_slice(&1_000_000u32.to_le_bytes());
        several.resize(several.len() + 1_000_000, 0);
        let e = decode::<ServerMsg>(&several).unwrap_err().to_string();
        assert!(
            e.contains("a list of 1000000 elements, the limit is 1024"),
            "{e}"
        );
        let at_limit = ServerMsg::Several(vec![vec![1]; MAX_PACKED_MESSAGES]);
        assert_eq!(decode::<ServerMsg>(&encode(&at_limit)).unwrap(), at_limit);
        let over = ServerMsg::Update {
            seq: 1,
            player: 1,
            batch: 1,
            changes: vec![Change::bytes(0, 0, vec![1]); MAX_CHANGES_PER_MESSAGE + 1],
        };
        let e = decode::<ServerMsg>(&encode(&over)).unwrap_err().to_string();
        assert!(e.contains("the limit is 1024"), "{e}");
    }

    #[test]
    fn sequence_numbers_above_the_limit_are_refused() {
        let update = |seq| ServerMsg::Update {
            seq,
            player: 1,
            batch: 1,
            changes: vec![Change::bytes(0, 0, vec![1])],
        };
        assert!(decode::<ServerMsg>(&encode(&update(MAX_SEQ))).is_ok());
        let e = decode::<ServerMsg>(&encode(&update(u64::MAX))).unwrap_err();
        assert!(e.to_string().contains("sequence number"), "{e}");
        let mut joined = all_server().remove(2);
        if let ServerMsg::Joined(j) = &mut joined {
            j.seq = MAX_SEQ + 1;
        }
        assert!(decode::<ServerMsg>(&encode(&joined)).is_err());
    }

    #[test]
    fn memory_bytes_follow_the_payload() {
        let rom = ServerMsg::Rom {
            data: vec![0; 1 << 20],
        };
        assert!((1 << 20..(1 << 20) + 256).contains(&rom.memory_bytes()));
        let tiny = ServerMsg::Update {
            seq: 1,
            player: 1,
            batch: 1,
            changes: vec![Change::bytes(0, 0, vec![1]); 1024],
        };
        // Small on the wire, much bigger in memory: the budget sees the memory.
        assert!(
            tiny.memory_bytes() > 10 * encode(&tiny).len(),
            "{}",
            tiny.memory_bytes()
        );
        for m in all_server() {
            assert!(m.memory_bytes() >= size_of::<ServerMsg>());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small xorshift generator keeps the test deterministic without a dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut seeds: Vec<Vec<u8>> = all_client().iter().map(encode).collect();
        seeds.extend(all_server().iter().map(encode));
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                let len = (next() % 64) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                // Mutate a valid message: flips and truncations reach deeper code.
                let mut b = seeds[(next() as usize) % seeds.len()].clone();
                if !b.is_empty() {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                    if next() % 3 == 0 {
                        b.truncate((next() as usize) % b.len());
                    }
                }
                b
            };
            let _ = decode::<ClientMsg>(&bytes);
            let _ = decode::<ServerMsg>(&bytes);
            bytes.clear();
        }
    }
}
