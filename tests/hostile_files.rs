//! Regions files that try to leave their game folder: `msxsync check` and `msxsync
//! serve` refuse a ROM named by an absolute path, through `..` or through a symbolic
//! link out of the folder, with the file and line; the server never loads (and so never
//! sends) such a file.

mod common;

use common::serve::Serve;
use std::path::Path;
use std::process::Command;

/// A folder with a secret next to a games folder whose regions files all try to reach
/// it; returns the games folder's regions files with what each should be refused for.
fn escaping_games(root: &Path) -> Vec<(std::path::PathBuf, String)> {
    let games = root.join("games");
    std::fs::create_dir_all(&games).unwrap();
    let secret = root.join("id_ed25519");
    std::fs::write(&secret, b"-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
    let mut files = Vec::new();
    let mut add = |name: &str, rom: &str, why: String| {
        let file = games.join(format!("{name}.regions"));
        std::fs::write(&file, format!("{rom}\ne000 e000\n")).unwrap();
        files.push((file, why));
    };
    let absolute = secret.display().to_string();
    add(
        "absolute",
        &absolute,
        format!("line 1: the rom file '{absolute}' is an absolute path"),
    );
    add(
        "parent",
        "../id_ed25519",
        "line 1: the rom file '../id_ed25519' leaves the folder with '..'".into(),
    );
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&secret, games.join("key.rom")).unwrap();
        add(
            "link",
            "key.rom",
            "line 1: rom file ".to_string() + &games.join("key.rom").display().to_string(),
        );
    }
    files
}

#[test]
fn check_refuses_a_rom_outside_the_game_folder() {
    let root = tempfile::tempdir().unwrap();
    for (file, why) in escaping_games(root.path()) {
        let out = Command::new(env!("CARGO_BIN_EXE_msxsync"))
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{file:?} was accepted: {out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let expected = format!("msxsync: error: could not read {} {why}", file.display());
        assert!(err.starts_with(&expected), "{err}\nexpected {expected}");
        assert!(!err.contains("OPENSSH"), "{err}");
    }
}

#[test]
fn serve_skips_a_game_whose_rom_is_outside_its_folder() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let files = escaping_games(root.path());
    let mut serve = Serve::start(&root.path().join("games"), state.path(), &[]);
    for (file, why) in &files {
        let warning = serve.wait_for(&format!("could not read {} line 1", file.display()));
        assert!(
            warning.contains(&format!(
                "warning: skipping a game: could not read {}",
                file.display()
            )) && warning.contains(why.as_str()),
            "{warning}"
        );
    }
    // Only the built-in demo is served: none of the three.
    serve.wait_for("serving 1 game(s):");
    let listed = serve
        .out
        .seen
        .iter()
        .filter(|l| l.starts_with("  "))
        .count();
    assert_eq!(listed, 2, "{:#?}", serve.out.seen);
}
