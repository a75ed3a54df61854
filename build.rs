//! Rebuilds the binary when the dashboard's built files change: they are embedded
//! with include_dir, which cargo cannot see through on its own.

fn main() {
    println!("cargo:rerun-if-changed=web/dist");
    println!("cargo:rerun-if-changed=migrations");
}
