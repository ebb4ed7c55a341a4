# Sourced by packaging/install.sh and tests/run.sh (POSIX sh): puts cargo on PATH. When
# there is none, rustup installs a current stable toolchain for the current user in
# ~/.cargo (the distribution's compiler is too old for the dependencies); that needs
# curl. Sets rust_installed=yes when it installed one.
rust_installed=no
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain stable
    PATH="$HOME/.cargo/bin:$PATH"
    rust_installed=yes
    command -v cargo >/dev/null 2>&1 || {
        echo "no cargo, and rustup could not install one (see above)" >&2
        exit 1
    }
fi
export PATH
