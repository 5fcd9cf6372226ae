//! A TCP proxy on 127.0.0.1 that a test can cut: it drops every connection through it
//! and refuses new ones until restored, like a network outage between one player and
//! the server. It can also stall the way back (server to player) alone, so that the
//! server gets a player's changes but the player never hears that it did.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A cuttable proxy to one upstream address.
pub struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    stalled: Arc<Stall>,
}

/// Whether bytes from the server are held back; pipes wait on the condvar.
#[derive(Default)]
struct Stall {
    on: Mutex<bool>,
    changed: Condvar,
}

impl Stall {
    fn set(&self, on: bool) {
        *self.on.lock().unwrap() = on;
        self.changed.notify_all();
    }

    /// Waits while stalled; false when the proxy was cut meanwhile.
    fn pass(&self, cut: &AtomicBool) -> bool {
        let mut on = self.on.lock().unwrap();
        while *on && !cut.load(Ordering::SeqCst) {
            on = self.changed.wait(on).unwrap();
        }
        !cut.load(Ordering::SeqCst)
    }
}

impl Proxy {
    /// Listens on 127.0.0.1 port 0 and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(Stall::default());
        {
            let (cut, open, stop) = (cut.clone(), open.clone(), stop.clone());
            let stalled = stalled.clone();
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    if cut.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let mut list = open.lock().unwrap();
                    list.push(client.try_clone().unwrap());
                    list.push(server.try_clone().unwrap());
                    drop(list);
                    pipe(
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        None,
                    );
                    pipe(server, client, Some((stalled.clone(), cut.clone())));
                }
            });
        }
        Proxy {
            addr,
            cut,
            open,
            stop,
            stalled,
        }
    }

    /// The address players connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection and refuses new ones. What a stall held back is lost.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.stalled.changed.notify_all();
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Holds back everything the server sends to the player, until [`Proxy::restore`]
    /// (which passes it on) or [`Proxy::cut`] (which loses it).
    pub fn stall_downstream(&self) {
        self.stalled.set(true);
    }

    /// Lets connections through again, and ends a stall.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.stalled.set(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so its thread ends.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` until either ends; with a stall, each chunk read waits
/// while the stall is on, and a cut during the wait drops it.
fn pipe(mut from: TcpStream, mut to: TcpStream, stall: Option<(Arc<Stall>, Arc<AtomicBool>)>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some((stall, cut)) = &stall {
                if !stall.pass(cut) {
                    break;
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
