#!/usr/bin/env bash
# Makes the certificates the C, Python and Go TLS tests use, with the openssl CLI, into DIR:
#   ca.pem                    a test CA (ECDSA P-256, 2 days)
#   server.pem, server.key    signed by it for localhost and 127.0.0.1 (server and client auth)
#   client.pem, client.key    a client certificate signed by it (mTLS)
#   other-ca.pem              an unrelated CA
# Made at test time so that nothing committed expires. Usage: scripts/test-certs.sh DIR
set -euo pipefail
dir="${1:?usage: test-certs.sh DIR}"
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
leaf() { # name CN extensions
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile <(printf '%s\n' "$3") -out "$1.pem" 2>/dev/null
    rm -f "$1.csr"
}
ca ca "gf test CA"
ca other-ca "gf unrelated CA"
leaf server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth,clientAuth"
leaf client client "extendedKeyUsage=clientAuth"
rm -f ca.srl
