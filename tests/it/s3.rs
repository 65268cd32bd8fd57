//! berth on S3 storage, served by Garage started on loopback (`support::garage`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::clients::try_http_get;
use crate::support::garage::{Garage, GarageCluster};

#[test]
fn garage_single_node_starts() {
    let garage = Garage::spawn();
    assert_healthy(&garage.admin_endpoint());
    garage.create_bucket("second");
    for bucket in [garage.bucket.as_str(), "second"] {
        assert_refuses_anonymous(&garage.endpoint(), bucket);
    }
    let endpoint = check_settings(&garage.berth_env("/b"), &garage.config_yaml("/b"));
    assert_eq!(endpoint, garage.endpoint());
}

#[test]
fn garage_cluster_survives_one_node() {
    let mut cluster = GarageCluster::spawn();
    cluster.stop(2);
    for admin in &cluster.admin_endpoints()[..2] {
        assert_healthy(admin);
    }
    cluster.create_bucket("second");
    cluster.start(2);
    for (admin, s3) in cluster.admin_endpoints().iter().zip(cluster.endpoints()) {
        assert_healthy(admin);
        assert_refuses_anonymous(&s3, "second");
    }
    let endpoint = check_settings(&cluster.berth_env("/b"), &cluster.config_yaml("/b"));
    assert_eq!(endpoint, cluster.endpoints()[0]);
}

#[track_caller]
fn assert_healthy(admin: &str) {
    let (status, body) = try_http_get(&format!("{admin}/health")).unwrap();
    assert_eq!(status, 200, "GET {admin}/health: {body}");
}

/// An unsigned request is refused with an S3 error document.
#[track_caller]
fn assert_refuses_anonymous(endpoint: &str, bucket: &str) {
    let url = format!("{endpoint}/{bucket}/");
    let (status, body) = try_http_get(&url).unwrap();
    assert_eq!(status, 403, "GET {url}: {body}");
    assert!(
        body.contains("<Code>AccessDenied</Code>"),
        "GET {url}: {body}"
    );
}

/// Checks that the storage settings as `REGISTRY_*` variables and as YAML say the same; returns the
/// endpoint they name.
#[track_caller]
fn check_settings(env: &[(String, String)], yaml: &str) -> String {
    let env: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    assert_eq!(env.get("REGISTRY_STORAGE"), Some(&"s3"));
    let yaml: Value = serde_norway::from_str(yaml).unwrap();
    let s3 = yaml["storage"]["s3"].as_object().unwrap();
    for (key, value) in s3 {
        let value = value.as_str().map_or(value.to_string(), str::to_owned);
        let name = format!("REGISTRY_STORAGE_S3_{}", key.to_uppercase());
        assert_eq!(env.get(name.as_str()), Some(&value.as_str()), "{name}");
    }
    assert_eq!(env.len(), s3.len() + 1, "{env:?}");
    env["REGISTRY_STORAGE_S3_REGIONENDPOINT"].to_owned()
}
