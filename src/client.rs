//! The library-level client of `msxsync serve`, used by `list`, `play`, tests, benchmarks
//! and bots.
//!
//! [`connect`] opens the WebSocket and does the Hello/Welcome exchange; [`Client`] then
//! offers the request/answer calls (`list_games`, `join`, `fetch_rom`). To send and
//! receive at the same time (what `play` does), [`Client::split`] it into a
//! [`ClientSender`] and a [`ClientReceiver`]. Messages that arrive while a request waits
//! for its answer (updates, players joining) are kept and handed out by the receiver
//! first, so nothing is lost.
//!
//! A server may be broken or hostile: every request has a time limit
//! ([`REPLY_TIMEOUT`], and for the ROM a limit that grows with its size, see
//! [`MIN_ROM_RATE`]), and what is kept while waiting is limited in bytes
//! ([`MAX_PENDING_BYTES`]).

use crate::auth::{self, Password, PasswordNeeded};
use crate::counter::CounterOp;
use crate::delta::Change;
use crate::protocol::{
    self, BackupInfo, ClientMsg, GameInfo, Joined, ServerMsg, DEFAULT_PORT, MAX_ROM_BYTES,
    PROTOCOL_VERSION,
};
use anyhow::{anyhow, bail, Result};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender};
use futures_util::StreamExt;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How long connecting (TCP, WebSocket handshake, Hello/Welcome) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to answer a request (`list_games`, `join`), and how
/// long a ROM download may go without a single byte arriving. A server answers these
/// at once; ten seconds cover a busy server on a slow link.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The slowest average rate a ROM download may have, in bytes per second, on top of
/// [`REPLY_TIMEOUT`]: an 8 MiB ROM then has 522 seconds, enough for a 128 kbit/s link.
/// A dead connection is noticed sooner, by no byte arriving for [`REPLY_TIMEOUT`];
/// this limit stops a server that sends one byte now and then from holding a player
/// for ever.
pub const MIN_ROM_RATE: u64 = 16 * 1024;
/// Most memory (see [`ServerMsg::memory_bytes`]) that messages arriving while a request
/// waits for its answer may take. Normally a few updates arrive meanwhile; a server
/// that sends more is broken or hostile, and the request fails.
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// The one terminal filter, which lived here first; see [`crate::text::printable`].
pub use crate::text::printable;

/// Splits `HOST`, `HOST:PORT`, `[IPV6]`, `[IPV6]:PORT` or a bare IPv6 address into host
/// and port (default [`DEFAULT_PORT`]). The host comes back without brackets.
pub fn parse_server_addr(text: &str) -> Result<(String, u16)> {
    let text = text.trim();
    let bad = |why: &str| anyhow!("bad server address {text:?}: {why}");
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("'[' without a closing ']'"))?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| bad("the part in brackets is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("expected ':PORT' after ']'"))?,
            ),
        };
        (host, port)
    } else {
        match text.matches(':').count() {
            0 => (text, None),
            1 => {
                let (h, p) = text.split_once(':').unwrap_or((text, ""));
                (h, Some(p))
            }
            _ => {
                text.parse::<Ipv6Addr>().map_err(|_| {
                    bad("too many ':'; write an IPv6 address with a port as [ADDRESS]:PORT")
                })?;
                (text, None)
            }
        }
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(bad(
            "the host may only have letters, digits, '.', '-' and '_'",
        ));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad("the port must be a number from 1 to 65535")),
            Ok(n) => n,
        },
    };
    Ok((host.to_string(), port))
}

/// The WebSocket URL for a server given as on the command line (see [`parse_server_addr`];
/// `ws://` URLs are taken as they are).
pub fn server_url(text: &str) -> Result<String> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("ws://") {
        return Ok(text.to_string());
    }
    if lower.starts_with("wss://") {
        bail!("bad server address {text:?}: wss:// (TLS) is not supported; use ws://");
    }
    if lower.contains("://") {
        bail!("bad server address {text:?}: only ws:// URLs are supported");
    }
    let (host, port) = parse_server_addr(text)?;
    Ok(if host.contains(':') {
        format!("ws://[{host}]:{port}/")
    } else {
        format!("ws://{host}:{port}/")
    })
}

/// Connects to a server and says Hello as `name`. Fails with the server's reason when
/// it refuses (for example a protocol version mismatch).
pub async fn connect(server: &str, name: &str) -> Result<Client> {
    connect_with_password(server, name, None).await
}

/// [`connect`], answering the server's password challenge with `password`. A server
/// that asks for a password when none is given fails with [`PasswordNeeded`].
pub async fn connect_with_password(
    server: &str,
    name: &str,
    password: Option<&Password>,
) -> Result<Client> {
    let url = server_url(server)?;
    let shown = server.trim().to_string();
    let attempt = async {
        let config = WebSocketConfig::default()
            .max_message_size(Some(protocol::MAX_SERVER_MESSAGE_BYTES))
            .max_frame_size(Some(protocol::MAX_SERVER_MESSAGE_BYTES));
        let request = url
            .as_str()
            .into_client_request()
            .map_err(|e| connect_error(&shown, &e))?;
        let uri = request.uri();
        let host = uri.host().unwrap_or_default();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| connect_error(&shown, &WsError::Io(e)))?;
        // Changes are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let progress = Arc::new(Progress::new());
        let stream = Counted {
            tcp,
            progress: progress.clone(),
        };
        let (ws, _) = async_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| connect_error(&shown, &e))?;
        let (sink, source) = ws.split();
        let mut client = Client {
            sender: ClientSender {
                sink,
                server: shown.clone(),
            },
            receiver: ClientReceiver {
                source,
                pending: VecDeque::new(),
                pending_bytes: 0,
                unpacked: VecDeque::new(),
                server: shown.clone(),
                progress,
            },
            software: String::new(),
            rom_size: None,
        };
        client
            .sender
            .send(&ClientMsg::Hello {
                version: PROTOCOL_VERSION,
                name: name.to_string(),
            })
            .await?;
        let mut answer = client.receiver.recv_raw().await?;
        if let ServerMsg::Challenge { nonce } = answer {
            let Some(password) = password else {
                return Err(anyhow::Error::new(PasswordNeeded {
                    server: shown.clone(),
                }));
            };
            let mine = auth::nonce()?;
            client
                .sender
                .send(&ClientMsg::Auth {
                    nonce: mine,
                    proof: password.proof(&nonce, &mine),
                })
                .await?;
            answer = client.receiver.recv_raw().await?;
        }
        match answer {
            ServerMsg::Welcome { version, software } => {
                // Only ever shown to people (`list`, `play`), so kept printable.
                let software = printable(&software);
                if version != PROTOCOL_VERSION {
                    bail!(crate::version::client_refusal(&shown, &software, version));
                }
                client.software = software;
            }
            ServerMsg::Error { reason } => {
                bail!(crate::version::refused_text(&shown, &printable(&reason)))
            }
            other => bail!(
                "server {shown} answered hello with {} instead of welcome",
                server_msg_name(&other)
            ),
        }
        Ok(client)
    };
    smol::future::or(attempt, async {
        smol::Timer::after(CONNECT_TIMEOUT).await;
        bail!(
            "cannot connect to server {shown}: no answer within {} seconds",
            CONNECT_TIMEOUT.as_secs()
        )
    })
    .await
}

/// Why connecting to `shown` failed, said once, with what to do when nothing listens.
fn connect_error(shown: &str, e: &WsError) -> anyhow::Error {
    match e {
        WsError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => anyhow!(
            "cannot connect to server {shown}: connection refused; is `msxsync serve` \
             running there? use --server HOST[:PORT] to pick another server"
        ),
        _ => anyhow!("cannot connect to server {shown}: {}", ws_text(e)),
    }
}

/// A WebSocket error in words. tungstenite's errors print their cause and also return
/// it as their source, so as an anyhow cause the cause was said twice.
fn ws_text(e: &WsError) -> String {
    match e {
        WsError::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// When bytes last came in on a connection, for time limits that a slow but working
/// link does not hit.
struct Progress {
    start: Instant,
    /// Milliseconds after `start` of the last read that returned bytes.
    last_read_ms: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            start: Instant::now(),
            last_read_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_read_ms.store(ms, Ordering::Relaxed);
    }

    fn last_read(&self) -> Instant {
        self.start + Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed))
    }
}

/// The TCP connection under the WebSocket, noting in [`Progress`] when bytes arrive.
struct Counted {
    tcp: TcpStream,
    progress: Arc<Progress>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = read {
            if n > 0 {
                this.progress.touch();
            }
        }
        read
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_close(cx)
    }
}

/// How long a request may wait for its answer.
#[derive(Debug, Clone, Copy)]
struct Limit {
    /// In all.
    total: Duration,
    /// Without any byte arriving.
    idle: Duration,
}

impl Limit {
    /// An answer that comes at once ([`REPLY_TIMEOUT`]).
    const REPLY: Limit = Limit {
        total: REPLY_TIMEOUT,
        idle: REPLY_TIMEOUT,
    };

    /// A ROM of `size` bytes: no pause longer than [`REPLY_TIMEOUT`], and at least
    /// [`MIN_ROM_RATE`] on average.
    fn rom(size: usize) -> Limit {
        let size = size.min(MAX_ROM_BYTES) as u64;
        Limit {
            total: REPLY_TIMEOUT + Duration::from_secs(size.div_ceil(MIN_ROM_RATE)),
            idle: REPLY_TIMEOUT,
        }
    }
}

/// A connection to a server after Hello/Welcome.
pub struct Client {
    sender: ClientSender,
    receiver: ClientReceiver,
    software: String,
    /// The size of the joined game's ROM, which sets the download's time limit.
    rom_size: Option<usize>,
}

impl Client {
    /// The server as given to [`connect`].
    pub fn server(&self) -> &str {
        &self.sender.server
    }

    /// The server's program version, e.g. "msxsync 0.1.0".
    pub fn software(&self) -> &str {
        &self.software
    }

    /// Asks for the server's games (sorted by name, with their players).
    pub async fn list_games(&mut self) -> Result<Vec<GameInfo>> {
        self.sender.send(&ClientMsg::ListGames).await?;
        self.receiver
            .wait_for("the list of games", Limit::REPLY, |m| match m {
                ServerMsg::Games { games } => Ok(games),
                other => Err(other),
            })
            .await
    }

    /// Joins a game's default room. An unknown game fails with the server's reason,
    /// which lists the games it has.
    pub async fn join(&mut self, game: &str) -> Result<Joined> {
        self.join_session(game, 0).await
    }

    /// Joins a game's default room as `session` (see [`Client::join_room`]).
    pub async fn join_session(&mut self, game: &str, session: u64) -> Result<Joined> {
        self.join_room(game, game, session).await
    }

    /// Joins room `room` of a game (the game's name for its default room) as `session`
    /// (see [`ClientMsg::Join`]): after a reconnect with the same session,
    /// [`Joined::last_batch`] says which batches the server already has. A name taken
    /// in the room fails with the server's reason.
    pub async fn join_room(&mut self, game: &str, room: &str, session: u64) -> Result<Joined> {
        self.sender
            .send(&ClientMsg::Join {
                game: game.to_string(),
                room: room.to_string(),
                session,
            })
            .await?;
        let joined = self
            .receiver
            .wait_for("the answer to joining", Limit::REPLY, |m| match m {
                ServerMsg::Joined(j) => Ok(j),
                other => Err(other),
            })
            .await?;
        self.rom_size = Some(joined.game.rom_size as usize);
        Ok(*joined)
    }

    /// Downloads the joined game's ROM, within a time limit that grows with the size
    /// the server announced (see [`MIN_ROM_RATE`]).
    pub async fn fetch_rom(&mut self) -> Result<Vec<u8>> {
        self.sender.send(&ClientMsg::FetchRom).await?;
        let limit = Limit::rom(self.rom_size.unwrap_or(MAX_ROM_BYTES));
        self.receiver
            .wait_for("the rom", limit, |m| match m {
                ServerMsg::Rom { data } => Ok(data),
                other => Err(other),
            })
            .await
    }

    /// The saved states the server keeps of room `room` of `game` (the game's name for
    /// its default room), newest first (the host's undo).
    pub async fn list_backups(&mut self, game: &str, room: &str) -> Result<Vec<BackupInfo>> {
        self.sender
            .send(&ClientMsg::ListBackups {
                game: game.to_string(),
                room: room.to_string(),
            })
            .await?;
        self.receiver
            .wait_for("the list of saved states", Limit::REPLY, |m| match m {
                ServerMsg::Backups { backups, .. } => Ok(backups),
                other => Err(other),
            })
            .await
    }

    /// Puts saved state `backup` of room `room` of `game` back while its players play;
    /// returns the sequence number of the update that carried it to them.
    pub async fn restore(&mut self, game: &str, room: &str, backup: u64) -> Result<u64> {
        self.sender
            .send(&ClientMsg::Restore {
                game: game.to_string(),
                room: room.to_string(),
                backup,
            })
            .await?;
        self.receiver
            .wait_for("the answer to restoring", Limit::REPLY, |m| match m {
                ServerMsg::Restored { seq, .. } => Ok(seq),
                other => Err(other),
            })
            .await
    }

    /// Sends a batch of changes (see [`ClientSender::send_changes`]).
    pub async fn send_changes(&mut self, batch: u32, changes: Vec<Change>) -> Result<()> {
        self.sender.send_changes(batch, changes).await
    }

    /// Sends a batch of counter operations (see [`ClientSender::send_counts`]).
    pub async fn send_counts(&mut self, batch: u32, ops: Vec<CounterOp>) -> Result<()> {
        self.sender.send_counts(batch, ops).await
    }

    /// The next message from the server (see [`ClientReceiver::recv`]).
    pub async fn recv(&mut self) -> Result<ServerMsg> {
        self.receiver.recv().await
    }

    /// Splits the connection so that sending and receiving can run concurrently.
    pub fn split(self) -> (ClientSender, ClientReceiver) {
        (self.sender, self.receiver)
    }

    /// Closes the connection politely (errors are ignored: we are leaving anyway).
    pub async fn close(mut self) {
        self.sender.close().await;
    }
}

/// The sending half of a connection.
pub struct ClientSender {
    sink: WebSocketSender<Counted>,
    server: String,
}

impl ClientSender {
    /// Sends changes this player made, as batch `batch`. The server echoes them back in
    /// an [`ServerMsg::Update`] carrying this player's id and `batch`: that is the
    /// acknowledgement.
    pub async fn send_changes(&mut self, batch: u32, changes: Vec<Change>) -> Result<()> {
        self.send(&ClientMsg::Changes { batch, changes }).await
    }

    /// Sends a batch of counter operations, answered like changes (by a `Counted`).
    pub async fn send_counts(&mut self, batch: u32, ops: Vec<CounterOp>) -> Result<()> {
        self.send(&ClientMsg::Counts { batch, ops }).await
    }

    /// Sends any protocol message.
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<()> {
        let bytes = protocol::encode(msg);
        self.send_raw(Message::Binary(bytes.into())).await
    }

    /// Sends a raw WebSocket message; for tests of the server's input checks.
    pub async fn send_raw(&mut self, msg: Message) -> Result<()> {
        self.sink
            .send(msg)
            .await
            .map_err(|e| anyhow!("cannot send to server {}: {}", self.server, ws_text(&e)))
    }

    /// Closes the connection (errors ignored).
    pub async fn close(&mut self) {
        let _ = self.sink.close(None).await;
    }
}

/// The receiving half of a connection.
pub struct ClientReceiver {
    source: WebSocketReceiver<Counted>,
    /// Messages that arrived while a request waited for its answer, with their
    /// [`ServerMsg::memory_bytes`].
    pending: VecDeque<(ServerMsg, usize)>,
    /// The sum of the sizes in `pending`, at most [`MAX_PENDING_BYTES`].
    pending_bytes: usize,
    /// The rest of a `ServerMsg::Several` being handed out, still encoded: decoded one
    /// at a time, a packed message never takes more memory than its bytes.
    unpacked: VecDeque<Vec<u8>>,
    server: String,
    progress: Arc<Progress>,
}

impl ClientReceiver {
    /// The next message from the server. `ServerMsg::Error` comes back as an error
    /// carrying the server's reason; so does the connection closing.
    pub async fn recv(&mut self) -> Result<ServerMsg> {
        if let Some((msg, bytes)) = self.pending.pop_front() {
            self.pending_bytes -= bytes;
            return Ok(msg);
        }
        match self.recv_raw().await? {
            ServerMsg::Error { reason } => {
                Err(anyhow!("server {}: {}", self.server, printable(&reason)))
            }
            msg => Ok(msg),
        }
    }

    /// The next message: from a `Several` being unpacked, else off the socket.
    async fn recv_raw(&mut self) -> Result<ServerMsg> {
        if self.unpacked.is_empty() {
            match self.recv_socket().await? {
                ServerMsg::Several(packed) if packed.is_empty() => {
                    bail!("server {} sent an empty packed message", self.server)
                }
                ServerMsg::Several(packed) => self.unpacked = packed.into(),
                msg => return Ok(msg),
            }
        }
        let bytes = self.unpacked.pop_front().unwrap_or_default();
        match protocol::decode::<ServerMsg>(&bytes) {
            Ok(ServerMsg::Several(_)) => {
                bail!("server {} sent nested packed messages", self.server)
            }
            Ok(msg) => Ok(msg),
            Err(e) => bail!("server {} sent a bad message: {e}", self.server),
        }
    }

    /// Reads the next message off the socket, skipping pings.
    async fn recv_socket(&mut self) -> Result<ServerMsg> {
        loop {
            let msg = match self.source.next().await {
                None => bail!("server {} closed the connection", self.server),
                Some(Err(e)) => {
                    bail!(
                        "connection to server {} failed: {}",
                        self.server,
                        ws_text(&e)
                    )
                }
                Some(Ok(m)) => m,
            };
            match msg {
                Message::Binary(bytes) => {
                    return protocol::decode::<ServerMsg>(&bytes)
                        .map_err(|e| anyhow!("server {} sent a bad message: {e}", self.server))
                }
                Message::Close(_) => bail!("server {} closed the connection", self.server),
                Message::Text(_) => bail!(
                    "server {} sent a text message; is it an msxsync server?",
                    self.server
                ),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    /// Reads until `pick` accepts a message, within `limit`; keeps the others for
    /// [`Self::recv`], up to [`MAX_PENDING_BYTES`].
    async fn wait_for<T>(
        &mut self,
        what: &str,
        limit: Limit,
        mut pick: impl FnMut(ServerMsg) -> std::result::Result<T, ServerMsg>,
    ) -> Result<T> {
        let server = self.server.clone();
        let progress = self.progress.clone();
        let answer = async {
            loop {
                match self.recv_raw().await? {
                    ServerMsg::Error { reason } => bail!("server {}: {reason}", self.server),
                    msg => match pick(msg) {
                        Ok(t) => return Ok(t),
                        Err(other) => {
                            let bytes = other.memory_bytes();
                            if self.pending_bytes + bytes > MAX_PENDING_BYTES {
                                bail!(
                                    "server {} sent more than {} MiB of other messages while \
                                     we waited for {what}",
                                    self.server,
                                    MAX_PENDING_BYTES >> 20
                                );
                            }
                            self.pending_bytes += bytes;
                            self.pending.push_back((other, bytes));
                        }
                    },
                }
            }
        };
        smol::future::or(answer, async {
            Err(overdue(&progress, limit).await).map_err(|why| {
                anyhow!("server {server} did not send {what}: {why}; is it overloaded or not an msxsync server?")
            })
        })
        .await
    }
}

/// Returns, as the reason, when a request waiting since now has run out of `limit`.
async fn overdue(progress: &Progress, limit: Limit) -> String {
    let start = Instant::now();
    let deadline = start + limit.total;
    loop {
        let quiet_until = progress.last_read().max(start) + limit.idle;
        let now = Instant::now();
        if now >= deadline {
            return format!("no answer within {} seconds", limit.total.as_secs());
        }
        if now >= quiet_until {
            return format!("nothing arrived for {} seconds", limit.idle.as_secs());
        }
        smol::Timer::at(quiet_until.min(deadline)).await;
    }
}

/// Short lowercase name of a server message, for error texts.
pub fn server_msg_name(msg: &ServerMsg) -> &'static str {
    match msg {
        ServerMsg::Welcome { .. } => "welcome",
        ServerMsg::Games { .. } => "games",
        ServerMsg::Joined(_) => "joined",
        ServerMsg::Rom { .. } => "rom",
        ServerMsg::Update { .. } => "update",
        ServerMsg::PlayerJoined(_) => "playerjoined",
        ServerMsg::PlayerLeft(_) => "playerleft",
        ServerMsg::Several(_) => "several",
        ServerMsg::Counted { .. } => "counted",
        ServerMsg::Error { .. } => "error",
        ServerMsg::Challenge { .. } => "challenge",
        ServerMsg::Backups { .. } => "backups",
        ServerMsg::Restored { .. } => "restored",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_parse() {
        let ok = |t: &str| parse_server_addr(t).unwrap();
        assert_eq!(ok("example.org"), ("example.org".into(), 4567));
        assert_eq!(ok("example.org:80"), ("example.org".into(), 80));
        assert_eq!(ok(" 10.0.0.1:9000 "), ("10.0.0.1".into(), 9000));
        assert_eq!(ok("[::1]:5000"), ("::1".into(), 5000));
        assert_eq!(ok("[fe80::1]"), ("fe80::1".into(), 4567));
        assert_eq!(ok("::1"), ("::1".into(), 4567));
        for bad in [
            "",
            ":80",
            "host:",
            "host:0",
            "host:70000",
            "host:port",
            "[::1",
            "[nothex]:80",
            "[::1]80",
            "a:b:c",
            "bad host",
            "x/y",
        ] {
            let err = parse_server_addr(bad);
            assert!(err.is_err(), "{bad:?} was accepted: {err:?}");
            assert!(err.unwrap_err().to_string().contains("bad server address"));
        }
    }

    #[test]
    fn server_urls() {
        assert_eq!(server_url("h").unwrap(), "ws://h:4567/");
        assert_eq!(server_url("[::1]:9").unwrap(), "ws://[::1]:9/");
        assert_eq!(server_url("ws://h:1/x").unwrap(), "ws://h:1/x");
        assert!(server_url("wss://h")
            .unwrap_err()
            .to_string()
            .contains("TLS"));
        assert!(server_url("http://h").is_err());
    }
}
