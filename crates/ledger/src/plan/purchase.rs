//! Gift purchases and top-ups: the wallet is drawn in the policy's order,
//! the price is split into balanced entries, the gift's room event gets the
//! room's next `seq`, and each key's outcome (charged or refused) is stored
//! — until its retention ends and an expiry command forgets it.

use applause_core::events::SenderView;
use applause_core::events::SplitView;
use applause_core::{Channel, Currency, ErrorCode, EventBody};

use super::{accounts, Loaded, PlanError, Planner};
use crate::model::*;

impl Planner<'_> {
    pub(super) fn purchase(
        &mut self,
        state: &mut Loaded,
        cmd: &PurchaseCmd,
        gift_id: &str,
    ) -> Result<PurchaseOutcome, PlanError> {
        let key = (cmd.sender_id.clone(), cmd.idempotency_key.clone());
        if let Some(existing) = state.idempotency.get(&key) {
            return Ok(if existing.request_hash == cmd.request_hash {
                PurchaseOutcome::Replay(existing.outcome.clone())
            } else {
                PurchaseOutcome::KeyReused
            });
        }
        let rejection = match state.rooms.get(&cmd.room_id) {
            None => Some(ErrorCode::RoomNotFound),
            Some(room) if room.broadcaster_id == cmd.sender_id => Some(ErrorCode::SelfGift),
            Some(room) if !room.live => Some(ErrorCode::RoomNotLive),
            Some(_) => None,
        };
        let balances = state.wallets.entry(cmd.sender_id.clone()).or_default();
        let draw = match rejection {
            Some(_) => None,
            None => self.policy.draw(balances, cmd.amount_minor),
        };
        let Some(paid) = draw else {
            let code = rejection.unwrap_or(ErrorCode::InsufficientFunds);
            self.remember(state, cmd, StoredOutcome::Rejected(code));
            return Ok(PurchaseOutcome::Rejected(code));
        };
        for c in Channel::ALL {
            balances[c.index()] -= paid[c.index()];
            if paid[c.index()] != 0 {
                *self
                    .w
                    .wallet_deltas
                    .entry((cmd.sender_id.clone(), c))
                    .or_default() -= paid[c.index()];
            }
        }
        let balance_after: i64 = balances.iter().sum();
        let Some(room) = state.rooms.get_mut(&cmd.room_id) else {
            return Err(PlanError::RoomMissing {
                room_id: cmd.room_id.clone(),
            });
        };
        let split = self.policy.split(&room.broadcaster_id, &paid);
        if split.total() != cmd.amount_minor {
            return Err(PlanError::SplitMismatch {
                amount_minor: cmd.amount_minor,
            });
        }
        self.txn(gift_id, "gift");
        for c in Channel::ALL {
            if paid[c.index()] != 0 {
                self.entry(
                    gift_id,
                    accounts::wallet(&cmd.sender_id, c),
                    -paid[c.index()],
                );
            }
            let store_c = split.by_channel[c.index()][0];
            if store_c != 0 {
                self.entry(gift_id, accounts::store(c), store_c);
            }
        }
        if split.broadcaster != 0 {
            self.entry(
                gift_id,
                accounts::broadcaster(&room.broadcaster_id),
                split.broadcaster,
            );
        }
        if split.platform != 0 {
            self.entry(gift_id, accounts::PLATFORM.to_owned(), split.platform);
        }
        let mut gift = GiftRecord {
            gift_id: gift_id.to_owned(),
            room_id: cmd.room_id.clone(),
            broadcaster_id: room.broadcaster_id.clone(),
            sender_id: cmd.sender_id.clone(),
            sender_name: cmd.sender_name.clone(),
            sticker_id: cmd.sticker_id.clone(),
            quantity: cmd.quantity,
            amount_minor: cmd.amount_minor,
            paid,
            split,
            message: cmd.message.clone(),
            balance_after_minor: balance_after,
            seq: 0,
            epoch: room.epoch,
            created_at_ms: self.now_ms,
            ack_text: None,
            acked_at_ms: None,
            refunded_at_ms: None,
        };
        let body = gift_event_body(&gift, self.currency, &self.created_at, false);
        let broadcaster_body = gift_event_body(&gift, self.currency, &self.created_at, true);
        let ev = self.event(room, &body, Some(&broadcaster_body));
        gift.seq = ev.seq;
        self.w.gifts.push(gift.clone());
        self.remember(state, cmd, StoredOutcome::Gift(gift_id.to_owned()));
        Ok(PurchaseOutcome::Charged(Box::new(gift), Some(ev)))
    }

    fn remember(&mut self, state: &mut Loaded, cmd: &PurchaseCmd, outcome: StoredOutcome) {
        let key = (cmd.sender_id.clone(), cmd.idempotency_key.clone());
        self.remember_key(state, key, &cmd.request_hash, outcome);
    }

    /// Stores a key's outcome (for this batch's later commands too).
    pub(super) fn remember_key(
        &mut self,
        state: &mut Loaded,
        key: (String, String),
        request_hash: &str,
        outcome: StoredOutcome,
    ) {
        let rec = IdempotencyRecord {
            user_id: key.0.clone(),
            key: key.1.clone(),
            request_hash: request_hash.to_owned(),
            outcome,
            created_at_ms: self.now_ms,
        };
        state.idempotency.insert(key, rec.clone());
        self.w.idempotency.push(rec);
    }

    /// Forgets up to `limit` loaded records created before `before_ms`, so
    /// later commands of the batch see their keys as unused.
    pub(super) fn expire_keys(&mut self, state: &mut Loaded, before_ms: i64, limit: u32) -> u64 {
        let mut forgotten = 0u64;
        let mut kept = Vec::with_capacity(state.expirable.len());
        for (user_id, key, created_at_ms) in std::mem::take(&mut state.expirable) {
            if forgotten < u64::from(limit) && created_at_ms < before_ms {
                let pair = (user_id, key);
                state.idempotency.remove(&pair);
                self.w.expired_keys.push(pair);
                forgotten += 1;
            } else {
                kept.push((user_id, key, created_at_ms));
            }
        }
        state.expirable = kept;
        forgotten
    }

    pub(super) fn top_up(
        &mut self,
        state: &mut Loaded,
        cmd: &TopUpCmd,
    ) -> Result<TopUpOutcome, PlanError> {
        if let Some(existing) = state.receipts.get(&cmd.receipt_id) {
            let same = existing.user_id == cmd.user_id
                && existing.channel == cmd.channel
                && existing.amount_minor == cmd.amount_minor;
            return Ok(if same {
                TopUpOutcome::Replay(existing.clone())
            } else {
                TopUpOutcome::KeyReused
            });
        }
        let balances = state.wallets.entry(cmd.user_id.clone()).or_default();
        // A credit past the largest amount refuses this top-up alone; it must
        // never fail the batch (and the innocent purchases in it).
        let fits = balances[cmd.channel.index()]
            .checked_add(cmd.amount_minor)
            .is_some_and(|b| b <= applause_core::money::AMOUNT_MINOR_MAX);
        if !fits {
            return Ok(TopUpOutcome::TooLarge);
        }
        let txn_id = format!("topup:{}", cmd.receipt_id);
        self.txn(&txn_id, "topup");
        let mut by_channel = [0; 3];
        by_channel[cmd.channel.index()] = cmd.amount_minor;
        self.credit(state, &txn_id, &cmd.user_id, &by_channel)?;
        self.entry(&txn_id, accounts::funding(cmd.channel), -cmd.amount_minor);
        let rec = TopUpRecord {
            receipt_id: cmd.receipt_id.clone(),
            user_id: cmd.user_id.clone(),
            channel: cmd.channel,
            amount_minor: cmd.amount_minor,
            created_at_ms: self.now_ms,
        };
        state.receipts.insert(rec.receipt_id.clone(), rec.clone());
        self.w.receipts.push(rec.clone());
        Ok(TopUpOutcome::Credited(rec))
    }
}

/// The event body of a gift; `with_split` for the broadcaster's frame.
fn gift_event_body(
    gift: &GiftRecord,
    currency: &Currency,
    created_at: &str,
    with_split: bool,
) -> EventBody {
    EventBody::Gift {
        gift_id: gift.gift_id.clone(),
        sender: SenderView {
            id: gift.sender_id.clone(),
            name: gift.sender_name.clone(),
        },
        sticker_id: gift.sticker_id.clone(),
        quantity: gift.quantity,
        amount: currency.format(gift.amount_minor),
        message: gift.message.clone(),
        created_at: created_at.to_owned(),
        split: with_split.then(|| SplitView {
            store: currency.format(gift.split.store),
            broadcaster: currency.format(gift.split.broadcaster),
            platform: currency.format(gift.split.platform),
        }),
    }
}
