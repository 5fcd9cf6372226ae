//! msxsync: keep chosen RAM regions of several openMSX emulators identical over the
//! network, turning single-player MSX games into shared co-op games.
//!
//! `msxsync serve` holds each game's authoritative shared state; `msxsync play` drives
//! one openMSX and syncs it with the server. The modules below are shared by both.

pub mod auth;
pub mod builtin;
pub mod catalog;
pub mod client;
pub mod counter;
pub mod delta;
pub mod dirs;
pub mod hex;
pub mod hops;
pub mod labels;
pub mod openmsx;
pub mod play;
pub mod protocol;
pub mod regions;
pub mod replica;
pub mod rom_cache;
pub mod server;
pub mod sync_when;
pub mod text;
pub mod version;
