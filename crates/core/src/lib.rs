//! Applause core: ids, money, the revenue-split policy, the sticker catalog,
//! room event types and the error vocabulary. Pure: no I/O, no async runtime.

pub mod catalog;
pub mod clock;
pub mod error;
pub mod events;
pub mod ids;
pub mod money;
pub mod redpacket;
pub mod split;

pub use catalog::{Catalog, Sticker};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::ErrorCode;
pub use events::{EventBody, EventEnvelope};
pub use ids::Role;
pub use money::{AmountError, Currency};
pub use split::{Channel, PerChannel, Ppm, Split, SplitPolicy};
