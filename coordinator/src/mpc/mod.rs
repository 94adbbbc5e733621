//! The MPC backend as the coordinator runs it: building a data room's manifest
//! ([`create`]) and executing it across the participants' nodes ([`execute`]). It returns an
//! outcome and never writes a room or a run: [`crate::rooms`] and [`crate::runs`] do.

pub mod create;
pub mod execute;

pub use create::{CreateError, DEFAULT_MIN_GROUP_SIZE, NewRoom, build};
