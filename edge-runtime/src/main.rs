//! `affect-edge`: camera → faces → valence/arousal → stdout, serial, MQTT.

fn main() -> std::process::ExitCode {
    eprintln!("affect-edge: not implemented yet");
    std::process::ExitCode::from(1)
}
