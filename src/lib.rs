//! berth: a container image registry that serves the OCI Distribution API on distribution's storage
//! layout, as a drop-in replacement for CNCF distribution (`registry:2`). See ARCHITECTURE.md.

pub mod acme;
pub mod api;
pub mod auth;
pub mod config;
pub mod debug;
pub mod entrypoint;
pub mod gc;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod oci;
pub mod ops;
pub mod registry;
pub mod server;
pub mod startup;
pub mod storage;
pub mod tls;
