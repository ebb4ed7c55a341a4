//! forward_pass with a real OpenVPN server and client (Debian's `openvpn`, the server's
//! `openvpn-plugin-auth-pam.so`): the client sends one password, which carries the
//! password and the code. Server and client run in a network namespace of their own,
//! on its loopback, with a real tun device; /etc is the sandbox's.

use pam_totp_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};

const PASSWORD: &str = "correct horse";
const PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/openvpn/plugins/openvpn-plugin-auth-pam.so";
const SERVICE: &str = "openvpn-totptest";

/// Enters a private mount and network namespace: the sandbox's /etc, a private /tmp,
/// loopback up; then runs the rest of the command line.
fn enter_script() -> String {
    format!(
        "T=\"$1\"; shift\n\
         mount --bind \"$T/etc\" /etc || exit 125\n\
         {}\n\
         ip link set lo up || exit 125\n\
         exec \"$@\"",
        private_tmp("\"$T/private-tmp\"", "16m", "openvpn-tmp")
    )
}

/// Starts the server, then one client per credentials file in turn; prints
/// `RESULT <file> connected|refused|timeout` for each. Every wait is bounded.
const RUN: &str = r#"D="$1"; shift
cd "$D" || exit 1
openvpn --config server.conf --log server.log --writepid server.pid --daemon || exit 1
i=0
until grep -q "Initialization Sequence Completed" server.log; do
    i=$((i + 1)); [ $i -le 150 ] || { echo "SERVER-NOT-READY"; cat server.log; exit 1; }
    sleep 0.1
done
for creds in "$@"; do
    rm -f client.log
    openvpn --config client.conf --auth-user-pass "$creds" --log client.log &
    pid=$!
    result=timeout
    i=0
    while [ $i -lt 300 ]; do
        if grep -q "Initialization Sequence Completed" client.log 2>/dev/null; then result=connected; break; fi
        if grep -q "AUTH_FAILED" client.log 2>/dev/null; then result=refused; break; fi
        if ! kill -0 $pid 2>/dev/null; then result=exited; break; fi
        i=$((i + 1)); sleep 0.1
    done
    kill $pid 2>/dev/null; wait $pid 2>/dev/null
    echo "RESULT $(basename "$creds") $result"
    [ $result = timeout ] && cat client.log
done
kill "$(cat server.pid)"
"#;

fn sh(cmd: &str, dir: &Path) {
    let status = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{cmd}");
}

/// A CA and a server certificate (the clients authenticate with PAM alone).
fn certificates(dir: &Path) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(
        &format!(
            "openssl req -x509 {ec} -keyout ca.key -out ca.crt -subj /CN=pam_totp-test-ca -days 2"
        ),
        dir,
    );
    sh(
        &format!("openssl req {ec} -keyout server.key -out server.csr -subj /CN=server"),
        dir,
    );
    std::fs::write(
        dir.join("ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
         -out server.crt -days 2 -extfile ext",
        dir,
    );
}

#[test]
fn forward_pass_through_openvpn() {
    require_root();
    assert!(
        Path::new(PLUGIN).exists(),
        "{PLUGIN} is missing: apt-get install openvpn"
    );
    let sb = Sandbox::new("openvpn");
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.add_user("bob", PASSWORD, None, &[]);
    sb.write_config("");
    sb.init_store();
    let recovery = sb.enroll("alice", SECRET);
    // The stack of the one-prompt application: pam_totp before the password.
    let stack = format!(
        "auth required {module} config={config} forward_pass\n\
         auth required pam_unix.so use_first_pass\n\
         account required pam_unix.so\n\
         account required {module} config={config}\n",
        module = module().display(),
        config = sb.config_path().display()
    );
    write_file(&sb.dir.join("etc/pam.d").join(SERVICE), &stack, 0o644);
    let dir = sb.dir.join("openvpn");
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    std::fs::write(
        dir.join("server.conf"),
        format!(
            "dev tun\nproto udp\nlocal 127.0.0.1\nport 11940\ntopology subnet\n\
             server 10.203.0.0 255.255.255.0\nca ca.crt\ncert server.crt\nkey server.key\n\
             dh none\nverify-client-cert none\nusername-as-common-name\n\
             plugin {PLUGIN} {SERVICE}\nverb 3\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("client.conf"),
        "client\ndev tun\nproto udp\nremote 127.0.0.1 11940\nnobind\nca ca.crt\n\
         remote-cert-tls server\nauth-retry none\npull-filter ignore route\nverb 3\n",
    )
    .unwrap();

    wait_for_fresh_step(30, 25);
    let c = code(SECRET, 0);
    let wrong = if c == "000000" { "111111" } else { "000000" };
    let attempts = [
        (
            "alice-right",
            "alice",
            format!("{PASSWORD}{c}"),
            "connected",
        ),
        (
            "alice-password-only",
            "alice",
            PASSWORD.to_string(),
            "refused",
        ),
        (
            "alice-wrong-code",
            "alice",
            format!("{PASSWORD}{wrong}"),
            "refused",
        ),
        (
            "alice-wrong-password",
            "alice",
            format!("not the password{}", code(SECRET, 30)),
            "refused",
        ),
        (
            "alice-recovery",
            "alice",
            format!("{PASSWORD} {}", recovery[0]),
            "connected",
        ),
        ("bob-not-enrolled", "bob", PASSWORD.to_string(), "connected"),
    ];
    let mut files = Vec::new();
    for (name, user, password, _) in &attempts {
        let file = dir.join(name);
        write_file(&file, &format!("{user}\n{password}\n"), 0o600);
        files.push(file);
    }
    let out = Command::new("timeout")
        .args([
            "240",
            "unshare",
            "-m",
            "-n",
            "--propagation",
            "private",
            "--",
        ])
        .args(["/bin/sh", "-c", &enter_script(), "enter"])
        .arg(&sb.dir)
        .args(["/bin/sh", "-c", RUN, "run"])
        .arg(&dir)
        .args(&files)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let server_log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    for (name, _, _, expected) in &attempts {
        assert!(
            text.contains(&format!("RESULT {name} {expected}\n")),
            "{name}: expected {expected}\n{text}\n{}\n--- server log\n{server_log}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A real tun device, and the users' logins through the plugin.
    assert!(
        server_log.contains("TUN/TAP device tun0 opened"),
        "{server_log}"
    );
    assert!(
        server_log.contains("PLUGIN_CALL: POST") || server_log.contains("alice"),
        "{server_log}"
    );
    for secret in [PASSWORD, recovery[0].as_str()] {
        assert!(!server_log.contains(secret), "{server_log}");
    }
}
