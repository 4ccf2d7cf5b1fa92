#!/usr/bin/python3
"""test_tls.py - DICOM TLS (PS3.15 B.9): DCMTK's echoscu and storescu with their +tls options
against `telerad serve --tls-cert/--tls-key`, with and without client certificate verification
(--tls-verify-client --tls-ca).

    /usr/bin/python3 tests/interop_scp/test_tls.py build/telerad

Certificates are made for the run with the openssl command: a CA, a server certificate for
127.0.0.1 (and localhost), a client certificate signed by the CA, and one signed by another CA.
DCMTK's default profile (non-downgrading BCP 195) is used, and DCMTK verifies the server's
certificate against the CA (+cf). Checks:
  * echoscu +tls / +tla (anonymous: no client certificate) succeed, storescu +tls stores
    files that equal their sources;
  * a plain (non-TLS) echoscu fails, and the server keeps working;
  * with --tls-verify-client: a client without a certificate (+tla) is refused, one with a
    certificate from another CA is refused, one with the right certificate is accepted (echo
    and store).
"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scp_common as sc  # noqa: E402


def openssl(*args, cwd):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), p.stdout.decode()))


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
            name + ".crt", "-days", "2", "-subj", "/CN=%s test CA" % name,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d, name, ca, cn, ext):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
            name + ".csr", "-subj", "/CN=%s" % cn, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
            "-CAcreateserial", "-out", name + ".crt", "-days", "2", "-extfile", name + ".ext",
            cwd=d)


def make_certificates(d):
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_leaf(d, "server", "ca", "localhost",
              "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    make_leaf(d, "client", "ca", "reader1",
              "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=clientAuth\n")
    make_leaf(d, "stranger", "otherca", "stranger",
              "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=clientAuth\n")


def main():
    telerad = sc.telerad_path()
    sc.need_programs("echoscu", "storescu", "dcmdump", "openssl")
    sc.need_pydicom()
    work = sc.tempdir("telerad-scp-tls.")
    certs = os.path.join(work, "certs")
    os.makedirs(certs)
    make_certificates(certs)

    def c(name):
        return os.path.join(certs, name)

    checks = sc.Checks("interop_scp_tls")
    client_tls = ["+tls", c("client.key"), c("client.crt"), "+cf", c("ca.crt")]
    anonymous_tls = ["+tla", "+cf", c("ca.crt")]
    files = []
    for i in range(5):
        p = os.path.join(work, "img%d.dcm" % i)
        files.append((sc.make_file(p, seed=i), p))
    logs = []

    # TLS without client verification.
    server = sc.Server(telerad, work, "--tls-cert", c("server.crt"), "--tls-key",
                       c("server.key"), name="tls").start()
    try:
        rc, out = sc.echoscu(server.port, *client_tls)
        checks.check(rc == 0, "echoscu +tls (client certificate) over TLS", out[-600:])
        rc, out = sc.echoscu(server.port, *anonymous_tls)
        checks.check(rc == 0, "echoscu +tla (no client certificate) over TLS", out[-600:])
        rc, out = sc.storescu(server.port, [p for _, p in files], *client_tls)
        checks.check(rc == 0, "storescu +tls of 5 files", out[-600:])
        for uid, p in files:
            diff = sc.compare_stored(telerad, p, server.stored_path(uid))
            checks.check(diff is None, "TLS-stored %s equals the source" % os.path.basename(p),
                         diff or "")
        # The server's certificate is checked by DCMTK: against another CA it must fail.
        rc, out = sc.echoscu(server.port, "+tla", "+cf", c("otherca.crt"))
        checks.check(rc != 0, "echoscu trusting another CA refuses the server", out[-300:])
        rc, out = sc.echoscu(server.port, timeout=30)
        checks.check(rc != 0, "a plain (non-TLS) echoscu fails against the TLS port", out[-300:])
        rc, out = sc.echoscu(server.port, *client_tls)
        checks.check(rc == 0 and server.alive(), "the server keeps working afterwards",
                     out[-300:])
        logs.append(server.log_text())
    finally:
        checks.check(server.stop() == 0, "telerad serve (TLS) stops cleanly")

    # TLS with client certificate verification.
    server = sc.Server(telerad, work, "--tls-cert", c("server.crt"), "--tls-key",
                       c("server.key"), "--tls-ca", c("ca.crt"), "--tls-verify-client",
                       name="mtls").start()
    try:
        rc, out = sc.echoscu(server.port, *anonymous_tls, timeout=60)
        checks.check(rc != 0, "--tls-verify-client: a client without a certificate is refused",
                     out[-300:])
        rc, out = sc.echoscu(server.port, "+tls", c("stranger.key"), c("stranger.crt"), "+cf",
                             c("ca.crt"), timeout=60)
        checks.check(rc != 0, "--tls-verify-client: a certificate from another CA is refused",
                     out[-300:])
        rc, out = sc.echoscu(server.port, *client_tls)
        checks.check(rc == 0, "--tls-verify-client: a client with a certificate is accepted",
                     out[-600:])
        uid, p = files[0]
        rc, out = sc.storescu(server.port, [p], *client_tls)
        checks.check(rc == 0 and sc.compare_stored(telerad, p, server.stored_path(uid)) is None,
                     "--tls-verify-client: storescu +tls stores", out[-600:])
        log = server.log_text()
        checks.check(server.alive(), "the server is still running")
        logs.append(log)
    finally:
        checks.check(server.stop() == 0, "telerad serve (mutual TLS) stops cleanly")
    for log in logs:
        if "AddressSanitizer" in log or "runtime error" in log:
            checks.check(False, "no sanitizer report in the server log", log[-3000:])
    if checks.failed:
        print("logs and certificates kept in %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    checks.finish()


if __name__ == "__main__":
    main()
