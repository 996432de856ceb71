//! Synthetic affect faces: a renderer whose faces show valence and arousal in their geometry,
//! with smooth per-video trajectories and per-frame nuisances. Drives `affect-train synth` and
//! the edge runtime's synthetic camera.
