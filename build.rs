//! Tells the code which target it is built for, so that `msxsync --version` can say
//! (a static Linux build, a Windows build...): cargo gives build scripts the target
//! triple, the compiler itself does not.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown target".into());
    println!("cargo:rustc-env=MSXSYNC_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
