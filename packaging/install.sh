#!/bin/sh
# Install the edgefleet agent (fleet-agent) on Debian, Ubuntu or Raspberry Pi OS:
#
#   curl -fsSL https://fleet.example.com/install.sh | sudo sh -s -- \
#       --server https://fleet.example.com --token efe_... --label site=lab
#
# Creates the edgefleet system user, a virtualenv in /opt/edgefleet/venv with
# edgefleet[agent,onnx] (or [agent,tflite]), /etc/edgefleet/agent.toml (only
# when absent), /var/lib/edgefleet, enrolls the device and starts the
# edgefleet-agent systemd unit. Running it again upgrades the virtualenv and
# keeps the configuration and the device's identity. `sh install.sh --help`
# lists the options.
#
# The enrollment token is never printed or logged, and never put on a command
# line by this script: it reaches `fleet-agent enroll` in the environment
# variable EDGEFLEET_ENROLL_TOKEN. Instead of --token (which is visible to
# other local users while the installer runs), pass --token-file FILE or set
# EDGEFLEET_ENROLL_TOKEN (sudo --preserve-env=EDGEFLEET_ENROLL_TOKEN sh ...).
#
# POSIX sh (dash): it must run as `curl ... | sudo sh -s -- ...`, where the
# script itself arrives on stdin. Every command that could read stdin is
# therefore given </dev/null, and all the work happens in main(), called on
# the last line, so a truncated download runs nothing.

set -eu

PROG=edgefleet-install
STEP=''

usage() {
	cat <<'EOF'
Install the edgefleet agent.

usage: install.sh --server URL --token TOKEN [options]
       curl -fsSL URL/install.sh | sudo sh -s -- --server URL --token TOKEN [options]

  --server URL        the control plane's URL (required unless --no-enroll)
  --token TOKEN       enrollment token (fleetctl enroll-token create)
  --token-file FILE   read the token from FILE instead (or set EDGEFLEET_ENROLL_TOKEN)
  --label KEY=VALUE   device label sent at enrollment; repeatable
  --root FILE         root metadata from your install bundle: enrollment accepts the
                      server's root only if it chains from this one
  --runtime NAME      onnx (default) or tflite: installs edgefleet[agent,NAME]
  --package SPEC      what pip installs instead of edgefleet[agent,NAME]: a version
                      (edgefleet[agent,onnx]==0.2.0), a wheel or a source directory
  --pip-args "ARGS"   extra pip arguments, e.g. "--no-index --find-links /media/wheels"
  --python PATH       the interpreter for the virtualenv (default: python3, >= 3.10)
  --prefix DIR        install everything under DIR as the current user: no system
                      user, no ownership changes, no systemctl (for tests and staging)
  --no-enroll         do not enroll (an enrolled device is never enrolled again)
  --no-start          do not enable or start the systemd unit
  --print-config      print the configuration this would write, and exit
  --print-unit        print the systemd unit this would install, and exit
  -h, --help          this help
EOF
}

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	STEP=''
	exit 1
}

on_exit() {
	rc=$?
	if [ "$rc" -ne 0 ] && [ -n "$STEP" ]; then
		printf '%s: failed while %s (exit status %s); nothing was rolled back, and running the installer again is safe\n' \
			"$PROG" "$STEP" "$rc" >&2
	fi
}

# need_value OPTION ARGC: the option's value must follow it. Values are never
# echoed: one of them may be the token.
need_value() {
	[ "$2" -ge 2 ] || die "$1 needs a value"
}

parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		--server) need_value "$1" $#; SERVER=$2; shift 2 ;;
		--server=*) SERVER=${1#*=}; shift ;;
		--token) need_value "$1" $#; TOKEN=$2; shift 2 ;;
		--token=*) TOKEN=${1#*=}; shift ;;
		--token-file) need_value "$1" $#; TOKEN_FILE=$2; shift 2 ;;
		--token-file=*) TOKEN_FILE=${1#*=}; shift ;;
		--label) need_value "$1" $#; add_label "$2"; shift 2 ;;
		--label=*) add_label "${1#*=}"; shift ;;
		--runtime) need_value "$1" $#; RUNTIME=$2; shift 2 ;;
		--runtime=*) RUNTIME=${1#*=}; shift ;;
		--package) need_value "$1" $#; PACKAGE=$2; shift 2 ;;
		--package=*) PACKAGE=${1#*=}; shift ;;
		--pip-args) need_value "$1" $#; PIP_ARGS=$2; shift 2 ;;
		--pip-args=*) PIP_ARGS=${1#*=}; shift ;;
		--python) need_value "$1" $#; PYTHON=$2; shift 2 ;;
		--python=*) PYTHON=${1#*=}; shift ;;
		--prefix) need_value "$1" $#; PREFIX=$2; shift 2 ;;
		--prefix=*) PREFIX=${1#*=}; shift ;;
		--root) need_value "$1" $#; ROOT_ANCHOR=$2; shift 2 ;;
		--root=*) ROOT_ANCHOR=${1#*=}; shift ;;
		--no-enroll) ENROLL=0; shift ;;
		--no-start) START=0; shift ;;
		--print-config) PRINT=config; shift ;;
		--print-unit) PRINT=unit; shift ;;
		-h | --help) usage; exit 0 ;;
		-*) usage >&2; die "unknown option: ${1%%=*}" ;;
		*) usage >&2; die "unexpected argument (not shown: it may be a secret); options start with --" ;;
		esac
	done
	case $RUNTIME in
	onnx | tflite) ;;
	*) die "--runtime must be onnx or tflite" ;;
	esac
	case $SERVER in
	*[\"\\[:space:]]*) die "--server must be a plain URL (no quotes, backslashes or spaces)" ;;
	http://* | https://* | '') ;;
	*) die "--server must be an http:// or https:// URL" ;;
	esac
}

# Labels are kept one per line; a label cannot contain a newline.
add_label() {
	case $1 in
	[A-Za-z0-9]*=*) ;;
	*) die "--label takes KEY=VALUE (a KEY starting with a letter or digit)" ;;
	esac
	case $1 in
	*"$NL"*) die "a label cannot contain a newline" ;;
	esac
	LABELS="$LABELS$1$NL"
}

# ---------------------------------------------------------------------------
# Layout. ROOT is empty for a system install, the absolute --prefix otherwise.

set_layout() {
	ROOT=
	if [ -n "$PREFIX" ]; then
		case $PREFIX in
		*"$NL"*) die "--prefix cannot contain a newline" ;;
		esac
		mkdir -p "$PREFIX" || die "cannot create the prefix directory $PREFIX"
		ROOT=$(cd "$PREFIX" && pwd -P) || die "cannot enter $PREFIX"
		[ "$ROOT" != / ] || ROOT=
	fi
	OPT_DIR=$ROOT/opt/edgefleet
	VENV=$OPT_DIR/venv
	ETC_DIR=$ROOT/etc/edgefleet
	CONFIG_FILE=$ETC_DIR/agent.toml
	DATA_DIR=$ROOT/var/lib/edgefleet
	UNIT_FILE=$ROOT/etc/systemd/system/edgefleet-agent.service
}

# ---------------------------------------------------------------------------
# Checks

check_os() {
	[ "$(uname -s)" = Linux ] || die "the agent runs on Linux; this is $(uname -s)"
	os_id='' os_like='' os_name=''
	if [ -r /etc/os-release ]; then
		os_id=$(sed -n 's/^ID=//p' /etc/os-release | tr -d '"')
		os_like=$(sed -n 's/^ID_LIKE=//p' /etc/os-release | tr -d '"')
		os_name=$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"')
	fi
	case " $os_id $os_like " in
	*" debian "* | *" ubuntu "* | *" raspbian "*) ;;
	*) warn "${os_name:-this system} is not Debian, Ubuntu or Raspberry Pi OS; continuing untested" ;;
	esac
	case $(uname -m) in
	armv6l | armv7l)
		if [ -z "$PACKAGE" ] && [ "$RUNTIME" = onnx ]; then
			warn "onnxruntime publishes no wheels for 32-bit ARM: use a 64-bit OS, or --package 'edgefleet[agent,tflite-legacy]'"
		fi
		;;
	esac
}

check_root() {
	if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
		die "run as root (curl -fsSL URL/install.sh | sudo sh -s -- ...), or install under a directory you own with --prefix DIR"
	fi
}

can_apt() {
	[ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1
}

apt_install() {
	say "installing $* with apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null ||
		die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null >/dev/null ||
		die "apt-get install $* failed"
}

check_python() {
	STEP="checking Python"
	# The distribution's Python by default: a service must not depend on an
	# interpreter in someone's home directory (pyenv, conda).
	if [ -z "$PYTHON" ]; then
		PYTHON=python3
		[ ! -x /usr/bin/python3 ] || PYTHON=/usr/bin/python3
	fi
	if ! command -v "$PYTHON" >/dev/null 2>&1; then
		if [ "$PYTHON" = python3 ] && can_apt; then
			PYTHON=/usr/bin/python3
			apt_install python3 python3-venv
		else
			die "$PYTHON not found: install Python 3.10 or newer (apt-get install python3 python3-venv), or pass --python PATH"
		fi
	fi
	PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' </dev/null) ||
		die "$PYTHON does not run"
	"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' </dev/null ||
		die "the agent needs Python 3.10 or newer; $PYTHON is $PY_VERSION (pass --python PATH)"
}

check_enroll_args() {
	[ "$ENROLL" -eq 1 ] || return 0
	[ -n "$SERVER" ] || die "--server URL is required (or --no-enroll)"
	if [ -n "$TOKEN_FILE" ]; then
		[ -r "$TOKEN_FILE" ] || die "cannot read the token file $TOKEN_FILE"
		TOKEN=$(cat "$TOKEN_FILE")
	fi
	[ -n "$TOKEN" ] || die "an enrollment token is required: --token, --token-file or EDGEFLEET_ENROLL_TOKEN (or --no-enroll)"
	case $TOKEN in
	*[[:space:]]*) die "the enrollment token contains white space; check how it was copied" ;;
	esac
}

# ---------------------------------------------------------------------------
# The pieces

create_user() {
	[ -z "$ROOT" ] || return 0
	STEP="creating the edgefleet user"
	if ! getent group edgefleet >/dev/null; then
		groupadd --system edgefleet || die "groupadd edgefleet failed"
	fi
	if ! getent passwd edgefleet >/dev/null; then
		nologin=/usr/sbin/nologin
		[ -x "$nologin" ] || nologin=/bin/false
		useradd --system --gid edgefleet --home-dir /var/lib/edgefleet --no-create-home \
			--shell "$nologin" --comment "edgefleet agent" edgefleet ||
			die "useradd edgefleet failed"
		say "created the edgefleet system user"
	fi
}

# make_dir MODE OWNER DIR: OWNER (user:group) applies only to a system install.
make_dir() {
	mkdir -p "$(dirname "$3")" || die "cannot create $(dirname "$3")"
	if [ -z "$ROOT" ]; then
		install -d -m "$1" -o "${2%:*}" -g "${2#*:}" "$3" || die "cannot create $3"
	else
		install -d -m "$1" "$3" || die "cannot create $3"
	fi
}

create_dirs() {
	STEP="creating directories"
	make_dir 0755 root:root "$OPT_DIR"
	make_dir 0750 root:edgefleet "$ETC_DIR"
	make_dir 0700 edgefleet:edgefleet "$DATA_DIR"
}

# The keys are agent/config.py's; what is not set here has its default there.
print_config() {
	cat <<EOF
# edgefleet agent configuration (TOML), read by \`fleet-agent run\`. Secrets are
# never here: enrollment keeps the device key, token and MQTT credential under
# data_dir/identity.
#
# Written once by the installer and never overwritten: local changes survive
# upgrades. Restart the agent after editing: sudo systemctl restart edgefleet-agent

EOF
	if [ -n "$SERVER" ]; then
		printf 'server = "%s"\n' "$SERVER"
	else
		printf '# server = "https://fleet.example.com"\n'
	fi
	cat <<EOF
data_dir = "$DATA_DIR"
# transport = "auto"                       # auto | mqtt | http
# tls_ca_path = "/etc/edgefleet/ca.pem"    # CA bundle; default: the system store

[local_api]
# In the unit's RuntimeDirectory; applications in the edgefleet group connect.
listen = "unix:$ROOT/run/edgefleet/agent.sock"
EOF
}

write_config() {
	STEP="writing $CONFIG_FILE"
	if [ -e "$CONFIG_FILE" ]; then
		say "keeping the existing $CONFIG_FILE"
		return 0
	fi
	tmp=$CONFIG_FILE.tmp.$$
	print_config >"$tmp"
	chmod 0640 "$tmp"
	[ -n "$ROOT" ] || chown root:edgefleet "$tmp"
	mv -f "$tmp" "$CONFIG_FILE"
	say "wrote $CONFIG_FILE"
}

venv_usable() {
	[ -x "$VENV/bin/python" ] || return 1
	have=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' </dev/null 2>/dev/null) ||
		return 1
	[ "$have" = "$PY_VERSION" ]
}

make_venv() {
	STEP="creating the virtualenv $VENV"
	if venv_usable; then
		say "upgrading the virtualenv $VENV"
		return 0
	fi
	if [ -e "$VENV" ]; then
		say "recreating $VENV (it does not run with Python $PY_VERSION)"
		rm -rf "$VENV"
	fi
	say "creating the virtualenv $VENV (Python $PY_VERSION)"
	if "$PYTHON" -m venv "$VENV" </dev/null; then return 0; fi
	rm -rf "$VENV"
	# Debian and Ubuntu ship venv without ensurepip until python3-venv is installed.
	if can_apt; then
		apt_install python3-venv "python$PY_VERSION-venv"
		"$PYTHON" -m venv "$VENV" </dev/null || die "cannot create a virtualenv with $PYTHON"
	else
		die "cannot create a virtualenv: install python3-venv (sudo apt-get install python3-venv)"
	fi
}

install_package() {
	spec=${PACKAGE:-"edgefleet[agent,$RUNTIME]"}
	STEP="installing $spec"
	say "installing $spec"
	# PIP_ARGS is split into words on purpose; globbing is off (set -f).
	# shellcheck disable=SC2086
	if ! "$VENV/bin/python" -m pip install --upgrade --disable-pip-version-check --quiet \
		$PIP_ARGS "$spec" </dev/null; then
		die "pip could not install $spec (see pip's messages above); for an offline install, pass --pip-args \"--no-index --find-links DIR\""
	fi
	version=$("$VENV/bin/fleet-agent" --version </dev/null) ||
		die "$spec installed, but $VENV/bin/fleet-agent does not run"
	if [ -z "$ROOT" ] && ! as_agent "$VENV/bin/fleet-agent" --version >/dev/null; then
		die "the edgefleet user cannot run $VENV/bin/fleet-agent: is $PYTHON inside a private directory (e.g. /root)? pass --python /usr/bin/python3"
	fi
	say "installed $version"
}

print_unit() {
	cat <<'UNIT'
# edgefleet device agent. Installed by packaging/install.sh and the Debian
# package; change it with a drop-in (systemctl edit edgefleet-agent), not here.
# The sandbox choices are explained in packaging/README.md ("Hardening").
[Unit]
Description=edgefleet device agent
Wants=network-online.target
After=network-online.target

[Service]
# The agent sends READY=1 once it serves and WATCHDOG=1 every WatchdogSec/2
# (agent/_systemd.py); a hung agent is killed and restarted.
Type=notify
ExecStart=/opt/edgefleet/venv/bin/fleet-agent run --config /etc/edgefleet/agent.toml
User=edgefleet
Group=edgefleet
WatchdogSec=60
Restart=on-failure
RestartSec=5
# 78 (EX_CONFIG): not enrolled or a broken configuration. Restarting cannot fix
# that, so systemd stops trying instead of looping every RestartSec.
RestartPreventExitStatus=78
TimeoutStopSec=30
Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# Writable: the data directory (identity, models, outbox) and the runtime
# directory holding the local API socket /run/edgefleet/agent.sock.
StateDirectory=edgefleet
StateDirectoryMode=0700
RuntimeDirectory=edgefleet
RuntimeDirectoryMode=0750
ReadWritePaths=/var/lib/edgefleet
UMask=0077

# Sandbox. Everything else is read-only or invisible.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
# PrivateUsers=yes would unmap SupplementaryGroups= (e.g. render for a GPU), so
# it stays off.
# PrivateDevices hides every device node except /dev/null, zero, random and the
# like. CPU inference (onnxruntime, TFLite/XNNPACK) needs nothing more. An
# accelerator (Coral /dev/apex_0, Hailo /dev/hailo0, a GPU's /dev/dri/renderD128)
# needs its node: in a drop-in, set PrivateDevices=no, keep DevicePolicy=closed
# and allow only that device, e.g.
#   PrivateDevices=no
#   DevicePolicy=closed
#   DeviceAllow=/dev/apex_0 rw
#   SupplementaryGroups=render
PrivateDevices=yes
#DevicePolicy=closed
#DeviceAllow=/dev/apex_0 rw
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
# ProcSubset=pid is left out: onnxruntime's CPU feature detection reads
# /proc/cpuinfo on ARM.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
# No writable and executable memory. Checked with onnxruntime's CPU provider,
# ai-edge-litert with XNNPACK, cryptography and ssl: none of them JIT. An
# execution provider or delegate that generates code (oneDNN, some GPU
# delegates) needs MemoryDenyWriteExecute=no in a drop-in.
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
# @resources (affinity, priority, NUMA policy) stays allowed: inference thread
# pools pin their threads.
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
UNIT
}

# sed replacement text for a path: escape \, & and the | delimiter.
sed_path() {
	printf '%s' "$1" | sed 's/[\\&|]/\\&/g'
}

write_unit() {
	STEP="writing $UNIT_FILE"
	mkdir -p "$(dirname "$UNIT_FILE")" || die "cannot create $(dirname "$UNIT_FILE")"
	tmp=$UNIT_FILE.tmp.$$
	if [ -n "$ROOT" ]; then
		r=$(sed_path "$ROOT")
		print_unit | sed -e "s|/opt/edgefleet|$r/opt/edgefleet|g" \
			-e "s|/etc/edgefleet|$r/etc/edgefleet|g" \
			-e "s|/var/lib/edgefleet|$r/var/lib/edgefleet|g" >"$tmp"
	else
		print_unit >"$tmp"
	fi
	chmod 0644 "$tmp"
	mv -f "$tmp" "$UNIT_FILE"
	say "installed $UNIT_FILE"
}

# as_agent CMD...: run CMD as the edgefleet user (as the current user under
# --prefix), from /, with stdin closed.
as_agent() {
	if [ -n "$ROOT" ]; then
		(cd / && "$@" </dev/null)
	elif command -v runuser >/dev/null 2>&1; then
		(cd / && runuser -u edgefleet -- "$@" </dev/null)
	else
		(cd / && setpriv --reuid=edgefleet --regid=edgefleet --init-groups \
			env HOME=/var/lib/edgefleet "$@" </dev/null)
	fi
}

# Enrollment leaves the device's identity in DATA_DIR/identity/device.json
# (agent/identity.py); `fleet-agent enroll` refuses to enroll twice.
enrolled() {
	[ -e "$DATA_DIR/identity/device.json" ]
}

enroll() {
	[ "$ENROLL" -eq 1 ] || return 0
	STEP="enrolling with $SERVER"
	if enrolled; then
		say "$DATA_DIR is not empty: this device is enrolled already; not enrolling again"
		note "to enroll anew, empty $DATA_DIR (the old identity is lost) and run the installer again"
		return 0
	fi
	agent=$VENV/bin/fleet-agent
	help=$(COLUMNS=200 "$agent" enroll --help </dev/null 2>/dev/null) ||
		die "this edgefleet has no \`fleet-agent enroll\`; install a newer one with --package"
	set -- "$agent" enroll --server "$SERVER" --config "$CONFIG_FILE" --data-dir "$DATA_DIR"
	if [ -n "$ROOT_ANCHOR" ]; then
		[ -r "$ROOT_ANCHOR" ] || die "cannot read the root metadata $ROOT_ANCHOR (--root)"
		set -- "$@" --root "$ROOT_ANCHOR"
	fi
	saved_ifs=$IFS
	IFS=$NL
	for label in $LABELS; do
		set -- "$@" --label "$label"
	done
	IFS=$saved_ifs
	case $help in
	*EDGEFLEET_ENROLL_TOKEN*) ;;
	*)
		warn "this fleet-agent cannot read the token from EDGEFLEET_ENROLL_TOKEN: passing --token (visible in the process list while enrollment runs)"
		set -- "$@" --token "$TOKEN"
		;;
	esac
	say "enrolling with $SERVER"
	# Exported in a subshell: only this command's environment holds the token.
	(
		# shellcheck disable=SC2030 # local to the subshell on purpose
		EDGEFLEET_ENROLL_TOKEN=$TOKEN
		export EDGEFLEET_ENROLL_TOKEN
		as_agent "$@"
	) || die "enrollment failed (see above)"
}

start_service() {
	if [ -n "$ROOT" ]; then
		return 0
	fi
	if [ ! -d /run/systemd/system ]; then
		say "systemd is not running: start the agent with"
		note "runuser -u edgefleet -- $VENV/bin/fleet-agent run --config $CONFIG_FILE"
		return 0
	fi
	STEP="starting edgefleet-agent"
	systemctl daemon-reload </dev/null || die "systemctl daemon-reload failed"
	if [ "$START" -eq 0 ]; then
		say "not starting (--no-start): sudo systemctl enable --now edgefleet-agent"
		return 0
	fi
	if ! enrolled; then
		systemctl enable edgefleet-agent </dev/null >/dev/null 2>&1 || die "systemctl enable edgefleet-agent failed"
		say "enabled edgefleet-agent; it starts after enrollment: fleet-agent enroll, then sudo systemctl start edgefleet-agent"
		return 0
	fi
	systemctl enable edgefleet-agent </dev/null >/dev/null 2>&1 || die "systemctl enable edgefleet-agent failed"
	# restart, not start: after an upgrade the new code must be loaded.
	systemctl restart edgefleet-agent </dev/null ||
		die "edgefleet-agent did not start: see journalctl -u edgefleet-agent"
	say "edgefleet-agent is running (journalctl -u edgefleet-agent -f)"
}

main() {
	NL='
'
	SERVER='' TOKEN='' TOKEN_FILE='' LABELS='' PACKAGE='' PIP_ARGS='' PREFIX='' PRINT=''
	ROOT_ANCHOR=''
	RUNTIME=onnx START=1 ENROLL=1 PYTHON=${PYTHON:-}
	# The token may come from the environment; keep it out of every other
	# child's environment from here on.
	# shellcheck disable=SC2031 # the subshell in enroll() sets its own copy
	TOKEN=${EDGEFLEET_ENROLL_TOKEN:-}
	unset EDGEFLEET_ENROLL_TOKEN
	set -f
	umask 022
	trap on_exit EXIT

	parse_args "$@"
	case $PRINT in
	config) set_layout; print_config; exit 0 ;;
	unit) print_unit; exit 0 ;;
	esac

	check_os
	set_layout
	check_root
	check_enroll_args
	check_python
	create_user
	create_dirs
	write_config
	make_venv
	install_package
	write_unit
	enroll
	start_service
	STEP=''
	say "done: $VENV, $CONFIG_FILE, $DATA_DIR, $UNIT_FILE"
}

main "$@"
