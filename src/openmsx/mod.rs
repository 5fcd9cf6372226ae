//! The openMSX side of msxsync: the XML control connection ([`OpenMsx`]) and the Tcl
//! hooks that watch shared RAM ([`Hooks`]).
//!
//! - [`xml`]: escaping commands and parsing openMSX's output (pure).
//! - [`connection`]: starting or attaching to openMSX, commands and replies, events.
//! - [`hooks`]: `hooks.tcl` and its Rust driver: local changes out, remote changes in.

pub mod connection;
pub mod hooks;
pub mod xml;

pub use connection::{Event, LaunchOptions, OpenMsx, Reply};
pub use hooks::{HookEvent, Hooks};
pub use xml::Output;
