//! berth's integration tests: one binary, one module per area. Servers listen on 127.0.0.1 only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acme;
mod api;
/// The API tests again, on S3: the file tells the two apart by its module path.
#[allow(clippy::duplicate_mod)]
#[path = "api.rs"]
mod api_s3;
mod cli;
mod e2e;
mod gc;
mod image;
mod layout;
mod limits;
mod ops;
mod process;
mod props;
mod proxy;
mod proxy_faults;
mod s3;
mod security;
mod support;
mod ui;
