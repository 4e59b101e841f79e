//! The service files in `config/`: the systemd unit's commands are ones this posbridge
//! accepts (run here as the unit would run them), the unit is hardened, the udev rule
//! grants hidraw to the service group, and the README's install steps name files that
//! exist.

use std::path::{Path, PathBuf};
use std::process::Command;

use posbridge_testkit::Install;

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn unit() -> String {
    std::fs::read_to_string(repo().join("config/posbridge.service")).unwrap()
}

/// The arguments of a unit line such as `ExecStart=/usr/local/bin/posbridge serve …`.
fn command_of(key: &str, config: &Path) -> Vec<String> {
    let line = unit().lines().find(|line| line.starts_with(&format!("{key}="))).unwrap_or_else(|| panic!("no {key}")).to_string();
    let mut words: Vec<String> = line.split_once('=').unwrap().1.split_whitespace().map(str::to_string).collect();
    assert_eq!(words.remove(0), "/usr/local/bin/posbridge");
    words.into_iter().map(|word| if word == "/etc/posbridge/posbridge.toml" { config.display().to_string() } else { word }).collect()
}

#[test]
fn the_units_commands_run_as_written() {
    let install = Install::new(BIN);
    install.configure("");
    let check = Command::new(BIN).args(command_of("ExecStartPre", &install.config_path())).output().unwrap();
    assert!(check.status.success(), "ExecStartPre: {}", String::from_utf8_lossy(&check.stderr));
    let serve = command_of("ExecStart", &install.config_path());
    assert_eq!(&serve[..1], ["serve"]);
    assert!(serve.contains(&"--log-format".to_string()) && serve.contains(&"json".to_string()));
    // The daemon the unit starts comes up with those arguments (the test kit adds the same
    // --log-format json and waits for the `listening` line).
    let daemon = install.start_command(&["serve"]);
    assert_eq!(daemon.get("/healthz").status(), 200);
    assert!(unit().contains("ExecReload=/bin/kill -HUP $MAINPID"), "reload is SIGHUP, which posbridge handles");
}

#[test]
fn the_unit_is_hardened_and_the_udev_rule_grants_hidraw_to_the_service_group() {
    let unit = unit();
    for setting in [
        "User=posbridge",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "PrivateTmp=true",
        "CapabilityBoundingSet=",
        "MemoryDenyWriteExecute=true",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "DeviceAllow=char-hidraw rw",
        "UMask=0077",
        "SystemCallErrorNumber=EPERM",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "LimitNOFILE=65536",
        "MemoryMax=512M",
        "TasksMax=256",
    ] {
        assert!(unit.lines().any(|line| line == setting), "{setting} missing");
    }
    let rule = std::fs::read_to_string(repo().join("config/99-posbridge-scanners.rules")).unwrap();
    let active: Vec<&str> = rule.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()).collect();
    assert_eq!(active.len(), 1);
    for part in
        ["KERNEL==\"hidraw*\"", "SUBSYSTEM==\"hidraw\"", "ATTRS{idVendor}==", "ATTRS{idProduct}==", "MODE=\"0660\"", "GROUP=\"posbridge\""]
    {
        assert!(active[0].contains(part), "{part} missing from {}", active[0]);
    }
}

#[test]
fn the_readme_install_steps_name_files_that_exist() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme.split("## Running in a shop").nth(1).expect("a Running in a shop section");
    for file in ["config/posbridge.toml", "config/posbridge.service", "config/99-posbridge-scanners.rules"] {
        assert!(section.contains(file), "{file} is not in the steps");
        assert!(repo().join(file).exists(), "{file} does not exist");
    }
    assert!(section.contains("posbridge doctor"));
    assert!(section.contains("posbridge token new --client"), "the steps make the client tokens");
}
