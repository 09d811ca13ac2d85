//! `vnet-model`: the domain of vnet-ha and the pure state machine every replica runs.
//!
//! Raft replicates [`Request`]s; each replica feeds every committed one, with its log index as the
//! [`Revision`], to [`apply`], which validates it, allocates identities, changes the [`State`] and
//! records an [`Event`]. `apply` is deterministic and does no I/O, so replicas that apply the same
//! log hold equal states, and this crate is tested with plain unit and property tests. It knows
//! nothing of Raft, gRPC or storage: `raft-store` persists the state through its serde encoding,
//! and `node` maps [`Rejection`]s to status codes.
//!
//! How the modules fit:
//!
//! - [`identity`]: [`Mac`] and [`Wwn`], which can only hold presentable values.
//! - [`name`]: the one naming rule for profiles, servers, pools, members, vNICs, networks, ….
//! - [`profile`], [`pool`], [`member`]: the objects in the state and the specs clients send, each
//!   with `validate` for the checks that need no state (the API edge can call these early).
//! - [`access`]: [`AccessRole`] and the rule for principals, the replicated role map's types.
//! - [`placement`]: desired placement of profiles on units, reported presentation, drain.
//! - [`command`]: [`Request`], [`Command`] and [`Outcome`], the input and output of `apply`.
//! - [`state`]: [`State`], [`apply`], and the bounded history of [`Event`]s.
//! - [`error`]: [`Rejection`], why a command was refused, naming the field and value at fault.
//! - [`limits`]: every bound, as named constants.
//!
//! Internally, `index` keeps who owns each identity and each pool's free ranges (derived, never
//! serialized), and `plan` works out a profile's identities before anything is changed, so a
//! refused command leaves the state exactly as it was.

pub mod access;
pub mod alarm;
pub mod command;
pub mod error;
pub mod identity;
mod index;
pub mod limits;
pub mod member;
pub mod name;
pub mod placement;
mod plan;
pub mod pool;
pub mod profile;
pub mod state;

pub use access::AccessRole;
pub use alarm::{Alarm, AlarmKind};
pub use command::{Command, Outcome, Request};
pub use error::{HistoryTruncated, Rejection};
pub use identity::{Identity, IdentityError, IdentityKind, Mac, Wwn};
pub use member::{Member, Role};
pub use placement::{Move, Placement, PlacementChange};
pub use pool::{Pool, PoolKind, PoolRange, PoolSpec, PoolUsage};
pub use profile::{Failback, Profile, ProfileSpec, VHba, VHbaSpec, VNic, VNicSpec};
pub use state::{apply, apply_entry, next_revision, Accepted, Change, Event, State};

/// The Raft log index at which a change was applied. Every accepted change sets the state's
/// revision to its own, so revisions order all changes cluster-wide.
pub type Revision = u64;
