//! Prints the path of the protoc binary that `protoc-bin-vendored` ships, so
//! the `protoc` script next to this crate can run it.

fn main() {
    match protoc_bin_vendored::protoc_bin_path() {
        Ok(path) => println!("{}", path.display()),
        Err(err) => {
            eprintln!("protoc-shim: no vendored protoc for this platform: {err}");
            std::process::exit(1);
        }
    }
}
