//! berth: a container image registry that serves the OCI Distribution API on distribution's storage
//! layout, as a drop-in replacement for CNCF distribution (`registry:2`). See ARCHITECTURE.md.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod metrics;
pub mod notify;
pub mod oci;
pub mod proxy;
pub mod registry;
pub mod storage;
pub mod ui;
