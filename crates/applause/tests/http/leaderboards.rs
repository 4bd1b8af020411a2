//! leaderboards
