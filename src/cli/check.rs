//! `msxsync check`.

use anyhow::Result;
use msxsync::catalog::{self, Game};
use msxsync::text::printable;
use std::path::PathBuf;

/// Arguments of `msxsync check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Regions files to check. Each is read with the ROM its first line names; the first
    /// bad file stops the check with its error (file and line).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Prints one summary line per good file; fails on the first bad one.
pub fn run(args: CheckArgs) -> Result<()> {
    for file in &args.files {
        let game = catalog::load_game(file)?;
        println!("{}", printable(&summary(&game)));
    }
    Ok(())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line describing a game, e.g.
/// `galious: "The Maze of Galious" rom 131072 bytes, 5 regions (3 counters), 89 shared
/// bytes, 37 names`.
fn summary(game: &Game) -> String {
    let counters = game
        .regions
        .iter()
        .filter(|r| r.counter().is_some())
        .count();
    let counters = match counters {
        0 => String::new(),
        n => format!(" ({})", plural(n, "counter", "counters")),
    };
    let mut s = format!(
        "{}: {:?} rom {}, {}{counters}, {}",
        game.name,
        game.title,
        plural(game.rom.len(), "byte", "bytes"),
        plural(game.regions.len(), "region", "regions"),
        plural(game.shared_bytes(), "shared byte", "shared bytes"),
    );
    if !game.labels.is_empty() {
        s += &format!(", {}", plural(game.labels.len(), "name", "names"));
    }
    if let Some(m) = &game.machine {
        s += &format!(", machine {m}");
    }
    if let Some(t) = &game.romtype {
        s += &format!(", romtype {t}");
    }
    if let Some(c) = &game.sync_when {
        s += &format!(", sync when {c}, on restart {}", game.on_restart);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use msxsync::regions::parse;

    #[test]
    fn summary_line() {
        let def = parse(
            "g",
            "r\ntitle: The Maze of Galious\ne046 e04b\ne052 e057 vitality\n",
        )
        .unwrap();
        let game = Game::from_def("galious", def, vec![0; 131072]);
        assert_eq!(
            summary(&game),
            "galious: \"The Maze of Galious\" rom 131072 bytes, 2 regions, 12 shared bytes"
        );
        let def = parse(
            "g",
            "r\ne000 e001\nitem: e000 boots\nflag: e001 bit 1 key\n",
        )
        .unwrap();
        let named = Game::from_def("named", def, vec![0]);
        assert_eq!(
            summary(&named),
            "named: \"named\" rom 1 byte, 1 region, 2 shared bytes, 2 names"
        );
        let def = parse(
            "g",
            "r\nmachine: C-BIOS_MSX1\nromtype: ASCII8\nsync-when: e001 == 3\n\
             on-restart: keep\ncounter: 0 0 binary\n",
        )
        .unwrap();
        let one = Game::from_def("one", def, vec![0]);
        assert_eq!(
            summary(&one),
            "one: \"one\" rom 1 byte, 1 region (1 counter), 1 shared byte, machine \
             C-BIOS_MSX1, romtype ASCII8, sync when e001 == 03 for 60 frames, on restart keep"
        );
    }
}
