use std::process::ExitCode;

fn main() -> ExitCode {
    salesbot_sync::cli::main()
}
