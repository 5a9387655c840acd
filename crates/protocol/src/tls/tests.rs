use super::*;
use crate::{handshake, Hello, Role};

fn hello(role: Role) -> Hello {
    Hello {
        role,
        software: "test".into(),
    }
}

#[test]
fn fingerprint_parses_and_prints() {
    let id = Identity::generate().unwrap();
    let text = id.fingerprint().to_string();
    assert!(text.starts_with("sha256:") && text.len() == 7 + 64);
    assert_eq!(text.parse::<Fingerprint>().unwrap(), id.fingerprint());
    for bad in [
        "",
        "sha256:",
        "sha256:zz",
        "md5:00",
        &text[..text.len() - 2],
    ] {
        assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
    }
    // The fingerprint of an issued certificate is the identity's fingerprint.
    let cert = id.issue_certificate().unwrap();
    assert_eq!(
        Fingerprint::of_certificate(&cert).unwrap(),
        id.fingerprint()
    );
}

#[test]
fn identity_file_is_created_private_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/node.pem");
    let a = Identity::load_or_create(&path).unwrap();
    let b = Identity::load_or_create(&path).unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!format!("{a:?}").contains("PRIVATE"));
    std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
    let err = Identity::load_or_create(&dir.path().join("bad.pem")).unwrap_err();
    assert!(err.to_string().contains("bad.pem"), "{err}");
}

/// A real TLS 1.3 handshake on loopback: pinned keys pass both ways, and the
/// peer's key is reported.
async fn dial(
    server: Arc<Identity>,
    server_pins: PinnedKeys,
    client: Arc<Identity>,
    client_pins: PinnedKeys,
) -> (
    Result<Fingerprint, ProtocolError>,
    Result<Fingerprint, ProtocolError>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(server_config(server, Arc::new(server_pins)).unwrap());
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (tls, key) = accept(tcp, &acceptor, Duration::from_secs(5)).await?;
        let (_, peer) = handshake(tls, &hello(Role::Proxy), 1024, Duration::from_secs(5)).await?;
        assert_eq!(peer.role, Role::Worker);
        Ok(key)
    });
    let config = client_config(client, Arc::new(client_pins)).unwrap();
    let client_side = async {
        let (tls, key) = connect(&addr, config, Duration::from_secs(5)).await?;
        handshake(tls, &hello(Role::Worker), 1024, Duration::from_secs(5)).await?;
        Ok(key)
    }
    .await;
    (client_side, server_side.await.unwrap())
}

#[tokio::test]
async fn pinned_handshake_succeeds() {
    let server = Arc::new(Identity::generate().unwrap());
    let client = Arc::new(Identity::generate().unwrap());
    let (c, s) = dial(
        server.clone(),
        PinnedKeys::new([client.fingerprint()]),
        client.clone(),
        PinnedKeys::new([server.fingerprint()]),
    )
    .await;
    assert_eq!(c.unwrap(), server.fingerprint());
    assert_eq!(s.unwrap(), client.fingerprint());
}

#[tokio::test]
async fn unpinned_server_is_refused_by_client() {
    let server = Arc::new(Identity::generate().unwrap());
    let client = Arc::new(Identity::generate().unwrap());
    let stranger = Identity::generate().unwrap();
    let (c, _s) = dial(
        server,
        PinnedKeys::new([client.fingerprint()]),
        client,
        PinnedKeys::new([stranger.fingerprint()]),
    )
    .await;
    assert!(matches!(c, Err(ProtocolError::Tls(_))), "{c:?}");
}

#[tokio::test]
async fn unpinned_client_is_refused_by_server() {
    let server = Arc::new(Identity::generate().unwrap());
    let client = Arc::new(Identity::generate().unwrap());
    let (_c, s) = dial(
        server.clone(),
        PinnedKeys::new([]),
        client,
        PinnedKeys::new([server.fingerprint()]),
    )
    .await;
    assert!(matches!(s, Err(ProtocolError::Tls(_))), "{s:?}");
}

#[test]
fn expired_certificate_is_refused() {
    let id = Identity::generate().unwrap();
    let pins = PinnedKeys::new([id.fingerprint()]);
    let cert = id.issue_certificate().unwrap();
    let now = UnixTime::now();
    assert!(pins.check(&cert, now).is_ok());
    let later = UnixTime::since_unix_epoch(Duration::from_secs(
        now.as_secs() + CERT_LIFETIME.as_secs() + 60,
    ));
    assert!(matches!(
        pins.check(&cert, later),
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired
        ))
    ));
    let earlier = UnixTime::since_unix_epoch(Duration::from_secs(now.as_secs() - 3600));
    assert!(pins.check(&cert, earlier).is_err());
}

#[test]
fn a_raw_ed25519_key_has_its_certificates_fingerprint() {
    let identity = Identity::generate().unwrap();
    let raw: [u8; 32] = ed25519_raw_key(identity.spki())
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(Fingerprint::of_ed25519(&raw), identity.fingerprint());
    let mut other = raw;
    other[0] ^= 1;
    assert_ne!(Fingerprint::of_ed25519(&other), identity.fingerprint());
}

/// A key made from a seed (what a key manager releases) is the same key
/// every time, signs like any identity, and keeps the node's TEE.
#[test]
fn an_identity_from_a_seed_is_stable_and_keeps_the_nodes_tee() {
    let a = Identity::from_seed(&[7; 32]).unwrap();
    let b = Identity::from_seed(&[7; 32]).unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_ne!(
        a.fingerprint(),
        Identity::from_seed(&[8; 32]).unwrap().fingerprint()
    );
    // RFC 8032 test vector 1: this secret key has this public key.
    let seed: [u8; 32] =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
    let vector = Identity::from_seed(&seed).unwrap();
    assert_eq!(
        hex::encode(ed25519_raw_key(vector.spki()).unwrap()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    let node = Identity::generate()
        .unwrap()
        .with_attester(std::sync::Arc::new(
            cocoon_attestation::simulated::SimulatedTee::new(),
        ));
    let lasting = node.with_key(&[7; 32]).unwrap();
    assert_eq!(lasting.fingerprint(), a.fingerprint());
    assert!(lasting.evidence(&[0; 64]).is_some(), "the TEE is kept");
}
