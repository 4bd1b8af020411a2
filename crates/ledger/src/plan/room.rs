//! Rooms and the events that move no money: creating and ending a room, a
//! broadcaster's ack of a gift, a plain room event (e.g. a leaderboard push)
//! and the relay's record of what reached the bus.

use applause_core::EventBody;
use applause_core::EventEnvelope;

use super::{Loaded, Planner};
use crate::model::*;

impl Planner<'_> {
    pub(super) fn create_room(&mut self, cmd: &CreateRoomCmd, room_id: &str, epoch: u64) -> Room {
        let room = Room {
            room_id: room_id.to_owned(),
            broadcaster_id: cmd.broadcaster_id.clone(),
            title: cmd.title.clone(),
            epoch,
            live: true,
            last_seq: 0,
            published_seq: 0,
            created_at_ms: self.now_ms,
            ended_at_ms: None,
        };
        self.w.new_rooms.push(room.clone());
        room
    }

    pub(super) fn end_room(
        &mut self,
        state: &mut Loaded,
        room_id: &str,
        broadcaster_id: &str,
    ) -> EndRoomOutcome {
        let Some(room) = state.rooms.get_mut(room_id) else {
            return EndRoomOutcome::NotFound;
        };
        if room.broadcaster_id != broadcaster_id {
            return EndRoomOutcome::NotYours;
        }
        if !room.live {
            return EndRoomOutcome::AlreadyEnded(room.clone());
        }
        room.live = false;
        room.ended_at_ms = Some(self.now_ms);
        let body = EventBody::RoomEnded {
            ended_at: self.created_at.clone(),
        };
        let mut ev = self.event(room, &body, None);
        ev.ends_room = true;
        if let Some(last) = self.w.events.last_mut() {
            last.envelope.ends_room = true;
        }
        EndRoomOutcome::Ended(room.clone(), Some(ev))
    }

    pub(super) fn ack(&mut self, state: &mut Loaded, cmd: &AckCmd) -> AckOutcome {
        let Some(info) = state.gifts.get_mut(&cmd.gift_id) else {
            return AckOutcome::NotFound;
        };
        if info.broadcaster_id != cmd.broadcaster_id {
            return AckOutcome::NotYours;
        }
        if info.acked {
            return AckOutcome::AlreadyAcked;
        }
        info.acked = true;
        let sender_id = info.sender_id.clone();
        self.w
            .acks
            .push((cmd.gift_id.clone(), cmd.text.clone(), self.now_ms));
        let body = EventBody::Ack {
            gift_id: cmd.gift_id.clone(),
            sender_id,
            text: cmd.text.clone(),
            created_at: self.created_at.clone(),
        };
        let ev = state
            .rooms
            .get_mut(&info.room_id)
            .map(|room| self.event(room, &body, None));
        AckOutcome::Acked(ev)
    }

    /// A room event that moves no money; `None` when the room does not exist.
    pub(super) fn append_event(
        &mut self,
        state: &mut Loaded,
        room_id: &str,
        body: &EventBody,
    ) -> Option<EventEnvelope> {
        state
            .rooms
            .get_mut(room_id)
            .map(|room| self.event(room, body, None))
    }

    /// Records that the room's events up to `seq` reached the bus; never past
    /// the last event, never backwards.
    pub(super) fn mark_published(&mut self, state: &mut Loaded, room_id: &str, seq: u64) {
        if let Some(room) = state.rooms.get_mut(room_id) {
            let seq = seq.min(room.last_seq);
            if seq > room.published_seq {
                room.published_seq = seq;
                self.touched_rooms.insert(room_id.to_owned());
            }
        }
    }
}
