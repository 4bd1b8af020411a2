//! `applause demo`: a broadcaster with a live room and two funded viewers,
//! and the commands to watch the room and send a gift.

use std::net::SocketAddr;
use std::time::Duration;

use applause_core::{Channel, Role};
use applause_ledger::{CreateRoomCmd, TopUpCmd};

use crate::App;

pub async fn seed_and_print(app: &App, secret: &[u8], addr: SocketAddr) -> anyhow::Result<()> {
    let auth = applause_web::Authenticator::new(secret).map_err(anyhow::Error::msg)?;
    let ledger = &app.ledger;
    let room = ledger
        .create_room(CreateRoomCmd {
            broadcaster_id: "demo-star".into(),
            title: "Demo stream".into(),
        })
        .await?;
    for (user, channel, amount) in [
        ("alice", Channel::Apple, 50_000),
        ("bob", Channel::Web, 20_000),
    ] {
        // Receipt ids make seeding idempotent across demo restarts.
        ledger
            .top_up(TopUpCmd {
                user_id: user.into(),
                channel,
                amount_minor: amount,
                receipt_id: format!("demo-{user}"),
            })
            .await?;
    }
    let day = Duration::from_secs(86_400);
    let t = |sub: &str, role: Role, name: &str| {
        auth.mint(sub, role, Some(name), day)
            .map_err(anyhow::Error::msg)
    };
    let star = t("demo-star", Role::Broadcaster, "Demo Star")?;
    let alice = t("alice", Role::Viewer, "Alice")?;
    let bob = t("bob", Role::Viewer, "Bob")?;
    let finance = t("finance", Role::Finance, "Finance")?;
    let base = format!("http://{addr}");
    println!(
        r#"
Applause demo is running at {base}
room: {room_id} (broadcaster demo-star), viewers alice (500.00 via apple) and bob (200.00 via web)

Tokens (valid 24 h):
  BROADCASTER={star}
  ALICE={alice}
  FINANCE={finance}

Open the pages in a browser (the token rides in the #fragment, so it never
reaches a server log; the page keeps it for the tab):
  Alice watches and sends gifts:  {base}/watch/{room_id}#token={alice}
  Bob watches too:                {base}/watch/{room_id}#token={bob}
  Demo Star's studio:             {base}/studio#token={star}&room={room_id}
  OBS overlay (browser source):   {base}/overlay/{room_id}?min=0.00&duration=6
  Finance:                        {base}/finance#token={finance}

Watch the room (any WebSocket client, e.g. `websocat`):
  websocat "ws://{addr}/v1/ws?room={room_id}&access_token=$BROADCASTER"

Send a gift as Alice:
  curl -s -X POST {base}/v1/rooms/{room_id}/gifts -H "Authorization: Bearer $ALICE" \
       -H "Idempotency-Key: demo-1" -H 'Content-Type: application/json' \
       -d '{{"sticker_id":"rose","quantity":3,"message":"hello!"}}'

Alice's wallet, the room's top gifters, the finance summary:
  curl -s {base}/v1/wallet -H "Authorization: Bearer $ALICE"
  curl -s "{base}/v1/rooms/{room_id}/leaderboard?window=live"
  curl -s {base}/v1/finance/summary -H "Authorization: Bearer $FINANCE"
"#,
        room_id = room.room_id
    );
    Ok(())
}
