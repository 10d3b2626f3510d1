#!/usr/bin/env bash
# Installs, from Debian packages, what the tests and `make verify` need beyond Go, git and gcc: the
# OpenSSH server (the Git writer's SSH test runs its own sshd, see pkg/gitwriter/ssh_test.go) and client
# (ssh-keygen), and protoc (protobuf-compiler), which hack/update-codegen.sh runs to generate the history
# API's protobuf code (the .proto files it imports come from the Go module cache). Idempotent: it does
# nothing when /usr/sbin/sshd, ssh-keygen and protoc are already there. Needs root (or sudo) and a Debian
# mirror; .ci/run calls it.
set -euo pipefail

packages=()
[[ -x /usr/sbin/sshd ]] || packages+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || packages+=(openssh-client)
command -v protoc >/dev/null 2>&1 || packages+=(protobuf-compiler)
if ((${#packages[@]} == 0)); then
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null 2>&1 || { echo "install-test-deps: run as root to install ${packages[*]}" >&2; exit 1; }
	sudo=(sudo)
fi

# The tests start their own sshd; the package must not start (or enable) the system one on port 22.
# A policy-rc.d that forbids it is put in place only for the install, and only when none exists.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\n# install-test-deps.sh: no service starts during the install\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
	"${sudo[@]}" chmod 755 "$policy"
	trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
test -x /usr/sbin/sshd
command -v protoc >/dev/null
