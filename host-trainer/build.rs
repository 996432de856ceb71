//! libtorch's shared libraries are found at run time through an RPATH, so `affect-train` and the
//! tests run without `LD_LIBRARY_PATH` (tch adds none itself).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    }
}
