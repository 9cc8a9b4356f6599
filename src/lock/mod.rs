//! Quorum Redlock over independent Redis nodes.
//!
//! The lock keeps a stampede off the database's row locks; it is not what makes a double sale
//! impossible (Postgres is, see `db`). Redlock has no fencing token, so a process paused past
//! its lock's validity still holds a [`Lock`] it believes in: the transaction checks
//! [`Lock::remaining`] before committing, and the SQL predicates catch the rest.
//!
//! [`quorum`] is the pure arithmetic (unit-tested); [`redlock`] talks to the nodes.
//! Nothing here knows about HTTP or SQL.

pub mod quorum;
mod redlock;

pub use redlock::{Lock, LockError, Redlock, RedlockConfig};
