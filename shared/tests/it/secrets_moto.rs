//! `SecretsManagerSecrets` against a real Secrets Manager API (moto, started by
//! `scripts/test-all.sh`). Without `MCPGW_TEST_AWS_ENDPOINT` each test returns early, unless
//! peers are required (`MCPGW_REQUIRE_PEERS=1` or CI), in which case it fails.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::primitives::Blob;
use mcpgw::aws::emulator_sdk_config;
use mcpgw::secrets::aws::SecretsManagerSecrets;
use mcpgw::secrets::{SecretRef, Secrets, SecretsError};
use mcpgw::testing::{moto_endpoint, unique_name};

/// Long enough that nothing expires during a test that relies on the cache.
const LONG_TTL: Duration = Duration::from_secs(600);
/// Short enough that expiry tests stay fast, long enough that two back-to-back resolves fall
/// inside it even on a loaded 2-core CI machine.
const SHORT_TTL: Duration = Duration::from_millis(400);

fn client(endpoint: &str) -> Client {
    Client::new(&emulator_sdk_config(endpoint))
}

/// Creates a uniquely named string secret and returns its name.
async fn create(c: &Client, value: &str) -> String {
    let name = unique_name("mcpgw-test/secret");
    c.create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .expect("create_secret");
    name
}

fn r(s: &str) -> SecretRef {
    SecretRef::parse(s).unwrap()
}

#[tokio::test]
async fn resolves_plain_value() {
    let Some(ep) = moto_endpoint() else { return };
    let c = client(&ep);
    let name = create(&c, "plain-s3cr3t").await;
    let s = SecretsManagerSecrets::new(c, LONG_TTL);
    let v = s.resolve(&r(&format!("secret://{name}"))).await.unwrap();
    assert_eq!(v.expose(), "plain-s3cr3t");
}

#[tokio::test]
async fn resolves_by_arn() {
    let Some(ep) = moto_endpoint() else { return };
    let c = client(&ep);
    let name = unique_name("mcpgw-test/arn");
    let out = c
        .create_secret()
        .name(&name)
        .secret_string("by-arn")
        .send()
        .await
        .unwrap();
    let arn = out.arn().expect("moto returns the ARN").to_owned();
    let s = SecretsManagerSecrets::new(c, LONG_TTL);
    assert_eq!(
        s.resolve(&r(&format!("secret://{arn}")))
            .await
            .unwrap()
            .expose(),
        "by-arn"
    );
}

#[tokio::test]
async fn selects_json_field_and_reports_missing_field() {
    let Some(ep) = moto_endpoint() else { return };
    let c = client(&ep);
    let name = create(&c, r#"{"client_id":"cid","client_secret":"cs-s3cr3t"}"#).await;
    let s = SecretsManagerSecrets::new(c, LONG_TTL);
    let v = s
        .resolve(&r(&format!("secret://{name}#client_secret")))
        .await
        .unwrap();
    assert_eq!(v.expose(), "cs-s3cr3t");
    let e = s
        .resolve(&r(&format!("secret://{name}#nope")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SecretsError::FieldMissing { name: n, field } if *n == name && field == "nope"),
        "{e:?}"
    );
    assert!(!format!("{e} {e:?}").contains("cs-s3cr3t"));
}

#[tokio::test]
async fn missing_secret_is_not_found() {
    let Some(ep) = moto_endpoint() else { return };
    let s = SecretsManagerSecrets::new(client(&ep), LONG_TTL);
    let name = unique_name("mcpgw-test/absent");
    match s.resolve(&r(&format!("secret://{name}"))).await {
        Err(SecretsError::NotFound(n)) => assert_eq!(n, name),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn binary_only_secret_has_no_string() {
    let Some(ep) = moto_endpoint() else { return };
    let c = client(&ep);
    let name = unique_name("mcpgw-test/binary");
    c.create_secret()
        .name(&name)
        .secret_binary(Blob::new(vec![0u8, 1, 2]))
        .send()
        .await
        .unwrap();
    let s = SecretsManagerSecrets::new(c, LONG_TTL);
    let e = s
        .resolve(&r(&format!("secret://{name}")))
        .await
        .unwrap_err();
    assert!(matches!(e, SecretsError::NoString(_)), "{e:?}");
}

#[tokio::test]
async fn unreachable_backend_is_a_backend_error() {
    // Port 1 on loopback refuses connections; retries are off so this fails at once.
    let Some(_) = moto_endpoint() else { return };
    let conf =
        aws_sdk_secretsmanager::config::Builder::from(&emulator_sdk_config("http://127.0.0.1:1"))
            .retry_config(aws_sdk_secretsmanager::config::retry::RetryConfig::disabled())
            .build();
    let s = SecretsManagerSecrets::new(Client::from_conf(conf), LONG_TTL);
    let e = s.resolve(&r("secret://whatever")).await.unwrap_err();
    assert!(matches!(e, SecretsError::Backend(_)), "{e:?}");
    assert_eq!(s.backend_calls(), 1);
}

#[tokio::test]
async fn cache_hit_makes_no_second_call_within_ttl() {
    let Some(ep) = moto_endpoint() else { return };
    let c = client(&ep);
    let name = create(&c, r#"{"a":"1","b":"2"}"#).await;
    let s = SecretsManagerSecrets::new(c, LONG_TTL);
    // Several field references to one secret share one cached SecretString.
    assert_eq!(
        s.resolve(&r(&format!("secret://{name}#a")))
            .await
            .unwrap()
            .expose(),
        "1"
    );
    assert_eq!(
        s.resolve(&r(&format!("secret://{name}#b")))
            .await
            .unwrap()
            .expose(),
        "2"
    );
    assert_eq!(
        s.resolve(&r(&format!("secret://{name}")))
            .await
            .unwrap()
            .expose(),
        r#"{"a":"1","b":"2"}"#
    );
    assert_eq!(s.backend_calls(), 1);
}

#[tokio::test]
async fn concurrent_misses_make_one_call() {
    let Some(ep) = moto_endpoint() else { return };
    let c = client(&ep);
    let name = create(&c, "shared").await;
    let s = Arc::new(SecretsManagerSecrets::new(c, LONG_TTL));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (s, reference) = (s.clone(), r(&format!("secret://{name}")));
            tokio::spawn(async move { s.resolve(&reference).await.map(|v| v.expose().to_owned()) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "shared");
    }
    assert_eq!(
        s.backend_calls(),
        1,
        "single-flight: one GetSecretValue for 16 concurrent misses"
    );
}

#[tokio::test]
async fn expiry_makes_a_new_call_and_sees_updates() {
    let Some(ep) = moto_endpoint() else { return };
    let c = client(&ep);
    let name = create(&c, "v1").await;
    let s = SecretsManagerSecrets::new(c.clone(), SHORT_TTL);
    let reference = r(&format!("secret://{name}"));
    assert_eq!(s.resolve(&reference).await.unwrap().expose(), "v1");
    assert_eq!(s.backend_calls(), 1);

    // Rotate the secret: within the TTL the cached value is still served, without a call.
    c.put_secret_value()
        .secret_id(&name)
        .secret_string("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(s.resolve(&reference).await.unwrap().expose(), "v1");
    assert_eq!(s.backend_calls(), 1);

    // After the TTL: a new call, and the new value.
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(100)).await;
    assert_eq!(s.resolve(&reference).await.unwrap().expose(), "v2");
    assert_eq!(s.backend_calls(), 2);
}

#[tokio::test]
async fn debug_never_shows_the_value() {
    let Some(ep) = moto_endpoint() else { return };
    let c = client(&ep);
    let name = create(&c, r#"{"token":"tok-s3cr3t"}"#).await;
    let s = SecretsManagerSecrets::new(c, LONG_TTL);
    let whole = s.resolve(&r(&format!("secret://{name}"))).await.unwrap();
    let field = s
        .resolve(&r(&format!("secret://{name}#token")))
        .await
        .unwrap();
    let printed = format!("{whole:?} {whole} {field:?} {field} {s:?}");
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert_eq!(field.expose(), "tok-s3cr3t");
}
