//! Who holds a TCP port, for an error that says more than "in use".

use std::net::{IpAddr, SocketAddr};

/// "pid 1234 (nginx)" for the process listening on `addr`'s port, when
/// /proc tells (it may not: another user's process, a network namespace).
pub fn holder(addr: SocketAddr) -> Option<String> {
    let inode = listening_inode(addr)?;
    let needle = format!("socket:[{inode}]");
    for proc in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = proc.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == needle.as_str()) {
                let name = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", name.trim()));
            }
        }
    }
    None
}

/// The inode of a socket in LISTEN state on `addr`'s port (any address when
/// `addr` is unspecified).
fn listening_inode(addr: SocketAddr) -> Option<u64> {
    let table = if addr.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(table).ok()?;
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
        if cols.len() < 10 || cols[3] != "0A" {
            continue;
        }
        let (ip_hex, port_hex) = cols[1].split_once(':')?;
        if u16::from_str_radix(port_hex, 16).ok()? != addr.port() {
            continue;
        }
        let same_ip =
            addr.ip().is_unspecified() || parse_ip(ip_hex).is_some_and(|ip| ip == addr.ip() || ip.is_unspecified());
        if same_ip {
            return cols[9].parse().ok();
        }
    }
    None
}

/// /proc/net/tcp writes addresses as native-endian 32-bit words in hex.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<u32>> =
        (0..hex.len() / 8).map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()).collect();
    let bytes: Vec<u8> = words?.into_iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_this_process_as_the_holder_of_its_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let h = holder(l.local_addr().unwrap()).expect("a holder");
        assert!(h.starts_with(&format!("pid {} ", std::process::id())), "{h}");
        drop(l);
    }
}
