//! Who may reach what: tenant isolation, bad/missing/expired keys, and key Secrets appearing
//! and disappearing while the resolver runs.

use sandgate_tests::emulator::Kind;
use sandgate_tests::fixtures::{key_secret, pod};
use sandgate_tests::process::Outcome;
use sandgate_tests::stack::{
    ACME_KEY, ADMIN_KEY, GLOBEX_KEY, KEYS_NAMESPACE, KubeStack, PROPAGATION,
};

async fn stack_with_two_tenants() -> KubeStack {
    let s = KubeStack::start(&[]).await;
    s.emu.apply(
        pod("acme", "pa")
            .sandbox("sb-acme")
            .phase("running")
            .ip("10.7.0.1")
            .json(),
    );
    s.emu.apply(
        pod("globex", "pg")
            .sandbox("sb-globex")
            .phase("running")
            .ip("10.7.0.2")
            .json(),
    );
    let want = Outcome::Route("10.7.0.2:80".into());
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb-globex", 80, &want, PROPAGATION)
            .await,
        want
    );
    s
}

#[tokio::test]
async fn a_tenant_reaches_only_its_own_namespace() {
    let s = stack_with_two_tenants().await;
    let r = &s.resolver;
    assert_eq!(
        r.resolve(ACME_KEY, "sb-acme", 80).await,
        Outcome::Route("10.7.0.1:80".into())
    );
    assert_eq!(
        r.resolve(GLOBEX_KEY, "sb-globex", 80).await,
        Outcome::Route("10.7.0.2:80".into())
    );
    assert_eq!(
        r.resolve(ACME_KEY, "sb-globex", 80).await,
        Outcome::deny(403, "forbidden")
    );
    assert_eq!(
        r.resolve(GLOBEX_KEY, "sb-acme", 80).await,
        Outcome::deny(403, "forbidden")
    );
    // A pushed route into another tenant's namespace is just as forbidden.
    let mut ctl = s.control().await;
    ctl.push("sb-globex", "globex", "pg").await.unwrap();
    assert_eq!(
        r.resolve(ACME_KEY, "sb-globex", 80).await,
        Outcome::deny(403, "forbidden")
    );
}

#[tokio::test]
async fn bad_missing_and_expired_keys_are_401() {
    let s = stack_with_two_tenants().await;
    s.emu.apply(key_secret(
        KEYS_NAMESPACE,
        "key-old",
        "old-acme-key",
        "acme",
        Some("2020-01-01T00:00:00Z"),
    ));
    s.emu.apply(key_secret(
        KEYS_NAMESPACE,
        "key-new",
        "new-acme-key",
        "acme",
        Some("2099-01-01T00:00:00Z"),
    ));
    let ok = Outcome::Route("10.7.0.1:80".into());
    let r = &s.resolver;
    assert_eq!(
        r.resolve_until("new-acme-key", "sb-acme", 80, &ok, PROPAGATION)
            .await,
        ok
    );
    assert_eq!(
        r.resolve("old-acme-key", "sb-acme", 80).await,
        Outcome::deny(401, "expired_api_key")
    );
    assert_eq!(
        r.resolve("", "sb-acme", 80).await,
        Outcome::deny(401, "missing_api_key")
    );
    assert_eq!(
        r.resolve("no-such-key", "sb-acme", 80).await,
        Outcome::deny(401, "invalid_api_key")
    );
    // The key's hash is not the key.
    let hash = sandgate_tests::fixtures::sha256_hex(ACME_KEY);
    assert_eq!(
        r.resolve(&hash, "sb-acme", 80).await,
        Outcome::deny(401, "invalid_api_key")
    );
    // Bad request facts are refused before the key is even looked at.
    assert_eq!(
        r.resolve("", "bad/id", 80).await,
        Outcome::deny(400, "invalid_sandbox_id")
    );
    assert_eq!(
        r.resolve("", "sb-acme", 0).await,
        Outcome::deny(400, "missing_port")
    );
    assert_eq!(
        r.resolve("", "sb-acme", 70000).await,
        Outcome::deny(400, "invalid_port")
    );
}

#[tokio::test]
async fn key_secrets_take_effect_within_seconds() {
    let s = stack_with_two_tenants().await;
    let ok = Outcome::Route("10.7.0.1:80".into());
    let refused = Outcome::deny(401, "invalid_api_key");
    let r = &s.resolver;
    assert_eq!(r.resolve("fresh-key", "sb-acme", 80).await, refused);

    s.emu.apply(key_secret(
        KEYS_NAMESPACE,
        "key-fresh",
        "fresh-key",
        "acme",
        None,
    ));
    assert_eq!(
        r.resolve_until("fresh-key", "sb-acme", 80, &ok, PROPAGATION)
            .await,
        ok
    );

    // Revocation: the Secret is deleted and the key stops working.
    assert!(s.emu.delete(Kind::Secret, KEYS_NAMESPACE, "key-fresh"));
    assert_eq!(
        r.resolve_until("fresh-key", "sb-acme", 80, &refused, PROPAGATION)
            .await,
        refused
    );
    // Other keys are unaffected.
    assert_eq!(r.resolve(ACME_KEY, "sb-acme", 80).await, ok);
}

#[tokio::test]
async fn keys_never_appear_in_logs_or_metrics() {
    let s = stack_with_two_tenants().await;
    s.resolver.resolve(ACME_KEY, "sb-acme", 80).await;
    s.resolver.resolve("wrong-key-value", "sb-acme", 80).await;
    let (_, metrics) = s.resolver.http_get("/metrics", None).await;
    let logs = s.resolver.logs();
    for secret in [ACME_KEY, ADMIN_KEY, "wrong-key-value"] {
        assert!(!metrics.contains(secret), "metrics leak a key");
        assert!(!logs.contains(secret), "logs leak a key");
    }
}
