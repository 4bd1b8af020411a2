//! Refunds: a gift's entries reversed once, in one `refund:<gift>`
//! transaction, with the sender's wallet credited on the channels it paid.

use applause_core::Channel;

use super::{accounts, Loaded, PlanError, Planner};
use crate::model::*;

impl Planner<'_> {
    /// Reverses a gift: the sender's wallet gets each channel's portion back,
    /// each store's, the broadcaster's and the platform's part are debited.
    pub(super) fn refund(
        &mut self,
        state: &mut Loaded,
        cmd: &RefundCmd,
    ) -> Result<RefundOutcome, PlanError> {
        let Some(gift) = state.gift_records.get_mut(&cmd.gift_id) else {
            return Ok(RefundOutcome::NotFound);
        };
        if gift.refunded_at_ms.is_some() {
            return Ok(RefundOutcome::AlreadyRefunded(Box::new(gift.clone())));
        }
        gift.refunded_at_ms = Some(self.now_ms);
        let gift = gift.clone();
        let txn_id = format!("refund:{}", gift.gift_id);
        self.txn(&txn_id, "refund");
        let balances = state.wallets.entry(gift.sender_id.clone()).or_default();
        for c in Channel::ALL {
            let paid = gift.paid[c.index()];
            if paid != 0 {
                balances[c.index()] = balances[c.index()].checked_add(paid).ok_or_else(|| {
                    PlanError::BalanceOverflow {
                        user_id: gift.sender_id.clone(),
                    }
                })?;
                *self
                    .w
                    .wallet_deltas
                    .entry((gift.sender_id.clone(), c))
                    .or_default() += paid;
                self.entry(&txn_id, accounts::wallet(&gift.sender_id, c), paid);
            }
            let store_c = gift.split.by_channel[c.index()][0];
            if store_c != 0 {
                self.entry(&txn_id, accounts::store(c), -store_c);
            }
        }
        if gift.split.broadcaster != 0 {
            self.entry(
                &txn_id,
                accounts::broadcaster(&gift.broadcaster_id),
                -gift.split.broadcaster,
            );
        }
        if gift.split.platform != 0 {
            self.entry(&txn_id, accounts::PLATFORM.to_owned(), -gift.split.platform);
        }
        self.w.refunds.push((
            gift.gift_id.clone(),
            cmd.reason.clone(),
            cmd.refunded_by.clone(),
            self.now_ms,
        ));
        Ok(RefundOutcome::Refunded(Box::new(gift)))
    }
}
