//! distribution's notification event (`notifications/event.go`), field for field: the same JSON names,
//! the same fields left out when empty, in the same order.

use std::time::SystemTime;

use serde::Serialize;

/// The media type of the envelope, sent as the request's Content-Type.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// What distribution reports as the media type of every blob.
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Mount,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Mount => "mount",
            Action::Delete => "delete",
        }
    }
}

/// `{"events": [...]}`.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub events: &'a [Event],
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    /// RFC 3339 with nanoseconds, trailing zeros trimmed, as Go marshals a `time.Time`.
    pub timestamp: String,
    pub action: &'static str,
    pub target: Target,
    pub request: RequestRecord,
    pub actor: ActorRecord,
    pub source: SourceRecord,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Target {
    #[serde(rename = "mediaType", skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// The same as `size`, kept by distribution for older consumers.
    #[serde(skip_serializing_if = "is_zero")]
    pub length: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub repository: String,
    #[serde(rename = "fromRepository", skip_serializing_if = "String::is_empty")]
    pub from_repository: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tag: String,
}

/// The request that raised the event.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RequestRecord {
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub method: String,
    pub useragent: String,
}

/// Who made the request: the authenticated user, when there is one.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ActorRecord {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The registry instance that raised the event.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SourceRecord {
    /// `hostname:port`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// New at every start.
    #[serde(rename = "instanceID", skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Event {
    /// A new event with a fresh id and the current time.
    pub fn new(
        action: Action,
        target: Target,
        request: RequestRecord,
        actor: ActorRecord,
        source: SourceRecord,
    ) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: go_timestamp(SystemTime::now()),
            action: action.as_str(),
            target,
            request,
            actor,
            source,
        }
    }
}

/// `time.Time` as Go's JSON encoder writes it (RFC 3339, nanoseconds without trailing zeros), in UTC.
pub fn go_timestamp(t: SystemTime) -> String {
    let full = humantime::format_rfc3339_nanos(t).to_string();
    // "2006-01-02T15:04:05.123000000Z" -> "2006-01-02T15:04:05.123Z"; no fraction when it is zero.
    match full.strip_suffix('Z').and_then(|s| s.split_once('.')) {
        Some((secs, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{secs}Z")
            } else {
                format!("{secs}.{frac}Z")
            }
        }
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_as_go_writes_them() {
        let check = |nanos: u64, want: &str| {
            assert_eq!(go_timestamp(UNIX_EPOCH + Duration::from_nanos(nanos)), want)
        };
        check(0, "1970-01-01T00:00:00Z");
        check(1_500_000_000, "1970-01-01T00:00:01.5Z");
        check(1_000_000_123, "1970-01-01T00:00:01.000000123Z");
    }

    #[test]
    fn empty_fields_are_left_out_as_distribution_does() {
        let e = Event {
            id: "i".into(),
            timestamp: "t".into(),
            action: "delete",
            target: Target {
                digest: "sha256:x".into(),
                repository: "r".into(),
                ..Target::default()
            },
            request: RequestRecord {
                id: "q".into(),
                method: "DELETE".into(),
                ..RequestRecord::default()
            },
            actor: ActorRecord::default(),
            source: SourceRecord::default(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap_or_default(),
            r#"{"id":"i","timestamp":"t","action":"delete","target":{"digest":"sha256:x","repository":"r"},"request":{"id":"q","method":"DELETE","useragent":""},"actor":{},"source":{}}"#
        );
    }
}
