//! `msxsync check` run as a process: what a user sees for good and bad regions files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/regions")
        .join(name)
}

fn check(files: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_msxsync"))
        .arg("check")
        .args(files)
        .output()
        .expect("run msxsync check")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn good_files_print_one_line_each() {
    let out = check(&[fixture("galious.regions"), fixture("directives.regions")]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "galious: \"galious\" rom 64 bytes, 2 regions, 12 shared bytes\n\
         directives: \"The Maze of Galious\" rom 64 bytes, 2 regions, 12 shared bytes, \
         machine C-BIOS_MSX2+, romtype KonamiSCC, \
         sync when e001 == 03 and e002 & 80 or c000 != 00 for 60 frames, on restart share\n"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn bad_file_fails_naming_file_and_line() {
    let bad = fixture("bad-end-before-start.regions");
    let out = check(std::slice::from_ref(&bad));
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "msxsync: error: could not read {} line 7: end 0xe0 is before start 0xe075\n",
            bad.display()
        )
    );
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn a_restart_rule_needs_a_condition() {
    let bad = fixture("bad-restart-without-sync-when.regions");
    let out = check(std::slice::from_ref(&bad));
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "msxsync: error: could not read {} line 5: on-restart: needs a sync-when: line; \
             without one msxsync cannot tell a new game from the game going on\n",
            bad.display()
        )
    );
}

#[test]
fn a_bad_counter_is_explained_with_file_and_line() {
    let bad = fixture("bad-counter.regions");
    let out = check(std::slice::from_ref(&bad));
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "msxsync: error: could not read {} line 6: counter: unknown encoding 'bcd-le'; \
             use one of bcd binary bcd-be binary-be\n",
            bad.display()
        )
    );
}

#[test]
fn names_are_counted_and_a_misplaced_one_is_explained() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("games/demo/demo.regions");
    let out = check(&[demo]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "demo: \"msxsync co-op demo\" rom 16384 bytes, 4 regions (1 counter), 5 shared \
         bytes, 10 names, machine C-BIOS_MSX1, sync when e000 == 01 for 60 frames, on \
         restart keep\n"
    );
    let bad = fixture("bad-name.regions");
    let out = check(std::slice::from_ref(&bad));
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "msxsync: error: could not read {} line 7: item: e048 is in the counter \
             e048-e049 on line 3; a counter is named by its description\n",
            bad.display()
        )
    );
}

#[test]
fn stops_at_the_first_bad_file() {
    let bad = fixture("bad-overlap.regions");
    let out = check(&[
        fixture("galious.regions"),
        bad.clone(),
        fixture("oldstyle.regions"),
    ]);
    assert!(!out.status.success());
    // The good file before it was reported, the one after it never checked.
    assert_eq!(
        text(&out.stdout),
        "galious: \"galious\" rom 64 bytes, 2 regions, 12 shared bytes\n"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} line 4: region e04b-e050 overlaps",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn missing_rom_and_missing_file_are_errors() {
    let out = check(&[fixture("bad-missing-rom.regions")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("bad-missing-rom.regions line 1: rom file"),
        "{err}"
    );
    assert!(err.contains("nosuch.rom not found"), "{err}");

    let out = check(&[fixture("no-such-file.regions")]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("could not read"));
    assert!(text(&out.stderr).contains("no-such-file.regions"));
}

#[test]
fn no_files_is_a_usage_error() {
    let out = check(&[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("FILE"), "{}", text(&out.stderr));
}
