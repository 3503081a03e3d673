#!/usr/bin/env bash
# Makes a lab's dcvlr certificates with openssl: one cluster CA, the
# coordinator's server certificate, one certificate per node and one per
# user who connects without MUNGE. Keys are EC P-256, written 0600.
#
#   deploy/dcvlr-certs.sh [--dir DIR] [--days N] ca
#   deploy/dcvlr-certs.sh [--dir DIR] [--days N] coordinator HOST_OR_IP...
#   deploy/dcvlr-certs.sh [--dir DIR] [--days N] node NAME...
#   deploy/dcvlr-certs.sh [--dir DIR] [--days N] user NAME...
#
# DIR (default ./dcvlr-tls) holds ca.pem and ca.key; `ca` makes them once
# (it refuses to replace a CA). The others write DIR/coordinator.{pem,key},
# DIR/nodes/NAME.{pem,key} and DIR/users/NAME.{pem,key}, signed by that CA.
# A certificate's role is its subject's OU (dcvlr-coordinator, dcvlr-node,
# dcvlr-user) and its name is its CN; the coordinator's host names and
# addresses go in subjectAltName (localhost and 127.0.0.1 are always added).
# Copy ca.pem everywhere, each other pair only to where it is used, and
# keep ca.key offline.
set -euo pipefail

dir=dcvlr-tls
days=825
usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while (($#)); do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    -h|--help) usage ;;
    *) break ;;
  esac
done
(($#)) || usage
what=$1
shift

valid_name() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]]; }

# key_and_cert OUT_BASE SUBJECT EXTENSIONS
key_and_cert() {
  local base=$1 subject=$2 ext=$3
  (umask 077 && openssl ecparam -name prime256v1 -genkey -noout \
    -out "$base.key.tmp" && openssl pkcs8 -topk8 -nocrypt \
    -in "$base.key.tmp" -out "$base.key") 2>/dev/null
  rm -f "$base.key.tmp"
  openssl req -new -key "$base.key" -subj "$subject" -out "$base.csr"
  openssl x509 -req -in "$base.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days "$days" -sha256 -extfile <(printf '%s\n' "$ext") \
    -out "$base.pem" 2>/dev/null
  rm -f "$base.csr"
  echo "$base.pem $base.key"
}

need_ca() {
  if [[ ! -f $dir/ca.pem || ! -f $dir/ca.key ]]; then
    echo "dcvlr-certs: no CA in $dir: run '$0 --dir $dir ca' first" >&2
    exit 1
  fi
}

case $what in
  ca)
    (($# == 0)) || usage
    if [[ -e $dir/ca.key ]]; then
      echo "dcvlr-certs: $dir/ca.key exists; a new CA would invalidate every" \
        "certificate it signed" >&2
      exit 1
    fi
    mkdir -p "$dir"
    (umask 077 && openssl ecparam -name prime256v1 -genkey -noout \
      -out "$dir/ca.key.tmp" && openssl pkcs8 -topk8 -nocrypt \
      -in "$dir/ca.key.tmp" -out "$dir/ca.key") 2>/dev/null
    rm -f "$dir/ca.key.tmp"
    openssl req -x509 -new -key "$dir/ca.key" -days "$((days * 2))" -sha256 \
      -subj "/O=dcvlr/CN=dcvlr cluster CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.pem"
    echo "$dir/ca.pem $dir/ca.key"
    ;;
  coordinator)
    (($# >= 1)) || usage
    need_ca
    san="DNS:localhost,IP:127.0.0.1"
    for host in "$@"; do
      if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then
        san+=",IP:$host"
      else
        san+=",DNS:$host"
      fi
    done
    key_and_cert "$dir/coordinator" "/O=dcvlr/OU=dcvlr-coordinator/CN=$1" \
      "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san"
    ;;
  node|user)
    (($# >= 1)) || usage
    need_ca
    sub=${what}s
    mkdir -p "$dir/$sub"
    for name in "$@"; do
      if ! valid_name "$name"; then
        echo "dcvlr-certs: '$name' is not a valid $what name (1-63 letters," \
          "digits, '.', '_' or '-')" >&2
        exit 2
      fi
      key_and_cert "$dir/$sub/$name" "/O=dcvlr/OU=dcvlr-$what/CN=$name" \
        "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    done
    ;;
  *) usage ;;
esac
