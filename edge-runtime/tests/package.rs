//! The Debian packages that hardware teams flash (`tests/package.sh` builds them into
//! `$AFFECT_DEB_DIR`): what they hold, how they install (conffile, watched unit, system user) and
//! that the installed binary runs from a scratch root — the arm64 one under `qemu-aarch64` with
//! reports equal to the amd64 one's, on tract and (with the aarch64 wheel's library) on ONNX
//! Runtime.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{in_ci, oracle_env};

/// Largest difference allowed between the two architectures' valence/arousal.
const ACROSS_ARCHITECTURES: f64 = 1e-4;

/// Debian's name of each architecture a package is built for, and how to run its binary here.
const ARCHITECTURES: [&str; 2] = ["amd64", "arm64"];

/// The package for `arch` in `$AFFECT_DEB_DIR`, or `None` (outside CI) when it was not built.
fn package(arch: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(oracle_env(
        "AFFECT_DEB_DIR",
        "the Debian package checks (build them with tests/package.sh)",
    )?);
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("AFFECT_DEB_DIR {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("affect-edge_") && name.ends_with(&format!("_{arch}.deb"))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{}: expected one affect-edge package for {arch}, found {found:?}",
        dir.display()
    );
    Some(found[0].clone())
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Unpacks `deb` into a fresh scratch root (`dpkg-deb -x`, what `dpkg --root` would place).
fn unpack(deb: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
    root
}

/// The unit's path inside an unpacked package (cargo-deb follows Debian's `/lib` or `/usr/lib`).
fn unit_in(root: &Path) -> PathBuf {
    ["usr/lib/systemd/system", "lib/systemd/system"]
        .iter()
        .map(|d| root.join(d).join("affect-edge.service"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no affect-edge.service under {}", root.display()))
}

/// ELF machine of a binary: 62 = x86-64, 183 = AArch64.
fn elf_machine(binary: &[u8]) -> u16 {
    assert_eq!(&binary[..4], b"\x7fELF", "not an ELF file");
    u16::from_le_bytes([binary[18], binary[19]])
}

#[test]
fn each_package_holds_the_binary_models_configuration_service_and_user() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    for arch in ARCHITECTURES {
        let Some(deb) = package(arch) else { return };
        let field = |name: &str| {
            stdout(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)))
                .trim()
                .to_owned()
        };
        assert_eq!(field("Package"), "affect-edge");
        assert_eq!(field("Architecture"), arch);
        let depends = field("Depends");
        assert!(
            depends.contains("libc6") && depends.contains("systemd"),
            "{arch} Depends: {depends}"
        );

        let listing = stdout(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb)));
        let paths: BTreeSet<&str> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .map(|p| p.trim_start_matches('.'))
            .collect();
        let mut expected = vec![
            "/usr/bin/affect-edge",
            "/etc/affect/edge.toml",
            "/usr/lib/sysusers.d/affect-edge.conf",
            "/usr/share/doc/affect-edge/copyright",
            "/usr/share/doc/affect-edge/README.md",
            "/usr/share/doc/affect-edge/LICENSE-MIT",
            "/usr/share/doc/affect-edge/LICENSE-APACHE",
            "/usr/share/affect/models/SHA256SUMS",
            "/usr/share/affect/models/LICENSE.blazeface",
            "/usr/share/affect/models/LICENSE.face-api",
        ];
        let model_files = [
            "blazeface.onnx",
            "face-landmarks-68.onnx",
            "expression-va.onnx",
            "affect-synth.onnx",
        ];
        let model_paths: Vec<String> = model_files
            .iter()
            .map(|m| format!("/usr/share/affect/models/{m}"))
            .collect();
        expected.extend(model_paths.iter().map(String::as_str));
        for path in expected {
            assert!(
                paths.contains(path),
                "{arch}: {path} missing from\n{listing}"
            );
        }
        assert!(
            paths
                .iter()
                .any(|p| p.ends_with("/systemd/system/affect-edge.service")),
            "{arch}: no unit in\n{listing}"
        );
        let binary_line = listing
            .lines()
            .find(|l| l.ends_with("/usr/bin/affect-edge"))
            .unwrap();
        assert!(binary_line.starts_with("-rwxr-xr-x"), "{binary_line}");

        let root = unpack(&deb);
        let binary = std::fs::read(root.path().join("usr/bin/affect-edge")).unwrap();
        let machine = elf_machine(&binary);
        assert_eq!(machine, if arch == "arm64" { 183 } else { 62 }, "{arch}");
        // Stripped: no symbol table left (the `device` profile's `strip = true`).
        assert!(
            !binary.windows(8).any(|w| w == b".symtab\0"),
            "{arch}: the binary still has a symbol table"
        );
        for model in model_files {
            assert_eq!(
                std::fs::read(root.path().join("usr/share/affect/models").join(model)).unwrap(),
                std::fs::read(models.join(model)).unwrap(),
                "{arch}: packaged {model} differs from models/{model}"
            );
        }

        // Maintainer scripts: the configuration is a conffile (kept on upgrade), the user is
        // created and the service enabled and started at install, stopped at removal.
        let control = tempfile::tempdir().unwrap();
        run(Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(control.path()));
        let read = |name: &str| {
            std::fs::read_to_string(control.path().join(name))
                .unwrap_or_else(|e| panic!("{arch}: control file {name}: {e}"))
        };
        assert!(
            read("conffiles")
                .lines()
                .any(|l| l == "/etc/affect/edge.toml"),
            "{arch} conffiles: {}",
            read("conffiles")
        );
        let postinst = read("postinst");
        for needed in ["systemd-sysusers", "affect-edge.service", "enable"] {
            assert!(
                postinst.contains(needed),
                "{arch} postinst lacks {needed}:\n{postinst}"
            );
        }
        assert!(
            read("prerm").contains("affect-edge.service"),
            "{arch} prerm"
        );
    }
}

#[test]
fn the_packaged_unit_verifies_in_the_installed_tree() {
    let Some(deb) = package("amd64") else { return };
    let root = unpack(&deb);
    let unit = unit_in(root.path());
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/affect-edge run --config /etc/affect/edge.toml",
        "User=affect",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "packaged unit lacks {line}"
        );
    }
    // Verified on this machine's systemd with ExecStart= pointing at the unpacked binary (a
    // scratch root has no sysinit.target for `--root` to resolve dependencies against).
    let checked = root.path().join("affect-edge.service");
    let binary = root.path().join("usr/bin/affect-edge");
    std::fs::write(
        &checked,
        text.replace("/usr/bin/affect-edge", &binary.display().to_string()),
    )
    .unwrap();
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                !in_ci(),
                "systemd-analyze cannot run ({e}); CI must verify the unit"
            );
            eprintln!("SKIPPED: systemd-analyze cannot run ({e})");
            return;
        }
    };
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify of the packaged unit: {complaints}"
    );
}

#[test]
fn installing_creates_the_service_user_in_the_camera_and_serial_groups() {
    let Some(deb) = package("amd64") else { return };
    let root = unpack(&deb);
    // A minimal system's account files, as a fresh device image has them.
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(
        root.path().join("etc/group"),
        "root:x:0:\ndialout:x:20:\nvideo:x:44:\n",
    )
    .unwrap();
    // What the postinst runs under `dpkg --root` (DPKG_ROOT).
    run(Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg("affect-edge.conf"));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("affect:"))
        .unwrap_or_else(|| panic!("no affect user in\n{passwd}"))
        .split(':')
        .collect();
    let uid: u32 = user[2].parse().unwrap();
    assert!((1..1000).contains(&uid), "system user expected, uid {uid}");
    assert_eq!(user[5], "/var/lib/affect");
    assert!(user[6].ends_with("nologin"), "login shell {}", user[6]);
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    for name in ["video", "dialout"] {
        let line = group
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap();
        let members = line.rsplit(':').next().unwrap();
        assert!(
            members.split(',').any(|m| m == "affect"),
            "affect is not in {name}: {line}"
        );
    }
}

/// Valence/arousal per (frame, track) of one run's JSON reports, and their flags.
type Reports = Vec<((u64, u64, String), [f64; 2])>;

/// Runs an unpacked package's binary (`runner` prefixes it, e.g. qemu) on the synthetic camera
/// with the packaged configuration and the reports on stdout.
fn installed_run(
    root: &Path,
    runner: &[&str],
    backend: &str,
    frames: u32,
    ort: Option<&Path>,
) -> Reports {
    let binary = root.join("usr/bin/affect-edge");
    let (program, prefix) = match runner.split_first() {
        Some((program, rest)) => (PathBuf::from(program), rest.to_vec()),
        None => (binary.clone(), Vec::new()),
    };
    let mut command = Command::new(program);
    if !prefix.is_empty() {
        command.args(prefix).arg(&binary);
    }
    command
        .args(["run", "--config"])
        .arg(root.join("etc/affect/edge.toml"))
        .args([
            "--source",
            "synthetic:7",
            "--report",
            "stdout",
            "--http",
            "127.0.0.1:0",
        ])
        .args(["--backend", backend, "--max-frames", &frames.to_string()])
        // The packaged state directory inside the scratch root, not the host's.
        .arg("--state-dir")
        .arg(root.join("var/lib/affect"))
        .env("RUST_LOG", "warn")
        .env_remove("AFFECT_MODELS")
        .env_remove("STATE_DIRECTORY")
        .env_remove("ORT_DYLIB_PATH");
    if let Some(lib) = ort {
        command.env("ORT_DYLIB_PATH", lib);
    }
    let out = run(&mut command);
    let reports: Reports = stdout(&out)
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
            (
                (
                    v["frame"].as_u64().unwrap(),
                    v["track"].as_u64().unwrap(),
                    v["flags"].to_string(),
                ),
                [
                    v["valence"].as_f64().unwrap(),
                    v["arousal"].as_f64().unwrap(),
                ],
            )
        })
        .collect();
    assert!(!reports.is_empty(), "no reports from {}", binary.display());
    reports
}

/// The largest valence/arousal difference between two runs that reported the same faces.
fn largest_difference(a: &Reports, b: &Reports, what: &str) -> f64 {
    assert_eq!(a.len(), b.len(), "{what}: different numbers of reports");
    let mut largest = 0.0f64;
    for ((key_a, va_a), (key_b, va_b)) in a.iter().zip(b) {
        assert_eq!(key_a, key_b, "{what}: reports differ in frame/track/flags");
        for i in 0..2 {
            largest = largest.max((va_a[i] - va_b[i]).abs());
        }
    }
    largest
}

const QEMU: [&str; 3] = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"];

#[test]
fn the_installed_arm64_binary_under_qemu_reports_what_the_amd64_one_does() {
    let (Some(amd64), Some(arm64)) = (package("amd64"), package("arm64")) else {
        return;
    };
    let (amd64, arm64) = (unpack(&amd64), unpack(&arm64));
    let native = installed_run(amd64.path(), &[], "tract", 150, None);
    let emulated = installed_run(arm64.path(), &QEMU, "tract", 150, None);
    let tract = largest_difference(&native, &emulated, "tract amd64 vs arm64");
    eprintln!(
        "tract: {} reports, largest |amd64 − arm64| = {tract:.2e}",
        native.len()
    );
    assert!(tract <= ACROSS_ARCHITECTURES, "tract: {tract}");

    // ONNX Runtime on both: the x86 wheel's library natively, the aarch64 wheel's under qemu.
    let Some(x86_ort) = oracle_env("ORT_DYLIB_PATH", "the amd64 ONNX Runtime run") else {
        return;
    };
    let Some(arm_ort) = oracle_env(
        "AFFECT_ORT_AARCH64",
        "the arm64 ONNX Runtime run under qemu",
    ) else {
        return;
    };
    let native_ort = installed_run(
        amd64.path(),
        &[],
        "onnxruntime",
        60,
        Some(Path::new(&x86_ort)),
    );
    let emulated_ort = installed_run(
        arm64.path(),
        &QEMU,
        "onnxruntime",
        60,
        Some(Path::new(&arm_ort)),
    );
    let ort = largest_difference(&native_ort, &emulated_ort, "onnxruntime amd64 vs arm64");
    let native_short = installed_run(amd64.path(), &[], "tract", 60, None);
    let against_tract = largest_difference(
        &native_short,
        &emulated_ort,
        "tract amd64 vs onnxruntime arm64",
    );
    eprintln!(
        "onnxruntime: {} reports, largest |amd64 − arm64| = {ort:.2e}, |tract amd64 − onnxruntime arm64| = {against_tract:.2e}",
        native_ort.len()
    );
    assert!(ort <= ACROSS_ARCHITECTURES, "onnxruntime: {ort}");
    assert!(
        against_tract <= ACROSS_ARCHITECTURES,
        "tract vs onnxruntime: {against_tract}"
    );
}
