//! The games a server serves: each one a parsed regions file plus its ROM in memory.
//!
//! Loading from folders (the `--games` search path) lives here too; the server only
//! sees the finished [`Game`] values.

use crate::dirs::Xdg;
use crate::protocol::{GameInfo, Label, OnRestart, RegionInfo, MAX_GAMES, MAX_NAME_BYTES};
use crate::regions::{GameDef, Region};
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One servable game.
#[derive(Debug, Clone)]
pub struct Game {
    /// Name players join it by (the regions file name without `.regions`).
    pub name: String,
    /// Title shown to players.
    pub title: String,
    /// openMSX machine to start, if the game names one.
    pub machine: Option<String>,
    /// openMSX mapper type, if the game names one.
    pub romtype: Option<String>,
    /// `sync-when:` condition as written, if the game has one.
    pub sync_when: Option<String>,
    /// `on-restart:`, the rule for a player's new game.
    pub on_restart: OnRestart,
    /// Shared regions, in file order.
    pub regions: Vec<RegionInfo>,
    /// Names of shared bytes and bits (`item:`, `flag:`), in file order.
    pub labels: Vec<Label>,
    /// The ROM image.
    pub rom: Arc<Vec<u8>>,
    /// SHA-256 of `rom`.
    pub rom_sha256: [u8; 32],
}

impl Game {
    /// Builds a game from its parts, hashing the ROM.
    pub fn new(
        name: impl Into<String>,
        title: impl Into<String>,
        regions: Vec<RegionInfo>,
        rom: Vec<u8>,
    ) -> Game {
        let rom_sha256 = sha256(&rom);
        Game {
            name: name.into(),
            title: title.into(),
            machine: None,
            romtype: None,
            sync_when: None,
            on_restart: OnRestart::default(),
            regions,
            labels: Vec::new(),
            rom: Arc::new(rom),
            rom_sha256,
        }
    }

    /// A game named `name` from a regions file's definition and its ROM. The title
    /// defaults to the name; the `sync-when:` condition is kept in its normalised form
    /// (what [`crate::sync_when::SyncWhen`]'s `Display` prints), which players read back
    /// with [`crate::sync_when::parse_sync_when`].
    pub fn from_def(name: impl Into<String>, def: GameDef, rom: Vec<u8>) -> Game {
        let name = name.into();
        let labels = def.labels();
        let title = def.title.unwrap_or_else(|| name.clone());
        let regions = def.regions.iter().map(Region::info).collect();
        let mut game = Game::new(name, title, regions, rom);
        game.labels = labels;
        game.machine = def.machine;
        game.romtype = def.romtype;
        game.sync_when = def.sync_when.map(|s| s.to_string());
        game.on_restart = def.on_restart;
        game
    }

    /// Total number of shared bytes.
    pub fn shared_bytes(&self) -> usize {
        self.regions.iter().map(RegionInfo::len).sum()
    }

    /// The game as listed to clients, with the given rooms.
    pub fn info(&self, rooms: Vec<crate::protocol::RoomInfo>) -> GameInfo {
        GameInfo {
            name: self.name.clone(),
            title: self.title.clone(),
            rom_size: self.rom.len() as u32,
            rom_sha256: self.rom_sha256,
            shared_bytes: self.shared_bytes() as u32,
            machine: self.machine.clone(),
            romtype: self.romtype.clone(),
            sync_when: self.sync_when.clone(),
            on_restart: self.on_restart,
            rooms,
        }
    }
}

/// SHA-256 of some bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Reads one regions file and its ROM into a game named after the file (its name without
/// `.regions`).
pub fn load_game(path: &Path) -> anyhow::Result<Game> {
    let name = game_name(path)?;
    let (def, rom) = crate::regions::load(path)?;
    Ok(Game::from_def(name, def, rom))
}

/// The name of the game a regions file defines: the file name without `.regions`.
fn game_name(path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .with_context(|| format!("could not read {shown}: the file name is not UTF-8"))?;
    let name = file.strip_suffix(".regions").unwrap_or(file);
    if name.is_empty() {
        bail!("could not read {shown}: the file name gives an empty game name");
    }
    // Players see and type the name.
    crate::text::check_name("game name", name, MAX_NAME_BYTES)
        .map_err(|why| anyhow::anyhow!("could not read {shown}: {why}"))?;
    Ok(name.to_string())
}

/// Where games are looked for when no folder is given, in order (the first folder with a
/// game of some name wins): `games/` next to the executable, `./games`, then the XDG data
/// folders: `$XDG_DATA_HOME/msxsync/games` (default `~/.local/share/msxsync/games`) and
/// each of `$XDG_DATA_DIRS` (default `/usr/local/share:/usr/share`) + `/msxsync/games`.
pub fn default_game_dirs() -> Vec<PathBuf> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    game_dirs_from(exe_dir.as_deref(), &Xdg::from_env())
}

/// [`default_game_dirs`] from explicit inputs, so the rules can be tested.
fn game_dirs_from(exe_dir: Option<&Path>, xdg: &Xdg) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = exe_dir {
        dirs.push(exe_dir.join("games"));
    }
    dirs.push(PathBuf::from("games"));
    for d in xdg.data_search_path() {
        dirs.push(d.join("msxsync/games"));
    }
    dirs
}

/// The games a server serves, sorted by name, names unique.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    games: Vec<Game>,
}

impl Catalog {
    /// An empty catalogue.
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Loads every `*.regions` file in each of `dirs` (folders given by the user: one
    /// that does not exist is warned about). Returns the catalogue and warnings about
    /// what was skipped; a bad file never stops the other games from loading.
    pub fn load(dirs: &[PathBuf]) -> (Catalog, Vec<String>) {
        Catalog::load_from(dirs, true)
    }

    /// Loads the games of [`default_game_dirs`] (folders that do not exist are skipped
    /// silently: most of them usually don't), as [`Catalog::load`].
    pub fn load_default() -> (Catalog, Vec<String>) {
        Catalog::load_from(&default_game_dirs(), false)
    }

    fn load_from(dirs: &[PathBuf], warn_missing: bool) -> (Catalog, Vec<String>) {
        let mut catalog = Catalog::new();
        let mut warnings = Vec::new();
        // Where each game came from, to name both files of a duplicate.
        let mut sources: HashMap<String, PathBuf> = HashMap::new();
        // The same folder can appear twice (the executable run from its own folder finds
        // games/ both next to itself and in ./); read it once.
        let mut seen_dirs = HashSet::new();
        for dir in dirs {
            let files = match regions_files(dir) {
                Ok(files) => files,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !warn_missing => continue,
                Err(e) => {
                    warnings.push(format!("skipping game folder {}: {e}", dir.display()));
                    continue;
                }
            };
            if !seen_dirs.insert(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone())) {
                continue;
            }
            for path in files {
                let game = match load_game(&path) {
                    Ok(game) => game,
                    Err(e) => {
                        // The error names the file (and line).
                        warnings.push(format!("skipping a game: {e:#}"));
                        continue;
                    }
                };
                if let Some(first) = sources.get(&game.name) {
                    warnings.push(format!(
                        "skipping {}: game '{}' is already defined by {}",
                        path.display(),
                        game.name,
                        first.display()
                    ));
                    continue;
                }
                if catalog.games.len() == MAX_GAMES {
                    warnings.push(format!(
                        "skipping {}: more than {MAX_GAMES} games",
                        path.display()
                    ));
                    continue;
                }
                sources.insert(game.name.clone(), path);
                catalog.add(game);
            }
        }
        (catalog, warnings)
    }

    /// Adds a game unless one of the same name is already there or the catalogue is
    /// full (then returns false and leaves the catalogue alone). Used for built-in
    /// games, which folders may override.
    pub fn add(&mut self, game: Game) -> bool {
        if self.games.len() >= MAX_GAMES {
            return false;
        }
        match self.games.binary_search_by(|g| g.name.cmp(&game.name)) {
            Ok(_) => false,
            Err(at) => {
                self.games.insert(at, game);
                true
            }
        }
    }

    /// The game of that name, if any.
    pub fn get(&self, name: &str) -> Option<&Game> {
        self.games
            .binary_search_by(|g| g.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.games[i])
    }

    /// All games, sorted by name.
    pub fn games(&self) -> &[Game] {
        &self.games
    }

    /// Number of games.
    pub fn len(&self) -> usize {
        self.games.len()
    }

    /// Whether there are no games.
    pub fn is_empty(&self) -> bool {
        self.games.is_empty()
    }
}

/// The `*.regions` files directly inside `dir` (hidden ones skipped, as the original
/// did), sorted by file name.
fn regions_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name {
            if name.ends_with(".regions") && !name.starts_with('.') {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_def_defaults_title_and_normalises_sync_when() {
        let def = crate::regions::parse(
            "g",
            "r\nsync-when: $E001==3 or 0xc000&80\nmachine: M\ne046 e04b keys\n",
        )
        .unwrap();
        let game = Game::from_def("galious", def, vec![1, 2, 3]);
        assert_eq!(game.name, "galious");
        assert_eq!(game.title, "galious");
        assert_eq!(game.machine.as_deref(), Some("M"));
        assert_eq!(game.romtype, None);
        assert_eq!(
            game.sync_when.as_deref(),
            Some("e001 == 03 or c000 & 80 for 60 frames")
        );
        assert_eq!(
            game.regions,
            vec![RegionInfo::bytes(0xe046, 0xe04b, "keys")]
        );
        assert_eq!(*game.rom, vec![1, 2, 3]);
        assert_eq!(game.rom_sha256, sha256(&[1, 2, 3]));
        let def = crate::regions::parse("g", "r\ntitle: Nice\n0 0\nitem: 0 boots\n").unwrap();
        let titled = Game::from_def("x", def, vec![0]);
        assert_eq!(titled.title, "Nice");
        assert_eq!(
            titled.labels,
            [Label {
                region: 0,
                offset: 0,
                bit: None,
                name: "boots".into()
            }]
        );
    }

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/regions")
    }

    fn names(c: &Catalog) -> Vec<&str> {
        c.games().iter().map(|g| g.name.as_str()).collect()
    }

    /// Writes a game with a one-byte ROM into `dir`.
    fn write_game(dir: &Path, name: &str, title: &str) {
        std::fs::write(dir.join(format!("{name}.rom")), [0x41]).unwrap();
        std::fs::write(
            dir.join(format!("{name}.regions")),
            format!("{name}.rom\ntitle: {title}\ne000 e000\n"),
        )
        .unwrap();
    }

    #[test]
    fn fixture_folder_loads_good_games_and_warns_about_each_bad_one() {
        let (catalog, warnings) = Catalog::load(&[fixtures()]);
        assert_eq!(names(&catalog), ["directives", "galious", "oldstyle"]);
        let bad: Vec<_> = std::fs::read_dir(fixtures())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("bad-"))
            .collect();
        assert_eq!(warnings.len(), bad.len(), "{warnings:#?}");
        for name in &bad {
            let path = fixtures().join(name);
            let mine: Vec<_> = warnings
                .iter()
                .filter(|w| w.contains(name.as_str()))
                .collect();
            assert_eq!(mine.len(), 1, "{name}: {warnings:#?}");
            // The warning carries the full error, which names the file once.
            let expected = format!("skipping a game: could not read {}", path.display());
            assert!(mine[0].starts_with(&expected), "{}", mine[0]);
        }
        let missing_rom = warnings
            .iter()
            .find(|w| w.contains("bad-missing-rom"))
            .unwrap();
        let rom = fixtures().join("nosuch.rom");
        assert!(
            missing_rom.ends_with(&format!("line 1: rom file {} not found", rom.display())),
            "{missing_rom}"
        );
        let short_end = warnings
            .iter()
            .find(|w| w.contains("bad-end-before-start"))
            .unwrap();
        assert!(
            short_end.ends_with("line 7: end 0xe0 is before start 0xe075"),
            "{short_end}"
        );

        let g = catalog.get("directives").unwrap();
        assert_eq!(g.title, "The Maze of Galious");
        assert_eq!(g.machine.as_deref(), Some("C-BIOS_MSX2+"));
        assert_eq!(g.romtype.as_deref(), Some("KonamiSCC"));
        assert_eq!(
            g.sync_when.as_deref(),
            Some("e001 == 03 and e002 & 80 or c000 != 00 for 60 frames")
        );
        assert_eq!(g.shared_bytes(), 12);
        assert_eq!(g.rom.len(), 64);
        assert_eq!(catalog.get("galious").unwrap().title, "galious");
        assert!(catalog.get("nosuch").is_none());
    }

    #[test]
    fn first_folder_wins_and_the_warning_names_both_files() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_game(a.path(), "x", "from a");
        write_game(b.path(), "x", "from b");
        write_game(b.path(), "y", "only b");
        let (catalog, warnings) = Catalog::load(&[a.path().into(), b.path().into()]);
        assert_eq!(names(&catalog), ["x", "y"]);
        assert_eq!(catalog.get("x").unwrap().title, "from a");
        assert_eq!(
            warnings,
            [format!(
                "skipping {}: game 'x' is already defined by {}",
                b.path().join("x.regions").display(),
                a.path().join("x.regions").display()
            )]
        );
    }

    #[test]
    fn the_same_folder_twice_is_read_once() {
        let a = tempfile::tempdir().unwrap();
        write_game(a.path(), "x", "t");
        let again = a.path().join(".");
        let (catalog, warnings) = Catalog::load(&[a.path().into(), again]);
        assert_eq!(names(&catalog), ["x"]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn missing_folder_warns_only_when_given_explicitly() {
        let a = tempfile::tempdir().unwrap();
        let missing = a.path().join("nope");
        let (catalog, warnings) = Catalog::load(std::slice::from_ref(&missing));
        assert!(catalog.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with(&format!("skipping game folder {}: ", missing.display())),
            "{warnings:?}"
        );
        let (catalog, warnings) = Catalog::load_from(&[missing], false);
        assert!(catalog.is_empty() && warnings.is_empty());
    }

    #[test]
    fn only_visible_regions_files_directly_in_the_folder_count() {
        let a = tempfile::tempdir().unwrap();
        write_game(a.path(), "b", "t");
        write_game(a.path(), "a", "t");
        write_game(a.path(), ".hidden", "t");
        std::fs::write(a.path().join("notes.txt"), "e000 e000\n").unwrap();
        std::fs::create_dir(a.path().join("sub")).unwrap();
        write_game(&a.path().join("sub"), "deep", "t");
        let (catalog, warnings) = Catalog::load(&[a.path().into()]);
        assert_eq!(names(&catalog), ["a", "b"]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn add_keeps_names_sorted_and_unique() {
        let game = |name: &str, title: &str| Game::new(name, title, vec![], vec![0]);
        let mut c = Catalog::new();
        assert!(c.add(game("m", "1")));
        assert!(c.add(game("b", "1")));
        assert!(c.add(game("z", "1")));
        assert!(!c.add(game("m", "2")), "a second game of a name is refused");
        assert_eq!(names(&c), ["b", "m", "z"]);
        assert_eq!(c.get("m").unwrap().title, "1");
        assert_eq!(c.len(), 3);
        for i in c.len()..MAX_GAMES {
            assert!(c.add(game(&format!("g{i:03}"), "1")));
        }
        assert!(!c.add(game("zz", "1")), "a full catalogue is refused");
        assert_eq!(c.len(), MAX_GAMES);
    }

    #[test]
    fn game_names_come_from_file_names() {
        assert_eq!(
            game_name(Path::new("games/galious.regions")).unwrap(),
            "galious"
        );
        assert_eq!(
            game_name(Path::new("x/Maze of Galious.regions")).unwrap(),
            "Maze of Galious"
        );
        assert_eq!(game_name(Path::new("galious.txt")).unwrap(), "galious.txt");
        let long = format!("{}.regions", "g".repeat(MAX_NAME_BYTES + 1));
        assert!(format!("{:#}", game_name(Path::new(&long)).unwrap_err())
            .contains("is 65 bytes long, the limit is 64"));
        assert!(game_name(Path::new(".regions")).is_err());
        assert!(game_name(Path::new("a\u{7}.regions")).is_err());
    }

    #[test]
    fn default_dirs_follow_xdg() {
        let p = |s: &str| PathBuf::from(s);
        // The XDG rules themselves are tested in `dirs`.
        let xdg = Xdg::from_vars(|v| (v == "HOME").then(|| "/home/u".into()));
        assert_eq!(
            game_dirs_from(Some(Path::new("/opt/msx")), &xdg),
            [
                p("/opt/msx/games"),
                p("games"),
                p("/home/u/.local/share/msxsync/games"),
                p("/usr/local/share/msxsync/games"),
                p("/usr/share/msxsync/games"),
            ]
        );
        let xdg = Xdg::from_vars(|v| (v == "XDG_DATA_DIRS").then(|| "/x".into()));
        assert_eq!(
            game_dirs_from(None, &xdg),
            [p("games"), p("/x/msxsync/games")]
        );
        assert!(default_game_dirs().contains(&p("games")));
    }
}
