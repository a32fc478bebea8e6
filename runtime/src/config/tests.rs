//! Tests of the command line.

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("presence-server").chain(args.iter().copied()))
}

#[test]
fn defaults() {
    let cli = parse(&[]).unwrap();
    let s = cli.serve;
    assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(s.ping_interval, Duration::from_secs(15));
    assert_eq!(s.heartbeat_timeout, Duration::from_secs(30));
    assert_eq!(s.handshake_timeout, Duration::from_secs(10));
    assert_eq!(s.max_message_size, 65536);
    assert_eq!(s.lease_ttl, Duration::from_secs(10));
    assert_eq!(s.lease_renew_interval, Duration::from_secs(3));
    assert_eq!((s.max_watched_users, s.offline_grace), (1_000, Duration::from_secs(5)));
    assert_eq!((s.lookup_rate, s.lookup_burst, s.max_watched_users_total), (100, 1_000, 1_000_000));
    assert_eq!(s.jwt_leeway, Duration::from_secs(30));
    assert_eq!(s.validate(), Ok(()));
    let core = s.core_config();
    assert_eq!((core.lookup_rate, core.lookup_burst, core.max_queries_in_flight), (100, 1_000, 8));
    assert_eq!((core.frame_rate, core.frame_burst), (20, 200));
    assert_eq!(core.max_watched_users_total, 1_000_000);
    assert_eq!((core.lease_ttl, core.lease_renew_interval), (s.lease_ttl, s.lease_renew_interval));
}

#[test]
fn lease_renewal_must_fit_twice_in_the_ttl() {
    let cli = parse(&["--lease-ttl", "1s", "--lease-renew-interval", "500ms"]).unwrap();
    assert_eq!(cli.serve.validate(), Ok(()));
    let cli = parse(&["--lease-ttl", "1s", "--lease-renew-interval", "501ms"]).unwrap();
    assert_eq!(
        cli.serve.validate(),
        Err(ConfigError::Lease { renew: Duration::from_millis(501), ttl: Duration::from_secs(1) })
    );
    let cli = parse(&["--lease-renew-interval", "0s"]).unwrap();
    assert_eq!(cli.serve.validate(), Err(ConfigError::Zero("--lease-renew-interval")));
}

#[test]
fn humantime_durations_and_origins() {
    let cli = parse(&[
        "--ping-interval",
        "200ms",
        "--heartbeat-timeout",
        "1s",
        "--allowed-origins",
        "https://a,https://b",
    ])
    .unwrap();
    assert_eq!(cli.serve.ping_interval, Duration::from_millis(200));
    assert_eq!(cli.serve.heartbeat_timeout, Duration::from_secs(1));
    assert_eq!(cli.serve.allowed_origins, Some(vec!["https://a".to_owned(), "https://b".to_owned()]));
    assert!(parse(&["--ping-interval", "soon"]).is_err());
}

#[test]
fn refuses_public_bind_without_secret_and_bad_heartbeat() {
    let cli = parse(&["--listen", "0.0.0.0:8080"]).unwrap();
    assert!(matches!(cli.serve.validate(), Err(ConfigError::SecretRequired(_))));
    let cli = parse(&["--listen", "0.0.0.0:8080", "--jwt-secret", SECRET]).unwrap();
    assert_eq!(cli.serve.validate(), Ok(()));
    let cli = parse(&["--ping-interval", "30s", "--heartbeat-timeout", "30s"]).unwrap();
    assert!(matches!(cli.serve.validate(), Err(ConfigError::Heartbeat { .. })));
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn refuses_short_and_empty_secrets() {
    let flag = "--jwt-secret (PRESENCE_JWT_SECRET)";
    for (secret, len) in [("", 0), ("s", 1), (&SECRET[..31], 31)] {
        let cli = parse(&["--jwt-secret", secret]).unwrap();
        assert_eq!(cli.serve.validate(), Err(ConfigError::SecretTooShort { flag, len }));
    }
    let cli = parse(&["--jwt-secret", SECRET]).unwrap();
    assert_eq!(cli.serve.jwt.secret(), Ok(Some(SECRET.as_bytes().to_vec())));
    let msg = ConfigError::SecretTooShort { flag, len: 0 }.to_string();
    assert!(
        msg.starts_with(
            "--jwt-secret (PRESENCE_JWT_SECRET) is 0 bytes; an HS256 secret must be at least 32 bytes"
        ),
        "{msg}"
    );
    assert!(msg.contains("RFC 7518"), "{msg}");
    // Dev mode only without either flag.
    assert_eq!(parse(&[]).unwrap().serve.jwt.secret(), Ok(None));
}

#[test]
fn reads_the_secret_file() {
    let dir = std::env::temp_dir().join(format!("presence-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let secret_of = |path: &str| parse(&["--jwt-secret-file", path]).unwrap().serve.jwt.secret();
    let want = Ok(Some(SECRET.as_bytes().to_vec()));
    assert_eq!(secret_of(&file("lf", &format!("{SECRET}\n"))), want);
    assert_eq!(secret_of(&file("crlf", &format!("{SECRET}\r\n"))), want);
    assert_eq!(secret_of(&file("bare", SECRET)), want);
    let flag = "--jwt-secret-file (PRESENCE_JWT_SECRET_FILE)";
    assert_eq!(secret_of(&file("short", "short\n")), Err(ConfigError::SecretTooShort { flag, len: 5 }));
    assert_eq!(secret_of(&file("empty", "\n")), Err(ConfigError::SecretTooShort { flag, len: 0 }));
    let missing = dir.join("missing");
    assert!(matches!(
        secret_of(missing.to_str().unwrap()),
        Err(ConfigError::SecretFile { path, .. }) if path == missing
    ));
    let both = parse(&["--jwt-secret", SECRET, "--jwt-secret-file", &file("both", SECRET)]).unwrap();
    assert_eq!(both.serve.validate(), Err(ConfigError::SecretTwice));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn claims_and_edge_limits() {
    let cli =
        parse(&["--jwt-secret", SECRET, "--jwt-issuer", "https://id", "--jwt-audience", "presence"]).unwrap();
    let rules = cli.serve.jwt.claim_rules().unwrap();
    assert_eq!((rules.issuer.as_deref(), rules.audience.as_deref()), (Some("https://id"), Some("presence")));
    let cli = parse(&["--jwt-secret", SECRET, "--jwt-issuer", ""]).unwrap();
    assert_eq!(cli.serve.validate(), Err(ConfigError::Empty("--jwt-issuer")));
    let s = parse(&[]).unwrap().serve;
    assert_eq!(
        (s.edge.max_handshakes, s.edge.max_sessions_per_user, s.edge.max_connections_per_ip),
        (1_024, 16, 0)
    );
    assert_eq!(s.admin_listen, None);
    let cli = parse(&["--max-sessions-per-user", "0"]).unwrap();
    assert_eq!(cli.serve.validate(), Err(ConfigError::Zero("--max-sessions-per-user")));
    let cli = parse(&["--max-handshakes", "0"]).unwrap();
    assert_eq!(cli.serve.validate(), Err(ConfigError::Zero("--max-handshakes")));
    let cli = parse(&["--admin-listen", "127.0.0.1:9090"]).unwrap();
    assert_eq!(cli.serve.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
}

#[test]
fn token_subcommand() {
    let cli = parse(&["token", "--user", "bob", "--jwt-secret", "s"]).unwrap();
    match cli.command {
        Some(Command::Token(t)) => {
            assert_eq!(t.user, "bob");
            assert_eq!(t.ttl, Duration::from_secs(24 * 3600));
        }
        other => panic!("expected the token subcommand, got {other:?}"),
    }
}

#[test]
fn client_subcommands() {
    let cli = parse(&["query", "--url", "ws://10.0.0.1:9000", "bob", "carol", "--json"]).unwrap();
    match cli.command {
        Some(Command::Query(q)) => {
            assert_eq!(q.users, ["bob", "carol"]);
            assert_eq!(q.client.url, "ws://10.0.0.1:9000");
            assert!(q.client.json);
            assert_eq!(q.client.as_user, "presence-cli");
            assert_eq!(q.client.timeout, Duration::from_secs(5));
        }
        other => panic!("expected query, got {other:?}"),
    }
    let cli = parse(&["watch", "--as", "ops", "--jwt-secret", "s", "bob"]).unwrap();
    match cli.command {
        Some(Command::Watch(w)) => {
            assert_eq!((w.users.as_slice(), w.client.as_user.as_str()), (&["bob".to_owned()][..], "ops"));
            assert_eq!(w.client.jwt.jwt_secret.as_deref(), Some("s"));
        }
        other => panic!("expected watch, got {other:?}"),
    }
    assert!(parse(&["query"]).is_err(), "query needs at least one user");
    assert!(parse(&["query", "--token", "t", "--jwt-secret", "s", "bob"]).is_err());
}
