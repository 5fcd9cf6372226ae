//! Item names (`item:`, `flag:` in tests/roms/testgame.regions) from the regions file
//! through a real server on 127.0.0.1 to another player, and what `labels` makes of a
//! player's changes there: the words the notices and the tracker page show.

mod common;

use common::e2e::testgame_regions;
use common::testrom::{COINS, FLAGS, KEY_BIT, LAMP_BIT, SHARED0, SWORD};
use msxsync::client::{self, Client};
use msxsync::counter::CounterOp;
use msxsync::delta::Change;
use msxsync::labels::{self, Names};
use msxsync::protocol::{Joined, Label, ServerMsg};
use std::future::Future;
use std::time::Duration;

/// Every test finishes well within this; hitting it means a hang.
const DEADLINE: Duration = Duration::from_secs(30);

fn run<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(smol::future::or(fut, async {
        smol::Timer::after(DEADLINE).await;
        panic!("test did not finish within {DEADLINE:?}");
    }))
}

async fn joined(server: &str, name: &str) -> (Client, Joined) {
    let mut c = client::connect(server, name).await.expect("connects");
    let j = c.join("testgame").await.expect("joins");
    (c, j)
}

/// The next message that is not a player coming or going.
async fn next(c: &mut Client) -> ServerMsg {
    loop {
        match c.recv().await.expect("receives") {
            ServerMsg::PlayerJoined(_) | ServerMsg::PlayerLeft(_) => continue,
            other => return other,
        }
    }
}

#[test]
fn another_players_change_reads_with_the_item_names_of_the_regions_file() {
    let game = msxsync::catalog::load_game(&testgame_regions()).expect("test game loads");
    let server = msxsync::server::start("127.0.0.1:0".parse().unwrap(), vec![game]).unwrap();
    let addr = server.addr().to_string();
    run(async {
        let (mut ann, ann_joined) = joined(&addr, "ann").await;
        let (mut bob, bob_joined) = joined(&addr, "bob").await;
        let offset = |addr: u16| addr - SHARED0;
        let label = |offset, bit, name: &str| Label {
            region: 0,
            offset,
            bit,
            name: name.into(),
        };
        assert_eq!(
            bob_joined.labels,
            [
                label(offset(SWORD), None, "sword"),
                label(offset(FLAGS), Some(LAMP_BIT), "lamp"),
                label(offset(FLAGS), Some(KEY_BIT), "key"),
            ]
        );
        let names = Names::new(&bob_joined.regions, &bob_joined.labels);
        let mut state = bob_joined.state.clone();

        // Ann's game takes the sword and the lamp and writes a byte without a name.
        let flags = 1 << LAMP_BIT;
        let changes = vec![
            Change::bytes(0, offset(SWORD), vec![1, flags]),
            Change::bytes(0, 3, vec![0x42]),
        ];
        ann.send_changes(1, changes).await.unwrap();
        let ServerMsg::Update {
            player, changes, ..
        } = next(&mut bob).await
        else {
            panic!("expected ann's update")
        };
        assert_eq!(player, ann_joined.player);
        let events = names.changes(&mut state, &changes);
        assert_eq!(
            labels::line("ann", &events).unwrap(),
            "ann got the sword and the lamp, bytes the tests make the game set, or,… byte 3 = 0x42"
        );

        // Then uses the lamp, takes the key, and picks up 3 coins.
        let flags = 1 << KEY_BIT;
        ann.send_changes(2, vec![Change::bytes(0, offset(FLAGS), vec![flags])])
            .await
            .unwrap();
        let coins = bob_joined
            .regions
            .iter()
            .position(|r| r.start == COINS)
            .unwrap() as u16;
        let add = CounterOp::Add {
            region: coins,
            amount: 3,
        };
        ann.send_counts(3, vec![add]).await.unwrap();
        let mut events = Vec::new();
        for _ in 0..2 {
            match next(&mut bob).await {
                ServerMsg::Update { changes, .. } => {
                    events.extend(names.changes(&mut state, &changes))
                }
                ServerMsg::Counted { counts, .. } => {
                    events.extend(counts.iter().filter_map(|c| names.count(c)))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            labels::line("ann", &events).unwrap(),
            "ann got the key, used the lamp, coins +3"
        );
        assert_eq!(
            labels::phrase("ann", &events[2], Some(Duration::from_secs(75))),
            "ann: coins +3, 1 min ago"
        );
    });
}
