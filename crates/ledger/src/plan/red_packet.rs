//! Red packets: the drop (the total into `escrow:<packet>`, shares fixed
//! up front), claims (the next share, drawn from escrow in the policy's
//! order) and the return of the rest at expiry (once, while unsettled).

use applause_core::events::SenderView;
use applause_core::{Channel, ErrorCode, EventBody};

use super::{accounts, rfc3339, Loaded, PlanError, Planner, RED_PACKET_KEY_PREFIX};
use crate::model::*;

impl Planner<'_> {
    /// Drops a red packet: the total leaves the sender's wallet (drawn like a
    /// purchase) into the packet's escrow, which remembers each channel's part.
    pub(super) fn drop_packet(
        &mut self,
        state: &mut Loaded,
        cmd: &DropCmd,
        packet_id: &str,
    ) -> Result<DropOutcome, PlanError> {
        let key = (
            cmd.sender_id.clone(),
            format!("{RED_PACKET_KEY_PREFIX}{}", cmd.idempotency_key),
        );
        if let Some(existing) = state.idempotency.get(&key) {
            return Ok(if existing.request_hash == cmd.request_hash {
                DropOutcome::Replay(existing.outcome.clone())
            } else {
                DropOutcome::KeyReused
            });
        }
        if !applause_core::redpacket::is_valid_allocation(cmd.total_minor, &cmd.shares) {
            return Err(PlanError::BadAllocation {
                packet_id: packet_id.to_owned(),
            });
        }
        let rejection = match state.rooms.get(&cmd.room_id) {
            None => Some(ErrorCode::RoomNotFound),
            Some(room) if !room.live => Some(ErrorCode::RoomNotLive),
            Some(_) => None,
        };
        let balances = state.wallets.entry(cmd.sender_id.clone()).or_default();
        let draw = match rejection {
            Some(_) => None,
            None => self.policy.draw(balances, cmd.total_minor),
        };
        let Some(paid) = draw else {
            let code = rejection.unwrap_or(ErrorCode::InsufficientFunds);
            self.remember_key(state, key, &cmd.request_hash, StoredOutcome::Rejected(code));
            return Ok(DropOutcome::Rejected(code));
        };
        let txn_id = format!("red-packet:{packet_id}");
        self.txn(&txn_id, "red_packet");
        for c in Channel::ALL {
            let part = paid[c.index()];
            if part != 0 {
                balances[c.index()] -= part;
                *self
                    .w
                    .wallet_deltas
                    .entry((cmd.sender_id.clone(), c))
                    .or_default() -= part;
                self.entry(&txn_id, accounts::wallet(&cmd.sender_id, c), -part);
            }
        }
        self.entry(&txn_id, accounts::escrow(packet_id), cmd.total_minor);
        let packet = RedPacket {
            packet_id: packet_id.to_owned(),
            room_id: cmd.room_id.clone(),
            sender_id: cmd.sender_id.clone(),
            sender_name: cmd.sender_name.clone(),
            mode: cmd.mode.clone(),
            total_minor: cmd.total_minor,
            count: cmd.shares.len() as u32,
            shares: cmd.shares.clone(),
            claimed_count: 0,
            claimed_minor: 0,
            escrow: paid,
            created_at_ms: self.now_ms,
            expires_at_ms: self.now_ms.saturating_add(cmd.expires_in_ms),
            settled_at_ms: None,
            returned_minor: 0,
        };
        let body = EventBody::RedPacket {
            packet_id: packet_id.to_owned(),
            sender: SenderView {
                id: cmd.sender_id.clone(),
                name: cmd.sender_name.clone(),
            },
            total: self.currency.format(cmd.total_minor),
            count: packet.count,
            mode: cmd.mode.clone(),
            expires_at: rfc3339(packet.expires_at_ms),
        };
        let Some(room) = state.rooms.get_mut(&cmd.room_id) else {
            return Err(PlanError::RoomMissing {
                room_id: cmd.room_id.clone(),
            });
        };
        let ev = self.event(room, &body, None);
        // Claims later in this batch find the packet in the state.
        state.packets.insert(packet_id.to_owned(), packet.clone());
        self.w.new_packets.push(packet.clone());
        self.remember_key(
            state,
            key,
            &cmd.request_hash,
            StoredOutcome::Gift(packet_id.to_owned()),
        );
        Ok(DropOutcome::Dropped(Box::new(packet), Some(ev)))
    }

    /// One claim: the next share, taken from escrow channel by channel in
    /// the policy's draw order (lowest store fee first, as purchases draw),
    /// into the claimer's wallet on the same channels. Claims of one packet
    /// are applied one after another under the packet's lock, so they can
    /// never hand out more than `count` shares or more than the total.
    pub(super) fn claim(
        &mut self,
        state: &mut Loaded,
        cmd: &ClaimCmd,
    ) -> Result<ClaimOutcome, PlanError> {
        let Some(packet) = state.packets.get_mut(&cmd.packet_id) else {
            return Ok(ClaimOutcome::NotFound);
        };
        if packet.sender_id == cmd.user_id {
            return Ok(ClaimOutcome::OwnPacket);
        }
        let pair = (cmd.packet_id.clone(), cmd.user_id.clone());
        if state.claimed.contains(&pair) {
            return Ok(ClaimOutcome::AlreadyClaimed);
        }
        let live = state.rooms.get(&packet.room_id).is_some_and(|r| r.live);
        if packet.claimed_count >= packet.count
            || packet.settled_at_ms.is_some()
            || self.now_ms >= packet.expires_at_ms
            || !live
        {
            return Ok(ClaimOutcome::Gone);
        }
        let idx = packet.claimed_count;
        let amount = packet.shares[idx as usize];
        let by_channel =
            self.policy
                .draw(&packet.escrow, amount)
                .ok_or_else(|| PlanError::EscrowShort {
                    packet_id: packet.packet_id.clone(),
                })?;
        for c in Channel::ALL {
            packet.escrow[c.index()] -= by_channel[c.index()];
        }
        packet.claimed_count += 1;
        packet.claimed_minor += amount;
        if packet.claimed_count == packet.count {
            if packet.remaining_minor() != 0 {
                return Err(PlanError::EscrowLeft {
                    packet_id: packet.packet_id.clone(),
                });
            }
            packet.settled_at_ms = Some(self.now_ms);
        }
        let packet = packet.clone();
        self.touched_packets.insert(packet.packet_id.clone());
        state.claimed.insert(pair);
        let txn_id = format!("red-packet-claim:{}:{}", packet.packet_id, idx);
        self.txn(&txn_id, "red_packet_claim");
        self.entry(&txn_id, accounts::escrow(&packet.packet_id), -amount);
        self.credit(state, &txn_id, &cmd.user_id, &by_channel)?;
        let claim = ClaimRecord {
            packet_id: packet.packet_id.clone(),
            user_id: cmd.user_id.clone(),
            user_name: cmd.user_name.clone(),
            idx,
            amount_minor: amount,
            by_channel,
            created_at_ms: self.now_ms,
        };
        self.w.claims.push(claim.clone());
        let body = EventBody::RedPacketClaimed {
            packet_id: packet.packet_id.clone(),
            claimer: SenderView {
                id: cmd.user_id.clone(),
                name: cmd.user_name.clone(),
            },
            amount: self.currency.format(amount),
            remaining_count: packet.remaining_count(),
        };
        let ev = state
            .rooms
            .get_mut(&packet.room_id)
            .map(|room| self.event(room, &body, None));
        Ok(ClaimOutcome::Claimed(
            Box::new(claim),
            packet.remaining_count(),
            ev,
        ))
    }

    /// The return at expiry: whatever is still in escrow goes back to the
    /// sender on the channels it came from. Planned under the packet's lock
    /// and only while the packet is unsettled, so it happens once however
    /// many sweepers (nodes, restarts) ask for it.
    pub(super) fn expire(
        &mut self,
        state: &mut Loaded,
        packet_id: &str,
    ) -> Result<ExpireOutcome, PlanError> {
        let Some(packet) = state.packets.get_mut(packet_id) else {
            return Ok(ExpireOutcome::NotFound);
        };
        if packet.settled_at_ms.is_some() || packet.claimed_count >= packet.count {
            return Ok(ExpireOutcome::AlreadySettled);
        }
        if self.now_ms < packet.expires_at_ms {
            return Ok(ExpireOutcome::NotDue);
        }
        let rest = packet.escrow;
        let returned: i64 = rest.iter().sum();
        packet.escrow = [0; 3];
        packet.settled_at_ms = Some(self.now_ms);
        packet.returned_minor = returned;
        let packet = packet.clone();
        self.touched_packets.insert(packet.packet_id.clone());
        if returned != 0 {
            let txn_id = format!("red-packet-return:{packet_id}");
            self.txn(&txn_id, "red_packet_return");
            self.entry(&txn_id, accounts::escrow(packet_id), -returned);
            self.credit(state, &txn_id, &packet.sender_id, &rest)?;
        }
        let body = EventBody::RedPacketExpired {
            packet_id: packet_id.to_owned(),
            returned: self.currency.format(returned),
        };
        // An ended room gets no events after `room_ended`.
        let ev = state
            .rooms
            .get_mut(&packet.room_id)
            .filter(|r| r.live)
            .map(|room| self.event(room, &body, None));
        Ok(ExpireOutcome::Returned(returned, ev))
    }
}
