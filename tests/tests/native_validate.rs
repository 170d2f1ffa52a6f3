//! `envoy --mode validate` loads the native module and has it check its configuration: the
//! shipped envoy-native.yaml is accepted, a flag the resolver would refuse fails validation,
//! and validating starts nothing (no gateway listener bound).

use std::process::Command;

use sandgate_tests::envoy::{SHIPPED_NATIVE_ARGS, artefact, render, repo_root};

fn validate(config: &str) -> (bool, String) {
    let envoy = artefact(
        "SANDGATE_ENVOY",
        "target/envoy-venv/bin/envoy",
        "run `just envoy`",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("envoy-native.yaml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(envoy)
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        // Relative paths (the module, demo/) as the shipped file expects them.
        .current_dir(repo_root())
        .output()
        .expect("run envoy --mode validate");
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), log)
}

fn shipped() -> String {
    let module = artefact(
        "SANDGATE_NATIVE",
        "target/native/libsandgate_native.so",
        "run `just native`",
    );
    let template = std::fs::read_to_string(repo_root().join("envoy-native.yaml")).expect("read");
    render(
        &template,
        &[(
            "filename: target/native/libsandgate_native.so",
            format!("filename: {}", module.display()),
        )],
    )
}

#[test]
fn the_shipped_configuration_validates_and_starts_nothing() {
    let (ok, log) = validate(&shipped());
    assert!(ok, "{log}");
    assert!(log.contains("ABI version v0.2.0 matched"), "{log}");
    assert!(log.contains("the gateway's flags are valid"), "{log}");
    assert!(
        !log.contains("listening"),
        "validation started the gateway:\n{log}"
    );
}

#[test]
fn a_flag_the_resolver_refuses_fails_validation() {
    let bad = render(
        &shipped(),
        &[(
            SHIPPED_NATIVE_ARGS,
            r#"args: ["--pod-source=inventory", "--no-such-flag"]"#.to_string(),
        )],
    );
    let (ok, log) = validate(&bad);
    assert!(!ok, "accepted:\n{log}");
    assert!(log.contains("--no-such-flag"), "{log}");
    assert!(log.contains("Failed to initialize dynamic module"), "{log}");
}
