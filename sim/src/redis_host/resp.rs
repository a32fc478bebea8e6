//! RESP2 on the wire: the replies the host sends ([`Reply`]), the request parser, and the integer
//! syntax Redis accepts.

/// A reply, as RESP2 encodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`, `+PONG`, or a script's `{ok = ...}`.
    Status(String),
    /// `-CODE message`.
    Err(String),
    /// `:n`.
    Int(i64),
    /// `$n`, or nil (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*n`.
    Array(Vec<Reply>),
}

/// A bulk string reply.
pub(crate) fn bulk(b: impl Into<Vec<u8>>) -> Reply {
    Reply::Bulk(Some(b.into()))
}

/// A status reply.
pub(crate) fn status(s: &str) -> Reply {
    Reply::Status(s.to_owned())
}

impl Reply {
    /// Appends the RESP2 encoding to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Err(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.write(out);
                }
            }
        }
    }

    /// The short form the trace shows.
    pub(crate) fn show(&self) -> String {
        match self {
            Reply::Status(s) => format!("+{s}"),
            Reply::Err(s) => format!("-{}", s.split(' ').next().unwrap_or("")),
            Reply::Int(n) => format!(":{n}"),
            Reply::Bulk(None) => "nil".into(),
            Reply::Bulk(Some(b)) if b.len() > 40 => format!("${}", b.len()),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Array(items) if items.len() > 6 => format!("[{} items]", items.len()),
            Reply::Array(items) => {
                format!("[{}]", items.iter().map(Reply::show).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// One parsed command (its arguments) and the bytes it used.
type Parsed = Option<(Vec<Vec<u8>>, usize)>;

/// Parses one RESP array of bulk strings from the front of `buf`: `Ok(Some((args, used)))`,
/// `Ok(None)` if incomplete, `Err` if malformed.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, ()> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let rest = buf.get(at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        Some((&rest[..end], at + end + 2))
    }
    fn num(b: &[u8]) -> Result<i64, ()> {
        std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(())
    }
    let Some((head, mut at)) = line(buf, 0) else { return Ok(None) };
    if head.first() != Some(&b'*') {
        return Err(());
    }
    let n = num(&head[1..])?;
    if !(1..=1024).contains(&n) {
        return Err(());
    }
    let mut args = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let Some((h, next)) = line(buf, at) else { return Ok(None) };
        if h.first() != Some(&b'$') {
            return Err(());
        }
        let len = num(&h[1..])?;
        if !(0..=1 << 20).contains(&len) {
            return Err(());
        }
        let len = len as usize;
        if buf.len() < next + len + 2 {
            return Ok(None);
        }
        args.push(buf[next..next + len].to_vec());
        at = next + len + 2;
    }
    Ok(Some((args, at)))
}

/// A command for the trace (long arguments, such as script texts, by their length).
pub(crate) fn show_args(argv: &[Vec<u8>]) -> String {
    argv.iter()
        .map(
            |a| {
                if a.len() > 40 {
                    format!("<{}B>", a.len())
                } else {
                    String::from_utf8_lossy(a).into_owned()
                }
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` as Redis parses an integer (`string2ll`, as `INCR` does): an optional `-`, then digits
/// without a leading zero (`0` alone is fine), within i64. No `+`, no spaces, no `-0`.
pub(crate) fn redis_int(s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    let leading_zero = digits.first() == Some(&b'0') && s.len() > 1;
    if digits.is_empty() || leading_zero || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resp_arrays() {
        let b = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n";
        let (a, used) = parse(b).unwrap().unwrap();
        assert_eq!(a, vec![b"GET".to_vec(), b"k".to_vec()]);
        let (a, _) = parse(&b[used..]).unwrap().unwrap();
        assert_eq!(a, vec![b"PING".to_vec()]);
        assert!(parse(b"*2\r\n$3\r\nGE").unwrap().is_none());
        assert!(parse(b"+x\r\n").is_err());
    }

    #[test]
    fn integers_parse_as_in_redis() {
        assert_eq!(redis_int(b"0"), Some(0));
        assert_eq!(redis_int(b"-5"), Some(-5));
        assert_eq!(redis_int(b"9223372036854775807"), Some(i64::MAX));
        for bad in
            [&b""[..], b"-", b"-0", b"05", b"+5", b" 5", b"5 ", b"1e3", b"12abc", b"9223372036854775808"]
        {
            assert_eq!(redis_int(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
