//! The node's home directory: where its files live.
//!
//! Resolution: `--home DIR`, else `$OUTPOST_HOME`, else the platform data dir
//! (decided by the CLI). Inside: `device.key` (0600), `outpost.redb`, `api.sock`
//! (0600), and `api.addr` when the socket had to live elsewhere.

use std::path::{Path, PathBuf};

/// Longest socket path we bind: `sun_path` is 108 bytes on Linux, 104 on macOS.
const MAX_SOCKET_PATH: usize = 100;
const SOCKET_FILE: &str = "api.sock";
const ADDR_FILE: &str = "api.addr";

/// Where the daemon of `home` binds its API socket.
///
/// Inside the home when the path is short enough; otherwise in the runtime dir
/// (or the temp dir), named by a hash of the home so each home gets its own.
pub fn socket_path(home: &Path) -> PathBuf {
    let inside = home.join(SOCKET_FILE);
    if inside.as_os_str().len() <= MAX_SOCKET_PATH {
        return inside;
    }
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let hash = blake3::hash(home.as_os_str().as_encoded_bytes());
    dir.join(format!("outpost-{}.sock", &hash.to_hex()[..16]))
}

/// The socket a client should connect to: the daemon records a fallback location
/// in `api.addr`.
pub fn client_socket_path(home: &Path) -> PathBuf {
    match std::fs::read_to_string(home.join(ADDR_FILE)) {
        Ok(path) if !path.trim().is_empty() => PathBuf::from(path.trim()),
        _ => socket_path(home),
    }
}

/// Records where the socket is, when it is not inside the home.
pub fn record_socket_path(home: &Path, socket: &Path) -> std::io::Result<()> {
    let addr = home.join(ADDR_FILE);
    if socket.parent() == Some(home) {
        match std::fs::remove_file(&addr) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    } else {
        std::fs::write(addr, socket.as_os_str().as_encoded_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_homes_fall_back() {
        let short = Path::new("/tmp/h");
        assert_eq!(socket_path(short), short.join("api.sock"));
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(150)));
        let s = socket_path(&long);
        assert!(s.as_os_str().len() <= MAX_SOCKET_PATH + 40);
        assert_ne!(s, socket_path(&PathBuf::from(format!("/tmp/{}", "y".repeat(150)))));
    }
}
