//! `file:/absolute/path`: a file on the gateway host (a mounted Kubernetes or Docker secret). One
//! trailing newline is trimmed (editors and `echo` add one). A file other users can read is
//! accepted with a warning, on save and in `check`.

use std::path::Path;

use futures_util::future::BoxFuture;
use secrecy::SecretString;

use super::{Failure, Resolver, SecretRef};

/// Larger files are not credentials; refusing them keeps a wrong path from reading a whole log.
const MAX_BYTES: u64 = 64 * 1024;

pub struct FileResolver;

impl Resolver for FileResolver {
    fn resolve<'a>(&'a self, r: &'a SecretRef) -> BoxFuture<'a, Result<SecretString, Failure>> {
        Box::pin(async move {
            let SecretRef::File(path) = r else { return Err(Failure::permanent("not a file: reference")) };
            read(Path::new(path)).await
        })
    }
}

async fn read(path: &Path) -> Result<SecretString, Failure> {
    // The io error's text names the path and the OS reason, never the contents.
    let meta = tokio::fs::metadata(path).await.map_err(io_failure)?;
    if !meta.is_file() {
        return Err(Failure::permanent("the path is not a regular file"));
    }
    if meta.len() > MAX_BYTES {
        return Err(Failure::permanent(format!("the file is larger than {MAX_BYTES} bytes; not a credential")));
    }
    let bytes = tokio::fs::read(path).await.map_err(io_failure)?;
    let Ok(text) = String::from_utf8(bytes) else {
        return Err(Failure::permanent("the file is not valid UTF-8"));
    };
    let text = SecretString::from(text);
    let value = trim_newline(secrecy::ExposeSecret::expose_secret(&text));
    if value.trim().is_empty() {
        return Err(Failure::permanent("the file is empty"));
    }
    Ok(SecretString::from(value.to_string()))
}

/// A missing file or one the gateway may not read stays wrong until someone fixes it; any other
/// I/O error (a busy or briefly unavailable mount) is worth trying again.
fn io_failure(e: std::io::Error) -> Failure {
    let reason = format!("cannot read the file: {e}");
    match e.kind() {
        std::io::ErrorKind::NotFound
        | std::io::ErrorKind::PermissionDenied
        | std::io::ErrorKind::NotADirectory
        | std::io::ErrorKind::IsADirectory => Failure::permanent(reason),
        _ => Failure::transient(reason),
    }
}

/// One trailing `\n` or `\r\n`.
fn trim_newline(s: &str) -> &str {
    s.strip_suffix("\r\n").or_else(|| s.strip_suffix('\n')).unwrap_or(s)
}

/// A warning when the file can be read by its group or by everyone.
pub fn loose_permissions(path: &str) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            let who = if mode & 0o004 != 0 { "every user" } else { "its group" };
            return Some(format!(
                "file:{path} can be read by {who} (mode {mode:o}); restrict it to the gateway's user (chmod 600)"
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    None
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn one_trailing_newline_is_trimmed() {
        for (raw, value) in [("k\n", "k"), ("k\r\n", "k"), ("k", "k"), ("k\n\n", "k\n"), (" k \n", " k ")] {
            assert_eq!(trim_newline(raw), value, "{raw:?}");
        }
    }

    #[tokio::test]
    async fn files_resolve_and_failures_say_why_without_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        std::fs::write(path("key"), "s3cr3t-file-value\n").unwrap();
        std::fs::write(path("empty"), "\n").unwrap();
        std::fs::write(path("big"), vec![b'x'; 70_000]).unwrap();
        std::fs::write(path("binary"), [0xff, 0xfe]).unwrap();
        let resolve = |p: String| async move { FileResolver.resolve(&SecretRef::File(p)).await };
        assert_eq!(resolve(path("key")).await.unwrap().expose_secret(), "s3cr3t-file-value");
        for (name, why) in [
            ("missing", "No such file"),
            ("key/below-a-file", "Not a directory"),
            ("empty", "empty"),
            ("big", "larger than"),
            ("binary", "UTF-8"),
            ("", "not a regular file"),
        ] {
            let err = resolve(path(name)).await.unwrap_err();
            assert!(err.reason.contains(why), "{name}: {}", err.reason);
            assert!(!err.transient, "{name}: wrong until someone fixes it");
        }
    }

    #[test]
    fn group_or_world_readable_files_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "v").unwrap();
        let p_str = p.to_string_lossy().into_owned();
        for (mode, warned) in [(0o600, None), (0o400, None), (0o640, Some("its group")), (0o644, Some("every user"))] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let w = loose_permissions(&p_str);
            match warned {
                None => assert_eq!(w, None, "{mode:o}"),
                Some(who) => assert!(w.as_deref().is_some_and(|w| w.contains(who)), "{mode:o}: {w:?}"),
            }
        }
    }
}
