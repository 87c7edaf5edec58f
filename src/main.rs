fn main() {
    std::process::exit(imagegen::cli::main());
}
