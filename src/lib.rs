//! berth: a container image registry that serves the OCI Distribution API on distribution's storage
//! layout, as a drop-in replacement for CNCF distribution (`registry:2`). See ARCHITECTURE.md.

pub mod api;
pub mod config;
pub mod gc;
pub mod oci;
pub mod registry;
pub mod server;
pub mod storage;
