//! An idle client: a WebSocket connection from a chosen loopback address that says
//! Hello and then does nothing at all, as an attacker holding connections would. Used
//! by `tests/hostile.rs` and the `hostile` section of the benchmarks (included by path).

use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use msxsync::protocol::{self, ClientMsg, ServerMsg, PROTOCOL_VERSION};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// An open idle connection.
pub type Idle = WebSocketStream<smol::Async<std::net::TcpStream>>;

/// Connects to `server` from `source` (any 127.x.y.z address is this machine, so one
/// machine can play many clients), says Hello and reads the answer. `None` when the
/// server refused or closed the connection instead of welcoming it.
pub async fn idle_connection(server: SocketAddr, source: Ipv4Addr) -> Option<Idle> {
    let tcp = smol::unblock(move || -> std::io::Result<std::net::TcpStream> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.bind(&SocketAddr::new(source.into(), 0).into())?;
        sock.connect_timeout(&server.into(), Duration::from_secs(5))?;
        Ok(sock.into())
    })
    .await
    .ok()?;
    let stream = smol::Async::new(tcp).ok()?;
    let (mut ws, _) = async_tungstenite::client_async(format!("ws://{server}/"), stream)
        .await
        .ok()?;
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        name: "idle".into(),
    };
    ws.send(Message::Binary(protocol::encode(&hello).into()))
        .await
        .ok()?;
    match ws.next().await {
        Some(Ok(Message::Binary(b))) => match protocol::decode::<ServerMsg>(&b) {
            Ok(ServerMsg::Welcome { .. }) => Some(ws),
            _ => None,
        },
        _ => None,
    }
}
