//! The tracker page, on the players' port: every connection starts with an HTTP
//! request head, which the server reads itself (at most [`MAX_HEAD_BYTES`], within the
//! hello timeout, under the same connection caps as players). A WebSocket upgrade goes
//! on to the player handshake with the bytes already read played back first
//! ([`Replayed`]); anything else is a browser:
//!
//! - `GET /`: the page (`tracker.html`, compiled in);
//! - `GET /state.json`: what the page shows, once;
//! - `GET /events`: the same as server-sent events: the state when the stream opens,
//!   then again after every change, at most every [`PUSH_INTERVAL`] and always the
//!   latest (a burst of changes is one push), with a comment every [`KEEPALIVE`] so a
//!   closed page is noticed. A viewer holds no queue: one message at a time is in
//!   flight, and one that cannot take it within [`WRITE_TIMEOUT`] is closed. At most
//!   [`MAX_VIEWERS`] streams are open at once (each also counts against the server's
//!   connection caps); one more is told 503 and its browser tries again later.
//!
//! Every other path is 404, every other method 405. Nothing here reads anything from a
//! browser after its request head, so nothing on the page can change a game.

use super::tracker::{self, PageState};
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Largest request head (request line and headers) the server reads. Browsers send
/// under 1 KiB; a WebSocket handshake under 512 bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Shortest time between two pushes to one viewer: at most 10 a second, each with the
/// latest state, however fast the games change.
pub const PUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A viewer that was sent nothing for this long gets a comment line, so that a page
/// that was closed is noticed (its write fails) and proxies keep the stream open.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// How long a write to a viewer may take before the viewer is closed as too slow.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most `/events` streams open at once. A LAN party has a screen or two and some
/// phones; each stream costs one page state in flight and its socket's buffer.
pub const MAX_VIEWERS: usize = 32;

/// The state is made again at most this often, however many viewers ask: viewers that
/// ask in between get the one just made (and are sent the newer one at their next
/// push).
const BUILD_INTERVAL: Duration = Duration::from_millis(50);

/// The page, one file with its style and script.
pub const PAGE: &str = include_str!("tracker.html");

/// What a request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A WebSocket handshake (`Upgrade: websocket`): a player, `msxsync list`.
    WebSocket,
    /// `GET` of a path (without its query).
    Get(String),
    /// Another method, which nothing here answers.
    Other(String),
}

/// Where the request head in `buf` ends (just after its empty line), if it is whole.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads a request head (up to and including its empty line). Lowercase reason when
/// it is not one.
pub fn parse_head(head: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not text")?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not METHOD TARGET VERSION".into());
    };
    if !version.starts_with("HTTP/1.") {
        return Err("only HTTP/1.x is spoken here".into());
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("the request method is not a word in capitals".into());
    }
    if !target.starts_with('/') {
        return Err("the request target is not a path".into());
    }
    let mut upgrade = false;
    for header in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = header.split_once(':') else {
            return Err("a header line has no colon".into());
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err("a header name is empty or has spaces".into());
        }
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= value
                .split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"));
        }
    }
    if upgrade {
        return Ok(Request::WebSocket);
    }
    if method != "GET" {
        return Ok(Request::Other(method.to_string()));
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Request::Get(path.to_string()))
}

/// Why no request head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// Longer than [`MAX_HEAD_BYTES`].
    TooLarge,
    /// The connection ended or failed first.
    Closed(String),
}

/// Reads from `tcp` until a whole request head is in; returns every byte read (the
/// head and whatever followed it in the same reads) and where the head ends.
pub async fn read_head(tcp: &mut TcpStream) -> Result<(Vec<u8>, usize), HeadError> {
    use smol::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| HeadError::Closed(format!("read error: {e}")))?;
        if n == 0 {
            return Err(HeadError::Closed(
                "closed before the end of its request".into(),
            ));
        }
        // The end may straddle two reads.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[from..]) {
            if from + end <= MAX_HEAD_BYTES {
                return Ok((buf, from + end));
            }
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

/// A connection whose first bytes were already read: they are read again first, then
/// the socket. The WebSocket handshake reads the request head from it as if nobody
/// had.
pub struct Replayed {
    read: Vec<u8>,
    at: usize,
    tcp: TcpStream,
}

impl Replayed {
    /// `tcp`, from which `read` was read.
    pub fn new(read: Vec<u8>, tcp: TcpStream) -> Replayed {
        Replayed { read, at: 0, tcp }
    }
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = &mut *self;
        if me.at < me.read.len() {
            let n = buf.len().min(me.read.len() - me.at);
            buf[..n].copy_from_slice(&me.read[me.at..me.at + n]);
            me.at += n;
            if me.at == me.read.len() {
                // Played back: the connection keeps no copy.
                me.read = Vec::new();
                me.at = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut me.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_close(cx)
    }
}

/// What viewers share: a number that every change to what the page shows moves on,
/// viewers waiting for it to move, and the state last made.
pub struct Live {
    version: AtomicU64,
    moved: event_listener::Event,
    made: Mutex<Option<Made>>,
    /// Open `/events` streams.
    viewers: AtomicUsize,
}

/// One open `/events` stream; its place is free again when it is dropped.
struct Seat<'a>(&'a AtomicUsize);

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The page's data as made at `version`.
struct Made {
    version: u64,
    at: Instant,
    json: Arc<str>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            version: AtomicU64::new(0),
            moved: event_listener::Event::new(),
            made: Mutex::new(None),
            viewers: AtomicUsize::new(0),
        }
    }
}

impl Live {
    /// A place for one more `/events` stream, unless [`MAX_VIEWERS`] are open.
    fn seat(&self) -> Option<Seat<'_>> {
        self.viewers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_VIEWERS).then_some(n + 1)
            })
            .ok()
            .map(|_| Seat(&self.viewers))
    }

    /// Something the page shows changed: every waiting viewer wakes.
    pub fn changed(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        self.moved.notify(usize::MAX);
    }

    /// Waits until something changed after `seen`.
    async fn past(&self, seen: u64) {
        loop {
            if self.version.load(Ordering::SeqCst) != seen {
                return;
            }
            let listener = self.moved.listen();
            // A change between the check and the listening would otherwise be missed.
            if self.version.load(Ordering::SeqCst) != seen {
                return;
            }
            listener.await;
        }
    }

    /// The page's data, as JSON, and the version it shows: made by `make` unless the
    /// last one is still current or was made less than [`BUILD_INTERVAL`] ago.
    fn latest(&self, make: &(dyn Fn() -> PageState + Sync)) -> (u64, Arc<str>) {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        let version = self.version.load(Ordering::SeqCst);
        if let Some(m) = made.as_ref() {
            if m.version == version || m.at.elapsed() < BUILD_INTERVAL {
                return (m.version, m.json.clone());
            }
        }
        // Changes while it is made move the version on: they go out with the next push.
        let json: Arc<str> = tracker::page_json(&make()).into();
        *made = Some(Made {
            version,
            at: Instant::now(),
            json: json.clone(),
        });
        (version, json)
    }
}

/// What is sent: the page's data and the server's clock (milliseconds since 1970), by
/// which the page tells how long ago things happened whatever its own clock says.
pub fn sent(now: u64, json: &str) -> String {
    format!("{{\"now\":{now},\"state\":{json}}}")
}

/// The tracker as a connection task sees it: `None` when the server has it off.
pub struct Tracker<'a> {
    /// The viewers' shared part.
    pub live: &'a Live,
    /// Makes the page's data now.
    pub make: &'a (dyn Fn() -> PageState + Sync),
}

/// Answers a browser's request and returns what to log about it. A viewer of
/// `/events` stays until it goes, is too slow, or the server closes it.
pub async fn answer(
    tcp: &mut TcpStream,
    request: &Request,
    tracker: Option<Tracker<'_>>,
) -> String {
    let result = match (request, &tracker) {
        (Request::Get(path), Some(t)) if path == "/" || path == "/index.html" => {
            respond(tcp, "200 OK", "text/html; charset=utf-8", PAGE.as_bytes()).await
        }
        (Request::Get(path), Some(t)) if path == "/state.json" => {
            let (_, json) = t.live.latest(t.make);
            let body = sent(super::now_ms(), &json);
            respond(tcp, "200 OK", "application/json", body.as_bytes()).await
        }
        (Request::Get(path), Some(t)) if path == "/events" => {
            let Some(_seat) = t.live.seat() else {
                let _ = respond(
                    tcp,
                    "503 Service Unavailable\r\nRetry-After: 10",
                    "text/plain",
                    b"too many viewers, try again later\n",
                )
                .await;
                return format!("tracker viewer refused: {MAX_VIEWERS} are open");
            };
            return match stream(tcp, t).await {
                Ok(()) => "tracker viewer gone".into(),
                Err(e) => format!("tracker viewer closed: {e}"),
            };
        }
        (Request::Get(_), _) => respond(tcp, "404 Not Found", "text/plain", b"not found\n").await,
        (Request::Other(_), _) => {
            respond(
                tcp,
                "405 Method Not Allowed\r\nAllow: GET",
                "text/plain",
                b"only GET is answered here\n",
            )
            .await
        }
        (Request::WebSocket, _) => Ok(()),
    };
    let what = match request {
        Request::Get(path) => format!("GET {}", crate::text::printable(path)),
        Request::Other(m) => format!("{} refused", crate::text::printable(m)),
        Request::WebSocket => "websocket".into(),
    };
    match result {
        Ok(()) => what,
        Err(e) => format!("{what}: {e}"),
    }
}

/// Sends a whole response (`status` may carry extra header lines) and closes.
pub async fn respond(
    tcp: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\
         Connection: close\r\n\r\n",
        body.len(),
        HEADERS
    );
    write(tcp, head.as_bytes()).await?;
    write(tcp, body).await?;
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// Headers of every answer: nothing is cached, nothing is loaded from elsewhere (the
/// page has its style and script inline and talks only to this server), no other
/// site may frame it.
const HEADERS: &str = "Cache-Control: no-store\r\n\
     X-Content-Type-Options: nosniff\r\n\
     Referrer-Policy: no-referrer\r\n\
     Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'\r\n";

/// Writes all of `bytes` within [`WRITE_TIMEOUT`].
async fn write(tcp: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    super::with_timeout(WRITE_TIMEOUT, tcp.write_all(bytes))
        .await
        .unwrap_or_else(|| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "too slow: could not write for {} s",
                    WRITE_TIMEOUT.as_secs()
                ),
            ))
        })
}

/// The server-sent event stream of `/events`, until a write fails.
async fn stream(tcp: &mut TcpStream, t: &Tracker<'_>) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{HEADERS}Connection: close\
         \r\n\r\nretry: 2000\n\n"
    );
    write(tcp, head.as_bytes()).await?;
    let mut seen: Option<u64> = None;
    loop {
        let push = match seen {
            None => true,
            Some(v) => {
                smol::future::or(
                    async {
                        t.live.past(v).await;
                        true
                    },
                    async {
                        smol::Timer::after(KEEPALIVE).await;
                        false
                    },
                )
                .await
            }
        };
        if !push {
            write(tcp, b": still here\n\n").await?;
            continue;
        }
        let (version, json) = t.live.latest(t.make);
        seen = Some(version);
        let event = format!("data: {}\n\n", sent(super::now_ms(), &json));
        write(tcp, event.as_bytes()).await?;
        smol::Timer::after(PUSH_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, String> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn requests_are_told_apart() {
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Request::Get("/".into()))
        );
        assert_eq!(
            parse("GET /state.json?x=1 HTTP/1.0\r\n\r\n"),
            Ok(Request::Get("/state.json".into()))
        );
        // What tungstenite's client sends, in any case and in a list.
        let ws = "GET / HTTP/1.1\r\nHost: 127.0.0.1:4567\r\nConnection: Upgrade\r\n\
                  Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(parse(ws), Ok(Request::WebSocket));
        assert_eq!(
            parse("GET /x HTTP/1.1\r\nupgrade: h2c, WebSocket\r\n\r\n"),
            Ok(Request::WebSocket)
        );
        assert_eq!(
            parse("POST /events HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
            Ok(Request::Other("POST".into()))
        );
    }

    #[test]
    fn bad_heads_are_refused() {
        for bad in [
            "GET /\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse_head(b"GET /\xff HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn the_head_ends_at_its_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn what_is_sent_carries_the_server_clock() {
        let v: serde_json::Value = serde_json::from_str(&sent(42, "{\"games\":[]}")).unwrap();
        assert_eq!(v, serde_json::json!({"now": 42, "state": {"games": []}}));
    }

    #[test]
    fn the_page_is_small_and_self_contained() {
        assert!(PAGE.len() < 16 * 1024, "{} bytes", PAGE.len());
        for outside in ["http://", "https://", "//cdn", "<link", "src="] {
            assert!(!PAGE.contains(outside), "the page loads {outside}");
        }
        // Text from the network is only ever put in as text.
        assert!(!PAGE.contains("innerHTML"));
        assert!(PAGE.contains("new EventSource(\"events\")"));
    }
}
