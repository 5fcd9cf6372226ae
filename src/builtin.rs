//! Games compiled into the binary, so that `msxsync serve` has something to serve with
//! no games folder at all: the co-op demo cartridge (games/demo/demo.asm, a free
//! program written for msxsync, so shipping it is fine, unlike commercial ROMs).
//!
//! A games folder may define a game of the same name; the folder's wins
//! ([`crate::server::serve`] adds the built-in games to the loaded catalogue with
//! [`crate::catalog::Catalog::add`], which keeps the game already there).

use crate::catalog::Game;

/// Name players join the built-in demo by.
pub const DEMO_NAME: &str = "demo";

/// The demo cartridge (16 KiB, assembled from games/demo/demo.asm).
pub const DEMO_ROM: &[u8] = include_bytes!("../games/demo/demo.rom");

/// The demo's regions file, as committed next to the ROM.
pub const DEMO_REGIONS: &str = include_str!("../games/demo/demo.regions");

/// Added to the built-in demo's title, so that `msxsync serve` and `msxsync list` show
/// where the game comes from (a folder's `demo` has its own title).
pub const BUILT_IN_MARK: &str = "(built in)";

/// The built-in demo as a servable game named [`DEMO_NAME`].
pub fn demo() -> anyhow::Result<Game> {
    let label = "the built-in games/demo/demo.regions";
    let def = crate::regions::parse(label, DEMO_REGIONS)?;
    let mut game = Game::from_def(DEMO_NAME, def, DEMO_ROM.to_vec());
    game.title = format!("{} {BUILT_IN_MARK}", game.title);
    Ok(game)
}

/// Every built-in game. A built-in game that fails to parse (a build mistake, caught by
/// the tests below) is left out rather than stopping a server.
pub fn games() -> Vec<Game> {
    demo().into_iter().collect()
}

/// Whether `game` is the built-in demo (same name and ROM), e.g. to say so in listings.
pub fn is_builtin(game: &Game) -> bool {
    game.name == DEMO_NAME && game.rom_sha256 == crate::catalog::sha256(DEMO_ROM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_regions_file_parses_into_the_demo() {
        let game = demo().unwrap();
        assert_eq!(game.name, "demo");
        assert_eq!(game.title, "msxsync co-op demo (built in)");
        assert_eq!(game.machine.as_deref(), Some("C-BIOS_MSX1"));
        assert_eq!(game.sync_when.as_deref(), Some("e000 == 01 for 60 frames"));
        assert_eq!(game.on_restart, crate::protocol::OnRestart::Keep);
        // items, crown, harp, coins (2 bytes)
        let spans: Vec<_> = game.regions.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(
            spans,
            [
                (0xe010, 0xe010),
                (0xe011, 0xe011),
                (0xe012, 0xe012),
                (0xe020, 0xe021)
            ]
        );
        assert_eq!(game.shared_bytes(), 5);
        assert_eq!(
            game.regions[3].counter(),
            Some(crate::counter::Counter::full(
                crate::counter::Encoding::Bcd,
                2
            ))
        );
        let names: Vec<_> = game.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["sword", "shield", "key", "lamp", "map", "boots", "ring", "potion", "crown", "harp"]
        );
        assert!(is_builtin(&game));
        assert_eq!(games().len(), 1);
    }

    #[test]
    fn the_embedded_rom_is_a_16k_cartridge() {
        assert_eq!(DEMO_ROM.len(), 16 * 1024);
        assert_eq!(&DEMO_ROM[..2], b"AB");
    }

    #[test]
    fn a_folder_s_demo_replaces_the_built_in_one() {
        let mut catalog = crate::catalog::Catalog::new();
        let mine = Game::new(DEMO_NAME, "my own demo", vec![], vec![1]);
        assert!(catalog.add(mine));
        for game in games() {
            assert!(!catalog.add(game));
        }
        let demo = catalog.get(DEMO_NAME).unwrap();
        assert_eq!(demo.title, "my own demo");
        assert!(!is_builtin(demo));
    }
}
