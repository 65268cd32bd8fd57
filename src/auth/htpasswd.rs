//! `auth.htpasswd`: Basic authentication against an Apache htpasswd file of bcrypt entries, re-read when
//! it changes. Successful bcrypt checks are remembered (keyed by a hash of user, password and entry), so a
//! client that sends its password on every request pays for bcrypt once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{quoted, Credentials, Identity, Refusal};
use crate::config::is_bcrypt;

/// How often the file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
const CACHE_LIMIT: usize = 10_000;

/// The bcrypt costs `entry` accepts (those of the bcrypt crate).
const COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// Why an htpasswd file, or an entry for one, is refused.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// At start-up: the file berth would authenticate against is missing or unreadable.
    #[error(
        "cannot read the htpasswd file {} ({source}); create it with `berth htpasswd -Bbn USER PASSWORD > {}`",
        path.display(),
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Once serving: the file changed but cannot be read again.
    #[error("cannot read {}: {source}", path.display())]
    Reread {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}, line {line}: not of the form user:hash")]
    NotUserHash { file: String, line: usize },
    #[error(
        "{file}, line {line}: the entry for `{user}` is not a bcrypt hash; only bcrypt ($2y$, $2a$, $2b$) is \
         accepted: recreate it with `berth htpasswd -Bbn {user} PASSWORD`"
    )]
    NotBcrypt {
        file: String,
        line: usize,
        user: String,
    },
    #[error("a user name cannot contain `:`")]
    ColonInUser,
    #[error("the bcrypt cost must be between {min} and {max}, got {0}", min = COSTS.start(), max = COSTS.end())]
    Cost(u32),
    #[error("cannot hash the password: {0}")]
    Hash(#[source] bcrypt::BcryptError),
}

/// Remembers successful bcrypt verifications.
#[derive(Default)]
pub struct PasswordCache {
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl PasswordCache {
    /// Whether `password` matches the bcrypt `hash` of `user`.
    pub async fn verify(&self, user: &str, password: &str, hash: &str) -> bool {
        let mut h = Sha256::new();
        for part in [user, password, hash] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let key: [u8; 32] = h.finalize().into();
        if self.lock().contains(&key) {
            return true;
        }
        let (password, hash) = (password.to_owned(), hash.to_owned());
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok {
            let mut cache = self.lock();
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // Inserts and clears only: a poisoned set is still a set of verified keys.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Parses htpasswd text: `user:hash` lines, bcrypt only; blank lines and `#` comments are skipped.
pub fn parse(text: &str, name: &str) -> Result<HashMap<String, String>, HtpasswdError> {
    let mut entries = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(HtpasswdError::NotUserHash {
                file: name.to_owned(),
                line: i + 1,
            });
        };
        if !is_bcrypt(hash) {
            return Err(HtpasswdError::NotBcrypt {
                file: name.to_owned(),
                line: i + 1,
                user: user.to_owned(),
            });
        }
        entries.insert(user.to_owned(), hash.to_owned());
    }
    Ok(entries)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

pub struct HtpasswdAuth {
    realm: String,
    path: PathBuf,
    entries: RwLock<Arc<HashMap<String, String>>>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
    cache: PasswordCache,
}

impl HtpasswdAuth {
    /// Loads the file; a missing or invalid file is an error (berth never starts open by accident).
    pub fn load(realm: &str, path: &Path) -> Result<HtpasswdAuth, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let entries = parse(&text, &path.display().to_string())?;
        Ok(HtpasswdAuth {
            realm: realm.to_owned(),
            path: path.to_owned(),
            entries: RwLock::new(Arc::new(entries)),
            stamp: Mutex::new(stamp(path)),
            cache: PasswordCache::default(),
        })
    }

    /// Re-reads the file if its modification time or size changed. On a read or parse error the previous
    /// entries stay in force.
    pub fn reload_if_changed(&self) -> Result<bool, HtpasswdError> {
        let now = stamp(&self.path);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if *last == now {
                return Ok(false);
            }
            *last = now;
        }
        let text = std::fs::read_to_string(&self.path).map_err(|source| HtpasswdError::Reread {
            path: self.path.clone(),
            source,
        })?;
        let entries = parse(&text, &self.path.display().to_string())?;
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(entries);
        Ok(true)
    }

    /// Checks the file for changes every [`RELOAD_INTERVAL`] until `shutdown`.
    pub fn watch(self: Arc<Self>, tasks: &TaskTracker, shutdown: CancellationToken) {
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let this = self.clone();
                match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                    Ok(Ok(true)) => {
                        tracing::info!(path = %self.path.display(), "htpasswd file reloaded")
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "htpasswd file not reloaded; keeping the previous entries")
                    }
                    Err(e) => tracing::error!(error = %e, "htpasswd reload failed"),
                }
            }
        });
    }

    fn challenge(&self) -> String {
        format!("Basic realm={}", quoted(&self.realm))
    }

    pub async fn authorize(&self, creds: &Credentials) -> Result<Identity, Refusal> {
        let refuse = |message: &str| Refusal {
            message: message.to_owned(),
            challenge: self.challenge(),
        };
        let Credentials::Basic { user, password } = creds else {
            return Err(refuse("authentication required"));
        };
        let hash = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned();
        match hash {
            Some(hash) if self.cache.verify(user, password, &hash).await => {
                Ok(Identity::everywhere(user.clone()))
            }
            _ => Err(refuse("invalid username or password")),
        }
    }
}

/// An htpasswd line for `user` with `password` hashed by bcrypt at `cost`, as `htpasswd -Bbn` prints it.
pub fn entry(user: &str, password: &str, cost: u32) -> Result<String, HtpasswdError> {
    if user.contains(':') {
        return Err(HtpasswdError::ColonInUser);
    }
    if !COSTS.contains(&cost) {
        return Err(HtpasswdError::Cost(cost));
    }
    let hash = bcrypt::hash_with_result(password, cost).map_err(HtpasswdError::Hash)?;
    Ok(format!(
        "{user}:{}",
        hash.format_for_version(bcrypt::Version::TwoY)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_entries() {
        let line = entry("alice", "s3cret", 4).unwrap();
        assert!(line.starts_with("alice:$2y$04$"), "{line}");
        let parsed = parse(&format!("# users\n\n{line}\n"), "h").unwrap();
        assert!(bcrypt::verify("s3cret", &parsed["alice"]).unwrap());
        let err = |t: &str| parse(t, "h").unwrap_err().to_string();
        assert!(err("bob:{SHA}fCIvspJ9goryL1khNOiTJIBjfA0=").contains("line 1"));
        assert!(err("x\nbob:$apr1$abc$def").contains("line 1"));
        assert!(err(&format!("{line}\nbob:$apr1$abc$def")).contains("line 2"));
        assert!(err(&format!("{line}\nbob:$apr1$abc$def")).contains("`bob`"));
        assert!(matches!(
            entry("a:b", "p", 4),
            Err(HtpasswdError::ColonInUser)
        ));
        assert!(matches!(entry("a", "p", 3), Err(HtpasswdError::Cost(3))));
    }

    #[tokio::test]
    async fn authorize_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, entry("alice", "one", 4).unwrap()).unwrap();
        let auth = HtpasswdAuth::load("Registry Realm", &path).unwrap();
        let basic = |u: &str, p: &str| Credentials::Basic {
            user: u.into(),
            password: p.into(),
        };
        assert_eq!(
            auth.authorize(&basic("alice", "one")).await.unwrap().user,
            "alice"
        );
        let refused = auth.authorize(&basic("alice", "two")).await.unwrap_err();
        assert_eq!(refused.challenge, "Basic realm=\"Registry Realm\"");
        assert!(auth.authorize(&Credentials::None).await.is_err());
        assert!(auth.authorize(&basic("mallory", "one")).await.is_err());
        std::fs::write(
            &path,
            format!(
                "{}\n{}",
                entry("alice", "two", 4).unwrap(),
                entry("bob", "b", 4).unwrap()
            ),
        )
        .unwrap();
        assert!(auth.reload_if_changed().unwrap());
        assert!(
            auth.authorize(&basic("alice", "one")).await.is_err(),
            "the old password no longer works"
        );
        assert!(auth.authorize(&basic("alice", "two")).await.is_ok());
        assert!(auth.authorize(&basic("bob", "b")).await.is_ok());
        std::fs::write(&path, "broken line").unwrap();
        assert!(auth.reload_if_changed().is_err());
        assert!(
            auth.authorize(&basic("bob", "b")).await.is_ok(),
            "a broken file keeps the previous entries"
        );
        assert!(HtpasswdAuth::load("r", &dir.path().join("missing"))
            .err()
            .unwrap()
            .to_string()
            .contains("berth htpasswd"));
    }
}
