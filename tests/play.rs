//! End-to-end: real headless openMSX players (C-BIOS_MSX1, the test cartridge) and a
//! real server on 127.0.0.1 port 0.

mod common;

use common::e2e::{game_does, peek, wait_byte, World};
use common::require_openmsx;
use common::testrom::*;

#[test]
fn a_game_write_reaches_every_other_player_and_back() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let (a, b, c) =
            futures_lite_join3(world.player("ann"), world.player("bob"), world.player("cy")).await;
        game_does(&a, 1, CMD_SET, SHARED0 + 3, 0x42).await;
        wait_byte(&b, SHARED0 + 3, 0x42, "ann's write in bob").await;
        wait_byte(&c, SHARED0 + 3, 0x42, "ann's write in cy").await;
        game_does(&c, 1, CMD_SET, SHARED1 + 63, 0x99).await;
        wait_byte(&a, SHARED1 + 63, 0x99, "cy's write in ann").await;
        wait_byte(&b, SHARED1 + 63, 0x99, "cy's write in bob").await;
        // Private RAM is not shared. The game writes a private byte in ann, then a
        // shared one; once bob has the shared one, the private one would be there too.
        const PRIVATE: u16 = 0xE12E;
        let before = peek(&b, PRIVATE).await;
        game_does(&a, 2, CMD_SET, PRIVATE, before ^ 0x5a).await;
        game_does(&a, 3, CMD_SET, SHARED0, 0x77).await;
        wait_byte(&b, SHARED0, 0x77, "the barrier write in bob").await;
        assert_eq!(
            peek(&b, PRIVATE).await,
            before,
            "private RAM stayed private"
        );
        assert_eq!(peek(&a, PRIVATE).await, before ^ 0x5a);
        for p in [a, b, c] {
            p.stop().await;
        }
    });
}

async fn futures_lite_join3<
    A: std::future::Future,
    B: std::future::Future,
    C: std::future::Future,
>(
    a: A,
    b: B,
    c: C,
) -> (A::Output, B::Output, C::Output) {
    let ((a, b), c) = smol::future::zip(smol::future::zip(a, b), c).await;
    (a, b, c)
}
