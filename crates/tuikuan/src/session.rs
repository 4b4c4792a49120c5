//! The operator's session for `tuikuan ctl`: the token `ctl login` received, kept for later calls.
//!
//! Where: `TUIKUAN_TOKEN` (the token itself, e.g. for scripts: `export TUIKUAN_TOKEN=$(tuikuan ctl
//! login --name fiona --password-stdin --print)`), else the session file: `--token-file`,
//! `TUIKUAN_TOKEN_FILE`, or `$XDG_CONFIG_HOME/tuikuan/session` (`~/.config/tuikuan/session`),
//! written with mode 0600 in a 0700 directory. An expired session is an error that says to log in.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What the session file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub name: String,
    pub roles: Vec<String>,
    pub expires_at_ms: i64,
    pub token: String,
}

/// The session file to use.
pub fn session_path(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Ok(p) = std::env::var("TUIKUAN_TOKEN_FILE") {
        if !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    let base = match std::env::var("XDG_CONFIG_HOME") {
        Ok(x) if !x.is_empty() => PathBuf::from(x),
        _ => {
            let home = std::env::var("HOME").context(
                "no HOME: give --token-file or TUIKUAN_TOKEN_FILE for the operator session",
            )?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("tuikuan").join("session"))
}

/// Saves a session: mode 0600, parent directory 0700.
pub fn save(path: &Path, session: &Session) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let text = serde_json::to_string_pretty(session)?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The saved session, if any.
pub fn load(path: &Path) -> anyhow::Result<Option<Session>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{} is not a tuikuan session; log in again", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Forgets the saved session.
pub fn remove(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// The token for staff calls: `TUIKUAN_TOKEN`, else the session file's (an expired session is an
/// error naming what to do); `None` without either.
pub fn current_token(path: &Path, now_ms: i64) -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::env::var("TUIKUAN_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(Some(t.trim().to_string()));
        }
    }
    match load(path)? {
        Some(s) if s.expires_at_ms <= now_ms => anyhow::bail!(
            "the session of {} expired; log in again: tuikuan ctl login --name {}",
            s.name,
            s.name
        ),
        Some(s) => Ok(Some(s.token)),
        None => Ok(None),
    }
}

/// A password: one line from standard input (`--password-stdin`), else asked at the terminal
/// without echo.
pub fn read_password(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        rpassword::prompt_password(prompt)
            .context("cannot ask for the password (no terminal? use --password-stdin)")?
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_private_and_expire() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cfg").join("session");
        assert_eq!(load(&path).unwrap(), None);
        let s = Session {
            name: "fiona".into(),
            roles: vec!["finance".into()],
            expires_at_ms: 2_000,
            token: "v4.public.x".into(),
        };
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), Some(s));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        if std::env::var("TUIKUAN_TOKEN").is_err() {
            assert_eq!(
                current_token(&path, 1_000).unwrap(),
                Some("v4.public.x".into())
            );
            let e = current_token(&path, 2_000).unwrap_err().to_string();
            assert!(e.contains("log in again"), "{e}");
        }
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
    }
}
