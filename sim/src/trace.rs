//! The run's trace: one line per event, stamped with virtual time; its hash is the run's identity.

use std::fmt::Write as _;

/// Lines of `(virtual ms, text)` and a running FNV-1a hash over them.
#[derive(Debug)]
pub struct Trace {
    lines: Vec<(u64, String)>,
    hash: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace { lines: Vec::new(), hash: 0xcbf2_9ce4_8422_2325 }
    }
}

impl Trace {
    /// Appends one event.
    pub fn push(&mut self, t: u64, line: &str) {
        let line = normalize(line);
        let mut h = self.hash;
        for b in t.to_le_bytes().iter().chain(line.as_bytes()).chain(b"\n") {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.hash = h;
        self.lines.push((t, line));
    }

    /// The hash of every line so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the trace is empty.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The whole trace as text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.lines.len() * 64);
        for (t, l) in &self.lines {
            let _ = writeln!(out, "{:>6}.{:03} {l}", t / 1000, t % 1000);
        }
        out
    }
}

/// Session ids are `<server>.<boot>.<n>` where `<boot>` is drawn by `serve()` from the OS RNG
/// (`rand::random`), not from the seed: replace it by `*` so the trace stays deterministic.
pub(crate) fn normalize(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < b.len() {
        // Look for "srv<digits>.<8 hex>."
        if b[i..].starts_with(b"srv") && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let mut j = i + 3;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j > i + 3
                && j + 10 <= b.len()
                && b[j] == b'.'
                && b[j + 9] == b'.'
                && b[j + 1..j + 9].iter().all(|c| c.is_ascii_hexdigit())
            {
                out.push_str(&line[i..j]);
                out.push_str(".*.");
                i = j + 10;
                continue;
            }
        }
        let ch = line[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn hides_boot_ids() {
        assert_eq!(normalize("HSET ws:{u1} srv2.0a1b2c3d.17 srv2"), "HSET ws:{u1} srv2.*.17 srv2");
        assert_eq!(normalize("srv0 up"), "srv0 up");
    }
}
