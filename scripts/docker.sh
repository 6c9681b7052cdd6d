#!/usr/bin/env bash
# Make a Docker engine available for diego's Docker backend and its tests, on a
# fresh Debian 12 machine as root, with no registry reachable: Debian's
# docker.io, a dockerd started by hand when none answers (no systemd), and a
# local test image made from Debian's static busybox, tagged
# diego/busybox:latest and alpine:latest.
# Safe to run again: it only installs, starts or builds what is missing.
set -euo pipefail

# /usr/local/bin/docker may be a client without an engine, and PATH may lack
# sbin: name the engine's binaries and its socket explicitly.
DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd
export DOCKER_HOST=unix:///var/run/docker.sock
LOG=/var/log/diego-dockerd.log
IMAGE=diego/busybox:latest
ALIAS=alpine:latest
LABEL=org.diego.test-image
START_TIMEOUT=60

say() { echo "docker: $*" >&2; }

workdir=
trap '[[ -z $workdir ]] || rm -rf "$workdir"' EXIT

installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
installed docker.io && [[ -x $DOCKER && -x $DOCKERD ]] || missing+=(docker.io)
installed busybox-static && [[ -x /bin/busybox ]] || missing+=(busybox-static)
installed iptables || missing+=(iptables)
if ((${#missing[@]})); then
  echo "docker: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Every exec makes a session keyring for the container's (remapped) host uid, and
# the kernel allows a uid other than root 200 keys by default: past about 200
# execs at once, runc fails "unable to create session key: disk quota exceeded".
KEYS_WANTED=20000
if (($(cat /proc/sys/kernel/keys/maxkeys) < KEYS_WANTED)); then
  if sysctl -qw kernel.keys.maxkeys=$KEYS_WANTED kernel.keys.maxbytes=$((KEYS_WANTED * 100)); then
    say "kernel.keys.maxkeys raised to $KEYS_WANTED (one session keyring per exec)"
  else
    say "warning: cannot raise kernel.keys.maxkeys; about 200 execs at once is the limit"
  fi
fi

engine_up() { timeout 20 "$DOCKER" info >/dev/null 2>&1; }

# The pid of a running dockerd, if any (procps may be absent: read /proc).
running_dockerd() {
  local comm name
  for comm in /proc/[0-9]*/comm; do
    { read -r name <"$comm"; } 2>/dev/null || continue
    if [[ $name == dockerd ]]; then
      comm=${comm#/proc/}
      echo "${comm%/comm}"
      return 0
    fi
  done
  return 1
}

if ! engine_up; then
  # A dockerd that is already running (still starting, say, or started by the
  # package's init script) is used as it is; otherwise start one, detached from
  # this shell and its output so that callers reading our output never wait on it.
  if pid=$(running_dockerd); then
    say "waiting for the running dockerd (pid $pid)"
  else
    say "starting dockerd --userns-remap=default (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      setsid nohup "$DOCKERD" --userns-remap=default >>"$LOG" 2>&1 </dev/null &
  fi
  deadline=$((SECONDS + START_TIMEOUT))
  until engine_up; do
    if ((SECONDS >= deadline)); then
      say "no engine answers on ${DOCKER_HOST#unix://} after ${START_TIMEOUT}s"
      break
    fi
    sleep 1
    if ! running_dockerd >/dev/null; then
      say "dockerd is not running"
      break
    fi
  done
  if ! engine_up; then
    if [[ -f $LOG ]]; then
      say "last lines of $LOG:"
      tail -n 30 "$LOG" >&2
    fi
    exit 1
  fi
fi

image_id() { "$DOCKER" image inspect --format '{{.Id}}' "$1" 2>/dev/null; }
image_label() {
  "$DOCKER" image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null
}

# The test image: Debian's static busybox, a symlink per applet, root, nobody
# and vcap (1000:1000, home /home/vcap). Imported from a tar stream, so no
# registry is needed.
build_image() {
  local out applet root
  out=$(ldd /bin/busybox 2>&1) || true
  if [[ $out != *"not a dynamic executable"* && $out != *"statically linked"* ]]; then
    say "/bin/busybox is not statically linked (reinstall busybox-static)"
    exit 1
  fi
  say "building $IMAGE from /bin/busybox"
  workdir=$(mktemp -d)
  root=$workdir/root
  (
    umask 022
    mkdir -p "$root"/{bin,etc,root,tmp,home/vcap}
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
      [[ $applet == busybox || -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
    done
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
vcap:x:1000:1000:vcap:/home/vcap:/bin/sh
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
vcap:x:1000:
EOF
    chmod 1777 "$root/tmp"
    chmod 700 "$root/root"
    chown 1000:1000 "$root/home/vcap"
  )
  # The tree must work on its own, without the host's libraries.
  if ! /usr/sbin/chroot "$root" /bin/sh -c 'id vcap' >/dev/null; then
    say "the test image's root does not run"
    exit 1
  fi
  tar --numeric-owner -C "$root" -cf - . |
    "$DOCKER" import -m 'diego test image: Debian static busybox' \
      -c 'CMD ["/bin/sh"]' \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c "LABEL $LABEL=1" \
      - "$IMAGE" >/dev/null
  rm -rf "$workdir"
  workdir=
}

if ! image_id "$IMAGE" >/dev/null; then
  build_image
fi
id=$(image_id "$IMAGE")

# alpine:latest names the test image too, unless it is a real alpine image:
# retag only when it is missing or an earlier build of ours.
alias_id=$(image_id "$ALIAS") || alias_id=
if [[ $alias_id != "$id" ]]; then
  if [[ -z $alias_id || $(image_label "$ALIAS") == 1 ]]; then
    "$DOCKER" tag "$IMAGE" "$ALIAS"
    # Drop the earlier build it named once nothing names it (a container may
    # still use it: then it stays).
    if [[ -n $alias_id && $("$DOCKER" image inspect --format '{{len .RepoTags}}' "$alias_id") == 0 ]]; then
      "$DOCKER" rmi "$alias_id" >/dev/null 2>&1 || true
    fi
  else
    say "keeping $ALIAS: it is not our test image"
  fi
fi

if [[ $("$DOCKER" info --format '{{.SecurityOptions}}') == *name=userns* ]]; then
  remap="remaps users (userns-remap)"
else
  remap="does not remap users"
fi
say "engine ready on ${DOCKER_HOST#unix://}; it $remap; test image $IMAGE"
