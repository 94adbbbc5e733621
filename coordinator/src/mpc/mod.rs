//! The MPC backend as the coordinator runs it: building a data room's manifest
//! ([`create`]), executing it across the participants' nodes ([`execute`]), and collecting
//! the partial sums a stop or a lost connection left with the parties ([`collect`]). It never
//! writes a room or a run itself: [`crate::rooms`] and [`crate::runs`] do.

pub mod collect;
pub mod create;
pub mod execute;

pub use create::{CreateError, DEFAULT_MIN_GROUP_SIZE, NewRoom, build};
