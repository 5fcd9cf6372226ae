//! A fake msxsync server, for tests of what `play` and `list` do when a server is
//! broken or hostile: a WebSocket listener on 127.0.0.1 port 0 whose every connection
//! runs a script the test gives, on a thread of its own.

use async_tungstenite::tungstenite::{self, Message, WebSocket};
use msxsync::catalog::Game;
use msxsync::protocol::{self, ClientMsg, Joined, ServerMsg, PROTOCOL_VERSION};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A listening fake server; stops accepting when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// One connection to the fake server.
pub struct FakeConn {
    ws: WebSocket<TcpStream>,
    /// Which connection this is, counted from 0.
    pub number: usize,
}

impl FakeServer {
    /// Listens and runs `script` for every connection.
    pub fn start(script: impl Fn(FakeConn) + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake server binds");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(script);
        {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                for tcp in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(tcp) = tcp else { continue };
                    let number = accepted.fetch_add(1, Ordering::SeqCst);
                    let script = script.clone();
                    std::thread::spawn(move || {
                        if let Ok(ws) = tungstenite::accept(tcp) {
                            script(FakeConn { ws, number });
                        }
                    });
                }
            });
        }
        FakeServer {
            addr,
            accepted,
            stop,
        }
    }

    /// The address to give as `--server`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// How many connections it accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread up so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

impl FakeConn {
    /// The next message from the client; `None` once it closed or sent garbage.
    pub fn recv(&mut self) -> Option<ClientMsg> {
        loop {
            match self.ws.read().ok()? {
                Message::Binary(bytes) => return protocol::decode(&bytes).ok(),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Sends a message; false once the client is gone.
    pub fn send(&mut self, msg: &ServerMsg) -> bool {
        self.send_bytes(protocol::encode(msg))
    }

    /// Sends raw bytes as one binary message; false once the client is gone.
    pub fn send_bytes(&mut self, bytes: Vec<u8>) -> bool {
        self.ws.send(Message::Binary(bytes.into())).is_ok()
    }

    /// Takes the client's Hello and answers with a Welcome carrying `software`.
    /// Returns the name the client gave.
    pub fn welcome(&mut self, software: &str) -> Option<String> {
        let Some(ClientMsg::Hello { name, .. }) = self.recv() else {
            return None;
        };
        self.send(&ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            software: software.into(),
        })
        .then_some(name)
    }

    /// Reads and drops whatever the client sends until it closes: a server that
    /// listens and never answers.
    pub fn ignore_until_closed(&mut self) {
        while self.ws.read().is_ok() {}
    }
}

/// What a real server would answer when `game` is joined as player `player`, with
/// every shared byte zero.
pub fn joined(game: &Game, player: u32) -> Joined {
    Joined {
        player,
        game: game.info(vec![]),
        room: protocol::RoomInfo {
            name: game.name.clone(),
            players: vec![protocol::PlayerInfo {
                id: player,
                name: "me".into(),
            }],
        },
        regions: game.regions.clone(),
        state: game.regions.iter().map(|r| vec![0; r.len()]).collect(),
        seq: 0,
        in_progress: false,
        last_batch: None,
        labels: game.labels.clone(),
    }
}
