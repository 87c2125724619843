//! Passwords never survive redaction, whatever characters they hold: the `url`
//! crate (the parser sqlx uses) encodes each password into a real connection URL,
//! and the redacted text must hold neither its raw nor its encoded form, while
//! still parsing back to the same user, host, port, path and query.

use sweeper::artifacts::Artifacts;
use sweeper::redact::redact_url;

const PASSWORDS: &[&str] = &[
    "hunter2",
    "p@ss:w/rd?#",
    "with space",
    "100%_sure&more=yes",
    "ünïcødé-☃",
    "a'b\"c",
    "x",
];

#[test]
fn any_password_encoded_by_the_url_crate_is_masked() {
    for password in PASSWORDS {
        let mut url = url::Url::parse("postgres://db.internal:6543/sweeps?sslmode=require")
            .expect("base URL");
        url.set_username("sweeper").expect("user");
        url.set_password(Some(password)).expect("password");
        let encoded = url.password().expect("set").to_string();
        let message = format!("error connecting to {url}: connection refused (retry {url})");

        let redacted = redact_url(&message);
        assert!(
            !redacted.contains(&encoded),
            "{password:?} leaked: {redacted}"
        );
        if password.len() > 3 {
            assert!(
                !redacted.contains(password),
                "{password:?} leaked: {redacted}"
            );
        }
        assert_eq!(redacted.matches(":***@").count(), 2, "{redacted}");

        let back = redacted
            .split_whitespace()
            .nth(3)
            .expect("the URL is the fourth word")
            .trim_end_matches(':');
        let back = url::Url::parse(back).expect("the redacted URL still parses");
        assert_eq!(back.username(), "sweeper");
        assert_eq!(back.password(), Some("***"));
        assert_eq!(back.host_str(), Some("db.internal"));
        assert_eq!(back.port(), Some(6543));
        assert_eq!(back.path(), "/sweeps");
        assert_eq!(back.query(), Some("sslmode=require"));
    }
}

#[test]
fn any_password_passed_as_a_query_parameter_is_masked() {
    for password in PASSWORDS {
        let mut url = url::Url::parse("postgres://db/sweeps").expect("base URL");
        url.query_pairs_mut()
            .append_pair("user", "sweeper")
            .append_pair("password", password)
            .append_pair("sslmode", "disable");
        let redacted = redact_url(url.as_str());
        let back = url::Url::parse(&redacted).expect("still a URL");
        let pairs: Vec<(String, String)> = back.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("user".to_string(), "sweeper".to_string()),
                ("password".to_string(), "***".to_string()),
                ("sslmode".to_string(), "disable".to_string()),
            ],
            "{password:?}: {redacted}"
        );
    }
}

#[test]
fn artifact_locations_never_print_credentials() {
    let env = [(
        "SWEEPER_S3_ENDPOINT".to_string(),
        "http://minio:9000".to_string(),
    )]
    .into_iter()
    .chain([
        ("AWS_ACCESS_KEY_ID".to_string(), "AKIDSECRETID".to_string()),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            "verysecretkey".to_string(),
        ),
    ])
    .collect();
    let store = Artifacts::from_url_with_env("s3://runs/study", &env).expect("S3 store");
    let shown = format!("{} {:?}", store.description(), store);
    assert!(
        shown.contains("s3://runs/study at http://minio:9000"),
        "{shown}"
    );
    for secret in ["AKIDSECRETID", "verysecretkey"] {
        assert!(!shown.contains(secret), "{shown}");
    }

    let err = Artifacts::from_url_with_env("s3://AKID:verysecretkey@runs/study", &env)
        .expect_err("credentials in the URL are refused");
    assert!(!err.to_string().contains("verysecretkey"), "{err}");
    assert!(!format!("{err:?}").contains("verysecretkey"), "{err:?}");
}
