//! The binary as a newcomer uses it: help, config check, token minting, readable errors.

use std::process::Command;

fn cadbroker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cadbroker"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("CADBROKER_CONFIG");
    cmd
}

#[test]
fn help_names_every_subcommand() {
    let out = cadbroker().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "token", "check-config"] {
        assert!(text.contains(sub), "{text}");
    }
}

#[test]
fn check_config_summarises_the_default() {
    let out = cadbroker().arg("check-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("drafting-2d") && text.contains("visualisation-3d"), "{text}");
    assert!(text.contains("local desktops:"), "says whether real desktops are possible: {text}");
}

#[test]
fn check_config_names_missing_desktop_programs_and_the_fallback() {
    let out = cadbroker().arg("check-config").env("PATH", "/nonexistent").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("missing Xvfb"), "{text}");
    assert!(text.contains("apt-get install xvfb openbox librecad"), "{text}");
    assert!(text.contains("serve falls back to simulated"), "{text}");
}

#[test]
fn token_mints_a_three_part_jwt_with_a_key_in_the_given_place() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/cadbroker.toml")).unwrap();
    let key = dir.path().join("k.pem");
    let config = config.replace(".cadbroker/dev-signing-key.pem", key.to_str().unwrap());
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let out = cadbroker()
        .args(["--config", path.to_str().unwrap(), "token", "--user", "alice", "--group", "drafters"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3);
    assert!(key.exists(), "the development key was created");
}

#[test]
fn a_bad_config_is_a_readable_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/cadbroker.toml")).unwrap();
    std::fs::write(&path, config.replace("max = 2, warm = 0", "max = 2, warm = 3")).unwrap();
    let out = cadbroker().args(["--config", path.to_str().unwrap(), "check-config"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pools[1].capacity.warm (visualisation-3d): 3 is more than capacity.max (2)"),
        "{err}"
    );
}

#[test]
fn a_bad_flag_value_is_refused_before_starting() {
    let out = cadbroker().args(["serve", "--listen", "not-an-address"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
