//! Which msxsync this is, for people: the program version, the wire protocol version
//! and the target the binary was built for (`msxsync --version`), and what to tell a
//! player whose msxsync speaks another protocol than the server's.

use crate::protocol::PROTOCOL_VERSION;
use std::sync::OnceLock;

/// The program version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The target triple this binary was built for, e.g. `x86_64-unknown-linux-musl`
/// (set by build.rs).
pub const TARGET: &str = env!("MSXSYNC_TARGET");

/// How msxsync names itself to peers: "msxsync 0.1.0" (the server sends it in
/// `Welcome`, `msxsync list` shows it).
pub fn software() -> String {
    format!("msxsync {VERSION}")
}

/// What `msxsync --version` prints after the program name:
/// "0.1.0 (protocol 2, x86_64-unknown-linux-musl)".
pub fn long() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| format!("{VERSION} (protocol {PROTOCOL_VERSION}, {TARGET})"))
}

/// The server's reason for refusing a player whose `Hello` carries `player_protocol`:
/// which machine needs another msxsync, in words. The server does not know the
/// player's program version (`Hello` carries only the protocol number, and its layout
/// must stay readable by every version), so the player's side adds its own (see
/// [`refused_text`]).
pub fn server_refusal(player_protocol: u32) -> String {
    let server = format!(
        "the server runs {} (protocol {PROTOCOL_VERSION})",
        software()
    );
    if player_protocol < PROTOCOL_VERSION {
        format!(
            "protocol version mismatch: this player's msxsync is older (protocol \
             {player_protocol}), {server}: update msxsync on the player's machine to \
             the server's release, {VERSION}"
        )
    } else {
        format!(
            "protocol version mismatch: this player's msxsync is newer (protocol \
             {player_protocol}), {server}: update msxsync on the server's machine, or \
             play with the server's release, {VERSION}"
        )
    }
}

/// A player's error when the server answers its `Hello` with an error: says which
/// msxsync this player runs, since the server's reason (a version mismatch, most
/// likely) cannot. `reason` must already be printable.
pub fn refused_text(server: &str, reason: &str) -> String {
    format!(
        "server {server} refused this player ({}, protocol {PROTOCOL_VERSION}): {reason}",
        software()
    )
}

/// A player's error when the server welcomes it with another protocol version (a
/// server that lets the player decide): which machine to update, in words.
/// `server_software` must already be printable.
pub fn client_refusal(server: &str, server_software: &str, server_protocol: u32) -> String {
    let both = format!(
        "protocol version mismatch: this player runs {} (protocol {PROTOCOL_VERSION}), \
         server {server} runs {server_software} (protocol {server_protocol})",
        software()
    );
    if server_protocol > PROTOCOL_VERSION {
        format!("{both}: update msxsync on this machine to the server's release")
    } else {
        format!(
            "{both}: update msxsync on the server's machine, or play with the server's \
             release"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_text_names_program_protocol_and_target() {
        let text = long();
        assert!(text.starts_with(VERSION), "{text}");
        assert!(
            text.contains(&format!("protocol {PROTOCOL_VERSION}")),
            "{text}"
        );
        // The target of this very build: cfg! and build.rs must agree.
        assert!(TARGET.starts_with(std::env::consts::ARCH), "{TARGET}");
        assert!(text.ends_with(&format!("{TARGET})")), "{text}");
    }

    #[test]
    fn a_mismatch_says_which_machine_to_update() {
        let older = server_refusal(PROTOCOL_VERSION - 1);
        assert!(older.contains("older"), "{older}");
        assert!(
            older.contains("update msxsync on the player's machine"),
            "{older}"
        );
        assert!(older.contains(&software()), "{older}");
        let newer = server_refusal(PROTOCOL_VERSION + 1);
        assert!(newer.contains("newer"), "{newer}");
        assert!(
            newer.contains("update msxsync on the server's machine"),
            "{newer}"
        );

        let behind = client_refusal("h:1", "msxsync 9.0.0", PROTOCOL_VERSION + 1);
        assert!(behind.contains("server h:1 runs msxsync 9.0.0"), "{behind}");
        assert!(
            behind.contains("update msxsync on this machine"),
            "{behind}"
        );
        let ahead = client_refusal("h:1", "msxsync 0.0.1", PROTOCOL_VERSION - 1);
        assert!(
            ahead.contains("update msxsync on the server's machine"),
            "{ahead}"
        );
        // Both sides' versions are in the player's message.
        let refused = refused_text("h:1", &older);
        assert!(
            refused.contains(&format!("this player ({}", software())),
            "{refused}"
        );
    }

    #[test]
    fn refusals_fit_in_an_error_message() {
        let longest = server_refusal(u32::MAX);
        assert!(longest.len() <= crate::protocol::MAX_TEXT_BYTES);
    }
}
